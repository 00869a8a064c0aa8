"""Every catalog endpoint of both brokers answered by the sandbox: envelopes, required fields, paging, mock.

The loops run over ``hubclient.catalog`` itself, so an endpoint added to the catalog is covered here.
Requests are built from each entry's ``required`` names with the values below (chosen to satisfy the
dedicated simulations too); the limits are raised so the loops are not throttled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from hubclient.catalog import TrSpec, entries
from hubclient.models import Provider
from tests.sandbox.sandbox_kit import KIWOOM_KEY, Sandbox, SandboxFactory, kis_key

UNLIMITED = {
    "kis_real_rate_per_s": 1_000_000,
    "kis_mock_rate_per_s": 1_000_000,
    "kiwoom_real_rate_per_s": 1_000_000,
    "kiwoom_mock_rate_per_s": 1_000_000,
}
SAMPLES = {
    "fid_cond_mrkt_div_code": "J",
    "fid_input_iscd": "005930",
    "fid_period_div_code": "D",
    "fid_org_adj_prc": "0",
    "fid_input_hour_1": "103000",
    "fid_pw_data_incu_yn": "Y",
    "fid_input_date_1": "20261120",
    "fid_input_date_2": "20261127",
    "cano": "81055689",
    "acnt_prdt_cd": "01",
    "pdno": "005930",
    "ord_dvsn": "01",
    "ord_qty": "1",
    "ord_unpr": "0",
    "stk_cd": "005930",
    "tic_scope": "1",
    "upd_stkpc_tp": "1",
    "base_dt": "20261127",
    "dmst_stex_tp": "KRX",
    "trde_tp": "3",
}
KIS_OK_CODES = {"MCA00000", "KIOK0510", "KIOK0460", "APBK0013"}

KIS = [e for e in entries(Provider.KIS)]
KIWOOM_LIVE = [e for e in entries(Provider.KIWOOM) if not e.planned]
KIWOOM_PLANNED = [e for e in entries(Provider.KIWOOM) if e.planned]
DEDICATED = {
    "FHKST01010100",
    "FHKST01010300",
    "FHKST01010400",
    "FHKST03010100",
    "FHKST03010200",
    "FHKST03010230",
    "TTTC0012U",
    "TTTC0011U",
    "TTTC8434R",
}


def sample(name: str) -> str:
    """A well-formed value for a required field (empty where the samples send nothing)."""
    return SAMPLES.get(name.lower(), "")


def params_of(spec: TrSpec, drop: Iterable[str] = ()) -> dict[str, str]:
    """The request of ``spec`` built from its required names, without ``drop``."""
    skip = set(drop)
    return {name: sample(name) or ("0" if name.islower() else "") for name in spec.required if name not in skip}


@dataclass
class Tokens:
    """One token per environment of both brokers (different keys per environment)."""

    kis_real: str
    kis_mock: str
    kiwoom_real: str
    kiwoom_mock: str


@pytest.fixture
async def wide(make_sandbox: SandboxFactory) -> tuple[Sandbox, Tokens]:
    """A sandbox without effective rate limits, with a token in each of its four environments."""
    sandbox = await make_sandbox(**UNLIMITED)
    tokens = Tokens(
        await sandbox.kis_token("real"),
        await sandbox.kis_token("mock", key=kis_key(2)),
        await sandbox.kiwoom_token("real"),
        await sandbox.kiwoom_token("mock", key="kw-mock-1"),
    )
    return sandbox, tokens


async def kis_call(
    sandbox: Sandbox,
    tokens: Tokens,
    spec: TrSpec,
    params: dict[str, str],
    env: str = "real",
    tr_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Call a KIS entry (GET query or POST body); returns status, body and response headers."""
    token, key = (tokens.kis_real, kis_key()) if env == "real" else (tokens.kis_mock, kis_key(2))
    sent = {**sandbox.kis_headers(tr_id or spec.upstream_tr_id(mock=env == "mock"), token, key)}
    sent.update(headers or {})
    url = f"/kis/{env}{spec.path}"
    if spec.method == "GET":
        resp = await sandbox.client.get(url, params=params, headers=sent)
    else:
        resp = await sandbox.client.post(url, json=params, headers=sent)
    return resp.status, await resp.json(), dict(resp.headers)


async def kiwoom_call(
    sandbox: Sandbox,
    tokens: Tokens,
    spec: TrSpec,
    body: dict[str, str],
    env: str = "real",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Call a Kiwoom entry on its own path group; returns status, body and response headers."""
    token = tokens.kiwoom_real if env == "real" else tokens.kiwoom_mock
    sent = {
        "authorization": f"Bearer {token}",
        "content-type": "application/json;charset=UTF-8",
        "api-id": spec.tr_id,
        **(headers or {}),
    }
    resp = await sandbox.client.post(f"/kiwoom/{env}{spec.path}", json=body, headers=sent)
    return resp.status, await resp.json(), dict(resp.headers)


def assert_kis_success(spec: TrSpec, status: int, body: dict[str, Any]) -> None:
    """The KIS success envelope: HTTP 200, rt_cd "0", a success msg_cd, and an output part."""
    assert status == 200, (spec.key, body)
    assert body["rt_cd"] == "0" and body["msg_cd"] in KIS_OK_CODES, (spec.key, body)
    assert {"output", "output1", "output2"} & body.keys(), (spec.key, body)


async def test_every_kis_entry_answers_its_success_envelope(wide: tuple[Sandbox, Tokens]) -> None:
    """Each KIS catalog entry, called well-formed on the real server, gets rt_cd 0 and its outputs."""
    sandbox, tokens = wide
    for spec in KIS:
        status, body, _ = await kis_call(sandbox, tokens, spec, params_of(spec))
        assert_kis_success(spec, status, body)
        if spec.kind == "order":
            assert body["output"]["ODNO"].isdigit(), spec.key


async def test_every_kiwoom_entry_answers_its_success_envelope(wide: tuple[Sandbox, Tokens]) -> None:
    """Each live Kiwoom api-id, posted well-formed to its path group, gets return_code 0."""
    sandbox, tokens = wide
    for spec in KIWOOM_LIVE:
        status, body, headers = await kiwoom_call(sandbox, tokens, spec, params_of(spec))
        assert status == 200 and body["return_code"] == 0, (spec.key, body)
        assert body["return_msg"] == "정상적으로 처리되었습니다" and headers["api-id"] == spec.tr_id
        if spec.kind == "order_write":
            assert body["ord_no"].isdigit(), spec.key
