"""The records a verification task writes (see ``docs/WORKERS.md``), as pure functions of task and verdict.

- ``result``: one per task on ``verification.results``, key = the task's ``task_id``.
- ``recovery_tasks``: one per problem on ``recovery.tasks`` while ``round < MAX_ROUNDS``, key =
  ``recover|{symbol}|{day}|{start}-{end}|r{round}``; a redone task writes the same keys and values.
"""

from __future__ import annotations

from typing import Any

from services.verification.minutes import hhmm
from services.verification.policy import Problem, Verdict
from services.verification.task import VerificationTask

#: Rounds after which a window's problems are reported only: no more recovery tasks.
MAX_ROUNDS = 3


def result(task: VerificationTask, verdict: Verdict) -> dict[str, Any]:
    """The ``verification.results`` value of ``task``."""
    return {
        "task_id": task.task_id,
        "symbol": task.symbol,
        "day": task.day.isoformat(),
        "start": task.start,
        "end": task.end,
        "round": task.round,
        "status": verdict.status,
        "minutes": verdict.minutes,
        "problems": [
            {
                "start": hhmm(p.start),
                "end": hhmm(p.end),
                "kind": p.kind,
                "minutes": p.minutes,
                "fields": list(p.fields),
            }
            for p in verdict.problems
        ],
        "disagreements": [
            {"minute": hhmm(d.minute), "fields": list(d.fields)} for d in verdict.disagreements
        ],
    }


def recovery_task_id(task: VerificationTask, problem: Problem) -> str:
    """``recover|{symbol}|{day}|{start}-{end}|r{round}``."""
    window = f"{hhmm(problem.start)}-{hhmm(problem.end)}"
    return f"recover|{task.symbol}|{task.day.isoformat()}|{window}|r{task.round}"


def recovery_tasks(task: VerificationTask, verdict: Verdict) -> list[dict[str, Any]]:
    """The ``recovery.tasks`` values for ``verdict``'s problems; none from round ``MAX_ROUNDS`` on."""
    if task.round >= MAX_ROUNDS:
        return []
    return [
        {
            "task_id": recovery_task_id(task, problem),
            "symbol": task.symbol,
            "day": task.day.isoformat(),
            "start": hhmm(problem.start),
            "end": hhmm(problem.end),
            "round": task.round,
            "reason": problem.kind,
        }
        for problem in verdict.problems
    ]
