"""The sandbox application: one aiohttp server with four simulated broker environments and an admin API.

URL layout (``{root}`` = ``http://{host}:{port}``):

- ``{root}/kis/real``, ``{root}/kis/mock``: KIS Open API base URLs (kis.py)
- ``{root}/kiwoom/real``, ``{root}/kiwoom/mock``: Kiwoom REST API base URLs (kiwoom.py)
- ``{root}/_sandbox/...``: referee, reset, faults, clock, orders (admin.py)
- ``GET {root}/healthz``: ``{"status": "ok"}``

Each environment has its own keys, token store and limits. ``serve`` runs until cancelled.

The app's cleanup contexts, from start-up to cleanup, in whatever loop serves the app (the test's own loop
under aiohttp's ``TestServer``): the connections the loop accepts keep the kernel's receive stamps, the
referee's arrival times (stamps.py), and the event-loop lag monitor runs (looplag.py, reported by the
referee as ``loop_lag``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from services.logs import log_event
from services.sandbox import admin, kis, kiwoom, looplag, stamps
from services.sandbox.settings import SandboxSettings
from services.sandbox.state import STATE, SandboxState

log = logging.getLogger(__name__)

LOOP_LAG_TASK = "sandbox-loop-lag"


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: alive."""
    del request
    return web.json_response({"status": "ok"})


async def loop_lag_monitor(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: run ``looplag.watch`` into the referee's ``loop_lag`` while the app is up."""
    task = asyncio.create_task(looplag.watch(app[STATE].referee.loop_lag), name=LOOP_LAG_TASK)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def receive_stamps(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: accepted connections keep receive stamps while the app is up."""
    del app
    with stamps.installed(asyncio.get_running_loop()):
        yield


def create_app(settings: SandboxSettings) -> web.Application:
    """Build the sandbox application from its settings."""
    app = web.Application()
    app[STATE] = SandboxState(settings)
    app.cleanup_ctx.append(receive_stamps)
    app.cleanup_ctx.append(loop_lag_monitor)
    app.router.add_get("/healthz", healthz)
    admin.add_routes(app)
    kis.add_routes(app)
    kiwoom.add_routes(app)
    return app


async def serve(settings: SandboxSettings) -> None:
    """Serve on ``settings.host:settings.port`` until cancelled, then clean up."""
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        log_event(log, "sandbox.started", host=settings.host, port=settings.port)
        # The referee counts arrivals when a handler starts: keep the long-lived start-up objects (the
        # market, the catalog) out of the collector's full passes so its own pauses stay short.
        gc.freeze()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        log_event(log, "sandbox.stopped", host=settings.host, port=settings.port)
