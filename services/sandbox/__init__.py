"""Sandbox: faithful local KIS and Kiwoom REST servers, a deterministic market, and a referee.

Modules, in the order a request meets them:

- ``app``: ``create_app(settings)`` / ``serve(settings)``; URL layout ``/kis/{real,mock}``,
  ``/kiwoom/{real,mock}``, ``/_sandbox/*``, ``/healthz``
- ``settings``: ``SandboxSettings`` (env prefix ``APIHUB_SANDBOX__``) and ``FaultSettings``
- ``state``: everything one process holds, reachable as ``request.app[STATE]``
- ``wire``: the gate every provider call passes (arrival jitter, arrival counted, faults, per-second limit)
- ``referee``: sliding-window limits counted on arrival and the stats report
- ``looplag``: the event-loop lag monitor (real monotonic clock) the referee reports as ``loop_lag``
- ``tokens``: credentials, key-to-environment binding, token issuance and validity
- ``faults``: arrival jitter, latency, 5xx, dropped connections, maintenance, timed-out orders
- ``kis`` (routing and OAuth), ``kis_envelope``, ``kis_quotes``, ``kis_trading``
- ``kiwoom`` (routing, OAuth, orders), ``kiwoom_envelope``, ``kiwoom_charts``
- ``endpoints``: which ``hubclient.catalog`` entry a request names and whether its server (real or mock)
  serves it; ``generic_kis`` / ``generic_kiwoom`` answer every entry without a dedicated simulation, with
  ``generic`` (the request's basis, filling the parts), ``shapes`` (what an answer holds, by endpoint) and
  ``fake_data`` (values by field name)
- ``clock``: simulated KST wall time and the monotonic source of the limiter
- ``market`` (the seeded generator, public ``Market.ticks/minute_bars/daily_bars``), ``bars`` (value
  types and KRX price rules), ``symbols`` (the symbol master)
- ``admin``: ``/_sandbox/stats``, ``reset``, ``faults``, ``clock``, ``orders``, ``symbols``
"""
