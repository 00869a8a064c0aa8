"""``/healthz``, ``/readyz`` and ``/metrics`` of a worker, on a small HTTP/1.0 server over asyncio streams.

Workers hold no HTTP library (a test checks that none imports ``aiohttp``), so this answers the three GET
paths itself: ``/healthz`` 200 while the process runs, ``/readyz`` 200 once ``ready()`` is true (503
before), ``/metrics`` the Prometheus text format; anything else 404, a request that is not a GET 405.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

READ_TIMEOUT_S = 5.0


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def answer(request_line: str, ready: bool) -> bytes:
    """The whole HTTP response to one request line (pure, for tests)."""
    parts = request_line.split()
    if len(parts) < 2:
        return _response("400 Bad Request", b"bad request\n")
    method, path = parts[0], parts[1].split("?", 1)[0]
    if method != "GET":
        return _response("405 Method Not Allowed", b"GET only\n")
    if path == "/healthz":
        return _response("200 OK", b"ok\n")
    if path == "/readyz":
        return (
            _response("200 OK", b"ready\n") if ready else _response("503 Service Unavailable", b"starting\n")
        )
    if path == "/metrics":
        return _response("200 OK", generate_latest(), CONTENT_TYPE_LATEST)
    return _response("404 Not Found", b"not found\n")


class HealthPortUnavailable(Exception):
    """The health server's address is taken (or not this host's): the worker cannot start."""


class HealthServer:
    """Serves the three paths on ``host:port`` between ``start()`` and ``stop()``."""

    def __init__(self, host: str, port: int, ready: Callable[[], bool]) -> None:
        self._host = host
        self._port = port
        self._ready = ready
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("the health server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and serve; ``HealthPortUnavailable`` when the address cannot be bound."""
        try:
            self._server = await asyncio.start_server(self._serve, self._host, self._port)
        except OSError as exc:
            raise HealthPortUnavailable(
                f"cannot listen on {self._host}:{self._port} for /healthz, /readyz and /metrics "
                f"({exc.strerror or exc}); set APIHUB_HEALTH_PORT to a free port"
            ) from exc

    async def stop(self) -> None:
        """Close the socket."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                line = (await reader.readline()).decode("latin-1")
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers are not needed
            writer.write(answer(line, self._ready()))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
