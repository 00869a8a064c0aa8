"""verification-worker: checks the collected minutes of a window against KIS and Kiwoom (``docs/WORKERS.md``).

Modules, in the order a task meets them:

- ``task``: ``VerificationTask`` (symbol, day, window, round) read from ``verification.tasks``;
- ``tick_store``: ``TickStore`` reads ``market.ticks`` and ``market.ticks.recovered`` into a ``tape.TickBook``
  (deduplication, recovered windows replacing the feed, minute bars from trades);
- ``brokers``: the same minutes from KIS (``FHKST03010200``/``FHKST03010230``) and Kiwoom (``ka10080``)
  through the hub;
- ``policy``: ``judge``, the comparison as a pure function (gaps, mismatches, KIS/Kiwoom disagreements);
- ``records``: the result and recovery-task records;
- ``worker``: ``VerificationConsumer``, the runtime's handler, and ``build``.

``minutes`` holds the shared value types (``Window``, ``MinuteBar``). Errors are the worker runtime's
(``services.worker.errors``): a malformed task is ``MalformedTask``; trades that cannot be caught up and
brokers that keep failing are ``TaskFailed`` (reasons ``ticks_behind``, ``ticks_unavailable``,
``gave_up:...``, ``refused:...``), dead-lettered by the runtime.
"""
