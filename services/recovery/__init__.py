"""recovery-worker (``BackfillManager``): refetches the trades of a window the feed got wrong.

A task on ``recovery.tasks`` names a symbol, a day and a window (``start``/``end``, KST, end exclusive).
The worker reads the window's trades from the broker through the hub, publishes them as one window record
on ``market.ticks.recovered`` (several when they pass 512 kB as JSON: windows of whole minutes, a minute
still too busy in parts) and asks for the window to be verified again, all in the task's transaction.

Modules, in the order a task passes through them:

- ``task``    the task's fields and checks (``RecoveryTask``)
- ``fetch``   the hub calls: Kiwoom ``ka10079`` paged back to the window's start, KIS ``FHKST01010300``
              when Kiwoom refuses and the window lies within today's latest trades
- ``tape``    pure policy: joining overlapping pages, when the walk has gone far enough, numbering the
              trades within each second and cutting the window
- ``records`` the two output records (window and re-verification task), their idempotent keys, and a
              window too large for one record cut into several
- ``worker``  ``BackfillManager``, the runtime's ``Handler``, and ``build(settings, hub)``
"""
