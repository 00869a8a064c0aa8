"""``make soak``: the production profile for ten minutes or more, sampled, judged and written up.

One run starts its own stack on free loopback ports (never the shared one on 19092/16379): a Kafka broker
and a Redis of its own, the sandbox standing in for the brokers, the gateway configured as
``gateway-worker-real`` is in ``.env.prod.example``, the three workers and the market feed following the
clock. A load generator sends reads through the hub at 80 % of the KIS and Kiwoom limits while history
jobs and verification tasks keep the workers busy. Every few seconds it samples memory, lag, errors and
pacing; at the end it judges the goals and writes ``SOAK.md`` and ``soak.png``.

Modules, in the order a run uses them: ``profile`` (the processes' environments), ``stack`` (starting and
stopping them), ``load`` (the load generator and its tally), ``work`` (the workers' tasks), ``sample``
(one sample of everything), ``goals`` (the verdicts), ``report`` and ``plot`` (the write-up), ``__main__``
(``python -m tests.soak``).
"""
