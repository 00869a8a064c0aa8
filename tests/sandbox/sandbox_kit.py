"""Helpers of the sandbox conformance suite: credentials and a client that speaks both brokers' dialects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from services.sandbox.clock import KST
from services.sandbox.referee import appkey_label
from services.sandbox.state import SandboxState

# Friday, mid-session; the clock is frozen (rate 0) so bursts land in one instant and nothing drifts.
SESSION_NOW = datetime(2026, 11, 27, 10, 30, 0, tzinfo=KST)
QUOTES = "/uapi/domestic-stock/v1/quotations"
KIWOOM_KEY = "kw-app-1"
KIWOOM_SECRET = "kw-secret-1"
TRADING = "/uapi/domestic-stock/v1/trading"


def kis_key(n: int = 1) -> str:
    """A well-formed 36-character KIS appkey."""
    return f"PSKEY{n:031d}"


def kis_secret(n: int = 1) -> str:
    """A well-formed 180-character KIS appsecret."""
    return f"SECRET{n:04d}".ljust(180, "x")


class Sandbox:
    """A running sandbox plus helpers that speak both brokers' dialects."""

    def __init__(self, client: TestClient[Any, Any], state: SandboxState) -> None:
        self.client = client
        self.state = state

    # -- admin ----------------------------------------------------------------------------------------------
    async def stats(self) -> dict[str, Any]:
        """The referee report."""
        resp = await self.client.get("/_sandbox/stats")
        assert resp.status == 200
        data: dict[str, Any] = await resp.json()
        return data

    async def env_stats(self, env_id: str, appkey: str | None = None) -> dict[str, Any]:
        """Referee numbers of one environment (or one appkey in it)."""
        env: dict[str, Any] = (await self.stats())["environments"][env_id]
        return env if appkey is None else env["appkeys"][appkey_label(appkey)]

    async def loop_lag(self, min_samples: int = 0, timeout_s: float = 2.0) -> dict[str, Any]:
        """The referee's ``loop_lag`` object, once it holds at least ``min_samples`` samples (real time)."""
        deadline = time.monotonic() + timeout_s
        while True:
            lag: dict[str, Any] = (await self.stats())["loop_lag"]
            if lag["samples"] >= min_samples or time.monotonic() > deadline:
                return lag
            await asyncio.sleep(0.01)

    async def reset(self, **body: Any) -> dict[str, Any]:
        """POST /_sandbox/reset."""
        resp = await self.client.post("/_sandbox/reset", json=body)
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data

    async def set_clock(self, **body: Any) -> dict[str, Any]:
        """POST /_sandbox/clock."""
        resp = await self.client.post("/_sandbox/clock", json=body)
        assert resp.status == 200, await resp.text()
        data: dict[str, Any] = await resp.json()
        return data

    async def faults(self, **body: Any) -> ClientResponse:
        """POST /_sandbox/faults."""
        return await self.client.post("/_sandbox/faults", json=body)

    # -- KIS ------------------------------------------------------------------------------------------------
    async def kis_token_response(
        self, env: str = "real", key: str | None = None, secret: str | None = None
    ) -> ClientResponse:
        """Raw POST /oauth2/tokenP."""
        body = {
            "grant_type": "client_credentials",
            "appkey": key or kis_key(),
            "appsecret": secret or kis_secret(),
        }
        return await self.client.post(f"/kis/{env}/oauth2/tokenP", json=body)

    async def kis_token(self, env: str = "real", key: str | None = None, secret: str | None = None) -> str:
        """A fresh KIS access token (asserts success)."""
        resp = await self.kis_token_response(env, key, secret)
        assert resp.status == 200, await resp.text()
        token: str = (await resp.json())["access_token"]
        return token

    def kis_headers(
        self, tr_id: str, token: str, key: str | None = None, secret: str | None = None
    ) -> dict[str, str]:
        """Headers of a KIS TR call."""
        return {
            "authorization": f"Bearer {token}",
            "appkey": key or kis_key(),
            "appsecret": secret or kis_secret(),
            "tr_id": tr_id,
            "custtype": "P",
            "content-type": "application/json; charset=utf-8",
        }

    async def kis_get(
        self,
        path: str,
        tr_id: str,
        params: dict[str, str],
        token: str,
        env: str = "real",
        key: str | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> ClientResponse:
        """GET a KIS TR."""
        headers = {**self.kis_headers(tr_id, token, key), **(extra_headers or {})}
        return await self.client.get(f"/kis/{env}{path}", params=params, headers=headers)

    async def kis_price(
        self, token: str, env: str = "real", key: str | None = None, code: str = "005930"
    ) -> ClientResponse:
        """FHKST01010100 for ``code``."""
        params = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": code}
        return await self.kis_get(f"{QUOTES}/inquire-price", "FHKST01010100", params, token, env, key)

    async def kis_minutes(
        self, token: str, hour: str, code: str = "005930", env: str = "real"
    ) -> ClientResponse:
        """FHKST03010200 ending at ``hour`` (HHMMSS)."""
        params = {
            "FID_ETC_CLS_CODE": "",
            "FID_COND_MRKT_DIV_CODE": "J",
            "FID_INPUT_ISCD": code,
            "FID_INPUT_HOUR_1": hour,
            "FID_PW_DATA_INCU_YN": "Y",
        }
        return await self.kis_get(
            f"{QUOTES}/inquire-time-itemchartprice", "FHKST03010200", params, token, env
        )

    # -- Kiwoom ---------------------------------------------------------------------------------------------
    async def kiwoom_token_response(
        self, env: str = "real", key: str = KIWOOM_KEY, secret: str = KIWOOM_SECRET
    ) -> ClientResponse:
        """Raw POST /oauth2/token."""
        body = {"grant_type": "client_credentials", "appkey": key, "secretkey": secret}
        return await self.client.post(f"/kiwoom/{env}/oauth2/token", json=body)

    async def kiwoom_token(
        self, env: str = "real", key: str = KIWOOM_KEY, secret: str = KIWOOM_SECRET
    ) -> str:
        """A fresh Kiwoom token (asserts success)."""
        resp = await self.kiwoom_token_response(env, key, secret)
        body = await resp.json()
        assert resp.status == 200 and body["return_code"] == 0, body
        token: str = body["token"]
        return token

    async def kiwoom_post(
        self,
        group: str,
        api_id: str | None,
        body: dict[str, Any],
        token: str,
        env: str = "real",
        headers: dict[str, str] | None = None,
    ) -> ClientResponse:
        """POST a Kiwoom TR."""
        sent = {
            "authorization": f"Bearer {token}",
            "content-type": "application/json;charset=UTF-8",
            **(headers or {}),
        }
        if api_id is not None:
            sent["api-id"] = api_id
        return await self.client.post(f"/kiwoom/{env}/api/dostk/{group}", json=body, headers=sent)


SandboxFactory = Callable[..., Awaitable[Sandbox]]
