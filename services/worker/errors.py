"""Errors of the worker runtime.

WorkerError              root; ``reason`` is the machine-readable word written to the dead-letter topic
├── MalformedTask        the record is not a task this worker can read (dead-lettered at once)
└── TaskFailed           the task cannot be done: the hub refused it for good, it kept failing until the
                         task's deadline, or an output is too large for Kafka (dead-lettered with the
                         last error, never dropped)
"""

from __future__ import annotations


class WorkerError(Exception):
    """Root of the worker runtime's errors."""

    retriable = False
    reason = "worker_error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class MalformedTask(WorkerError):
    """The task record cannot be read: not JSON, not an object, or a field missing or wrong."""

    reason = "malformed"


class TaskFailed(WorkerError):
    """The task was given up; ``reason`` says why (``gave_up``, ``refused``, ``output_too_large``, ...)."""

    reason = "failed"
