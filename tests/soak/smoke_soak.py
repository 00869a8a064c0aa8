"""Smoke test of ``make soak``: the one-minute ``--short`` run, end to end (about two minutes in all).

Not part of ``make test`` (its file name is outside pytest's ``test_*.py`` pattern, because it starts a
whole stack and takes longer than the suite's per-test budget); run it by path:

    .venv/bin/pytest -p no:cacheprovider tests/soak/smoke_soak.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.soak import goals

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 400


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_short_soak_runs_samples_and_writes_its_report(tmp_path: Path) -> None:
    """A short soak starts its own stack, samples every process, loses nothing, stays within the limits
    and writes SOAK.md, soak.png and its samples."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.soak", "--short", "--output", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    print(done.stderr[-4000:])
    assert done.returncode in (0, 1), "the soak did not get as far as judging its goals"
    run_dir = REPO / done.stderr.rsplit("samples and logs in ", 1)[1].strip()
    summary = json.loads((run_dir / "summary.json").read_text())
    verdicts = {g["name"]: g for g in summary["goals"]}
    assert verdicts["zero lost requests"]["met"], verdicts["zero lost requests"]
    assert verdicts["zero over-limit arrivals"]["met"], verdicts["zero over-limit arrivals"]
    assert verdicts["zero unexpected errors"]["met"], verdicts["zero unexpected errors"]
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(samples) >= 25
    assert set(goals.JUDGED) <= {name for name, kib in samples[-1]["rss_kib"].items() if kib}
    assert all(s["gateway"] is not None and s["referee"] is not None for s in samples)
    assert summary["load"]["KIS"]["answered"] > 500 and summary["load"]["KIWOOM"]["answered"] > 100
    text = (tmp_path / "SOAK.md").read_text()
    assert "short smoke run" in text and "| zero lost requests |" in text
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (run_dir / "kafka" / "data").exists(), "the run's broker data should be removed"
