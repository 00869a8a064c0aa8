"""The demo workload behind ``make run``: a handful of real round trips through the hub, then the repair loop
(``repair``: feed, history, verification, recovery), summarised."""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp

from hubclient import HubClient, HubError
from hubclient.models import ApiResponse, Provider
from services.kafka_client import client_kwargs
from services.settings import ClientSettings

READY_TIMEOUT_S = 60.0

_CALLS: list[tuple[str, Provider, str, dict[str, str]]] = [
    (
        "Samsung Electronics price",
        Provider.KIS,
        "FHKST01010100",
        {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
    ),
    (
        "SK hynix price",
        Provider.KIS,
        "FHKST01010100",
        {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "000660"},
    ),
    (
        "NAVER price",
        Provider.KIS,
        "FHKST01010100",
        {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "035420"},
    ),
    (
        "Samsung 1-min bars (KIS)",
        Provider.KIS,
        "FHKST03010200",
        {
            "FID_ETC_CLS_CODE": "",
            "FID_COND_MRKT_DIV_CODE": "J",
            "FID_INPUT_ISCD": "005930",
            "FID_INPUT_HOUR_1": "153000",
            "FID_PW_DATA_INCU_YN": "Y",
        },
    ),
    (
        "Samsung 1-min bars (Kiwoom)",
        Provider.KIWOOM,
        "ka10080",
        {"stk_cd": "005930", "tic_scope": "1", "upd_stkpc_tp": "1"},
    ),
]


async def wait_ready(url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll the gateway's ``/readyz`` until it answers 200 (saying once on stderr that it waits, when the
    first poll is not); raise ``TimeoutError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    said = False
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if not said:
                print(f"waiting for the gateway at {url}/readyz (up to {timeout_s:.0f}s)", file=sys.stderr)
                said = True
            await asyncio.sleep(0.5)
    raise TimeoutError(f"gateway at {url} not ready after {timeout_s:.0f}s")


def _summary(response: ApiResponse) -> str:
    data = response.data if isinstance(response.data, dict) else {}
    output = data.get("output")
    if isinstance(output, dict) and "stck_prpr" in output:
        return f"price {output['stck_prpr']} KRW"
    for key in ("output2", "stk_min_pole_chart_qry"):
        rows = data.get(key)
        if isinstance(rows, list):
            more = " (more pages)" if response.continuation else ""
            return f"{len(rows)} bars{more}"
    return response.message or ""


async def _one(hub: HubClient, provider: Provider, tr_id: str, params: dict[str, str]) -> tuple[bool, str]:
    started = time.perf_counter()
    try:
        response = await hub.submit(provider, tr_id, params, timeout=15, priority="interactive")
    except HubError as exc:
        return False, f"{'error':8} {(time.perf_counter() - started) * 1000:7.1f}ms  {exc}"
    elapsed_ms = (time.perf_counter() - started) * 1000
    gateway_ms = response.timing.total_ms
    return (
        response.ok,
        f"{response.status.value:8} {elapsed_ms:7.1f}ms  {gateway_ms:10.1f}ms  {_summary(response)}",
    )


async def run_demo(
    settings: ClientSettings, *, rounds: int = 2, repair: bool = False, sandbox_url: str | None = None
) -> int:
    """Send every demo call ``rounds`` times, print one line per call, then (with ``repair``) run the repair
    loop; 0 when every call succeeded and the loop repaired everything it injected, 2 when the gateway is
    not ready."""
    try:
        await wait_ready(settings.gateway_metrics_url, READY_TIMEOUT_S)
    except TimeoutError as exc:
        print(
            f"error: {exc}; is the stack up (make up) and APIHUB_GATEWAY_METRICS_URL right?", file=sys.stderr
        )
        return 2
    ok_count = 0
    async with HubClient.connect(
        settings.kafka.bootstrap_servers,
        caller="demo",
        request_topic=settings.kafka.request_topic,
        reply_topic=settings.kafka.response_topic,
        client_options=client_kwargs(settings.kafka),
    ) as hub:
        print(f"{'call':32} {'status':8} {'latency':>9}  {'gateway time':>12}  result")
        for round_no in range(1, rounds + 1):
            results = await asyncio.gather(*(_one(hub, p, tr, params) for _, p, tr, params in _CALLS))
            for (label, *_), (ok, line) in zip(_CALLS, results, strict=True):
                ok_count += ok
                print(f"{label + (f' #{round_no}' if rounds > 1 else ''):32} {line}")
    total = rounds * len(_CALLS)
    print(f"\n{ok_count}/{total} calls ok")
    code = 0 if ok_count == total else 1
    if repair:
        from services.demo.repair import run_and_report

        print(
            "\nRepair loop: feed -> history-collector -> verification-worker -> recovery-worker -> re-verify"
        )
        code = max(code, await run_and_report(settings, sandbox_url))
    return code
