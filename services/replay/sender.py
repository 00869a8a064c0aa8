"""Sending replayed requests through a hub's request topic and waiting for each one's answer.

A ``hubclient`` transport carries them (its reply listener holds one reply partition by hand, no consumer
group); answers are matched by request id. At most ``concurrency`` requests wait at once; each waits until
its deadline plus ``REPLY_MARGIN_S``, and nothing new is sent after ``max_s`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from pydantic import ValidationError

from hubclient.errors import HubError
from hubclient.models import ApiRequest, ApiResponse
from hubclient.transport import Transport
from services.audit.progress import Progress

REPLY_MARGIN_S = 2.0  # the gateway answers by the deadline; this covers the reply's way back


@dataclass(frozen=True)
class Sent:
    """A replayed request and its answer, or why there is none."""

    request: ApiRequest
    response: ApiResponse | None
    problem: str | None = None


class ReplaySender:
    """Sends requests over ``transport`` and collects their answers; ``async with`` starts and stops it."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._waiting: dict[str, asyncio.Future[ApiResponse]] = {}
        self._started = False

    async def start(self) -> None:
        """Connect; the reply address is known once this returns."""
        await self._transport.start(self._on_reply)
        self._started = True

    async def stop(self) -> None:
        """Close the transport."""
        self._started = False
        await self._transport.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def reply_address(self) -> tuple[str, int]:
        """The reply topic and partition answers come back on."""
        return self._transport.reply_topic, self._transport.reply_partition

    def _on_reply(self, value: bytes) -> None:
        try:
            response = ApiResponse.from_json(value)
        except (ValidationError, ValueError):
            return  # not ours to judge: the audit of the replay topics shows it
        future = self._waiting.get(response.request_id)
        if future is not None and not future.done():
            future.set_result(response)

    async def send(self, request: ApiRequest) -> Sent:
        """Send one request and wait for its answer until its deadline (plus a margin)."""
        if not self._started:
            raise HubError("start the ReplaySender before sending")
        future: asyncio.Future[ApiResponse] = asyncio.get_running_loop().create_future()
        self._waiting[request.request_id] = future
        try:
            try:
                await self._transport.send(request)
            except HubError as exc:
                return Sent(request, None, f"not sent: {exc}")
            wait_s = max(0.0, request.deadline_ms / 1000 - time.time()) + REPLY_MARGIN_S
            try:
                async with asyncio.timeout(wait_s):
                    return Sent(request, await future)
            except TimeoutError:
                return Sent(request, None, f"no answer within {wait_s:.0f} s")
        finally:
            self._waiting.pop(request.request_id, None)

    async def send_all(
        self,
        build: Sequence[Callable[[], ApiRequest]],
        *,
        concurrency: int,
        max_s: float,
        progress: Progress,
    ) -> list[Sent | None]:
        """Build and send each request (``build`` makes it at send time, so its deadline starts then), at
        most ``concurrency`` at once; None for those not sent because ``max_s`` seconds had passed."""
        slots = asyncio.Semaphore(max(1, concurrency))
        stop_at = time.monotonic() + max_s
        results: list[Sent | None] = [None] * len(build)
        finished = 0

        async def one(index: int) -> None:
            nonlocal finished
            async with slots:
                if time.monotonic() > stop_at:
                    return
                results[index] = await self.send(build[index]())
                finished += 1
                progress.report(f"replay: {finished:,} of {len(build):,} answered or timed out")

        await asyncio.gather(*(one(i) for i in range(len(build))))
        progress.done()
        return results
