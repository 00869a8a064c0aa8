"""The verification policy as a pure function: ``judge`` compares a window's minutes, giving a ``Verdict``.

The brokers' REST answer is the ground truth. For every minute of the window:

- the reference bar is KIS's; where KIS reports no bar for a minute Kiwoom reports, Kiwoom's;
- KIS and Kiwoom disagreeing (a differing field, or a bar only one of them reports) is a ``Disagreement``
  naming the fields (``kis_missing`` / ``kiwoom_missing`` for a one-sided bar); the minute is still judged
  against the reference, and the disagreement is not a problem of the collected data;
- a reference bar and no collected trades: ``gap``;
- a reference bar and collected trades whose bar differs in any of open, high, low, close, volume:
  ``mismatch`` naming those fields;
- collected trades in a minute no broker reports: ``mismatch`` naming all five fields (nothing traded
  there, so every value is wrong);
- anything else is fine.

``minutes`` counts the minutes judged (those with a reference bar or collected trades). Problems are
contiguous runs of minutes of one kind; a run's ``fields`` is the union of its minutes' fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from services.verification.minutes import FIELDS, MinuteBar, Window

Kind = Literal["gap", "mismatch"]


@dataclass(frozen=True, slots=True)
class Problem:
    """Minutes ``start`` to ``end`` (exclusive) of one kind; ``fields`` in ``FIELDS`` order (none: gap)."""

    start: int
    end: int
    kind: Kind
    fields: tuple[str, ...] = ()

    @property
    def minutes(self) -> int:
        """Length of the run in minutes."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Disagreement:
    """A minute where KIS and Kiwoom differ, and in what."""

    minute: int
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one window."""

    minutes: int
    problems: tuple[Problem, ...]
    disagreements: tuple[Disagreement, ...]

    @property
    def status(self) -> Literal["verified", "problems"]:
        """``verified`` when no minute has a problem (disagreements alone do not count)."""
        return "problems" if self.problems else "verified"


def differing(left: MinuteBar, right: MinuteBar) -> tuple[str, ...]:
    """Names of the fields where two bars differ, in ``FIELDS`` order."""
    return tuple(name for name, a, b in zip(FIELDS, left.values(), right.values(), strict=True) if a != b)


def _disagreement(minute: int, kis: MinuteBar | None, kiwoom: MinuteBar | None) -> Disagreement | None:
    if kis is None and kiwoom is None:
        return None
    if kis is None:
        return Disagreement(minute, ("kis_missing",))
    if kiwoom is None:
        return Disagreement(minute, ("kiwoom_missing",))
    fields = differing(kis, kiwoom)
    return Disagreement(minute, fields) if fields else None


def _minute_problem(
    reference: MinuteBar | None, collected: MinuteBar | None
) -> tuple[Kind, tuple[str, ...]] | None:
    if reference is None:
        return None if collected is None else ("mismatch", FIELDS)
    if collected is None:
        return "gap", ()
    fields = differing(reference, collected)
    return ("mismatch", fields) if fields else None


def _merge(runs: list[Problem], minute: int, kind: Kind, fields: tuple[str, ...]) -> None:
    last = runs[-1] if runs else None
    if last is not None and last.kind == kind and last.end == minute:
        union = tuple(name for name in FIELDS if name in last.fields or name in fields)
        runs[-1] = Problem(last.start, minute + 1, kind, union)
    else:
        runs.append(Problem(minute, minute + 1, kind, tuple(name for name in FIELDS if name in fields)))


def judge(
    window: Window,
    collected: Mapping[int, MinuteBar],
    kis: Mapping[int, MinuteBar],
    kiwoom: Mapping[int, MinuteBar],
) -> Verdict:
    """Judge the minutes of ``window`` built from collected trades against the brokers' bars."""
    problems: list[Problem] = []
    disagreements: list[Disagreement] = []
    judged = 0
    for minute in sorted(m for m in {*collected, *kis, *kiwoom} if m in window):
        disagreement = _disagreement(minute, kis.get(minute), kiwoom.get(minute))
        if disagreement is not None:
            disagreements.append(disagreement)
        reference = kis[minute] if minute in kis else kiwoom.get(minute)
        judged += 1
        found = _minute_problem(reference, collected.get(minute))
        if found is not None:
            _merge(problems, minute, *found)
    return Verdict(judged, tuple(problems), tuple(disagreements))
