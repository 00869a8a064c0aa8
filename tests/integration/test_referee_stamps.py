"""The referee counts arrivals when their bytes reached the sandbox, not when its stalled loop got to them.

The sandbox process is stopped (SIGSTOP) while a request reaches its socket, and continued 380 ms later:
the request's handler runs 380 ms after its bytes came. Twenty-one requests on one key spread over 1.03 s
never make 21 in a second; counted at handler time they would (the first one moved 380 ms later). Over
0.9 s they do, stall or not.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import aiohttp

from tests import processes
from tests.integration.conftest import fake_credentials, referee
from tests.params import distinct_price

STALL_S = 0.38
PRICE_PATH = "/kis/real/uapi/domestic-stock/v1/quotations/inquire-price"


async def _token(session: aiohttp.ClientSession, url: str, appkey: str, secret: str) -> str:
    body = {"grant_type": "client_credentials", "appkey": appkey, "appsecret": secret}
    async with session.post(f"{url}/kis/real/oauth2/tokenP", json=body) as resp:
        assert resp.status == 200, await resp.text()
        token: str = (await resp.json())["access_token"]
    return token


async def _spread_over_a_stall(url: str, pid: int, span_s: float) -> dict[str, Any]:
    """21 price calls on a fresh key, the first sent while the sandbox is stopped, the last ``span_s``
    after the first; returns the referee's counters of the key."""
    appkey, secret = fake_credentials()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        token = await _token(session, url, appkey, secret)
        headers = {
            "authorization": f"Bearer {token}",
            "appkey": appkey,
            "appsecret": secret,
            "tr_id": "FHKST01010100",
            "custtype": "P",
        }

        async def call(at: float) -> int:
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            async with session.get(f"{url}{PRICE_PATH}", params=distinct_price(), headers=headers) as resp:
                await resp.read()
                return resp.status

        os.kill(pid, signal.SIGSTOP)
        try:
            first = time.monotonic() + 0.02
            calls = [asyncio.create_task(call(first + n * span_s / 20)) for n in range(21)]
            await asyncio.sleep(STALL_S)
        finally:
            os.kill(pid, signal.SIGCONT)
        async with asyncio.timeout(10):
            statuses = await asyncio.gather(*calls)
    assert len(statuses) == 21
    return await referee(url, "kis/real", appkey)


async def test_a_stalled_sandbox_counts_arrivals_when_they_came() -> None:
    async with processes.sandbox() as sandbox:
        pid = sandbox.child.pid
        assert pid is not None
        apart = await _spread_over_a_stall(sandbox.url, pid, span_s=1.03)
        async with aiohttp.ClientSession() as session, session.get(f"{sandbox.url}/_sandbox/stats") as resp:
            loop_lag = (await resp.json())["loop_lag"]
        bunched = await _spread_over_a_stall(sandbox.url, pid, span_s=0.9)
    assert loop_lag["max_ms"] >= STALL_S * 1000 * 0.8  # the handlers did run that late
    assert (apart["window_requests"], apart["stamped"]) == (21, 21)
    assert (apart["max_in_window"], apart["over_limit"]) == (20, 0)
    assert (bunched["max_in_window"], bunched["over_limit"]) == (21, 1)
