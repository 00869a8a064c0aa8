"""The user's §2.2 test: through the full hub, a token is issued, a refresh is forced, and quotes and minute
bars come back from both brokers' mock (모의투자) environments.

Everything goes the way a worker's call goes: ``HubClient`` → ``api.requests`` (this test's own topics) →
a real ``apihub gateway`` process (pacing, tokens in Redis, the broker adapters) → the broker →
``api.responses``. The calls: KIS ``FHKST01010100`` (current price) and ``FHKST03010200`` (today's minute
bars), Kiwoom ``ka10001`` (basic stock information, with the current price) and ``ka10080`` (minute chart).

Where the brokers are, per broker, decided by the environment:

- with a broker's mock credentials set, the test talks to that broker's real mock server:

  ========================================  ========================================================
  ``APIHUB_REAL_KIS_MOCK_APPKEY``           KIS mock (모의투자) appkey (required for KIS)
  ``APIHUB_REAL_KIS_MOCK_APPSECRET``        its appsecret (required for KIS)
  ``APIHUB_REAL_KIS_MOCK_BASE_URL``         default ``https://openapivts.koreainvestment.com:29443``
  ``APIHUB_REAL_KIS_MOCK_CA_BUNDLE``        optional PEM file, for the mock host's self-signed chain
  ``APIHUB_REAL_KIS_MOCK_RATE_PER_S``       calls per second paced for the key, default 2
  ``APIHUB_REAL_KIWOOM_MOCK_APPKEY``        Kiwoom mock appkey (required for Kiwoom)
  ``APIHUB_REAL_KIWOOM_MOCK_SECRETKEY``     its secretkey (required for Kiwoom)
  ``APIHUB_REAL_KIWOOM_MOCK_BASE_URL``      default ``https://mockapi.kiwoom.com``
  ``APIHUB_REAL_KIWOOM_MOCK_CA_BUNDLE``     optional PEM file
  ``APIHUB_REAL_KIWOOM_MOCK_RATE_PER_S``    calls per second paced for the key, default 1
  ========================================  ========================================================

- without them, it talks to the local sandbox's mock environments (``/kis/mock``, ``/kiwoom/mock``) with
  fresh keys, and also checks the sandbox referee's count of issued tokens.

Which one it did is printed and recorded as the test report's properties ``kis_upstream`` and
``kiwoom_upstream`` (``real ...`` or ``sandbox ...``; see them in ``--junitxml`` or with ``-rA``). Select
it alone with ``-m real_api``; it runs in every ``make test`` too (against the sandbox when no credentials
are set). Set only one half of a pair and the test fails, naming what is missing.

The forced refresh: the gateway's current token is read from the hub's own Redis store (this test's key
prefix) and revoked at the broker with the broker's revoke endpoint (KIS ``/oauth2/revokeP``, Kiwoom
``/oauth2/revoke``, au10002), as an operator or a leaked-key drill would. The next call is refused by the
broker as a bad token, and the gateway must replace it (once, single-flight) and answer ok. Brokers issue
at most one token a minute per key, so the test waits for the hub's 61 s issuance permit first: it takes
a little over a minute. Against real servers: use mock keys only, nothing else may use them during the
run (the key's token is revoked), and the key must not have had a token issued in the minute before.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from hubclient import HubClient
from hubclient.market import kis_minute_candles, kiwoom_minute_candles
from hubclient.models import ApiResponse, Provider, Status
from services.gateway.clock import SystemClock
from services.gateway.token_store import ISSUE_PERMIT_S, RedisTokenStore
from services.settings import GatewaySettings, KisSettings, KiwoomSettings
from tests import processes
from tests.conftest import Services
from tests.integration.conftest import Topics, fake_credentials, gateway_env, referee

pytestmark = [pytest.mark.real_api, pytest.mark.timeout(240)]

SYMBOL = "005930"
KIS_QUOTE = ("FHKST01010100", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": SYMBOL})
KIS_BARS = (
    "FHKST03010200",
    {
        "FID_ETC_CLS_CODE": "",
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": SYMBOL,
        "FID_INPUT_HOUR_1": "153000",  # the close; a later hour than now is read as now
        "FID_PW_DATA_INCU_YN": "N",
    },
)
KIWOOM_QUOTE = ("ka10001", {"stk_cd": SYMBOL})
KIWOOM_BARS = ("ka10080", {"stk_cd": SYMBOL, "tic_scope": "1", "upd_stkpc_tp": "0"})
CALL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class MockServer:
    """Where one broker's mock environment is for this run, and the key used there."""

    provider: Provider
    real: bool
    base_url: str
    appkey: str
    secret: str
    rate_per_s: float
    ca_bundle: str | None = None

    def describe(self) -> str:
        """``real KIS mock at https://...`` or ``sandbox KIS mock at http://127.0.0.1:.../kis/mock``."""
        return f"{'real' if self.real else 'sandbox'} {self.provider.value} mock at {self.base_url}"

    def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS for a direct call (the revoke): the CA bundle when one is named, else the default."""
        return ssl.create_default_context(cafile=self.ca_bundle) if self.ca_bundle else True


REAL = {
    Provider.KIS: ("APIHUB_REAL_KIS_MOCK_", "APPSECRET", "https://openapivts.koreainvestment.com:29443", 2.0),
    Provider.KIWOOM: ("APIHUB_REAL_KIWOOM_MOCK_", "SECRETKEY", "https://mockapi.kiwoom.com", 1.0),
}
SANDBOX = {Provider.KIS: ("kis/mock", 2.0), Provider.KIWOOM: ("kiwoom/mock", 5.0)}
#: The broker's answer to a revoked token, as the sandbox referee counts it.
TOKEN_REJECTED_CODE = {Provider.KIS: "EGW00121", Provider.KIWOOM: "8005"}


def mock_server(provider: Provider, sandbox_url: str) -> MockServer:
    """The real mock server when its credentials are in the environment, else the sandbox's mock one."""
    prefix, secret_name, default_url, default_rate = REAL[provider]
    key, secret = os.environ.get(f"{prefix}APPKEY", ""), os.environ.get(f"{prefix}{secret_name}", "")
    if key or secret:
        missing = [name for name, value in (("APPKEY", key), (secret_name, secret)) if not value]
        if missing:
            pytest.fail(f"{prefix}{missing[0]} is not set, but its pair is: set both or neither")
        return MockServer(
            provider,
            True,
            os.environ.get(f"{prefix}BASE_URL") or default_url,
            key,
            secret,
            float(os.environ.get(f"{prefix}RATE_PER_S") or default_rate),
            os.environ.get(f"{prefix}CA_BUNDLE") or None,
        )
    environment, rate = SANDBOX[provider]
    key, secret = fake_credentials()
    return MockServer(provider, False, f"{sandbox_url}/{environment}", key, secret, rate)


def hub_settings(base: GatewaySettings, kis: MockServer, kiwoom: MockServer) -> GatewaySettings:
    """The test's gateway settings pointed at the two mock servers."""
    return base.model_copy(
        update={
            "kis": KisSettings(
                base_url=kis.base_url,
                environment="mock",
                appkey=kis.appkey,
                appsecret=kis.secret,
                rate_per_s=kis.rate_per_s,
                ca_bundle=kis.ca_bundle,
            ),
            "kiwoom": KiwoomSettings(
                base_url=kiwoom.base_url,
                environment="mock",
                appkey=kiwoom.appkey,
                secretkey=kiwoom.secret,
                rate_per_s=kiwoom.rate_per_s,
                query_rate_per_s=kiwoom.rate_per_s,
                ca_bundle=kiwoom.ca_bundle,
            ),
        }
    )


def hub_env(settings: GatewaySettings) -> dict[str, str]:
    """The gateway process's ``APIHUB_*`` environment for ``settings`` (mock environments, rates, CAs)."""
    env = gateway_env(settings)
    for name, provider in (("KIS", settings.kis), ("KIWOOM", settings.kiwoom)):
        env[f"APIHUB_{name}__ENVIRONMENT"] = provider.environment
        env[f"APIHUB_{name}__RATE_PER_S"] = str(provider.rate_per_s)
        if provider.ca_bundle:
            env[f"APIHUB_{name}__CA_BUNDLE"] = provider.ca_bundle
    env["APIHUB_KIWOOM__QUERY_RATE_PER_S"] = str(settings.kiwoom.query_rate_per_s)
    return env


async def revoke(server: MockServer, token: str) -> dict[str, Any]:
    """Revoke ``token`` at the broker with its own revoke endpoint; the broker's answer body."""
    if server.provider is Provider.KIS:
        url, body = f"{server.base_url}/oauth2/revokeP", {"appkey": server.appkey, "appsecret": server.secret}
        headers = {"content-type": "application/json; charset=utf-8"}
    else:
        url, body = f"{server.base_url}/oauth2/revoke", {"appkey": server.appkey, "secretkey": server.secret}
        headers = {"content-type": "application/json;charset=UTF-8", "api-id": "au10002"}
    timeout = aiohttp.ClientTimeout(total=CALL_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(url, json={**body, "token": token}, headers=headers, ssl=server.ssl_context()) as resp,
    ):
        answer: dict[str, Any] = await resp.json(content_type=None)
        assert resp.status == 200, f"{server.describe()} refused the revoke: {resp.status} {answer}"
    return answer


async def call(hub: HubClient, provider: Provider, tr_id: str, params: dict[str, str]) -> ApiResponse:
    """One call through the hub; an answer other than ok fails the test with the hub's reason."""
    response = await hub.submit(provider.value, tr_id, params, timeout=CALL_TIMEOUT_S)
    assert response.status is Status.OK, (provider, tr_id, response.status, response.reason, response.message)
    return response


async def quotes_and_bars(hub: HubClient, *, sandbox: dict[Provider, bool]) -> None:
    """Both brokers' quote and minute bars come back ok and readable (rows required from the sandbox)."""
    kis_quote, kiwoom_quote = await asyncio.gather(
        call(hub, Provider.KIS, *KIS_QUOTE), call(hub, Provider.KIWOOM, *KIWOOM_QUOTE)
    )
    assert kis_quote.data["rt_cd"] == "0" and kis_quote.data["output"]["stck_prpr"].isdigit(), kis_quote.data
    assert int(kiwoom_quote.data["return_code"]) == 0 and "cur_prc" in kiwoom_quote.data, kiwoom_quote.data
    kis_bars, kiwoom_bars = await asyncio.gather(
        call(hub, Provider.KIS, *KIS_BARS), call(hub, Provider.KIWOOM, *KIWOOM_BARS)
    )
    kis_candles = kis_minute_candles(kis_bars.data, symbol=SYMBOL)
    kiwoom_candles = kiwoom_minute_candles(kiwoom_bars.data, symbol=SYMBOL)
    print(f"KIS minute bars: {len(kis_candles)}, Kiwoom minute bars: {len(kiwoom_candles)}")
    if sandbox[Provider.KIS]:
        assert kis_candles and all(c.symbol == SYMBOL and c.timeframe == "1m" for c in kis_candles)
    if sandbox[Provider.KIWOOM]:
        assert kiwoom_candles and all(c.symbol == SYMBOL and c.timeframe == "1m" for c in kiwoom_candles)


async def test_token_refresh_quotes_and_minute_bars_on_both_mock_environments(
    services: Services,
    topics: Topics,
    gateway_settings: GatewaySettings,
    sandbox_url: str,
    record_property: Any,
) -> None:
    """Through a real gateway, both brokers' mock servers issue a token, answer quotes and minute bars, and
    after the token is revoked the hub refreshes it once and answers again."""
    servers = {p: mock_server(p, sandbox_url) for p in (Provider.KIS, Provider.KIWOOM)}
    for server in servers.values():
        record_property(f"{server.provider.value.lower()}_upstream", server.describe())
        print(f"{server.provider.value}: {server.describe()}")
    sandbox = {p: not s.real for p, s in servers.items()}
    settings = hub_settings(gateway_settings, servers[Provider.KIS], servers[Provider.KIWOOM])
    redis = Redis.from_url(services.redis_url)
    store = RedisTokenStore(
        redis,
        key_prefix=settings.redis.key_prefix,
        appkeys={p: s.appkey for p, s in servers.items()},
        clock=SystemClock(),
    )
    log_path = processes.LOG_DIR / f"gateway-{settings.instance_id}.log"
    try:
        async with (
            processes.gateway(hub_env(settings), log_path=log_path) as gateway,
            HubClient.connect(
                services.kafka_bootstrap,
                caller="real-api-test",
                request_topic=topics.requests,
                reply_topic=topics.responses,
            ) as hub,
        ):

            async def issued(provider: Provider) -> float:
                return (
                    await gateway.metric(
                        "apihub_token_refreshes_total", provider=provider.value, result="issued"
                    )
                    or 0
                )

            # 1. A token is issued for each broker and the calls are served with it.
            await quotes_and_bars(hub, sandbox=sandbox)
            assert [await issued(p) for p in servers] == [1, 1]
            first = {p: await store.load(p) for p in servers}
            assert all(stored is not None for stored in first.values())

            # 2. Force a refresh: revoke the hub's token at each broker, once issuing is allowed again.
            await asyncio.sleep(1.1)  # the revoke is no paced call: keep it out of the calls' second
            for p, server in servers.items():
                stored = first[p]
                assert stored is not None
                await revoke(server, stored.grant.access_token)
            wait_s = max([await store.permit_ttl_s(p) for p in servers] + [0.0])
            assert wait_s <= ISSUE_PERMIT_S
            await asyncio.sleep(wait_s + 0.5)

            # 3. The next calls meet the revoked token; the hub replaces it and answers ok.
            await quotes_and_bars(hub, sandbox=sandbox)
            assert [await issued(p) for p in servers] == [2, 2]
            for p in servers:
                now, before = await store.load(p), first[p]
                assert now is not None and before is not None
                assert now.grant.access_token != before.grant.access_token
    finally:
        await redis.aclose()

    for p, server in servers.items():
        if not server.real:  # the referee saw two issuances and one call with the revoked token, no more
            counters = await referee(sandbox_url, SANDBOX[p][0], server.appkey)
            assert counters["tokens_issued"] == 2 and counters["tokens_new"] == 2, counters
            assert counters["by_code"].get(TOKEN_REJECTED_CODE[p]) == 1, counters
            assert counters["over_limit"] == 0, counters
            print(f"{p.value} referee: {counters}")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ("sandbox", "http://sandbox/kis/mock", 2.0)),
        (
            {"APIHUB_REAL_KIS_MOCK_APPKEY": "PSkey", "APIHUB_REAL_KIS_MOCK_APPSECRET": "secret"},
            ("real", "https://openapivts.koreainvestment.com:29443", 2.0),
        ),
        (
            {
                "APIHUB_REAL_KIS_MOCK_APPKEY": "PSkey",
                "APIHUB_REAL_KIS_MOCK_APPSECRET": "secret",
                "APIHUB_REAL_KIS_MOCK_BASE_URL": "https://vts.example:29443",
                "APIHUB_REAL_KIS_MOCK_RATE_PER_S": "1",
            },
            ("real", "https://vts.example:29443", 1.0),
        ),
    ],
    ids=["no credentials", "credentials", "address and rate too"],
)
def test_the_environment_picks_the_mock_server(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: tuple[str, str, float]
) -> None:
    """A broker's mock credentials in the environment select its real mock server, else the sandbox's."""
    for name in [n for n in os.environ if n.startswith("APIHUB_REAL_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    server = mock_server(Provider.KIS, "http://sandbox")
    assert (server.describe().split()[0], server.base_url, server.rate_per_s) == expected


def test_half_a_credential_pair_fails_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """An appkey without its secret fails the test naming the missing variable, never falls back quietly."""
    monkeypatch.delenv("APIHUB_REAL_KIWOOM_MOCK_SECRETKEY", raising=False)
    monkeypatch.setenv("APIHUB_REAL_KIWOOM_MOCK_APPKEY", "key")
    with pytest.raises(pytest.fail.Exception, match="APIHUB_REAL_KIWOOM_MOCK_SECRETKEY"):
        mock_server(Provider.KIWOOM, "http://sandbox")
