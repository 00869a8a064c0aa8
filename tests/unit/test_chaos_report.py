"""The fault suite's report: the figures section is rewritten in place and the rest of the file kept."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests.chaos.load import LoadResult
from tests.chaos.report import BEGIN, END, answered_cell, main, rewrite, section
from tests.chaos.results import Outcome, record

HELD = Outcome("redis-restart", "Redis SIGKILL", 10, {"ok": 9, "expired": 1}, 0, 0, 0, 12.3, ["a note"])
BROKEN = Outcome("gateway-sigkill", "gateways", 5, {"ok": 4}, 1, 0, 2, 30.0)
WHEN = datetime(2026, 11, 30, 22, 0, tzinfo=UTC)


def test_answered_cell_orders_statuses_and_skips_zeros() -> None:
    assert answered_cell({"expired": 1, "ok": 9, "zz": 2, "invalid": 0}) == "ok 9, expired 1, zz 2"
    assert answered_cell({}) == "none"


def test_section_has_a_row_per_outcome_and_says_what_did_not_hold() -> None:
    text = section([BROKEN, HELD], WHEN, "abc1234")
    assert text.startswith(BEGIN) and text.endswith(END)
    assert "`abc1234`, 2026-11-30 22:00 UTC" in text
    assert "| `redis-restart` | Redis SIGKILL | 10 | ok 9, expired 1 | 0 | 0 | 0 | 12 | held |" in text
    assert "| `gateway-sigkill` | gateways | 5 | ok 4 | 1 | 0 | 2 | 30 | **NOT HELD** |" in text
    assert "- `redis-restart`: a note" in text
    assert "1 of 2 scenarios held every zero." in text


def test_rewrite_keeps_everything_outside_the_markers() -> None:
    doc = f"# R\n\nmine\n\n{BEGIN}\nold figures\n{END}\n\n## Kafka\n\ntheirs\n"
    out = rewrite(doc, f"{BEGIN}\nnew\n{END}")
    assert out == f"# R\n\nmine\n\n{BEGIN}\nnew\n{END}\n\n## Kafka\n\ntheirs\n"
    assert rewrite("# R\n", f"{BEGIN}\nnew\n{END}") == f"# R\n\n## Figures\n\n{BEGIN}\nnew\n{END}\n"


def test_main_writes_a_new_file_from_recorded_outcomes(tmp_path: Path) -> None:
    record(HELD, tmp_path / "results")
    doc = tmp_path / "RELIABILITY.md"
    assert main(["--doc", str(doc), "--results", str(tmp_path / "results")]) == 0
    text = doc.read_text()
    assert text.startswith("# Reliability") and "`redis-restart`" in text and text.count(BEGIN) == 1
    assert main(["--doc", str(doc), "--results", str(tmp_path / "results")]) == 0
    assert doc.read_text().count(BEGIN) == 1


def test_load_result_counts_answers_and_percentiles() -> None:
    result = LoadResult(
        sent=["a", "b", "c"],
        answers={"a": "ok", "b": "unknown_outcome", "c": "lost"},
        latencies_ms={"read": [float(i) for i in range(1, 101)]},
    )
    assert result.answered == {"ok": 1, "unknown_outcome": 1}
    assert result.percentile_ms("read", 0.5) == 50 and result.percentile_ms("read", 0.99) == 99
    outcome = result.outcome("s", "t")
    assert outcome.sent == 3 and outcome.answered == {"ok": 1, "unknown_outcome": 1}


def test_main_leaves_the_figures_when_no_scenario_recorded_an_outcome(tmp_path: Path) -> None:
    """A run that selected nothing, or stopped before any outcome, must not wipe the last figures."""
    doc = tmp_path / "RELIABILITY.md"
    doc.write_text(f"# R\n\n{BEGIN}\nlast figures\n{END}\n")
    assert main(["--doc", str(doc), "--results", str(tmp_path / "none")]) == 0
    assert doc.read_text() == f"# R\n\n{BEGIN}\nlast figures\n{END}\n"
