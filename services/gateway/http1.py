"""A lean HTTP/1.1 client for the broker call: kept-alive connections per origin, one write per request.

aiohttp's client cost the gateway about 190 µs of CPU per broker call (docs/SCALING.md) for features the
call never uses (cookies, redirects, proxies, multipart, streaming, trace signals). ``Http1Pool`` does only
what a broker call needs: a request made of one buffer written at once, a response read by a
``asyncio.Protocol`` as its bytes arrive (Content-Length, chunked, or until close; gzip/deflate undone),
connections kept per origin (scheme, host, port) up to a limit, TLS where the URL says ``https``.

It never resends anything (every arrival counts against a broker's limit) and never follows a redirect.
Deadlines are the caller's: cancel ``request`` (``asyncio.timeout``) and its connection is closed.

Errors (the dispatcher translates them; nothing else catches them)::

    Http1Error              root
    ├── Unsendable          the request cannot be written (a line break in a header): nothing left
    ├── ConnectFailed       no connection to the origin: nothing left
    └── ResponseBroken      the request left, then the connection ended or the answer was not HTTP
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import quote, urlsplit

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
USER_AGENT = "apihub"
IDLE_S = 15.0  # a connection idle longer is closed rather than reused (servers drop idle ones silently)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = re.compile(r"[\w.~-]*", re.ASCII).fullmatch
_NO_BODY_STATUSES = frozenset({204, 304})


def _query(params: dict[str, str]) -> str:
    """``k=v&...`` percent-encoded; names, codes and dates (RFC 3986 unreserved) are written as they are."""
    return "&".join(f"{_quoted(name)}={_quoted(value)}" for name, value in params.items())


def _quoted(text: str) -> str:
    return text if _UNRESERVED(text) else quote(text, safe="")


class Http1Error(Exception):
    """Root of this module's errors."""


class Unsendable(Http1Error):
    """The request cannot be written as HTTP/1.1; nothing was sent."""


def writable(text: str) -> bool:
    """True when ``text`` can go into a request's head as it is written here (``Unsendable`` otherwise): no
    line break, latin-1 only."""
    if "\r" in text or "\n" in text:
        return False
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


class ConnectFailed(Http1Error):
    """No connection could be opened; nothing was sent."""


class ResponseBroken(Http1Error):
    """The request was written, then no complete HTTP answer came back."""


@dataclass(frozen=True)
class Response:
    """One HTTP answer: status, headers with lowercase names (the last of a repeated name), raw body."""

    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if _DEFAULT_PORTS.get(self.scheme) == self.port else f"{host}:{self.port}"


class _Connection(asyncio.Protocol):
    """One connection: holds at most one request's answer being read."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.keep = True  # false once the answer says the connection ends with it
        self.idle_since = 0.0
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._head_only = False
        self._status = 0
        self._headers: dict[str, str] | None = None
        self._length: int | None = None  # bytes of body, None: chunked or until close
        self._chunked = False
        self._body = bytearray()

    # --- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport whatever the loop (uvloop's is no subclass of asyncio.Transport).
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        self._buffer += data
        try:
            self._parse()
        except ResponseBroken as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost settles the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers is not None and self._length is None and not self._chunked:
            self._body += self._buffer  # the answer ran until the connection closed
            self._finish()
            return
        reason = f": {exc}" if exc else ""
        waiter.set_exception(ResponseBroken(f"connection closed before a complete answer{reason}"))

    # --- requests ----------------------------------------------------------------------------------

    def start(self, data: bytes, head_only: bool) -> asyncio.Future[Response]:
        """Write one request and return the future of its answer."""
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self._head_only = head_only
        self._headers = None
        self._body = bytearray()
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # --- parsing -----------------------------------------------------------------------------------

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.close()

    def _parse(self) -> None:
        buffer = self._buffer
        while self._headers is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD_BYTES:
                    raise ResponseBroken("answer head over 64 KiB")
                return
            head = bytes(buffer[:end])
            del buffer[: end + 4]
            self._read_head(head)
        if self._chunked:
            if not self._read_chunks():
                return
        elif self._length is not None:
            if len(buffer) < self._length:
                return
            self._body = buffer[: self._length]
            del buffer[: self._length]
        else:
            if len(buffer) > MAX_BODY_BYTES:
                raise ResponseBroken("answer body over 64 MiB")
            return  # until the connection closes
        self._finish()

    def _read_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ResponseBroken(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        status = int(parts[1])
        if 100 <= status < 200:
            return  # an interim answer; the real one follows
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ResponseBroken(f"malformed header line: {line[:60]!r}")
            headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        self.keep = "close" not in connection and (parts[0] == "HTTP/1.1" or "keep-alive" in connection)
        self._status, self._headers = status, headers
        self._chunked = False
        self._length = None
        if self._head_only or status in _NO_BODY_STATUSES:
            self._length = 0
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._chunked = True
        elif "content-length" in headers:
            try:
                self._length = int(headers["content-length"])
            except ValueError:
                raise ResponseBroken("malformed Content-Length") from None
            if not 0 <= self._length <= MAX_BODY_BYTES:
                raise ResponseBroken(f"Content-Length {self._length} outside 0..64 MiB")
        else:
            self.keep = False  # the body runs until the connection closes

    def _read_chunks(self) -> bool:
        """Move whole chunks from the buffer into the body; True once the last chunk and trailers are in."""
        buffer = self._buffer
        while True:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                return False
            size_text = bytes(buffer[:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ResponseBroken(f"malformed chunk size {size_text[:20]!r}") from None
            if size == 0:  # the last chunk: its line's CRLF, any trailers, then an empty line
                end = buffer.find(b"\r\n\r\n", line_end)
                if end < 0:
                    return False
                del buffer[: end + 4]
                return True
            start = line_end + 2
            if len(buffer) < start + size + 2:
                if len(self._body) + size > MAX_BODY_BYTES:
                    raise ResponseBroken("answer body over 64 MiB")
                return False
            self._body += buffer[start : start + size]
            del buffer[: start + size + 2]

    def _finish(self) -> None:
        assert self._waiter is not None and self._headers is not None
        headers, body = self._headers, bytes(self._body)
        encoding = headers.get("content-encoding", "").lower()
        if body and encoding in ("gzip", "deflate"):
            try:  # wbits 47: gzip or zlib header, detected; raw deflate as a fallback
                body = zlib.decompress(body, 47)
            except zlib.error:
                try:
                    body = zlib.decompress(body, -15)
                except zlib.error:
                    self._waiter.set_exception(ResponseBroken(f"undecodable {encoding} body"))
                    self.close()
                    return
        if self._buffer:
            self.keep = False  # bytes past the answer: never reuse
        self._waiter.set_result(Response(self._status, headers, body))


class Http1Pool:
    """Kept-alive HTTP/1.1 connections, at most ``limit`` open at once; ``close`` ends them all."""

    def __init__(self, limit: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self._limit = limit
        self._ssl = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._open = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._origins: dict[str, tuple[_Origin, str]] = {}

    @property
    def limit(self) -> int:
        """The most connections open at once."""
        return self._limit

    @property
    def open_connections(self) -> int:
        """Connections open now, idle or busy."""
        return self._open

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        *,
        query: dict[str, str] | None = None,
        body: bytes | None = None,
        on_written: Callable[[], Awaitable[None]] | None = None,
    ) -> Response:
        """Send one request and read its answer; ``on_written`` runs once the request was handed to the
        socket. Cancelling the call closes its connection (its answer may still come)."""
        origin, target = self._split(url)
        if query:
            target += ("&" if "?" in target else "?") + _query(query)
        data = self._encode(method, origin, target, headers, body)
        connection = await self._acquire(origin)
        reusable = False
        try:
            answer = connection.start(data, head_only=method == "HEAD")
            if on_written is not None:
                await on_written()
            response = await answer
            reusable = connection.keep and not connection.closed
            return response
        finally:
            self._release(connection, reusable)

    async def close(self) -> None:
        """Close every idle connection (busy ones close as their callers finish or are cancelled)."""
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
                self._open -= 1
        self._idle.clear()

    # --- internals ---------------------------------------------------------------------------------

    def _split(self, url: str) -> tuple[_Origin, str]:
        base, _, _ = url.partition("?")
        cached = self._origins.get(base)
        if cached is None:
            parts = urlsplit(base)
            if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
                raise Unsendable(f"not an http(s) URL: {base[:80]!r}")
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
            cached = (_Origin(parts.scheme, parts.hostname, port), parts.path or "/")
            if len(self._origins) < 4096:  # a catalog's worth of paths; never grows without bound
                self._origins[base] = cached
        origin, path = cached
        _, sep, query = url.partition("?")
        return origin, f"{path}?{query}" if sep else path

    def _encode(
        self, method: str, origin: _Origin, target: str, headers: dict[str, str], body: bytes | None
    ) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {origin.host_header}"]
        given = set()
        for name, value in headers.items():
            given.add(name.lower())
            lines.append(f"{name}: {value}")
        if any("\n" in line or "\r" in line for line in lines):
            raise Unsendable("a header or the path holds a line break")
        if "user-agent" not in given:
            lines.append(f"User-Agent: {USER_AGENT}")
        if "accept-encoding" not in given:
            lines.append("Accept-Encoding: gzip, deflate")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        lines.append("\r\n")
        try:
            head = "\r\n".join(lines).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise Unsendable(f"a header or the path is not latin-1: {exc.reason}") from None
        return head + body if body else head

    async def _acquire(self, origin: _Origin) -> _Connection:
        now = time.monotonic()
        while True:
            idle = self._idle.get(origin)
            while idle:
                connection = idle.pop()
                if not connection.closed and now - connection.idle_since < IDLE_S:
                    return connection
                connection.close()
                self._forget()
            if self._open >= self._limit:
                self._evict_idle()
            if self._open < self._limit:
                return await self._connect(origin)
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, then cancelled: pass the turn on
                raise
            finally:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
            now = time.monotonic()

    def _evict_idle(self) -> None:
        """Close one idle connection of any origin to make room for another."""
        for connections in self._idle.values():
            if connections:
                connections.pop(0).close()
                self._open -= 1
                return

    async def _connect(self, origin: _Origin) -> _Connection:
        self._open += 1
        loop = asyncio.get_running_loop()
        secure = origin.scheme == "https"
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(origin),
                origin.host,
                origin.port,
                ssl=self._ssl_context() if secure else None,
                server_hostname=origin.host if secure else None,
            )
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake (ssl.SSLError is an OSError)
            self._forget()
            raise ConnectFailed(f"{origin.host}:{origin.port}: {exc}") from exc
        except BaseException:
            self._forget()
            raise
        return connection

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _release(self, connection: _Connection, reusable: bool) -> None:
        if reusable:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(connection.origin, []).append(connection)
            self._wake()
        else:
            connection.close()
            self._forget()

    def _forget(self) -> None:
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
