"""Prometheus metrics of the workers, labelled by worker name."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

TASKS = Counter(
    "apihub_worker_tasks_total",
    "Tasks finished, by outcome: done, failed (dead-lettered after the hub kept failing), malformed",
    ["worker", "outcome"],
)
RETRIES = Counter(
    "apihub_worker_retries_total", "Hub calls retried after a retriable error", ["worker", "reason"]
)
OUTPUTS = Counter("apihub_worker_outputs_total", "Records committed to an output topic", ["worker", "topic"])
TASK_SECONDS = Histogram(
    "apihub_worker_task_seconds",
    "Seconds from a task's start to its commit",
    ["worker"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
