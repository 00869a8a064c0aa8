"""The real provider adapters and dispatcher against the sandbox over HTTP.

Whole-day paging (KIS time cursor, Kiwoom ``cont-yn``/``next-key``), KIS balance paging on real and mock,
KIS/Kiwoom agreement on the same minute, and the classification of every error form the sandbox produces.

Every test runs its own in-process sandbox whose clock is pinned to a Monday after the close and frozen
(bursts land in one instant, nothing drifts; pagers advance it one simulated second per page), and uses
fresh credentials, so the referee's counters are the test's own. No Kafka or Redis is needed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import date, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hubclient.catalog import TrSpec, lookup
from hubclient.ids import new_request_id
from hubclient.models import ApiRequest, Provider
from services.gateway.dispatcher import HttpDispatcher
from services.gateway.errors import DispatchError, TokenIssueError, UpstreamNoAnswer
from services.gateway.providers.base import (
    KST,
    Classified,
    Outcome,
    TokenGrant,
    UpstreamAnswer,
    UpstreamRequest,
)
from services.gateway.providers.kis import KisAdapter
from services.gateway.providers.kiwoom import KiwoomAdapter
from services.sandbox.app import create_app
from services.sandbox.referee import appkey_label
from services.sandbox.settings import SandboxSettings
from services.sandbox.state import STATE, SandboxState
from services.settings import KisSettings, KiwoomSettings
from tests.integration.conftest import fake_credentials

DAY = date(2026, 11, 23)  # a Monday
AFTER_CLOSE = datetime(2026, 11, 23, 16, 0, 0, tzinfo=KST)
PREVIOUS_DAY = date(2026, 11, 20)  # the Friday before
SYMBOL = "005930"
CALL_TIMEOUT_S = 10.0
MAX_PAGES = 50
KIS, KIWOOM = Provider.KIS, Provider.KIWOOM
ACCOUNT = {"CANO": "81055689", "ACNT_PRDT_CD": "01"}
BALANCE_PARAMS = {
    **ACCOUNT,
    "AFHR_FLPR_YN": "N",
    "OFL_YN": "",
    "INQR_DVSN": "02",
    "UNPR_DVSN": "01",
    "FUND_STTL_ICLD_YN": "N",
    "FNCG_AMT_AUTO_RDPT_YN": "N",
    "PRCS_DVSN": "00",
    "CTX_AREA_FK100": "",
    "CTX_AREA_NK100": "",
}
KIS_ORDER = {**ACCOUNT, "PDNO": SYMBOL, "ORD_DVSN": "00", "ORD_QTY": "1", "ORD_UNPR": "70000"}
KIWOOM_ORDER = {
    "dmst_stex_tp": "KRX",
    "stk_cd": SYMBOL,
    "ord_qty": "1",
    "ord_uv": "70000",
    "trde_tp": "0",
    "cond_uv": "",
}


def kis_quote(symbol: str = SYMBOL) -> dict[str, str]:
    """Parameters of FHKST01010100 (inquire-price)."""
    return {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": symbol}


def kis_today_minutes(symbol: str) -> dict[str, str]:
    """Parameters of FHKST03010200 starting at the close."""
    return {
        "FID_ETC_CLS_CODE": "",
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": symbol,
        "FID_INPUT_HOUR_1": "153000",
        "FID_PW_DATA_INCU_YN": "N",
    }


def kis_past_minutes(symbol: str, day: date, include_past: str) -> dict[str, str]:
    """Parameters of FHKST03010230 (real only) starting at the close of ``day``."""
    return {
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": symbol,
        "FID_INPUT_HOUR_1": "153000",
        "FID_INPUT_DATE_1": f"{day:%Y%m%d}",
        "FID_PW_DATA_INCU_YN": include_past,
        "FID_FAKE_TICK_INCU_YN": "",
    }


def kiwoom_minutes(symbol: str, day: date = DAY) -> dict[str, str]:
    """Parameters of ka10080 (one-minute bars, unadjusted) for ``day``."""
    return {"stk_cd": symbol, "tic_scope": "1", "upd_stkpc_tp": "0", "base_dt": f"{day:%Y%m%d}"}


def kiwoom_daily(symbol: str = SYMBOL) -> dict[str, str]:
    """Parameters of ka10081 (daily bars) up to DAY."""
    return {"stk_cd": symbol, "base_dt": f"{DAY:%Y%m%d}", "upd_stkpc_tp": "1"}


def hhmmss(minute: int) -> str:
    """A bar's label from its start minute of the day."""
    return f"{minute // 60:02d}{minute % 60:02d}00"


# -- the sandbox --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Sandbox:
    """A running sandbox: its root URL, its in-process state (to read the market) and an admin client."""

    url: str
    state: SandboxState
    http: aiohttp.ClientSession

    async def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Call ``/_sandbox/{path}`` and return its JSON."""
        async with self.http.request(method, f"{self.url}/_sandbox/{path}", json=body) as resp:
            assert resp.status == 200, await resp.text()
            data: dict[str, Any] = await resp.json()
            return data

    async def advance(self, seconds: float) -> None:
        """Move the frozen simulated clock (and the limiter's monotonic time) forward."""
        await self.admin("POST", "clock", {"advance_s": seconds})

    async def faults(self, **patch: Any) -> None:
        """Merge fault settings at runtime."""
        await self.admin("POST", "faults", patch)

    async def counters(self, env_id: str, appkey: str) -> dict[str, Any]:
        """The referee's counters of one appkey in one environment."""
        stats = await self.admin("GET", "stats")
        found: dict[str, Any] = stats["environments"][env_id]["appkeys"].get(appkey_label(appkey), {})
        return found


@asynccontextmanager
async def running_sandbox(**overrides: Any) -> AsyncIterator[Sandbox]:
    """A sandbox on a free loopback port, clock pinned to AFTER_CLOSE and frozen unless overridden."""
    values: dict[str, Any] = {"clock_start": AFTER_CLOSE, "clock_rate": 0.0, **overrides}
    app = create_app(SandboxSettings(**values))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as http:
            yield Sandbox(f"http://127.0.0.1:{port}", app[STATE], http)
    finally:
        await runner.cleanup()


SandboxFactory = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
async def make_sandbox() -> AsyncIterator[SandboxFactory]:
    """Start sandboxes with setting overrides for this test; all are stopped at its end."""
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Sandbox:
            return await stack.enter_async_context(running_sandbox(**overrides))

        yield start


@pytest.fixture
async def sandbox(make_sandbox: SandboxFactory) -> Sandbox:
    """A sandbox with default settings (frozen clock at AFTER_CLOSE) for this test alone."""
    return await make_sandbox()


@pytest.fixture(scope="module")
async def market() -> AsyncIterator[Sandbox]:
    """The paging tests' sandbox: Kiwoom pages of 100 minutes, and minute history holding only DAY.

    With ``minute_history_days=2`` on a Monday the previous trading day (Friday) is out of history, so
    Kiwoom's ``ka10080`` stops offering pages exactly after DAY's first bar and the adapter's own
    "no more pages" decides the end of the loop.
    """
    async with running_sandbox(kiwoom_minute_rows_per_page=100, minute_history_days=2) as running:
        yield running


# -- one broker environment through the real adapter and dispatcher ------------------------------------------
@dataclasses.dataclass(frozen=True)
class Page:
    """One answer of a paged call."""

    headers: dict[str, str]
    result: Classified
    rows: list[dict[str, str]]


class Broker:
    """A broker environment seen through the real adapter and a started Dispatcher."""

    def __init__(
        self, provider: Provider, adapter: KisAdapter | KiwoomAdapter, dispatcher: HttpDispatcher
    ) -> None:
        self.provider = provider
        self.adapter = adapter
        self.dispatcher = dispatcher
        self.appkey = ""
        self.token = ""

    async def send(self, upstream: UpstreamRequest) -> UpstreamAnswer:
        """One HTTP call through the dispatcher."""
        return await self.dispatcher.send(self.provider, upstream, CALL_TIMEOUT_S)

    async def issue_token(self) -> TokenGrant:
        """``token_request()`` sent, ``parse_token()`` read."""
        return self.adapter.parse_token(await self.send(self.adapter.token_request()))

    async def login(self) -> TokenGrant:
        """Obtain a token and use it from now on."""
        grant = await self.issue_token()
        self.token = grant.access_token
        return grant

    def request(
        self, tr_id: str, params: dict[str, Any], continuation: dict[str, str] | None = None
    ) -> ApiRequest:
        """The hub request a worker would have sent."""
        now_ms = int(time.time() * 1000)
        return ApiRequest(
            request_id=new_request_id(now_ms),
            provider=self.provider,
            tr_id=tr_id,
            params=params,
            caller="adapter-sandbox-test",
            deadline_ms=now_ms + 60_000,
            created_at_ms=now_ms,
            reply_topic="api.responses",
            reply_partition=0,
            continuation=continuation,
        )

    async def call(
        self,
        tr_id: str,
        params: dict[str, Any],
        continuation: dict[str, str] | None = None,
        *,
        spec: TrSpec | None = None,
        edit: Callable[[UpstreamRequest], UpstreamRequest] | None = None,
    ) -> tuple[UpstreamAnswer, Classified]:
        """Build from the catalog (or ``spec``), send, classify."""
        spec = spec or lookup(self.provider, tr_id)
        request = self.request(spec.tr_id, params, continuation)
        upstream = self.adapter.build(spec, request, self.token)
        if edit is not None:
            upstream = edit(upstream)
        answer = await self.send(upstream)
        return answer, self.adapter.classify(spec, request, answer)

    async def pages(
        self,
        sandbox: Sandbox,
        tr_id: str,
        params: dict[str, Any],
        rows_of: Callable[[Any], list[dict[str, str]]],
        max_pages: int = MAX_PAGES,
        must_end: bool = True,
    ) -> list[Page]:
        """Follow the adapter's continuation until it says no more pages (or ``max_pages``).

        One simulated second passes before every page, so no per-second limit is ever touched.
        """
        pages: list[Page] = []
        continuation: dict[str, str] | None = None
        while len(pages) < max_pages:
            await sandbox.advance(1.0)
            answer, result = await self.call(tr_id, params, continuation)
            assert result.outcome is Outcome.OK, result
            pages.append(Page(answer.headers, result, rows_of(result.data)))
            continuation = result.continuation
            if continuation is None:
                return pages
        assert not must_end, f"{tr_id}: the adapter still offered a page after {max_pages}"
        return pages


@asynccontextmanager
async def broker(
    sandbox: Sandbox,
    provider: Provider,
    environment: str = "real",
    credentials: tuple[str, str] | None = None,
    login: bool = True,
) -> AsyncIterator[Broker]:
    """A ``Broker`` on ``sandbox`` with fresh (or the given) credentials, logged in unless told not to."""
    appkey, secret = credentials or fake_credentials()
    base_url = f"{sandbox.url}/{provider.value.lower()}/{environment}"
    settings: KisSettings | KiwoomSettings
    adapter: KisAdapter | KiwoomAdapter
    if provider is KIS:
        settings = KisSettings(base_url=base_url, environment=environment, appkey=appkey, appsecret=secret)
        adapter = KisAdapter(settings)
    else:
        settings = KiwoomSettings(base_url=base_url, environment=environment, appkey=appkey, secretkey=secret)
        adapter = KiwoomAdapter(settings)
    dispatcher = HttpDispatcher({provider: settings})
    await dispatcher.start()
    try:
        client = Broker(provider, adapter, dispatcher)
        client.appkey = appkey
        if login:
            await client.login()
        yield client
    finally:
        await dispatcher.stop()


def kis_chart_rows(body: dict[str, Any]) -> list[dict[str, str]]:
    """``output2`` without the empty-dict quirk of a chart without rows."""
    return [row for row in body["output2"] if row]


async def kis_minute_day(client: Broker, sandbox: Sandbox, symbol: str) -> list[Page]:
    """Today's minute bars from FHKST03010200, paged by the adapter's time cursor."""
    return await client.pages(sandbox, "FHKST03010200", kis_today_minutes(symbol), kis_chart_rows)


async def kiwoom_minute_day(client: Broker, sandbox: Sandbox, symbol: str) -> list[Page]:
    """DAY's minute bars from ka10080, paged by ``cont-yn``/``next-key``."""
    return await client.pages(
        sandbox, "ka10080", kiwoom_minutes(symbol), lambda body: body["stk_min_pole_chart_qry"]
    )


# -- 1-3: whole-day minute bars ----------------------------------------------------------------------------
async def test_kis_minute_bars_page_through_the_whole_day(market: Sandbox) -> None:
    """FHKST03010200 paged by the adapter's time cursor from 153000 gives each bar once, down to 090000."""
    async with broker(market, KIS) as kis:
        pages = await kis_minute_day(kis, market, SYMBOL)
        counters = await market.counters("kis/real", kis.appkey)
    rows = [row for page in pages for row in page.rows]
    hours = [row["stck_cntg_hour"] for row in rows]
    expected = market.state.market.minute_bars(SYMBOL, DAY)
    assert len(rows) == len(expected) > 300
    assert len(set(hours)) == len(hours), "no bar twice"
    assert all(newer > older for newer, older in itertools.pairwise(hours)), "strictly descending"
    assert hours[0] == "153000" and hours[-1] == "090000"
    assert hours == [hhmmss(bar.minute) for bar in reversed(expected)]
    assert {row["stck_bsop_date"] for row in rows} == {f"{DAY:%Y%m%d}"}
    assert [(int(r["stck_prpr"]), int(r["cntg_vol"])) for r in rows] == [
        (bar.close, bar.volume) for bar in reversed(expected)
    ]
    # full pages of 30 until the short last one; each cursor is the previous page's oldest bar minus a minute
    assert all(len(page.rows) == 30 for page in pages[:-1]) and 0 < len(pages[-1].rows) <= 30
    for page, following in itertools.pairwise(pages):
        assert page.result.continuation is not None
        assert page.result.continuation["FID_INPUT_HOUR_1"] == following.rows[0]["stck_cntg_hour"]
    assert counters["by_tr_id"]["FHKST03010200"] == len(pages) and counters["over_limit"] == 0


async def test_kiwoom_minute_bars_page_through_the_whole_day(market: Sandbox) -> None:
    """ka10080 paged by cont-yn/next-key until the adapter offers no continuation gives the whole day once."""
    async with broker(market, KIWOOM) as kw:
        pages = await kiwoom_minute_day(kw, market, SYMBOL)
        counters = await market.counters("kiwoom/real", kw.appkey)
    rows = [row for page in pages for row in page.rows]
    times = [row["cntr_tm"] for row in rows]
    expected = market.state.market.minute_bars(SYMBOL, DAY)
    assert len(rows) == len(expected) > 300
    assert len(set(times)) == len(times), "no bar twice"
    assert times == [f"{DAY:%Y%m%d}{hhmmss(bar.minute)}" for bar in reversed(expected)]
    assert times[0].endswith("153000") and times[-1].endswith("090000")
    assert len(pages) == -(-len(expected) // 100) > 1
    for page in pages[:-1]:
        assert page.headers["cont-yn"] == "Y"
        assert page.result.continuation == {"cont-yn": "Y", "next-key": page.headers["next-key"]}
    assert pages[-1].headers["cont-yn"] == "N" and pages[-1].result.continuation is None
    assert counters["by_tr_id"]["ka10080"] == len(pages) and counters["over_limit"] == 0


@pytest.mark.parametrize("symbol", ["005930", "000660"])
async def test_kis_and_kiwoom_agree_on_every_minute(market: Sandbox, symbol: str) -> None:
    """For the same symbol and minute the KIS bar and the Kiwoom bar (prices unsigned) agree on OHLCV."""
    async with broker(market, KIS) as kis, broker(market, KIWOOM) as kw:
        kis_rows = [row for page in await kis_minute_day(kis, market, symbol) for row in page.rows]
        kw_rows = [row for page in await kiwoom_minute_day(kw, market, symbol) for row in page.rows]
    kis_bars = {
        row["stck_bsop_date"] + row["stck_cntg_hour"]: tuple(
            int(row[name]) for name in ("stck_oprc", "stck_hgpr", "stck_lwpr", "stck_prpr", "cntg_vol")
        )
        for row in kis_rows
    }
    kw_bars = {
        row["cntr_tm"]: (
            *(abs(int(row[name])) for name in ("open_pric", "high_pric", "low_pric", "cur_prc")),
            int(row["trde_qty"]),
        )
        for row in kw_rows
    }
    assert len(kis_bars) == len(kis_rows) > 300 and len(kw_bars) == len(kw_rows)
    assert kis_bars.keys() == kw_bars.keys()
    assert kis_bars == kw_bars
    assert any(row["cur_prc"][0] in "+-" for row in kw_rows), "Kiwoom minute prices carry a sign"
    assert all(row["stck_prpr"].isdigit() for row in kis_rows), "KIS prices do not"


# -- 4: balance paging ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("environment", "upstream_tr_id", "page_size", "tr_conts"),
    [("real", "TTTC8434R", 50, ["F", "E"]), ("mock", "VTTC8434R", 20, ["F", "M", "E"])],
    ids=["real", "mock"],
)
async def test_kis_balance_pages_collect_every_holding(
    market: Sandbox, environment: str, upstream_tr_id: str, page_size: int, tr_conts: list[str]
) -> None:
    """TTTC8434R paged by tr_cont + CTX_AREA_FK100/NK100 collects every holding: 50 a page real, 20 mock."""
    async with broker(market, KIS, environment) as kis:
        pages = await kis.pages(market, "TTTC8434R", BALANCE_PARAMS, lambda body: body["output1"])
        counters = await market.counters(f"kis/{environment}", kis.appkey)
    holdings = [row["pdno"] for page in pages for row in page.rows]
    total = market.state.settings.kis_balance_holdings
    assert len(holdings) == len(set(holdings)) == total > page_size
    assert [len(page.rows) for page in pages] == [
        min(page_size, total - start) for start in range(0, total, page_size)
    ]
    assert [page.headers["tr_cont"] for page in pages] == tr_conts
    assert {page.headers["tr_id"] for page in pages} == {upstream_tr_id}
    for page in pages[:-1]:
        continuation = page.result.continuation
        assert continuation is not None and continuation["tr_cont"] == "N"
        assert continuation["CTX_AREA_FK100"] == page.result.data["ctx_area_fk100"]
        assert continuation["CTX_AREA_NK100"] == page.result.data["ctx_area_nk100"]
        assert continuation["CTX_AREA_NK100"].strip()
    summary = pages[-1].result.data["output2"][0]
    assert sum(int(row["evlu_amt"]) for page in pages for row in page.rows) == int(
        summary["evlu_amt_smtl_amt"]
    )
    assert counters["by_tr_id"][upstream_tr_id] == len(pages) and counters["over_limit"] == 0


# -- the adapter's cursor across days (FHKST03010230 with past data) ----------------------------------------
async def test_kis_past_minute_bars_page_across_days_without_repeats(sandbox: Sandbox) -> None:
    """FHKST03010230 with FID_PW_DATA_INCU_YN=Y pages back across day boundaries without repeating a bar."""
    async with broker(sandbox, KIS) as kis:
        pages = await kis.pages(
            sandbox,
            "FHKST03010230",
            kis_past_minutes(SYMBOL, DAY, "Y"),
            kis_chart_rows,
            max_pages=7,
            must_end=False,
        )
    keys = [(row["stck_bsop_date"], row["stck_cntg_hour"]) for page in pages for row in page.rows]
    assert len(keys) == 7 * 120
    assert len(set(keys)) == len(keys), "no bar twice"
    assert all(newer > older for newer, older in itertools.pairwise(keys)), "strictly descending"
    bars = sandbox.state.market.minute_bars
    for day in (DAY, PREVIOUS_DAY):
        got = [hour for bar_day, hour in keys if bar_day == f"{day:%Y%m%d}"]
        assert got == [hhmmss(bar.minute) for bar in reversed(bars(SYMBOL, day))], day


async def test_kis_past_minute_bars_of_one_day_end_at_the_open(sandbox: Sandbox) -> None:
    """FHKST03010230 without past data pages one day back to 09:00 and then reports no more pages."""
    async with broker(sandbox, KIS) as kis:
        pages = await kis.pages(
            sandbox, "FHKST03010230", kis_past_minutes(SYMBOL, PREVIOUS_DAY, "N"), kis_chart_rows
        )
    hours = [row["stck_cntg_hour"] for page in pages for row in page.rows]
    expected = sandbox.state.market.minute_bars(SYMBOL, PREVIOUS_DAY)
    assert hours == [hhmmss(bar.minute) for bar in reversed(expected)]
    assert {row["stck_bsop_date"] for page in pages for row in page.rows} == {f"{PREVIOUS_DAY:%Y%m%d}"}


# -- 5: classification of every error form -----------------------------------------------------------------
async def test_kis_burst_over_the_limit_is_throttled(sandbox: Sandbox) -> None:
    """25 KIS calls in one instant against 20/s get five HTTP 500 EGW00201 answers, classified THROTTLED."""
    async with broker(sandbox, KIS) as kis:
        results = await asyncio.gather(*(kis.call("FHKST01010100", kis_quote()) for _ in range(25)))
        counters = await sandbox.counters("kis/real", kis.appkey)
    outcomes = Counter(result.outcome for _, result in results)
    assert outcomes == {Outcome.OK: 20, Outcome.THROTTLED: 5}
    throttled = {
        (r.http_status, r.provider_code, r.message) for _, r in results if r.outcome is Outcome.THROTTLED
    }
    assert throttled == {(500, "EGW00201", "초당 거래건수를 초과하였습니다.")}
    assert counters["over_limit"] == 5 and counters["max_in_window"] == 25


async def test_kis_expired_token_is_rejected(sandbox: Sandbox) -> None:
    """Past its absolute 24 h expiry a KIS token gets HTTP 500 EGW00123 (TOKEN_REJECTED); a new one works."""
    async with broker(sandbox, KIS, login=False) as kis:
        grant = await kis.login()
        _, before = await kis.call("FHKST01010100", kis_quote())
        await sandbox.advance(sandbox.state.settings.token_lifetime_s + 1)
        _, expired = await kis.call("FHKST01010100", kis_quote())
        fresh = await kis.login()
        _, after = await kis.call("FHKST01010100", kis_quote())
    assert grant.expires_at_s == (AFTER_CLOSE + timedelta(days=1)).timestamp()
    assert before.outcome is Outcome.OK
    assert (expired.outcome, expired.http_status, expired.provider_code) == (
        Outcome.TOKEN_REJECTED,
        500,
        "EGW00123",
    )
    assert fresh.access_token != grant.access_token and after.outcome is Outcome.OK


@pytest.mark.parametrize("spoil", ["garbage", "maintenance"])
async def test_kis_invalid_token_is_rejected(sandbox: Sandbox, spoil: str) -> None:
    """A token KIS does not accept (garbage, or killed by maintenance) gets EGW00121: TOKEN_REJECTED."""
    async with broker(sandbox, KIS) as kis:
        if spoil == "garbage":
            kis.token = "garbage-token"
        else:
            await sandbox.faults(invalidate_tokens_now=True)
        _, result = await kis.call("FHKST01010100", kis_quote())
    assert (result.outcome, result.http_status, result.provider_code) == (
        Outcome.TOKEN_REJECTED,
        500,
        "EGW00121",
    )


async def test_kis_malformed_appkey_is_refused_at_the_token_endpoint(sandbox: Sandbox) -> None:
    """A malformed appkey gets HTTP 403 EGW00103 from tokenP: a TokenIssueError that is not the rate rule."""
    _, secret = fake_credentials()
    async with broker(sandbox, KIS, credentials=("too-short-key", secret), login=False) as kis:
        answer = await kis.send(kis.adapter.token_request())
        with pytest.raises(TokenIssueError) as refused:
            kis.adapter.parse_token(answer)
    assert answer.status == 403 and answer.body["error_code"] == "EGW00103"
    assert refused.value.code == "EGW00103" and not refused.value.refused_by_rate


async def test_kis_second_issuance_within_a_minute_is_refused_by_rate(sandbox: Sandbox) -> None:
    """A second tokenP within 60 s is HTTP 403 EGW00133: TokenIssueError with refused_by_rate=True."""
    async with broker(sandbox, KIS, login=False) as kis:
        first = await kis.issue_token()
        await sandbox.advance(30)
        answer = await kis.send(kis.adapter.token_request())
        with pytest.raises(TokenIssueError) as refused:
            kis.adapter.parse_token(answer)
        await sandbox.advance(31)
        again = await kis.issue_token()
        counters = await sandbox.counters("kis/real", kis.appkey)
    assert answer.status == 403 and answer.body["error_code"] == "EGW00133"
    assert refused.value.refused_by_rate and refused.value.code == "EGW00133"
    assert again == first, "a re-issue inside 6 h returns the same token and absolute expiry"
    assert (counters["tokens_issued"], counters["tokens_new"], counters["token_refusals"]) == (2, 1, 1)


async def test_kis_mock_key_on_the_real_server(sandbox: Sandbox) -> None:
    """A mock key on the real server: HTTP 500 EGW02004 (BUSINESS_ERROR), and TokenIssueError at tokenP."""
    credentials = fake_credentials()
    async with (
        broker(sandbox, KIS, "mock", credentials) as mock,
        broker(sandbox, KIS, "real", credentials, login=False) as real,
    ):
        real.token = mock.token
        _, result = await real.call("FHKST01010100", kis_quote())
        answer = await real.send(real.adapter.token_request())
        with pytest.raises(TokenIssueError) as refused:
            real.adapter.parse_token(answer)
    assert (result.outcome, result.http_status, result.provider_code) == (
        Outcome.BUSINESS_ERROR,
        500,
        "EGW02004",
    )
    assert result.message == "실전투자 도메인은 모의투자 앱키로 호출하실 수 없습니다."
    assert refused.value.code == "EGW02004" and not refused.value.refused_by_rate


async def test_kis_real_only_tr_on_mock_is_a_business_error(sandbox: Sandbox) -> None:
    """FHKST03010230, real-only in the catalog, answers HTTP 500 MCA00124 on mock: BUSINESS_ERROR."""
    assert not lookup(KIS, "FHKST03010230").mock_supported
    async with broker(sandbox, KIS, "mock") as kis:
        _, result = await kis.call("FHKST03010230", kis_past_minutes(SYMBOL, DAY, "N"))
    assert (result.outcome, result.http_status, result.provider_code) == (
        Outcome.BUSINESS_ERROR,
        500,
        "MCA00124",
    )
    assert result.message == "해당 서비스를 찾을수 없습니다."


@pytest.mark.parametrize("throttle_status", [None, 200], ids=["default-429", "set-200"])
async def test_kiwoom_burst_is_throttled(make_sandbox: SandboxFactory, throttle_status: int | None) -> None:
    """8 Kiwoom calls in one instant (5/s): three `5` + [1700] answers, THROTTLED "1700", HTTP 429 or 200."""
    overrides = {} if throttle_status is None else {"kiwoom_throttle_status": throttle_status}
    sandbox = await make_sandbox(**overrides)
    async with broker(sandbox, KIWOOM) as kw:
        results = await asyncio.gather(*(kw.call("ka10081", kiwoom_daily()) for _ in range(8)))
        counters = await sandbox.counters("kiwoom/real", kw.appkey)
    assert Counter(result.outcome for _, result in results) == {Outcome.OK: 5, Outcome.THROTTLED: 3}
    throttled = [(answer, r) for answer, r in results if r.outcome is Outcome.THROTTLED]
    expected_status = 429 if throttle_status is None else throttle_status
    assert {(r.http_status, r.provider_code) for _, r in throttled} == {(expected_status, "1700")}
    assert all(answer.body["return_code"] == 5 for answer, _ in throttled)
    assert all(r.message is not None and "API ID=ka10081" in r.message for _, r in throttled)
    assert counters["over_limit"] == 3


@pytest.mark.parametrize("spoil", ["garbage", "maintenance"])
async def test_kiwoom_bad_token_is_rejected(sandbox: Sandbox, spoil: str) -> None:
    """A token Kiwoom does not accept gets return_code 3 with [8005:...]: TOKEN_REJECTED, code 8005."""
    async with broker(sandbox, KIWOOM) as kw:
        if spoil == "garbage":
            kw.token = "garbage-token"
        else:
            await sandbox.faults(invalidate_tokens_now=True)
        answer, result = await kw.call("ka10080", kiwoom_minutes(SYMBOL))
    assert answer.status == 200 and answer.body["return_code"] == 3
    assert "[8005:" in answer.body["return_msg"]
    assert (result.outcome, result.provider_code) == (Outcome.TOKEN_REJECTED, "8005")


def _without_api_id(upstream: UpstreamRequest) -> UpstreamRequest:
    headers = {name: value for name, value in upstream.headers.items() if name != "api-id"}
    return dataclasses.replace(upstream, headers=headers)


@pytest.mark.parametrize(
    ("case", "code"), [("missing", "1501"), ("other path group", "1504"), ("unknown", "1505")]
)
async def test_kiwoom_api_id_errors_are_business_errors(sandbox: Sandbox, case: str, code: str) -> None:
    """A missing (1501), other-group (1504) or unknown (1505) api-id is a BUSINESS_ERROR with that code."""
    minute = lookup(KIWOOM, "ka10080")
    spec, edit = {
        "missing": (minute, _without_api_id),
        "other path group": (dataclasses.replace(minute, path="/api/dostk/ordr"), None),
        "unknown": (dataclasses.replace(minute, tr_id="ka19999"), None),
    }[case]
    async with broker(sandbox, KIWOOM) as kw:
        answer, result = await kw.call("ka10080", kiwoom_minutes(SYMBOL), spec=spec, edit=edit)
    assert answer.status == 200 and answer.body["return_code"] == 2
    assert (result.outcome, result.provider_code) == (Outcome.BUSINESS_ERROR, code)


@pytest.mark.parametrize(
    ("provider", "tr_id", "params", "status", "outcome"),
    [
        (KIS, "FHKST01010100", kis_quote(), 500, Outcome.TRANSIENT),
        (KIS, "FHKST01010100", kis_quote(), 503, Outcome.TRANSIENT),
        (KIS, "TTTC0012U", KIS_ORDER, 500, Outcome.UNKNOWN_OUTCOME),
        (KIWOOM, "ka10081", kiwoom_daily(), 500, Outcome.TRANSIENT),
        (KIWOOM, "kt10000", KIWOOM_ORDER, 502, Outcome.UNKNOWN_OUTCOME),
    ],
    ids=["kis-read-500", "kis-read-503", "kis-order-500", "kiwoom-read-500", "kiwoom-order-502"],
)
async def test_injected_server_error(
    sandbox: Sandbox, provider: Provider, tr_id: str, params: dict[str, str], status: int, outcome: Outcome
) -> None:
    """An injected 5xx is TRANSIENT for a read and UNKNOWN_OUTCOME for an order, never a business error."""
    async with broker(sandbox, provider) as client:
        await sandbox.faults(error_rate=1.0, error_status=status)
        answer, result = await client.call(tr_id, params)
        counters = await sandbox.counters(f"{provider.value.lower()}/real", client.appkey)
    assert answer.status == status and (result.outcome, result.http_status) == (outcome, status)
    assert counters["faults"] == {"error": 1}


async def test_kis_order_timeout_is_unknown_outcome(sandbox: Sandbox) -> None:
    """A TTTC0012U accepted but answered HTTP 500 EGW00301 (order-timeout fault) is UNKNOWN_OUTCOME."""
    async with broker(sandbox, KIS) as kis:
        await sandbox.faults(order_timeout_rate=1.0, targets=["kis/real"])
        _, result = await kis.call("TTTC0012U", KIS_ORDER)
        ledger = await sandbox.admin("GET", "orders")
    assert (result.outcome, result.http_status, result.provider_code) == (
        Outcome.UNKNOWN_OUTCOME,
        500,
        "EGW00301",
    )
    orders = [(o["tr_id"], o["appkey"], o["timed_out"]) for o in ledger["orders"]]
    assert orders == [("TTTC0012U", kis.appkey, True)], "the broker did take the order"


async def test_kiwoom_order_timeout_is_no_answer_after_sending(sandbox: Sandbox) -> None:
    """A kt10000 accepted and then cut (order-timeout fault) raises UpstreamNoAnswer with sent=True."""
    async with broker(sandbox, KIWOOM) as kw:
        await sandbox.faults(order_timeout_rate=1.0, targets=["kiwoom/real"])
        with pytest.raises(UpstreamNoAnswer) as no_answer:
            await kw.call("kt10000", KIWOOM_ORDER)
        ledger = await sandbox.admin("GET", "orders")
    assert no_answer.value.sent
    assert [(o["tr_id"], o["timed_out"]) for o in ledger["orders"]] == [("kt10000", True)]


@pytest.mark.parametrize(
    ("provider", "tr_id", "params"),
    [(KIS, "FHKST01010100", kis_quote()), (KIWOOM, "ka10081", kiwoom_daily())],
    ids=["kis-get", "kiwoom-post"],
)
async def test_dropped_connection_is_no_answer(
    sandbox: Sandbox, provider: Provider, tr_id: str, params: dict[str, str]
) -> None:
    """A connection the sandbox cuts makes the dispatcher raise UpstreamNoAnswer (sent=True)."""
    async with broker(sandbox, provider) as client:
        await sandbox.faults(drop_rate=1.0)
        with pytest.raises(DispatchError) as no_answer:
            await client.call(tr_id, params)
        counters = await sandbox.counters(f"{provider.value.lower()}/real", client.appkey)
    assert isinstance(no_answer.value, UpstreamNoAnswer) and no_answer.value.sent
    # aiohttp silently re-sends an idempotent method (GET) once when a reused connection is cut, so a KIS
    # quotation may reach the broker twice; a POST (every Kiwoom call, every order) is sent exactly once.
    most = 2 if lookup(provider, tr_id).method == "GET" else 1
    assert 1 <= counters["faults"]["drop"] <= most and set(counters["faults"]) == {"drop"}
