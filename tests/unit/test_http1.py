"""``Http1Pool`` against raw loopback servers answering exact bytes: framing, reuse, limits, failures."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from services.gateway.http1 import ConnectFailed, Http1Pool, ResponseBroken, Unsendable, _Connection, _Origin

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

Answer = Callable[[bytes], list[bytes] | None]  # request head -> chunks to write (None: close, say nothing)
Serve = Callable[..., Awaitable["RawServer"]]


class RawServer:
    """Reads each request head (and a Content-Length body) and writes what ``answer`` returns."""

    def __init__(self, answer: Answer, close_after: bool = False) -> None:
        self.answer = answer
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        head += await reader.readexactly(int(line.split(b":")[1]))
                self.requests.append(head)
                chunks = self.answer(head)
                if chunks is None:
                    break
                for chunk in chunks:
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0)
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts raw servers for a test and closes them after it."""
    servers: list[RawServer] = []

    async def start(answer: Answer, close_after: bool = False) -> RawServer:
        raw = RawServer(answer, close_after)
        raw.server = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
        servers.append(raw)
        return raw

    yield start
    for raw in servers:
        assert raw.server is not None
        raw.server.close()


async def test_sequential_calls_share_one_kept_connection(serve: Serve) -> None:
    """A kept-alive answer leaves its connection for the next call."""
    raw = await serve(lambda head: [OK])
    pool = Http1Pool(limit=4)
    for _ in range(3):
        response = await pool.request("GET", f"{raw.url}/a", {})
        assert (response.status, response.body) == (200, b"ok")
    assert raw.connections == 1 and pool.open_connections == 1
    await pool.close()
    assert pool.open_connections == 0


async def test_the_request_is_one_well_formed_buffer(serve: Serve) -> None:
    """Method, target with the query, Host with the port, the caller's headers and a Content-Length body."""
    raw = await serve(lambda head: [OK])
    pool = Http1Pool(limit=1)
    written: list[int] = []

    async def on_written() -> None:
        written.append(len(raw.requests))

    await pool.request(
        "POST",
        f"{raw.url}/uapi/x?fixed=1",
        {"tr_id": "FHKST01010100", "appkey": "K"},
        query={"FID_INPUT_ISCD": "005930", "q": "a b/c"},
        body=b'{"a":1}',
        on_written=on_written,
    )
    [request] = raw.requests
    port = raw.url.rsplit(":", 1)[1]
    assert request.startswith(b"POST /uapi/x?fixed=1&FID_INPUT_ISCD=005930&q=a%20b%2Fc HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{port}\r\n".encode() in request
    assert b"tr_id: FHKST01010100\r\nappkey: K\r\n" in request
    assert request.endswith(b'Content-Length: 7\r\n\r\n{"a":1}')
    assert written == [0]  # the hook ran once the request was written, before the server read it
    await pool.close()


async def test_a_chunked_answer_split_byte_by_byte_is_joined(
    serve: Serve,
) -> None:
    """Chunk sizes in hex with extensions, trailers, every byte in its own write."""
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\nB\r\n, world!!!!\r\n0\r\nX-T: 1\r\n\r\n"
    )
    raw = await serve(lambda head: [answer[i : i + 1] for i in range(len(answer))])
    pool = Http1Pool(limit=1)
    first = await pool.request("GET", f"{raw.url}/", {})
    second = await pool.request("GET", f"{raw.url}/", {})
    assert first.body == second.body == b"hello, world!!!!"
    assert raw.connections == 1  # the trailers were consumed: the connection stayed in step
    await pool.close()


async def test_gzip_bodies_are_undone_and_headers_lowercased(
    serve: Serve,
) -> None:
    """A gzip body comes back plain; header names are lowercase, the last of a repeated name wins."""
    packed = gzip.compress(b'{"rt_cd":"0"}')
    head = (
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTR_CONT: F\r\ntr_cont: M\r\n"
        f"Content-Length: {len(packed)}\r\n\r\n"
    )
    raw = await serve(lambda _: [head.encode() + packed])
    pool = Http1Pool(limit=1)
    response = await pool.request("GET", f"{raw.url}/", {})
    assert response.body == b'{"rt_cd":"0"}'
    assert response.headers["tr_cont"] == "M"
    await pool.close()


async def test_an_answer_without_length_runs_until_close_and_is_not_kept(
    serve: Serve,
) -> None:
    """HTTP/1.0 style: no length, the body ends with the connection; the next call opens another."""
    raw = await serve(lambda _: [b"HTTP/1.0 200 OK\r\n\r\npart one, ", b"part two"], close_after=True)
    pool = Http1Pool(limit=2)
    assert (await pool.request("GET", f"{raw.url}/", {})).body == b"part one, part two"
    assert (await pool.request("GET", f"{raw.url}/", {})).body == b"part one, part two"
    assert raw.connections == 2 and pool.open_connections == 0


async def test_connection_close_and_interim_answers(serve: Serve) -> None:
    """A 100 Continue is skipped; ``Connection: close`` ends the connection after its answer."""
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"
    )
    raw = await serve(lambda _: [answer])
    pool = Http1Pool(limit=2)
    response = await pool.request("GET", f"{raw.url}/", {})
    assert (response.status, response.body) == (201, b"x")
    assert pool.open_connections == 0


async def test_head_and_no_content_answers_have_no_body(serve: Serve) -> None:
    """A HEAD's Content-Length describes a body that is not sent; 204 has none; both keep the connection."""
    raw = await serve(
        lambda head: [
            b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"
            if head.startswith(b"HEAD")
            else b"HTTP/1.1 204 No Content\r\n\r\n"
        ]
    )
    pool = Http1Pool(limit=1)
    assert (await pool.request("HEAD", f"{raw.url}/", {})).body == b""
    assert (await pool.request("GET", f"{raw.url}/", {})).status == 204
    assert raw.connections == 1
    await pool.close()


@pytest.mark.parametrize(
    "answer, message",
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc", "undecodable"),
    ],
)
async def test_garbage_is_a_broken_response(serve: Serve, answer: bytes, message: str) -> None:
    """What is not HTTP/1.x fails the call with the reason, and the connection is not kept."""
    raw = await serve(lambda _: [answer])
    pool = Http1Pool(limit=1)
    with pytest.raises(ResponseBroken, match=message):
        await pool.request("GET", f"{raw.url}/", {})
    assert pool.open_connections == 0


async def test_a_connection_ending_mid_answer_is_broken(serve: Serve) -> None:
    """Half a body, then the server closes: broken, not a short body."""
    raw = await serve(lambda _: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"], close_after=True)
    pool = Http1Pool(limit=1)
    with pytest.raises(ResponseBroken, match="before a complete answer"):
        await pool.request("GET", f"{raw.url}/", {})
    silent = await serve(lambda _: None)
    with pytest.raises(ResponseBroken):
        await pool.request("GET", f"{silent.url}/", {})
    assert pool.open_connections == 0


async def test_bytes_past_the_answer_retire_the_connection(
    serve: Serve,
) -> None:
    """An answer followed by stray bytes is returned, but its connection is out of step and not reused."""
    raw = await serve(lambda _: [OK + b"HTTP/1.1 200 OK\r\n"])
    pool = Http1Pool(limit=1)
    assert (await pool.request("GET", f"{raw.url}/", {})).body == b"ok"
    assert (await pool.request("GET", f"{raw.url}/", {})).body == b"ok"
    assert raw.connections == 2


async def test_a_cancelled_call_closes_its_connection(serve: Serve) -> None:
    """A timeout leaves no connection whose late answer the next call could read."""
    raw = await serve(lambda _: [])  # reads, never answers
    pool = Http1Pool(limit=1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await pool.request("GET", f"{raw.url}/", {})
    assert pool.open_connections == 0


async def test_the_limit_queues_calls_and_idle_connections_of_other_origins_make_room(
    serve: Serve,
) -> None:
    """With one connection allowed, concurrent calls take turns on it; another origin takes over the slot."""
    first = await serve(lambda _: [OK])
    second = await serve(lambda _: [OK])
    pool = Http1Pool(limit=1)
    answers = await asyncio.gather(*(pool.request("GET", f"{first.url}/", {}) for _ in range(5)))
    assert [a.body for a in answers] == [b"ok"] * 5 and first.connections == 1
    assert (await pool.request("GET", f"{second.url}/", {})).body == b"ok"
    assert pool.open_connections == 1
    await pool.close()


async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    serve: Serve,
) -> None:
    """The server ends an idle kept connection: the next call opens a new one instead of failing."""
    raw = await serve(lambda _: [OK], close_after=True)  # closes without saying Connection: close
    pool = Http1Pool(limit=1)
    await pool.request("GET", f"{raw.url}/", {})
    [idle] = pool._idle[pool._split(f"{raw.url}/")[0]]
    async with asyncio.timeout(10):  # the close reaches the idle connection
        while not idle.closed:
            await asyncio.sleep(0.005)
    assert (await pool.request("GET", f"{raw.url}/", {})).body == b"ok"
    assert raw.connections == 2
    await pool.close()


async def test_unsendable_requests_and_refused_connections_send_nothing(
    serve: Serve,
) -> None:
    """A header with a line break or a non-http URL is refused before any byte; nobody listening fails
    the connection."""
    raw = await serve(lambda _: [OK])
    pool = Http1Pool(limit=1)
    with pytest.raises(Unsendable, match="line break"):
        await pool.request("GET", f"{raw.url}/", {"authorization": "Bearer x\r\nX-Evil: 1"})
    with pytest.raises(Unsendable, match="not an http"):
        await pool.request("GET", "ftp://127.0.0.1/", {})
    assert raw.requests == [] and pool.open_connections == 0
    assert raw.server is not None
    url = raw.url
    raw.server.close()
    await raw.server.wait_closed()
    with pytest.raises(ConnectFailed):
        await pool.request("GET", f"{url}/", {})
    assert pool.open_connections == 0


async def test_a_queued_call_cancelled_after_its_wake_passes_the_turn_on(serve: Serve) -> None:
    """Two calls wait for the one connection; the first woken is cancelled before it runs: the other
    still gets the connection instead of waiting for ever."""
    raw = await serve(lambda _: [OK])
    pool = Http1Pool(limit=1)
    origin, _ = pool._split(f"{raw.url}/")
    busy = await pool._acquire(origin)  # the one connection, in use
    first = asyncio.create_task(pool.request("GET", f"{raw.url}/", {}))
    second = asyncio.create_task(pool.request("GET", f"{raw.url}/", {}))
    async with asyncio.timeout(10):  # both queued behind ``busy``, ``first`` ahead
        while len(pool._waiting) < 2:
            await asyncio.sleep(0.005)
    pool._release(busy, reusable=True)  # wakes ``first`` ...
    first.cancel()  # ... which is cancelled before it runs
    assert (await asyncio.wait_for(second, 2)).body == b"ok"
    assert first.cancelled()
    await pool.close()


def test_a_connection_takes_any_loops_stream_transport() -> None:
    """Other event loops' transports (uvloop's) are no subclass of ``asyncio.Transport``; a connection
    takes them as they are and writes the request through them."""

    class LoopTransport:  # the stream transport of some other loop: write and close
        def __init__(self) -> None:
            self.written: list[bytes] = []
            self.closed = False

        def write(self, data: bytes) -> None:
            self.written.append(data)

        def close(self) -> None:
            self.closed = True

    async def scenario() -> None:
        connection = _Connection(_Origin("http", "127.0.0.1", 80))
        transport = LoopTransport()
        connection.connection_made(transport)  # type: ignore[arg-type]
        answer = connection.start(b"GET / HTTP/1.1\r\n\r\n", head_only=False)
        connection.data_received(OK)
        assert transport.written == [b"GET / HTTP/1.1\r\n\r\n"]
        assert (await answer).body == b"ok"

    asyncio.run(scenario())
