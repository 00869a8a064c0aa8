"""The audit's time range: instants given in KST or UTC, durations, and how they are shown.

Accepted instants (``parse_instant``):

- ISO 8601 with an offset: ``2026-11-27T09:00:00+09:00``, ``2026-11-27T00:00:00Z``;
- ISO 8601 without one, which means KST: ``2026-11-27T09:00``, ``2026-11-27 09:00:00``, ``2026-11-27``
  (midnight KST);
- a time of day, today in KST: ``09:30``, ``09:30:15``;
- ``now``, or ``now-15m`` (``s``, ``m``, ``h``, ``d``);
- epoch milliseconds (13 digits), as Kafka tools print them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, timezone

from services.audit import AuditError

KST = timezone(timedelta(hours=9), "KST")
DEFAULT_LAST_MS = 15 * 60 * 1000  # without --from or --last: the last 15 minutes
FORMS = (
    "ISO 8601 with an offset (2026-11-27T09:00:00+09:00, ...Z), a bare date or time meaning KST "
    "(2026-11-27T09:00, 2026-11-27, 09:30), now, now-15m, or epoch milliseconds"
)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_RELATIVE = re.compile(r"^now\s*-\s*(.+)$")
_TIME_OF_DAY = re.compile(r"^\d{1,2}:\d{2}(:\d{2}(\.\d{1,6})?)?$")
_EPOCH_MS = re.compile(r"^\d{13}$")


def parse_duration_ms(text: str) -> int:
    """``15m``, ``2h``, ``90s``, ``1d``, ``500ms`` in milliseconds; raises ``AuditError`` otherwise."""
    match = _DURATION.match(text.strip().lower())
    if match is None:
        raise AuditError(f"{text!r} is not a duration (use e.g. 90s, 15m, 2h, 1d)")
    value_ms = int(float(match.group(1)) * _UNIT_MS[match.group(2)])
    if value_ms <= 0:
        raise AuditError(f"{text!r} is not a positive duration")
    return value_ms


def _epoch_ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def parse_instant(text: str, now_ms: int) -> int:
    """Epoch milliseconds of ``text`` (one of the module's forms); a bare date or time is KST."""
    value = text.strip()
    lowered = value.lower()
    if lowered == "now":
        return now_ms
    relative = _RELATIVE.match(lowered)
    if relative is not None:
        return now_ms - parse_duration_ms(relative.group(1))
    if _EPOCH_MS.match(value):
        return int(value)
    try:
        if _TIME_OF_DAY.match(value):
            hour, rest = value.split(":", 1)
            today = datetime.fromtimestamp(now_ms / 1000, KST).date()
            moment = datetime.combine(today, time.fromisoformat(f"{int(hour):02d}:{rest}"))
        else:
            moment = datetime.fromisoformat(value)
    except ValueError:
        raise AuditError(f"{text!r} is not a time: use {FORMS}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=KST)
    return _epoch_ms(moment)


@dataclass(frozen=True)
class TimeRange:
    """``[start_ms, end_ms)`` in epoch milliseconds."""

    start_ms: int
    end_ms: int

    def __contains__(self, at_ms: object) -> bool:
        return isinstance(at_ms, int) and self.start_ms <= at_ms < self.end_ms

    @property
    def span_ms(self) -> int:
        """The range's length in milliseconds."""
        return self.end_ms - self.start_ms


def resolve_range(start: str | None, end: str | None, last: str | None, now_ms: int) -> TimeRange:
    """The range of ``--from``/``--to``/``--last``: ``--to`` defaults to now, ``--last D`` means
    ``[to - D, to)``, and with neither ``--from`` nor ``--last`` the last 15 minutes."""
    if start is not None and last is not None:
        raise AuditError("give --from or --last, not both")
    start_ms = None if start is None else parse_instant(start, now_ms)  # first, so a bad --from is named
    end_ms = now_ms if end is None else parse_instant(end, now_ms)
    if start_ms is None:
        start_ms = end_ms - (DEFAULT_LAST_MS if last is None else parse_duration_ms(last))
    if start_ms >= end_ms:
        raise AuditError(f"the range is empty: {format_kst(start_ms)} is not before {format_kst(end_ms)} KST")
    if start_ms < 0:
        raise AuditError("the range starts before 1970")
    return TimeRange(start_ms, end_ms)


def format_kst(at_ms: int, *, ms: bool = False) -> str:
    """``2026-11-27 09:00:00`` (``.123`` with ``ms``) in KST."""
    moment = datetime.fromtimestamp(at_ms / 1000, KST)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{at_ms % 1000:03d}" if ms else text


def iso_kst(at_ms: int) -> str:
    """ISO 8601 with the KST offset and milliseconds: ``2026-11-27T09:00:00.123+09:00``."""
    return datetime.fromtimestamp(at_ms / 1000, KST).isoformat(timespec="milliseconds")


def describe(time_range: TimeRange) -> list[str]:
    """``["2026-11-27 09:00:00 → 10:00:00 KST", "(00:00:00 → 01:00:00 UTC)"]``: both ends in both zones,
    as items a header wraps (a range across UTC midnight names both UTC dates and needs a line more)."""
    start_kst, end_kst = format_kst(time_range.start_ms), format_kst(time_range.end_ms)
    utc = [datetime.fromtimestamp(t / 1000, UTC) for t in (time_range.start_ms, time_range.end_ms)]
    same_day = start_kst[:10] == end_kst[:10]
    same_utc_day = utc[0].date() == utc[1].date()
    kst_text = f"{start_kst} → {end_kst[11:] if same_day else end_kst} KST"
    utc_format = "%H:%M:%S" if same_utc_day else "%Y-%m-%d %H:%M:%S"
    return [kst_text, f"({utc[0].strftime(utc_format)} → {utc[1].strftime(utc_format)} UTC)"]
