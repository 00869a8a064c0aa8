"""``HttpDispatcher`` against real HTTP servers on loopback: answers, timeouts, dropped and refused calls."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hubclient.models import Provider
from services.gateway.dispatcher import HttpDispatcher
from services.gateway.errors import UpstreamNoAnswer, UpstreamUnreachable
from services.gateway.providers.base import UpstreamRequest
from services.settings import KisSettings, KiwoomSettings, SettingsInvalid
from tests.processes import free_port


class Upstream:
    """A tiny broker: records what arrived and answers per path."""

    def __init__(self) -> None:
        self.arrived: list[dict[str, Any]] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.arrived.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": body,
            }
        )
        if request.path == "/json":
            return web.json_response({"rt_cd": "0", "echo": dict(request.query)}, headers={"X-Tr-Cont": "M"})
        if request.path == "/text":
            return web.Response(text="<html>not json</html>", status=502)
        if request.path == "/empty":
            return web.Response(status=204)
        if request.path == "/slow":
            await asyncio.sleep(2)
            return web.json_response({})
        if request.path == "/redirect":
            raise web.HTTPFound("/json")
        if request.path == "/drop":
            assert request.transport is not None
            request.transport.close()  # the connection ends without an answer
            await asyncio.sleep(0.1)
        return web.json_response({"posted": body.decode()})


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    """A running upstream and its base URL."""
    broker = Upstream()
    server = TestServer(broker.app, host="127.0.0.1")
    await server.start_server()
    try:
        yield broker, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def dispatcher() -> AsyncIterator[HttpDispatcher]:
    """A started dispatcher for both providers (TLS settings irrelevant on plain HTTP)."""
    d = HttpDispatcher({Provider.KIS: KisSettings(), Provider.KIWOOM: KiwoomSettings(verify_tls=False)})
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


async def test_get_with_query_returns_status_lowercase_headers_and_json(
    upstream: tuple[Upstream, str], dispatcher: HttpDispatcher
) -> None:
    """A GET carries its query and headers; the answer's headers come back lowercased, the body parsed."""
    broker, base = upstream
    sent: list[int] = []

    async def on_sent() -> None:
        sent.append(len(broker.arrived))

    request = UpstreamRequest("GET", f"{base}/json", {"tr_id": "FHKST01010100"}, query={"A": "1"})
    answer = await dispatcher.send(Provider.KIS, request, 2.0, on_sent)
    assert answer.status == 200
    assert answer.body == {"rt_cd": "0", "echo": {"A": "1"}}
    assert answer.headers["x-tr-cont"] == "M"
    assert sent and sent[0] == 0  # the hook ran when the headers left, before the broker answered
    [arrived] = broker.arrived
    assert arrived["headers"]["tr_id"] == "FHKST01010100" and arrived["query"] == {"A": "1"}


async def test_post_sends_the_json_body(upstream: tuple[Upstream, str], dispatcher: HttpDispatcher) -> None:
    """A JSON body is serialised once and posted as is."""
    broker, base = upstream
    request = UpstreamRequest("POST", f"{base}/order", {}, json_body={"stk_cd": "005930", "qty": 1})
    answer = await dispatcher.send(Provider.KIWOOM, request, 2.0)
    assert answer.status == 200
    assert broker.arrived[0]["body"] == b'{"stk_cd":"005930","qty":1}'


async def test_non_json_and_empty_bodies_are_none(
    upstream: tuple[Upstream, str], dispatcher: HttpDispatcher
) -> None:
    """An HTML error page or an empty answer keeps its status, with no body."""
    _, base = upstream
    html = await dispatcher.send(Provider.KIS, UpstreamRequest("GET", f"{base}/text", {}), 2.0)
    empty = await dispatcher.send(Provider.KIS, UpstreamRequest("GET", f"{base}/empty", {}), 2.0)
    assert (html.status, html.body) == (502, None)
    assert (empty.status, empty.body) == (204, None)


async def test_redirects_are_not_followed(upstream: tuple[Upstream, str], dispatcher: HttpDispatcher) -> None:
    """A redirect is returned, never followed: a second arrival would be unpaced."""
    broker, base = upstream
    answer = await dispatcher.send(Provider.KIS, UpstreamRequest("GET", f"{base}/redirect", {}), 2.0)
    assert answer.status == 302
    assert [a["path"] for a in broker.arrived] == ["/redirect"]


async def test_a_slow_broker_is_cut_at_the_timeout(
    upstream: tuple[Upstream, str], dispatcher: HttpDispatcher
) -> None:
    """No answer within the timeout is ``no_answer`` with ``timed_out`` (the call may have been served)."""
    _, base = upstream
    with pytest.raises(UpstreamNoAnswer) as caught:
        await dispatcher.send(Provider.KIS, UpstreamRequest("GET", f"{base}/slow", {}), 0.2)
    assert caught.value.timed_out and caught.value.sent and caught.value.retriable


async def test_a_dropped_connection_is_no_answer(
    upstream: tuple[Upstream, str], dispatcher: HttpDispatcher
) -> None:
    """The broker closing the connection mid-call is ``no_answer`` (sent, not timed out), never resent."""
    broker, base = upstream
    with pytest.raises(UpstreamNoAnswer) as caught:
        await dispatcher.send(Provider.KIS, UpstreamRequest("POST", f"{base}/drop", {}, json_body={}), 2.0)
    assert not caught.value.timed_out and caught.value.sent
    assert len(broker.arrived) == 1  # never resent: every arrival counts against the limit


async def test_a_refused_connection_is_unreachable(dispatcher: HttpDispatcher) -> None:
    """Nobody listening means the request never left: ``unreachable``, not sent."""
    url = f"http://127.0.0.1:{free_port()}/x"
    with pytest.raises(UpstreamUnreachable) as caught:
        await dispatcher.send(Provider.KIS, UpstreamRequest("GET", url, {}), 2.0)
    assert not caught.value.sent


async def test_an_invalid_url_is_unreachable(dispatcher: HttpDispatcher) -> None:
    """A URL that is not http(s) never leaves: ``unreachable``, with the URL's scheme in the message."""
    with pytest.raises(UpstreamUnreachable, match="not an http"):
        await dispatcher.send(Provider.KIS, UpstreamRequest("GET", "ftp://127.0.0.1/x", {}), 1.0)


async def test_send_before_start_is_a_clear_error() -> None:
    """Using the dispatcher before ``start`` says so."""
    with pytest.raises(RuntimeError, match="start"):
        await HttpDispatcher({Provider.KIS: KisSettings()}).send(
            Provider.KIS, UpstreamRequest("GET", "http://127.0.0.1/", {}), 1.0
        )


async def test_connections_follow_the_whole_pools_pace() -> None:
    """A pool of 20 keys at 20/s with 10 s calls may have 400 calls a second in flight for 10 s: the
    connection limit follows the pool's sum, not one key's rate (which capped it at 400)."""
    members = [{"name": f"k{i}", "appkey": f"PS{i:034d}", "secret": "s" * 180} for i in range(20)]
    kis = KisSettings(rate_per_s=20, timeout_s=10, credentials=members)
    d = HttpDispatcher({Provider.KIS: kis, Provider.KIWOOM: KiwoomSettings(rate_per_s=5, timeout_s=10)})
    await d.start()
    try:
        assert d.connection_limit(Provider.KIS) == 8000  # 20 keys x 20/s x 10 s x 2
        assert d.connection_limit(Provider.KIWOOM) == 100  # one key: the floor
    finally:
        await d.stop()


@pytest.mark.parametrize(
    ("content", "says"),
    [(None, "cannot read {path}: No such file or directory"), (b"not a PEM\n", "{path} holds no usable PEM")],
)
async def test_a_ca_bundle_it_cannot_use_stops_the_start(
    tmp_path: Any, content: bytes | None, says: str
) -> None:
    """A configured CA bundle is loaded at start; a missing one, or one without a certificate, is a refused
    setting naming APIHUB_KIS__CA_BUNDLE there, not an error on the first call."""
    bundle = tmp_path / "bundle.pem"
    if content is not None:
        bundle.write_bytes(content)
    d = HttpDispatcher({Provider.KIS: KisSettings(ca_bundle=str(bundle))})
    with pytest.raises(SettingsInvalid) as refused:
        await d.start()
    await d.stop()
    [(variable, reason)] = refused.value.problems
    assert variable == "APIHUB_KIS__CA_BUNDLE" and reason.startswith(says.format(path=bundle))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (and its key), made with the openssl command line."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *(
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                key,
                "-out",
                cert,
            ),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def test_https_calls_verify_the_broker_certificate(certificate: tuple[str, str]) -> None:
    """Over TLS: a private CA bundle is trusted, the system's trust refuses a self-signed broker before
    anything is sent, and ``verify_tls=false`` accepts it."""
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    broker = Upstream()
    server = TestServer(broker.app, host="127.0.0.1")
    await server.start_server(ssl=server_tls)
    url = f"https://127.0.0.1:{server.port}/json"
    try:
        for settings, trusted in (
            (KisSettings(ca_bundle=cert), True),
            (KisSettings(), False),
            (KisSettings(verify_tls=False), True),
        ):
            d = HttpDispatcher({Provider.KIS: settings})
            await d.start()
            try:
                if trusted:
                    answer = await d.send(
                        Provider.KIS, UpstreamRequest("GET", url, {}, query={"q": "1"}), 5.0
                    )
                    assert answer.body == {"rt_cd": "0", "echo": {"q": "1"}}
                else:
                    with pytest.raises(UpstreamUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
                        await d.send(Provider.KIS, UpstreamRequest("GET", url, {}), 5.0)
            finally:
                await d.stop()
        assert len(broker.arrived) == 2  # the refused handshake sent nothing
    finally:
        await server.close()
