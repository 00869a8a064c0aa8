"""``apihub replay``: recorded requests of a time range sent again, the answers compared with the log's.

Where the requests go (``--target``):

- ``sandbox`` (the default): through a hub of the replay's own: a gateway started inside the command, on
  replay topics (``apihub.replay.requests`` / ``.responses`` / ``.dlq``, created when missing) in its own
  consumer group (``apihub.replay.gateway``) with its own Redis keys (``apihub.replay:``), calling only the
  sandbox at ``--sandbox-url`` (checked to be the sandbox before anything is sent). Pacing, tokens,
  retries and classification are the hub's own code, and no running gateway sees a replayed request.
- ``hub``: into a running hub's request topic (``api.requests`` by default) and its reply topic, served by
  whatever gateway consumes it, which may call a live broker: refused without ``--live``.

Either way each request goes with a new request id, the caller tagged ``replay/<original caller>``,
priority ``bulk``, a fresh deadline and no idempotency key; a non-idempotent call (an order: the catalog's
``idempotent`` is False) is skipped unless named one by one with ``--include-order REQUEST_ID``. The
recorded log is read as ``apihub audit`` reads it (no consumer group).

Modules: ``plan`` (which recorded requests are sent, and as what: pure), ``compare`` (recorded answer vs
new one, volatile fields ignored: pure), ``hub`` (the sandbox hub), ``sender`` (send and wait by request
id), ``report`` (table or JSONL), ``options`` (the arguments and what they ask for), ``command`` (a run).
Errors: ``ReplayError``, printed by the
command with exit code 2.
"""

from __future__ import annotations

from services.audit import AuditError


class ReplayError(AuditError):
    """A replay that must not or cannot run (no --live for a hub, not a sandbox, named ids not found)."""
