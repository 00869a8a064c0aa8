"""The two records a finished recovery task commits, and their idempotent keys.

- ``market.ticks.recovered``, key ``symbol|day|HH:MM-HH:MM``: ``kind: "window", symbol, day, start, end,
  provider, tr_id, ticks: [{time_kst, n, price, volume}], task_id``. Readers build the window's minutes
  from these ticks only, whatever the feed delivered.
- ``verification.tasks``, key = its ``task_id`` ``verify|{symbol}|{day}|{start}-{end}|r{round + 1}``:
  ``task_id, symbol, day, start, end, round`` (the next round), so the repaired window is checked again.

Both are pure functions of the task and the trades: a task done twice writes the same keys and values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.recovery.tape import Trade
from services.recovery.task import RecoveryTask


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
