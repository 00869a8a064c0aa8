"""The two records a finished recovery task commits, and their idempotent keys.

- ``market.ticks.recovered``, key ``symbol|day|HH:MM-HH:MM``: ``kind: "window", symbol, day, start, end,
  provider, tr_id, ticks: [{time_kst, n, price, volume}], task_id``. Readers build the window's minutes
  from these ticks only, whatever the feed delivered.
- ``verification.tasks``, key = its ``task_id`` ``verify|{symbol}|{day}|{start}-{end}|r{round + 1}``:
  ``task_id, symbol, day, start, end, round`` (the next round), so the repaired window is checked again.

Both are pure functions of the task and the trades: a task done twice writes the same keys and values.
A window whose record would pass ``WINDOW_BYTES`` (a whole session of a busy stock is megabytes, and Kafka
takes 1 MiB a record) is written as consecutive windows of whole minutes, each under it, together
covering the task's window (``window_parts``); readers let each own its minutes, as for any window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from services.recovery.tape import Trade
from services.recovery.task import RecoveryTask

#: Bytes of one window record's ticks at most (as JSON), well under Kafka's 1 MiB a record.
WINDOW_BYTES = 512 * 1024


def window_parts(task: RecoveryTask, trades: Sequence[Trade]) -> list[tuple[RecoveryTask, list[Trade]]]:
    """The task's window as windows of whole minutes, each with its trades and under ``WINDOW_BYTES``
    (one part, the window itself, unless its trades are more; a single minute is never cut)."""
    minute = timedelta(minutes=1)
    parts: list[tuple[datetime, list[Trade]]] = [(task.start_at, [])]
    size = 0
    at = task.start_at
    by_minute: dict[datetime, list[Trade]] = {}
    for trade in trades:
        by_minute.setdefault(trade.time.replace(second=0, microsecond=0), []).append(trade)
    while at < task.end_at:
        held = by_minute.get(at, [])
        grows = sum(len(orjson.dumps(t.as_value())) + 1 for t in held)
        if size + grows > WINDOW_BYTES and parts[-1][1]:
            parts.append((at, []))
            size = 0
        parts[-1][1].extend(held)
        size += grows
        at += minute
    bounds = [start for start, _ in parts] + [task.end_at]
    return [
        (task.model_copy(update={"start": f"{a:%H:%M}", "end": f"{b:%H:%M}"}), held)
        for (a, held), b in zip(parts, bounds[1:], strict=True)
    ]


def window_key(task: RecoveryTask) -> str:
    """``symbol|day|HH:MM-HH:MM``: one key per window, whichever round repaired it."""
    return f"{task.symbol}|{task.day.isoformat()}|{task.window}"


def window_value(task: RecoveryTask, provider: str, tr_id: str, trades: Sequence[Trade]) -> dict[str, Any]:
    """The window record: its trades in tape order and where they came from."""
    return {
        "kind": "window",
        "symbol": task.symbol,
        "day": task.day.isoformat(),
        "start": task.start,
        "end": task.end,
        "provider": provider,
        "tr_id": tr_id,
        "ticks": [trade.as_value() for trade in trades],
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
