"""The two records a finished recovery task commits, and their idempotent keys.

- ``market.ticks.recovered``, key ``symbol|day|HH:MM-HH:MM``: ``kind: "window", symbol, day, start, end,
  provider, tr_id, ticks: [{time_kst, n, price, volume}], task_id``. Readers build the window's minutes
  from these ticks only, whatever the feed delivered. A window in parts (below) adds ``|{part}/{parts}``
  to the key and ``part, parts`` (1-based) to the value.
- ``verification.tasks``, key = its ``task_id`` ``verify|{symbol}|{day}|{start}-{end}|r{round + 1}``:
  ``task_id, symbol, day, start, end, round`` (the next round), so the repaired window is checked again.

Both are pure functions of the task and the trades: a task done twice writes the same keys and values.

Kafka takes 1 MiB a record and a whole session of a busy stock is megabytes, so no record's ``ticks`` take
more than ``WINDOW_BYTES`` as JSON (``window_records``). A window whose trades do is written as
consecutive windows of whole minutes, each under it, together covering the task's window; readers let
each own its minutes, as for any window. A window still over it (one minute of more than about 6,000
trades: a busy stock at the open) is written in parts: ``parts`` records with the window's ``start`` and
``end``, the same ``task_id``, ``part`` 1 to ``parts``, whose ``ticks`` are consecutive runs of its
trades. The window is their ``ticks`` joined in ``part`` order, and a reader applies it once it has read
every part (they are committed in one transaction, but their keys may place them on different
partitions). A record without ``parts`` is a whole window, as every window was before parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson

from services.recovery.tape import Trade
from services.recovery.task import RecoveryTask

#: Bytes of one window record's ticks at most (as JSON), well under Kafka's 1 MiB a record.
WINDOW_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class WindowRecord:
    """One ``market.ticks.recovered`` record: ``window`` is the task with this record's ``start`` and
    ``end``, ``trades`` its trades in tape order and ``ticks`` the JSON array of them it carries, ``part``
    of ``parts`` (1 of 1 for a whole window)."""

    window: RecoveryTask
    trades: list[Trade]
    ticks: bytes
    part: int = 1
    parts: int = 1


def _runs(items: Sequence[bytes]) -> list[tuple[int, int]]:
    """``items`` (JSON values) as consecutive runs ``[begin, end)``, each as a JSON array at most
    ``WINDOW_BYTES``; one run, maybe empty, when they all fit."""
    runs: list[tuple[int, int]] = []
    begin, size = 0, 1  # an array takes an opening bracket and each item with the comma or bracket after it
    for i, item in enumerate(items):
        if size + len(item) + 1 > WINDOW_BYTES and i > begin:
            runs.append((begin, i))
            begin, size = i, 1
        size += len(item) + 1
    runs.append((begin, len(items)))
    return runs


def window_records(task: RecoveryTask, trades: Sequence[Trade]) -> list[WindowRecord]:
    """The window records of ``task``'s trades (tape order, all inside its window, as ``window_trades``
    gives them): consecutive windows of whole minutes, one unless the trades take more than
    ``WINDOW_BYTES``; a window of one busy minute that still does is cut into parts."""
    minute = timedelta(minutes=1)
    encoded = [orjson.dumps(trade.as_value()) for trade in trades]  # once: measured, then carried
    starts = [(task.start_at, 0)]  # each window's first minute and first trade
    size = 1  # of the last window's ticks as JSON
    begin = 0  # the first trade of the minute at hand
    at = task.start_at
    while at < task.end_at:
        end = begin
        while end < len(trades) and trades[end].time < at + minute:
            end += 1
        grows = sum(len(item) + 1 for item in encoded[begin:end])
        if size + grows > WINDOW_BYTES and begin > starts[-1][1]:
            starts.append((at, begin))
            size = 1
        size += grows
        begin = end
        at += minute
    records: list[WindowRecord] = []
    for (start_at, first), (end_at, last) in zip(
        starts, [*starts[1:], (task.end_at, len(trades))], strict=True
    ):
        window = task.model_copy(update={"start": f"{start_at:%H:%M}", "end": f"{end_at:%H:%M}"})
        runs = _runs(encoded[first:last])
        for part, (a, b) in enumerate(runs, start=1):
            ticks = b"[" + b",".join(encoded[first + a : first + b]) + b"]"  # as orjson writes the list
            records.append(WindowRecord(window, list(trades[first + a : first + b]), ticks, part, len(runs)))
    return records


def window_key(record: WindowRecord) -> str:
    """``symbol|day|HH:MM-HH:MM``: one key per window, whichever round repaired it; a part of a window
    adds ``|{part}/{parts}``."""
    task = record.window
    key = f"{task.symbol}|{task.day.isoformat()}|{task.window}"
    return key if record.parts == 1 else f"{key}|{record.part}/{record.parts}"


def window_value(record: WindowRecord, provider: str, tr_id: str) -> dict[str, Any]:
    """The window record: its trades in tape order and where they came from (``ticks`` as serialised by
    ``window_records``); ``part`` and ``parts`` only on a window in parts."""
    task = record.window
    shape = {"part": record.part, "parts": record.parts} if record.parts > 1 else {}
    return {
        "kind": "window",
        "symbol": task.symbol,
        "day": task.day.isoformat(),
        "start": task.start,
        "end": task.end,
        **shape,
        "provider": provider,
        "tr_id": tr_id,
        "ticks": orjson.Fragment(record.ticks),
        "task_id": task.task_id,
    }


def reverify_task_id(task: RecoveryTask) -> str:
    """``verify|{symbol}|{day}|{start}-{end}|r{round + 1}``."""
    return f"verify|{task.symbol}|{task.day.isoformat()}|{task.window}|r{task.round + 1}"


def reverify_value(task: RecoveryTask) -> dict[str, Any]:
    """The verification task for the same window in the next round."""
    return {
        "task_id": reverify_task_id(task),
        "symbol": task.symbol,
        "day": task.day.isoformat(),
        "start": task.start,
        "end": task.end,
        "round": task.round + 1,
    }
