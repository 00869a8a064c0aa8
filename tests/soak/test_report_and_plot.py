"""SOAK.md, soak.png and where they may be written, on made-up samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.soak import goals, plot, report

PROCESSES = ("kafka", "redis", "sandbox", *goals.JUDGED, "soak")


def made_up_samples(count: int = 31, every_s: float = 2.0) -> list[dict[str, Any]]:
    """A clean run: steady memory, 16 KIS and 4 Kiwoom arrivals per second, small lags."""
    samples = []
    for i in range(count):
        t = i * every_s
        samples.append(
            {
                "t_s": t,
                "rss_kib": {name: 50_000 + (i if name == "redis" else 0) for name in PROCESSES},
                "gateway": {
                    "consumer_lag": float(i % 3),
                    "queue_depth": 0.0,
                    "responses": {"soak-load/ok": 20.0 * t},
                },
                "group_lag": {"history-collector": 0, "verification-worker": i % 2, "recovery-worker": 0},
                "referee": {
                    "KIS": {
                        "requests": int(16 * t),
                        "rate_per_s": 20,
                        "max_in_window": 20,
                        "over_limit": 0,
                        "class_over_limit": 0,
                        "tokens_issued": 1,
                    },
                    "KIWOOM": {
                        "requests": int(4 * t),
                        "rate_per_s": 5,
                        "max_in_window": 5,
                        "over_limit": 0,
                        "class_over_limit": 0,
                        "tokens_issued": 1,
                    },
                },
                "load": {"KIS": {"answered": int(16 * t)}, "KIWOOM": {"answered": int(4 * t)}},
                "workers": {},
                "errors": [],
            }
        )
    return samples


def info(**fields: Any) -> report.RunInfo:
    """A run's facts, some overridden."""
    base: dict[str, Any] = {
        "command": ".venv/bin/python -m tests.soak",
        "commit": "abc1234",
        "changes": [],
        "started_local": "2026-11-30 10:00:00 UTC",
        "started_utc": "2026-11-30 10:00:00",
        "minutes": 10.0,
        "short": False,
        "duration_s": 600.0,
        "sample_s": 5.0,
        "rates": {"KIS": 16.0, "KIWOOM": 4.0},
    }
    base.update(fields)
    return report.RunInfo(**base)


def test_summary_rows_give_rates_and_peaks_per_span() -> None:
    """Each span's row has the arrivals per second at the referee, the load's answers and the peak lags."""
    rows = report.summary_rows(made_up_samples(), rows=6)
    assert len(rows) == 6
    assert rows[0][0] == "0.0-0.2"
    assert [float(rows[2][1]), float(rows[2][2]), float(rows[2][3])] == [16.0, 4.0, 20.0]
    assert rows[2][4] == "2" and rows[2][5] == "1"
    assert report.summary_rows(made_up_samples()[:1]) == []


def test_render_names_the_goals_and_the_command() -> None:
    """SOAK.md carries the command, the commit, every goal with its verdict and the plot."""
    samples = made_up_samples()
    growths = goals.memory_growth(samples, 12, 6)
    load = {
        "KIS": {
            "sent": 10,
            "answered": 10,
            "refused": {},
            "timed_out": 0,
            "send_failed": {},
            "lost": 0,
            "pending": 0,
            "latency_ms": {"p50": 12.0, "p99": 80.0, "max": 90.0},
        }
    }
    results = [
        goals.memory_goal(growths),
        goals.lost_goal(load),
        goals.over_limit_goal(samples[-1]["referee"]),
    ]
    results.append(
        goals.Goal("zero unexpected errors", "0", "1 unexpected", False, ["upstream KIS/throttled: 1"])
    )
    text = report.render(info(), results, growths, samples, load, {"workers.dlq": 0}, 4000.0)
    assert "`.venv/bin/python -m tests.soak`" in text and "`abc1234`" in text
    assert "Goals MISSED" in text and "| zero unexpected errors | 0 | 1 unexpected | **NO** |" in text
    assert "- upstream KIS/throttled: 1" in text
    assert "| redis |" in text and "![memory, lag and calls per second](soak.png)" in text
    assert "(2026-11-30 10:00:00 UTC)" not in text  # the same instant is not given twice


@pytest.mark.parametrize(
    ("fields", "requested", "head", "published", "reason"),
    [
        ({}, None, "abc1234", True, ""),
        ({"short": True}, None, "abc1234", False, "not a full run"),
        ({"minutes": 5.0}, None, "abc1234", False, "not a full run"),
        ({"changes": ["M Makefile"]}, None, "abc1234", False, "uncommitted changes (M Makefile)"),
        ({}, None, "def5678", False, "HEAD moved from abc1234 to def5678"),
        ({"short": True}, Path("elsewhere"), "abc1234", False, ""),
    ],
)
def test_publish_target(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fields: dict[str, Any],
    requested: Path | None,
    head: str,
    published: bool,
    reason: str,
) -> None:
    """docs/soak/ takes only a full run of a clean tree that stayed at one commit; --output goes anywhere."""
    monkeypatch.setattr(report, "git_head", lambda: head)
    monkeypatch.setattr(report, "uncommitted_changes", list)
    target, refused = report.publish_target(info(**fields), requested, tmp_path)
    assert (target == report.PUBLISHED.resolve()) is published
    assert reason in refused
    if requested is not None:
        assert target == requested.resolve()
    elif not published:
        assert target == tmp_path.resolve()


def test_series_and_png(tmp_path: Path) -> None:
    """The plot's series hold MiB, lags and per-interval arrival rates, and the PNG is written."""
    data = plot.series(made_up_samples())
    assert data.rss_mib["gateway"][0] == pytest.approx(50_000 / 1024)
    assert data.calls_per_s["KIS"][0] is None and data.calls_per_s["KIS"][5] == pytest.approx(16.0)
    assert data.lag["verification-worker group"][:3] == [0, 1, 0]
    assert data.limits == {"KIS": 20, "KIWOOM": 5}
    path = tmp_path / "soak.png"
    plot.write_png(path, data, warmup_min=0.2, title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
