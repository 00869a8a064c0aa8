"""history-collector: minute and daily candle history fetched through the hub into ``market.candles``.

Read in this order:

- ``job``: the task on ``history.jobs`` (``HistoryJob``) and how a record becomes one.
- ``plan``: pure policy: the pieces of a job (symbol-days for ``1m``, symbols for ``1d``), when a session is
  closed, which tr_id and parameters fetch a piece, when paging has covered it.
- ``records``: the keys and values written to ``market.candles`` and ``history.progress``.
- ``progress``: what ``history.progress`` says is already held (``ProgressBook``) and the Kafka reader that
  fills it (``ProgressReader``).
- ``fetch``: one piece's pages through ``hubclient.paginate``, retried inside the task's deadline.
- ``worker``: the ``Handler`` the worker runtime runs (``build(settings, hub)``).
- ``collect``: ``apihub history collect``: publish a job and follow its progress with a bar.
"""
