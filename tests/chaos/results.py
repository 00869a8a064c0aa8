"""One scenario's figures, written by its test and read by the report that rewrites docs/RELIABILITY.md.

Every scenario under ``tests/chaos/`` ends with ``record(Outcome(...))``; the zeros the issue asks for
(``lost``, ``upstream_twice``, ``over_limit``) are asserted by the scenario itself, so a run that breaks one
fails and still leaves its figures behind for the report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parents[2] / ".local" / "chaos" / "results"


@dataclass(frozen=True)
class Outcome:
    """What one scenario measured; ``answered`` counts terminal answers by status."""

    scenario: str  # a short slug: "gateway-sigkill", "kafka-rolling-restart", ...
    title: str  # one line for the report's table
    sent: int
    answered: dict[str, int]
    lost: int  # requests with no terminal answer
    upstream_twice: int  # non-idempotent calls that reached the upstream more than once
    over_limit: int  # arrivals over a key's limit at the referee
    seconds: float  # how long the scenario ran
    notes: list[str] = field(default_factory=list)  # what happened, in a few plain lines

    @property
    def held(self) -> bool:
        """True when every zero holds."""
        return self.lost == 0 and self.upstream_twice == 0 and self.over_limit == 0


def record(outcome: Outcome, directory: Path = RESULTS_DIR) -> Path:
    """Write the outcome as ``<scenario>.json`` (replacing an earlier run's) and return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{outcome.scenario}.json"
    path.write_text(json.dumps(asdict(outcome), indent=2, sort_keys=True) + "\n")
    return path


def load_all(directory: Path = RESULTS_DIR) -> list[Outcome]:
    """Every recorded outcome, by scenario name."""
    if not directory.is_dir():
        return []
    return [Outcome(**json.loads(p.read_text())) for p in sorted(directory.glob("*.json"))]
