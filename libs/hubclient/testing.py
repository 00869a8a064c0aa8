"""An in-memory transport so a worker's unit tests run without Kafka (like httpx's ``MockTransport``).

    def answer(request: ApiRequest) -> ApiResponse:
        return ok(request, {"rt_cd": "0", "output": {"stck_prpr": "70000"}})

    async with HubClient(InMemoryTransport(answer), caller="history-collector") as hub:
        ...

The same worker code runs against the real stack with ``HubClient.connect``; tests should do both.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from hubclient.errors import HubNotStarted
from hubclient.models import ApiRequest, ApiResponse, Status
from hubclient.transport import ReplyHandler

Responder = Callable[[ApiRequest], "ApiResponse | Awaitable[ApiResponse | None] | None"]


def ok(request: ApiRequest, data: Any, *, continuation: dict[str, str] | None = None) -> ApiResponse:
    """An ``ok`` response to ``request`` carrying ``data``."""
    return ApiResponse(
        request_id=request.request_id,
        status=Status.OK,
        data=data,
        continuation=continuation,
        attempts=1,
        gateway="in-memory",
    )


def failed(request: ApiRequest, status: Status, reason: str, **fields: Any) -> ApiResponse:
    """A non-ok response to ``request``."""
    return ApiResponse(
        request_id=request.request_id, status=status, reason=reason, gateway="in-memory", **fields
    )


class InMemoryTransport:
    """Hands each request to ``responder``; a None answer means "never answered" (to test timeouts)."""

    def __init__(
        self, responder: Responder, *, reply_topic: str = "api.responses", reply_partition: int = 0
    ) -> None:
        self._responder = responder
        self._reply_topic = reply_topic
        self._reply_partition = reply_partition
        self._on_reply: ReplyHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.sent: list[ApiRequest] = []

    @property
    def reply_topic(self) -> str:
        return self._reply_topic

    @property
    def reply_partition(self) -> int:
        return self._reply_partition

    async def start(self, on_reply: ReplyHandler) -> None:
        """Begin accepting requests."""
        self._on_reply = on_reply

    async def send(self, request: ApiRequest) -> None:
        """Record the request and answer it asynchronously, as the real hub would."""
        if self._on_reply is None:
            raise HubNotStarted("the transport is not started")
        self.sent.append(request)
        task = asyncio.create_task(self._answer(request, self._on_reply))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: ApiRequest, on_reply: ReplyHandler) -> None:
        result = self._responder(request)
        response = await result if inspect.isawaitable(result) else result
        if response is not None:
            on_reply(response.to_json())

    async def stop(self) -> None:
        """Cancel answers still being prepared."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._on_reply = None
