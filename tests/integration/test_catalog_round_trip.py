"""The whole catalog through the real hub: one endpoint of every category of both brokers, in the real and
in the mock environment of the sandbox, comes back in the broker's own envelope; what the mock server does
not offer is refused before any upstream call."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import pytest

from hubclient import RequestRejected, paginate
from hubclient.catalog import TrSpec, entries
from hubclient.models import Provider, Status
from services.settings import GatewaySettings
from tests.conftest import Services
from tests.integration.conftest import GatewayFactory, Topics, appkey, referee
from tests.integration.test_round_trip import hub

DAY = (date.today() - timedelta(days=7)).strftime("%Y%m%d")


def value_for(name: str) -> str:
    """A plausible value for a required parameter, by its name (the sandbox checks presence and form)."""
    upper = name.upper()
    if upper in {"FID_INPUT_ISCD", "STK_CD", "PDNO"} or upper.endswith("_ISCD"):
        return "005930"
    if "DATE" in upper or upper.endswith("_DT") or upper.endswith("DT"):
        return DAY
    if upper == "FID_COND_MRKT_DIV_CODE":
        return "J"
    if "QTY" in upper:
        return "1"
    if upper == "DMST_STEX_TP":
        return "KRX"
    if upper == "TRDE_TP":
        return "3"  # Kiwoom: a market order
    if upper in {"CANO"}:
        return "12345678"
    if upper in {"ACNT_PRDT_CD"}:
        return "01"
    return ""


def one_per_category(provider: Provider) -> Iterator[TrSpec]:
    """One live endpoint of every category (Kiwoom: of every subcategory): the first read, or the first
    order where a category holds only orders."""
    chosen: dict[str, TrSpec] = {}
    for spec in entries(provider):
        category = spec.category if provider is Provider.KIS else spec.subcategory
        if spec.planned:
            continue
        if category not in chosen or (spec.idempotent and not chosen[category].idempotent):
            chosen[category] = spec
    yield from chosen.values()


CASES = [
    pytest.param(spec, environment, id=f"{environment}-{spec.provider.value}-{spec.key}")
    for environment in ("real", "mock")
    for provider in (Provider.KIS, Provider.KIWOOM)
    for spec in one_per_category(provider)
]


def settings_for(settings: GatewaySettings, sandbox_url: str, environment: str) -> dict[str, object]:
    """Gateway overrides pointing both providers at the sandbox's ``environment`` (mock keys are slower)."""
    if environment == "real":
        return {}
    return {
        "kis": settings.kis.model_copy(
            update={"base_url": f"{sandbox_url}/kis/mock", "environment": "mock", "rate_per_s": 2.0}
        ),
        "kiwoom": settings.kiwoom.model_copy(
            update={"base_url": f"{sandbox_url}/kiwoom/mock", "environment": "mock"}
        ),
    }


@pytest.mark.parametrize(("spec", "environment"), CASES)
async def test_every_category_answers_in_the_brokers_envelope(
    spec: TrSpec,
    environment: str,
    services: Services,
    topics: Topics,
    gateway: GatewayFactory,
    gateway_settings: GatewaySettings,
    sandbox_url: str,
) -> None:
    """One endpoint of the category, sent through Kafka and the gateway, gets the broker's success
    envelope from the sandbox (KIS rt_cd "0", Kiwoom return_code 0), or on mock, for an endpoint the mock
    server lacks, a not_in_mock refusal that never reached it."""
    params = {name: value_for(name) for name in spec.required}
    overrides = settings_for(gateway_settings, sandbox_url, environment)
    async with gateway(**overrides), hub(services, topics) as client:
        response = await client.submit(spec.provider, spec.key, params, timeout=30)
    if environment == "mock" and not spec.mock_supported:
        assert (response.status, response.reason) == (Status.REJECTED, "not_in_mock")
        return
    assert response.status is Status.OK, (response.status, response.reason, response.message)
    data = response.data
    assert isinstance(data, dict)
    if spec.provider is Provider.KIS:
        assert data["rt_cd"] == "0" and "msg_cd" in data
    else:
        assert data["return_code"] == 0 and "return_msg" in data


async def test_an_order_the_mock_server_lacks_is_refused_before_the_upstream(
    services: Services,
    topics: Topics,
    gateway: GatewayFactory,
    gateway_settings: GatewaySettings,
    sandbox_url: str,
) -> None:
    """On a mock credential, an order endpoint the mock server does not offer is answered rejected /
    not_in_mock and never reaches the sandbox."""
    order = next(s for s in entries(Provider.KIS) if not s.idempotent and not s.mock_supported)
    params = {name: value_for(name) for name in order.required}
    overrides = settings_for(gateway_settings, sandbox_url, "mock")
    before = await referee(sandbox_url, "kis/mock", appkey(gateway_settings))
    async with gateway(**overrides), hub(services, topics) as client:
        with pytest.raises(RequestRejected) as caught:
            await client.execute("KIS", order.key, params, timeout=20)
    assert caught.value.reason == "not_in_mock"
    after = await referee(sandbox_url, "kis/mock", appkey(gateway_settings))
    assert after.get("by_tr_id", {}).get(order.upstream_tr_id(mock=True), 0) == before.get(
        "by_tr_id", {}
    ).get(order.upstream_tr_id(mock=True), 0)


async def test_an_endpoint_with_its_own_context_keys_pages_through_the_hub(
    services: Services, topics: Topics, gateway: GatewayFactory
) -> None:
    """A KIS account call paged with CTX_AREA_FK200/NK200 walks every page through the hub with paginate:
    the gateway carries that endpoint's own keys, so the sandbox accepts each continuation."""
    spec = next(s for s in entries(Provider.KIS) if "CTX_AREA_FK200" in s.paging_keys and s.idempotent)
    params = {name: value_for(name) for name in spec.required}
    async with gateway(), hub(services, topics) as client:
        pages = [page async for page in paginate(client, "KIS", spec.key, params, timeout=20, max_pages=10)]
    assert len(pages) >= 2, f"{spec.key} answered one page"
    assert pages[-1].continuation is None and all(p.continuation for p in pages[:-1])
    assert all(p.data["rt_cd"] == "0" for p in pages)
