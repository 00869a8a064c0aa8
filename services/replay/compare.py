"""A replayed answer against the recorded one: status, reason, codes and data, volatile fields ignored.

Data are compared to any depth; a difference is reported at its path (``output.stck_prpr``,
``output2[3].cntg_vol``), a list of another length once at the list. Fields are ignored by key name or
path with shell patterns, case-insensitively: by default the ones that differ between two calls of the
same request by nature (times of day, order numbers). Secret fields are redacted on both sides first,
so a report never shows one.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hubclient.models import ApiResponse
from services.audit.redact import redact

#: Volatile by nature: clock times (KIS *_hour / *tmd / *_time, Kiwoom *_tm / tm), order numbers.
DEFAULT_IGNORE = ("*hour*", "*tmd", "*time*", "*_tm", "tm", "odno", "ord_no", "*orgno*", "orgn_ord_no")
MAX_DIFFERENCES = 20  # per request; more are counted, not listed
#: Stands for a value that is not there: a key on one side only, or no recorded answer at all.
MISSING = "(missing)"
NOT_RECORDED = "(no recorded answer)"


@dataclass(frozen=True)
class Difference:
    """Where the answers differ, and the two values (``recorded`` None when nothing was recorded)."""

    path: str
    recorded: Any
    replayed: Any


def _ignored(path: str, key: str, patterns: Sequence[str]) -> bool:
    name, where = key.casefold(), path.casefold()
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(where, p) for p in patterns)


def diff_data(
    recorded: Any, replayed: Any, ignore: Sequence[str], *, path: str = "data", out: list[Difference]
) -> None:
    """Append the differences between two JSON values to ``out``."""
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        for key in [*recorded, *(k for k in replayed if k not in recorded)]:
            where = f"{path}.{key}"
            if _ignored(where, str(key), ignore):
                continue
            if key not in replayed:
                out.append(Difference(where, recorded[key], MISSING))
            elif key not in recorded:
                out.append(Difference(where, MISSING, replayed[key]))
            else:
                diff_data(recorded[key], replayed[key], ignore, path=where, out=out)
    elif isinstance(recorded, list) and isinstance(replayed, list):
        if len(recorded) != len(replayed):
            out.append(Difference(f"{path}[]", f"{len(recorded)} items", f"{len(replayed)} items"))
        for index, (old, new) in enumerate(zip(recorded, replayed, strict=False)):
            diff_data(old, new, ignore, path=f"{path}[{index}]", out=out)
    elif recorded != replayed or type(recorded) is not type(replayed):
        out.append(Difference(path, recorded, replayed))


def compare(
    recorded: ApiResponse | None, replayed: ApiResponse, ignore: Sequence[str] = DEFAULT_IGNORE
) -> list[Difference]:
    """The differences of ``replayed`` from ``recorded`` (everything differs from no recorded answer)."""
    patterns = [p.casefold() for p in ignore]
    if recorded is None:
        return [Difference("status", NOT_RECORDED, replayed.status.value)]
    out = [
        Difference(name, old, new)
        for name, old, new in (
            ("status", recorded.status.value, replayed.status.value),
            ("reason", recorded.reason, replayed.reason),
            ("http_status", recorded.http_status, replayed.http_status),
            ("provider_code", recorded.provider_code, replayed.provider_code),
        )
        if old != new
    ]
    diff_data(redact(recorded.data), redact(replayed.data), patterns, out=out)
    return out
