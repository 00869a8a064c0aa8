"""The ``apihub status`` loop: scrape every service, build the frame, draw it, until Ctrl-C.

On a terminal each frame is redrawn in place with plain ANSI sequences (cursor home, erase to the end of
each line and below the frame, cursor hidden while running and shown again on exit), so it works over SSH
in any VT100-compatible terminal without curses. It is cut to the terminal's width and height (layout
for 80 columns). When the output is not a terminal, frames are printed one after another, separated by a
blank line.

``--once`` scrapes twice, ``interval_s`` apart (rates need two scrapes), prints one frame without escape
sequences and returns 0 when every service answered, 1 when one is down. The live loop draws its first
frame at once (totals; rates from the second frame on), then one every ``interval_s``; SIGINT (Ctrl-C)
or SIGTERM ends it within a moment, mid-scrape included, and it returns 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import time
from datetime import datetime
from typing import Any, TextIO, TypeVar

import aiohttp

from hubclient.market import KST
from services.status.render import WIDTH, render
from services.status.scrape import scrape_round
from services.status.targets import Targets
from services.status.view import Round, StatusView, build_view

T = TypeVar("T")

HIDE_CURSOR = "\x1b[?25l"
SHOW_CURSOR = "\x1b[?25h"
CLEAR_SCREEN = "\x1b[2J"
HOME = "\x1b[H"
ERASE_LINE_END = "\x1b[K"
ERASE_BELOW = "\x1b[J"


def ansi_frame(lines: list[str]) -> str:
    """A frame drawn over the previous one: home, each line erased to its end, the rest erased."""
    return HOME + "".join(f"{line}{ERASE_LINE_END}\n" for line in lines) + ERASE_BELOW


def all_up(view: StatusView) -> bool:
    """True when the gateway and every worker answered."""
    return view.gateway.up and all(w.up for w in view.workers)


class _Screen:
    """Where frames go: redrawn in place on a terminal, appended otherwise."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._drawn = False

    def draw(self, view: StatusView) -> None:
        if not self._tty:
            text = "\n".join(render(view, WIDTH))
            self._out.write(("\n" if self._drawn else "") + text + "\n")
        else:
            columns, rows = shutil.get_terminal_size((WIDTH, 24))
            lines = render(view, max(columns, 20))[: max(rows - 1, 1)]
            self._out.write((HIDE_CURSOR + CLEAR_SCREEN if not self._drawn else "") + ansi_frame(lines))
        self._drawn = True
        self._out.flush()

    def close(self) -> None:
        if self._tty and self._drawn:
            self._out.write(SHOW_CURSOR)
            self._out.flush()


async def _until(stop: asyncio.Event, awaitable: asyncio.Future[T]) -> T | None:
    """The awaitable's result, or None (and the awaitable cancelled) if ``stop`` is set first."""
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([awaitable, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not awaitable.done():
        awaitable.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await awaitable
        return None
    return awaitable.result()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(seconds, 0.0))


async def run_status(
    targets: Targets, *, interval_s: float, timeout_s: float, once: bool, out: TextIO, stop: asyncio.Event
) -> int:
    """Watch ``targets`` until ``stop`` is set (or one frame with ``once``); the exit code."""
    screen = _Screen(out)
    before: Round | None = None
    async with aiohttp.ClientSession() as session:
        try:
            while not stop.is_set():
                started = time.monotonic()
                scraping = asyncio.ensure_future(scrape_round(session, targets.endpoints, timeout_s))
                current = await _until(stop, scraping)
                if current is None:
                    break
                view = build_view(before, current, targets, datetime.now(KST))
                if once and before is not None:
                    out.write("\n".join(render(view, WIDTH)) + "\n")
                    out.flush()
                    return 0 if all_up(view) else 1
                if not once:
                    screen.draw(view)
                before = current
                await _sleep(stop, started + interval_s - time.monotonic())
        finally:
            screen.close()
    return 0


def run(targets: Targets, *, interval_s: float, timeout_s: float, once: bool, out: TextIO) -> int:
    """``run_status`` in its own event loop, SIGINT and SIGTERM ending it cleanly."""

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await run_status(
            targets, interval_s=interval_s, timeout_s=timeout_s, once=once, out=out, stop=stop
        )

    return asyncio.run(main())
