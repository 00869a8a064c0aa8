"""When a request's bytes reached the sandbox: the kernel's receive timestamp of each connection's reads.

The referee counts arrivals. Counted when a handler starts, an arrival is as late as the sandbox's own
event loop: a stall (a busy core, a collection) holds requests that already sit in the socket and then
counts them together, a burst the client never sent. Linux stamps every received packet
(``SO_TIMESTAMPNS``) and hands the stamp to a ``recvmsg`` caller, so the sandbox reads its connections
with ``recvmsg`` and keeps the stamp of the newest bytes read: the moment the request reached the host,
whatever the loop did afterwards.

``installed(loop)`` makes the loop wrap every socket its servers accept (asyncio creates server
transports in ``_make_socket_transport``; the wrapper keeps its signature) in a ``StampingSocket`` whose
``recv`` and ``recv_into`` go through ``recvmsg``, and names it in the transport's extra info
(``received_ns(transport)`` reads it). Client connections of the same loop are left alone. Where the
platform has no ``SO_TIMESTAMPNS``, or a read carried no stamp (bytes received before stamping was
first switched on anywhere on the host), ``received_ns`` is None and the referee counts at handler time.
Stamps are on the real-time clock (``time.time_ns()``), in nanoseconds.

Linux stamps received packets only while some socket on the host asks for stamps, and switches that on
in the background a moment after the first one asks; ``installed`` therefore holds a socket with stamps
on for as long as it lasts and, before it returns, waits (``stamps_on``, at most half a second) until a
byte sent over loopback comes back stamped, so the first connections are stamped too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import time
from collections.abc import Iterator
from typing import Any

SO_TIMESTAMPNS: int | None = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform == "linux" else None)
EXTRA_KEY = "apihub_stamping_socket"
_TIMESPEC = struct.Struct("qq")  # struct timespec on 64-bit Linux
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
STAMPS_ON_WAIT_S = 0.5  # how long a sandbox starting waits for the host to stamp received packets
STAMPS_ON_POLL_S = 0.002


class StampingSocket(socket.socket):
    """A connection whose reads remember the kernel's receive time of the newest bytes read."""

    __slots__ = ("received_ns",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received_ns: int | None = None

    def _note(self, ancillary: list[tuple[int, int, bytes]]) -> None:
        stamp = _stamp_ns(ancillary)
        if stamp is not None:
            self.received_ns = stamp

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data, ancillary, _, _ = self.recvmsg(bufsize, _ANCILLARY, flags)
        self._note(ancillary)
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        view = memoryview(buffer).cast("B")
        count, ancillary, _, _ = self.recvmsg_into([view[:nbytes] if nbytes else view], _ANCILLARY, flags)
        self._note(ancillary)
        return count


def _stamp_ns(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    """The receive stamp (ns) in a ``recvmsg``'s ancillary data, None when it carries none."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanos = _TIMESPEC.unpack_from(data)
            if seconds or nanos:
                return int(seconds * 1_000_000_000 + nanos)
    return None


def stamps_on(max_s: float = STAMPS_ON_WAIT_S) -> bool:
    """Wait until the host stamps received packets (at most ``max_s``): send a byte over a loopback TCP
    connection, whose receiving end asks for stamps, until one comes back stamped. True once one does."""
    if SO_TIMESTAMPNS is None or not _ANCILLARY:
        return False
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()[:2], timeout=max_s) as client,
    ):
        accepted, _ = server.accept()
        with accepted:
            accepted.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            accepted.settimeout(max_s)
            deadline = time.monotonic() + max_s
            while True:
                client.sendall(b".")
                _, ancillary, _, _ = accepted.recvmsg(16, _ANCILLARY)
                if _stamp_ns(ancillary) is not None:
                    return True
                if time.monotonic() >= deadline:
                    return False
                time.sleep(STAMPS_ON_POLL_S)


def _stamping(sock: socket.socket) -> StampingSocket | None:
    """``sock`` re-made as a ``StampingSocket`` with stamps on, or None where that cannot be done (``sock``
    is then untouched)."""
    if SO_TIMESTAMPNS is None or not _ANCILLARY or sock.type != socket.SOCK_STREAM:
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return None
    wrapped = StampingSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    wrapped.setblocking(False)
    return wrapped


@contextlib.contextmanager
def installed(loop: asyncio.AbstractEventLoop) -> Iterator[bool]:
    """Within the block, connections ``loop``'s servers accept keep receive stamps; yields False (and does
    nothing) for a loop that does not make its transports the selector loop's way."""
    original = getattr(loop, "_make_socket_transport", None)
    if original is None or SO_TIMESTAMPNS is None:
        yield False
        return
    if getattr(original, EXTRA_KEY, False):  # another app of this loop installed it: theirs to remove
        yield True
        return

    def make_socket_transport(
        sock: socket.socket,
        protocol: asyncio.BaseProtocol,
        waiter: asyncio.Future[Any] | None = None,
        *,
        extra: dict[str, Any] | None = None,
        server: Any = None,
    ) -> Any:
        if server is not None:
            wrapped = _stamping(sock)
            if wrapped is not None:
                sock, extra = wrapped, {**(extra or {}), EXTRA_KEY: wrapped}
        return original(sock, protocol, waiter, extra=extra, server=server)

    setattr(make_socket_transport, EXTRA_KEY, True)
    loop._make_socket_transport = make_socket_transport  # type: ignore[attr-defined]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as keeper:  # stamping stays on meanwhile
        keeper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        stamps_on()  # switched on in the background: the first connections must not come before
        try:
            yield True
        finally:
            del loop._make_socket_transport  # type: ignore[attr-defined]  # the class's method again


def received_ns(transport: asyncio.BaseTransport | None) -> int | None:
    """The real-time stamp (ns) of the newest bytes read from ``transport``'s connection, when known."""
    if transport is None:
        return None
    sock = transport.get_extra_info(EXTRA_KEY)
    return sock.received_ns if isinstance(sock, StampingSocket) else None
