"""The referee times arrivals by the kernel's receive stamp and judges a late-handled arrival in its place."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from services.sandbox import stamps
from services.sandbox.clock import KST, SimClock
from services.sandbox.referee import Environment, Referee, _Arrivals
from tests.sandbox.sandbox_kit import Sandbox, kis_key

MS = 1_000_000


def test_arrivals_in_order_count_the_window_ending_at_each() -> None:
    arrivals = _Arrivals()
    counts = [arrivals.add(n * 50 * MS) for n in range(21)]  # 0, 50, ..., 1000 ms
    assert counts == [*range(1, 21), 20]  # (0, 1000] holds 50..1000: 20; the one at 0 has left
    assert arrivals.max_in_window == 20


def test_an_arrival_counted_late_is_judged_where_it_happened() -> None:
    """Twenty arrivals 50 ms apart from 50 ms, then one handled last that happened at 0: every window
    holding it has at most 20 (the window ending at 1000 ms starts after it); one at 1 ms is the 21st."""
    arrivals = _Arrivals()
    for n in range(1, 21):
        arrivals.add(n * 50 * MS)
    assert arrivals.add(0) == 20
    assert arrivals.max_in_window == 20
    assert arrivals.add(1 * MS) == 21  # (0, 1000] holds 1 ms and 50..1000 ms
    assert arrivals.max_in_window == 21
    assert arrivals.times == sorted(arrivals.times)


def test_arrivals_keep_two_seconds() -> None:
    arrivals = _Arrivals()
    for n in range(100):
        arrivals.add(n * 100 * MS)  # ten seconds
    assert arrivals.times[0] >= arrivals.times[-1] - 2_000 * MS
    assert len(arrivals.times) == 21


def _referee(rate: float) -> Referee:
    clock = SimClock(datetime(2026, 3, 3, 10, 0, tzinfo=KST), rate=rate)
    return Referee(clock, [Environment("KIS", "real", 20)])


def test_a_stamped_arrival_counts_when_it_happened() -> None:
    """Twenty arrivals now, then one whose bytes came 1.5 s ago: it shares no window with them. Without
    its stamp it would be the 21st in the window ending now."""
    referee = _referee(rate=1.0)
    for _ in range(20):
        assert not referee.arrive("kis/real", "k", "FHKST01010100").over_limit
    early = referee.arrive("kis/real", "k", "FHKST01010100", ago_ns=1_500 * MS)
    assert (early.in_window, early.over_limit) == (1, False)
    late = referee.arrive("kis/real", "k", "FHKST01010100")
    assert (late.in_window, late.over_limit) == (21, True)
    stats = referee.snapshot()["environments"]["kis/real"]
    assert (stats["stamped"], stats["window_requests"], stats["over_limit"]) == (1, 22, 1)


def test_a_frozen_clock_counts_stamped_arrivals_now() -> None:
    referee = _referee(rate=0.0)
    for _ in range(20):
        referee.arrive("kis/real", "k", "FHKST01010100")
    assert referee.arrive("kis/real", "k", "FHKST01010100", ago_ns=1_500 * MS).over_limit


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, stamps.StampingSocket]]:
    """A loopback TCP connection: the client's end and the server's end made a ``StampingSocket``."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    wrapped = stamps._stamping(accepted)
    assert wrapped is not None
    wrapped.setblocking(True)
    assert stamps.stamps_on()  # Linux turns stamping on a moment after it is first asked for
    try:
        yield client, wrapped
    finally:
        client.close()
        wrapped.close()


def test_reads_keep_the_kernel_receive_time(connection: tuple[socket.socket, stamps.StampingSocket]) -> None:
    """The stamp is when the bytes came, not when they were read (200 ms later)."""
    client, server = connection
    before_ns = time.time_ns()
    client.sendall(b"first")
    after_ns = time.time_ns()
    time.sleep(0.2)
    read_ns = time.time_ns()
    assert server.recv(100) == b"first"
    first_ns = server.received_ns
    assert first_ns is not None and before_ns - MS <= first_ns <= after_ns + MS < read_ns
    client.sendall(b"second")
    buffer = bytearray(100)
    count = server.recv_into(buffer)
    assert bytes(buffer[:count]) == b"second"
    assert server.received_ns is not None and server.received_ns >= read_ns - MS


def test_stamps_on_returns_once_a_loopback_byte_comes_back_stamped() -> None:
    """What a sandbox waits for as it starts; a connection made after it is stamped from its first read
    while some socket keeps stamping on (as ``installed`` holds one: Linux switches stamping off, in the
    background, once no socket asks for it)."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as keeper,
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as client,
    ):
        assert stamps.SO_TIMESTAMPNS is not None
        keeper.setsockopt(socket.SOL_SOCKET, stamps.SO_TIMESTAMPNS, 1)
        assert stamps.stamps_on()
        accepted, _ = server.accept()
        wrapped = stamps._stamping(accepted)
        assert wrapped is not None
        with wrapped:
            wrapped.setblocking(True)
            client.sendall(b"first")
            assert wrapped.recv(16) == b"first" and wrapped.received_ns is not None


async def test_the_sandbox_stamps_its_arrivals(sandbox: Sandbox) -> None:
    """Every counted call of a sandbox served by an asyncio selector loop is timed by its receive stamp."""
    token = await sandbox.kis_token()
    for _ in range(3):
        assert (await sandbox.kis_price(token)).status == 200
    stats = await sandbox.env_stats("kis/real", kis_key())
    assert (stats["window_requests"], stats["stamped"]) == (3, 3)


def test_a_stamp_before_a_clock_change_counts_from_the_change() -> None:
    """Simulated time before a jump or rate change is not kept: an older stamp counts from the change."""
    clock = SimClock(datetime(2026, 3, 3, 10, 0, tzinfo=KST), rate=1.0)
    assert clock.monotonic_ns() - clock.monotonic_ns_ago(10_000 * MS) >= 9_000 * MS
    clock.set(rate=1.0)
    assert clock.monotonic_ns() - clock.monotonic_ns_ago(10_000 * MS) < 1_000 * MS
