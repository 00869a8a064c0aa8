"""``apihub audit``: the audit log (``api.requests`` joined with ``api.responses``) over a time range.

The modules, in the order a run uses them:

- ``timerange``: the range from KST or UTC input (ISO 8601 with an offset; a bare time is KST)
- ``reader``: a consumer of its own (no group) seeking each partition by timestamp, bounded in records
  and seconds, with progress on stderr (``progress``)
- ``records``: a Kafka record read as a recorded request, response or dead letter (tolerant of bad bodies)
- ``join``: requests joined with their answers by correlation id, and the filters
- ``stats``: latency percentiles and the status mix
- ``redact``: no secret leaves (``services.logs.SECRET_FIELDS``)
- ``output``: an 80-column table, JSONL or CSV
- ``collect``: the reading and the join together (also what ``apihub replay`` reads with)
- ``command``: the ``apihub audit`` arguments

Errors: ``AuditError`` (bad input, a missing topic) is the one root; the command prints it and exits 2.
"""

from __future__ import annotations


class AuditError(Exception):
    """Bad input to an audit or replay (a range, a topic); the message says what to change."""

    retriable = False
