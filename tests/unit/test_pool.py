"""Credential pools and shared reads on the in-memory gateway: which member serves, each member's own
pace and token, account-bound calls, a member without a token, identical reads sharing one call, and the
cache of immutable reads."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import uuid
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr, ValidationError

from hubclient.catalog import lookup
from hubclient.models import ApiRequest, Provider, Status
from services.gateway.clock import ManualClock
from services.gateway.errors import Invalid
from services.gateway.gateway import Gateway
from services.gateway.idempotency import MemoryRecords
from services.gateway.pool import FREE_WITHIN_S, Pool, account_bound, domain_of, provider_of
from services.gateway.providers.base import KST
from services.gateway.sharing import SETTLED_KEEP_S, SharedReads, immutable
from services.gateway.slots import MemorySlots
from services.gateway.testing import Rig, build_gateway, kis_envelope
from services.gateway.token_store import MemoryTokenStore
from services.settings import (
    CredentialSettings,
    GatewaySettings,
    KisSettings,
    KiwoomSettings,
    SettingsInvalid,
)
from tests.unit.test_gateway_core import ORDER as GATEWAY_CORE_ORDER
from tests.unit.test_gateway_core import serve
from tests.unit.test_pacing import max_in_any_second

PRICE_TR = "FHKST01010100"
PRICE = {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"}
ORDER_TR = "TTTC0012U"
ORDER = {**GATEWAY_CORE_ORDER, "CANO": "50000001"}
_SYMBOLS = itertools.count(1)


def member(
    name: str, *, account: str | None = None, rate: float | None = None, product_code: str | None = None
) -> CredentialSettings:
    """A pool member whose appkey is derived from its name."""
    return CredentialSettings.model_validate(
        {"name": name, "appkey": f"PS-{name}", "appsecret": f"secret-{name}", "account": account}
        | ({"rate_per_s": rate} if rate else {})
        | ({"product_code": product_code} if product_code else {})
    )


def ask(
    clock: ManualClock,
    tr_id: str = PRICE_TR,
    params: dict[str, Any] | None = None,
    *,
    credential: str | None = None,
    deadline_s: float = 60.0,
) -> ApiRequest:
    """A KIS request; a price read of a symbol of its own unless ``params`` are given."""
    now_ms = int(clock.time() * 1000)
    return ApiRequest(
        request_id=str(uuid.uuid4()),
        provider=Provider.KIS,
        tr_id=tr_id,
        params=params
        if params is not None
        else {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": f"{next(_SYMBOLS):06d}"},
        caller="worker",
        deadline_ms=now_ms + int(deadline_s * 1000),
        created_at_ms=now_ms,
        reply_topic="api.responses",
        reply_partition=0,
        credential=credential,
    )


def appkeys_sent(rig: Rig, path: str = "/quotations/") -> Counter[str]:
    """How many calls each appkey made (token calls excluded)."""
    return Counter(s.request.headers["appkey"] for s in rig.dispatcher.calls(path))


# --- settings ---------------------------------------------------------------------------------------


def test_a_mock_key_that_sets_no_rate_is_paced_at_the_brokers_mock_limit() -> None:
    """KIS's mock server allows about 2 calls a second: a mock member of a real provider inherited the real
    20/s (the referee saw 305 arrivals over the limit in a minute, and the broker's throttling answers slow
    a key to a quarter at most). A mock provider without a rate is paced at 2/s too; a rate set wins."""
    mock = CredentialSettings.model_validate(
        {"name": "m", "appkey": "PS-m", "secret": "s", "environment": "mock"}
    )
    own = CredentialSettings.model_validate(
        {"name": "o", "appkey": "PS-o", "secret": "s", "environment": "mock", "rate_per_s": 1}
    )
    pool = KisSettings(credentials=[member("a"), mock, own]).pool()
    assert {n: (m.environment, m.rate_per_s) for n, m in pool.items()} == {
        "a": ("real", 20.0),
        "m": ("mock", 2.0),
        "o": ("mock", 1.0),
    }
    assert KisSettings(environment="mock").rate_per_s == 2.0
    assert KisSettings(environment="mock", rate_per_s=4).pool()["default"].rate_per_s == 4.0
    assert KisSettings(environment="mock", rate_per_s=4, credentials=[mock]).pool()["m"].rate_per_s == 4.0
    assert KiwoomSettings(environment="mock").rate_per_s == 5.0  # Kiwoom's mock allows what its real does


def test_pool_from_settings_inherits_what_members_do_not_set(tmp_path: Path) -> None:
    """The provider's own key is 'default'; members (from JSON and a file) inherit rate and environment."""
    extra = tmp_path / "creds.json"
    extra.write_text(json.dumps([{"name": "c", "appkey": "k3", "secret": "s3", "environment": "mock"}]))
    settings = KisSettings(
        appkey=SecretStr("k0"),
        appsecret=SecretStr("s0"),
        credentials=[member("a", account="11112222-01"), member("b", rate=5)],
        credentials_file=str(extra),
    )
    pool = settings.pool()
    assert list(pool) == ["default", "a", "b", "c"]
    assert pool["a"].appsecret is not None and pool["a"].appsecret.get_secret_value() == "secret-a"
    assert (pool["a"].rate_per_s, pool["b"].rate_per_s, pool["a"].account) == (20.0, 5.0, "11112222-01")
    assert (pool["c"].environment, pool["c"].appkey) == ("mock", SecretStr("k3"))
    assert "secret-a" not in repr(settings)  # secrets stay masked in the settings' repr


def test_pool_settings_refuse_clashing_names(tmp_path: Path) -> None:
    """Two members of one name, or one called 'default', are a configuration error, also when one of them
    comes from the credentials file."""
    with pytest.raises(ValidationError, match="unique"):
        KisSettings(credentials=[member("a"), member("a")])
    with pytest.raises(ValidationError, match="unique"):
        KisSettings(credentials=[member("default")])
    extra = tmp_path / "creds.json"
    extra.write_text(json.dumps([{"name": "a", "appkey": "k3", "secret": "s3"}]))
    with pytest.raises(SettingsInvalid) as twice:
        KisSettings(credentials=[member("a")], credentials_file=str(extra)).pool()
    assert twice.value.problems == [
        (
            "APIHUB_KIS__CREDENTIALS_FILE",
            "credential 'a' is configured twice (names are unique across the file and "
            "APIHUB_KIS__CREDENTIALS)",
        )
    ]
    extra.write_text(json.dumps([{"name": "default", "appkey": "k3", "secret": "s3"}]))
    with pytest.raises(SettingsInvalid, match="'default' is the provider's key"):
        KisSettings(credentials_file=str(extra)).pool()


def test_one_appkey_is_one_member(tmp_path: Path) -> None:
    """Two members with one appkey would pace the broker's one limit twice over: refused wherever the two
    come from (the list, the provider's own key, the file), naming the members and never the key."""
    twin = CredentialSettings.model_validate({"name": "b", "appkey": "PS-a", "appsecret": "other"})
    with pytest.raises(ValidationError, match=r"members \['a', 'b'\] have the same appkey"):
        KisSettings(credentials=[member("a"), twin, member("c")])
    with pytest.raises(SettingsInvalid) as own:
        KisSettings(appkey=SecretStr("PS-a"), appsecret=SecretStr("s"), credentials=[member("a")]).pool()
    assert own.value.problems == [
        ("APIHUB_KIS__CREDENTIALS", f"members ['a', 'default'] have the same appkey{SHARED_KEY_REASON}")
    ]
    extra = tmp_path / "creds.json"
    extra.write_text(json.dumps([{"name": "b", "appkey": "PS-a", "secret": "s3"}]))
    with pytest.raises(SettingsInvalid) as filed:
        KisSettings(credentials=[member("a")], credentials_file=str(extra)).pool()
    assert filed.value.problems == [
        ("APIHUB_KIS__CREDENTIALS_FILE", f"members ['a', 'b'] have the same appkey{SHARED_KEY_REASON}")
    ]
    assert "PS-a" not in str(own.value) + str(filed.value)
    assert list(KisSettings(credentials=[member("a"), member("b")]).pool()) == ["a", "b"]  # distinct: fine


SHARED_KEY_REASON = ": the broker limits the key, so a pool lists it once"


def test_pool_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """APIHUB_KIS__CREDENTIALS is a JSON list; without an appkey of its own the pool is the list alone."""
    monkeypatch.setenv(
        "APIHUB_KIS__CREDENTIALS",
        json.dumps(
            [{"name": "a", "appkey": "k1", "appsecret": "s1"}, {"name": "b", "appkey": "k2", "secret": "s2"}]
        ),
    )
    monkeypatch.delenv("APIHUB_KIS__APPKEY", raising=False)
    assert list(GatewaySettings().kis.pool()) == ["a", "b"]


def test_domains_name_the_member() -> None:
    """The default member keeps the provider's domain (its Redis keys and metrics do not move)."""
    assert (domain_of(Provider.KIS, "default"), domain_of(Provider.KIS, "a")) == ("KIS", "KIS/a")
    assert (provider_of("KIS/a"), provider_of("KIWOOM")) == (Provider.KIS, Provider.KIWOOM)
    assert account_bound(lookup(Provider.KIS, ORDER_TR)) and not account_bound(lookup(Provider.KIS, PRICE_TR))
    assert account_bound(lookup(Provider.KIS, "TTTC8434R"))  # a balance read is the account's


# --- routing ------------------------------------------------------------------------------------------


async def test_reads_spread_over_the_pool_each_member_within_its_own_limit() -> None:
    """180 reads over three keys of 20/s: every key is used, none beyond 20 in any second, and the pool
    finishes in about a third of the time one key would take."""
    rig = build_gateway(credentials=[member("a"), member("b")])
    results = await serve(rig, [ask(rig.clock) for _ in range(180)])
    assert Counter(a.response.status for a in results) == {Status.OK: 180}
    per_key = appkeys_sent(rig)
    assert set(per_key) == {"PS" + "k" * 34, "PS-a", "PS-b"} and all(n >= 50 for n in per_key.values())
    for key in per_key:
        times = [s.at_s for s in rig.dispatcher.sent if s.request.headers.get("appkey") == key]
        assert max_in_any_second(times) <= 20
    span = max(s.at_s for s in rig.dispatcher.sent) - min(s.at_s for s in rig.dispatcher.sent)
    assert span < 0.45 * (180 / 20)  # one key alone needs 9 s
    assert {a.response.credential for a in results} == {"default", "a", "b"}


async def test_a_member_whose_call_average_went_stale_still_gets_its_share() -> None:
    """Members are compared by their slots: member a's pacer still averages a slow call from long ago
    (calls go to one broker, so that says nothing about a's key), yet a serves its share of the reads."""
    rig = build_gateway(credentials=[member("a"), member("b")])
    for (domain, _), pacer in rig.gateway.pacers.items():
        if domain == "KIS/a":
            pacer.call_s = 20.0
    results = await serve(rig, [ask(rig.clock) for _ in range(90)])
    assert Counter(a.response.status for a in results) == {Status.OK: 90}
    per_key = appkeys_sent(rig)
    assert per_key["PS-a"] >= 20, per_key


async def test_account_calls_name_their_member() -> None:
    """In a pool of several an order must name its credential (by name or account), and its account must
    be that member's; a named read goes to that member only."""
    rig = build_gateway(credentials=[member("a", account="50000001-01"), member("b", account="50000002-01")])
    clock = rig.clock
    results = await serve(
        rig,
        [
            ask(clock, ORDER_TR, ORDER),
            ask(clock, ORDER_TR, ORDER, credential="a"),
            ask(clock, ORDER_TR, {**ORDER, "CANO": "50000002"}, credential="50000002-01"),
            ask(clock, ORDER_TR, ORDER, credential="b"),
            ask(clock, ORDER_TR, ORDER, credential="nobody"),
            ask(clock, credential="b"),
        ],
    )
    outcomes = [(a.response.status, a.response.reason, a.response.credential) for a in results]
    assert outcomes == [
        (Status.INVALID, "credential_required", None),
        (Status.OK, None, "a"),
        (Status.OK, None, "b"),
        (Status.INVALID, "account_mismatch", None),
        (Status.INVALID, "unknown_credential", None),
        (Status.OK, None, "b"),
    ]
    orders = rig.dispatcher.calls("/trading/order-cash")
    assert [(s.request.headers["appkey"], (s.request.json_body or {})["CANO"]) for s in orders] == [
        ("PS-a", "50000001"),
        ("PS-b", "50000002"),
    ]
    assert appkeys_sent(rig) == {"PS-b": 1}


def test_a_member_is_named_by_its_account_or_the_number_before_the_product_code() -> None:
    """``50000001-01`` and ``50000001`` (KIS's CANO) name member a; a number two members hold under
    different product codes names neither, the whole account still does."""
    settings = KisSettings(
        credentials=[
            member("a", account="50000001-01"),
            member("b", account="50000002-01"),
            member("c", account="50000002-22"),
        ]
    )
    pool = Pool(Provider.KIS, settings, ManualClock())
    assert [pool.named(n).name for n in ("a", "50000001-01", "50000001", "50000002-22")] == [
        "a",
        "a",
        "a",
        "c",
    ]
    with pytest.raises(Invalid, match="no KIS credential '50000002'"):
        pool.named("50000002")


async def test_an_order_for_another_product_code_of_the_account_is_refused() -> None:
    """A member's product code (``50000001-01``, or ``account`` 50000001 with ``product_code`` 01) is part
    of its account: an order naming the member with another ``ACNT_PRDT_CD`` is ``account_mismatch``,
    and the whole account names the member whichever way it was configured."""
    rig = build_gateway(
        credentials=[member("a", account="50000001", product_code="01"), member("b", account="50000002-01")]
    )
    clock = rig.clock
    results = await serve(
        rig,
        [
            ask(clock, ORDER_TR, {**ORDER, "ACNT_PRDT_CD": "01"}, credential="50000001-01"),
            ask(clock, ORDER_TR, {**ORDER, "ACNT_PRDT_CD": "03"}, credential="a"),
            ask(clock, ORDER_TR, {**ORDER, "CANO": "50000002", "ACNT_PRDT_CD": "22"}, credential="b"),
        ],
    )
    outcomes = [(a.response.status, a.response.reason) for a in results]
    assert outcomes == [
        (Status.OK, None),
        (Status.INVALID, "account_mismatch"),
        (Status.INVALID, "account_mismatch"),
    ]
    assert len(rig.dispatcher.calls("/trading/order-cash")) == 1


async def test_an_order_naming_another_account_however_spelled_is_refused() -> None:
    """The account check reads the CANO the broker would get: a lower-case key (KIS's body keys are sent
    upper-cased), a number instead of a string, or a continuation field (added to the params) naming
    member b's account under member a is ``account_mismatch``, and no order reaches the broker."""
    rig = build_gateway(credentials=[member("a", account="50000001-01"), member("b", account="50000002-01")])
    clock = rig.clock
    plain = {k: v for k, v in ORDER.items() if k != "CANO"}
    spelled: list[tuple[dict[str, Any], dict[str, str] | None]] = [
        ({**plain, "cano": "50000002"}, None),
        ({**plain, "CANO": 50000002}, None),
        (ORDER, {"CANO": "50000002"}),
    ]
    requests = [
        ask(clock, ORDER_TR, params, credential="a").model_copy(update={"continuation": continuation})
        for params, continuation in spelled
    ]
    results = await serve(rig, requests)
    assert [(a.response.status, a.response.reason) for a in results] == [
        (Status.INVALID, "account_mismatch")
    ] * 3
    assert rig.dispatcher.calls("/trading/order-cash") == []


async def test_one_key_under_two_names_in_two_instances_is_paced_as_one() -> None:
    """Instance 1 knows its key as the provider's own (domain KIS), instance 2 as pool member k1 (KIS/k1),
    as in a rolling restart that moves the key into the pool: both share one schedule, named by the key,
    so the broker sees at most 20 calls in any second from the two together."""
    stores: list[MemorySlots] = []

    def one_store(clock: ManualClock) -> MemorySlots:
        stores.append(MemorySlots(clock))
        return stores[0]

    rig = build_gateway(slots=one_store)
    own = rig.gateway.members["KIS"].settings
    assert isinstance(own, KisSettings) and own.appkey is not None and own.appsecret is not None
    renamed = KisSettings(
        base_url=own.base_url,
        arrival_jitter_ms=own.arrival_jitter_ms,
        credentials=[CredentialSettings(name="k1", appkey=own.appkey, secret=own.appsecret)],
    )
    second = Gateway(
        instance_id="gw-test-2",
        providers={Provider.KIS: renamed},
        dispatcher=rig.dispatcher,  # the same broker, its calls recorded in one list
        slots=stores[0],
        token_store=MemoryTokenStore(rig.clock),
        approval_store=MemoryTokenStore(rig.clock),
        idempotency=MemoryRecords(),
        clock=rig.clock,
    )
    assert list(second.limiters) == ["KIS/k1"]
    tasks = [asyncio.create_task(g.handle(ask(rig.clock))) for g in (rig.gateway, second) for _ in range(40)]
    for _ in range(2000):
        await rig.clock.advance(0.01)
        if all(t.done() for t in tasks):
            break
    await rig.gateway.stop()
    await second.stop()
    assert Counter(t.result().status for t in tasks) == {Status.OK: 80}
    sent = sorted(s.at_s for s in rig.dispatcher.sent)  # token calls take slots of the key too
    assert len(sent) == 82 and max_in_any_second(sent) <= 20


async def test_a_member_without_a_token_is_passed_over_while_the_others_serve() -> None:
    """Member a's key is refused by the token endpoint: every unnamed read is still answered ok by the
    others, a read naming a gets the token error, and a is not asked again for every read."""
    rig = build_gateway(credentials=[member("a"), member("b")])
    rig.broker.refused_appkeys.add("PS-a")
    results = await serve(rig, [ask(rig.clock) for _ in range(60)] + [ask(rig.clock, credential="a")])
    assert Counter(a.response.status for a in results[:60]) == {Status.OK: 60}
    assert {a.response.credential for a in results[:60]} == {"default", "b"}
    named = results[60].response
    assert (named.status, named.reason) == (Status.REJECTED, "token_unavailable"), named
    assert "PS-a" not in appkeys_sent(rig)
    refused = [
        s for s in rig.dispatcher.calls("/oauth2/tokenP") if (s.request.json_body or {})["appkey"] == "PS-a"
    ]
    assert 1 <= len(refused) <= 3  # one issuance is tried, then the member rests


async def test_soonest_member_and_sick_members() -> None:
    """The member with the shortest wait serves; a sick one only when no other is left."""
    clock = ManualClock()
    pool = Pool(Provider.KIS, KisSettings(credentials=[member("a"), member("b"), member("c")]), clock)
    waits = {"KIS/a": 0.3, "KIS/b": 0.1, "KIS/c": 0.2}
    assert pool.soonest(lambda m: waits[m.domain]).name == "b"
    pool.mark_sick("KIS/b")
    assert pool.soonest(lambda m: waits[m.domain]).name == "c"
    assert pool.can_reroute("KIS/a") and pool.soonest(lambda m: 0.0, besides="KIS/c").name == "a"
    pool.mark_sick("KIS/a")
    pool.mark_sick("KIS/c")
    assert not pool.can_reroute("KIS/a")
    assert pool.soonest(lambda m: waits[m.domain]).name == "b"  # all sick: the soonest anyway
    await clock.advance(60)  # a minute later they serve again
    assert pool.can_reroute("KIS/a")
    with pytest.raises(Invalid, match="no KIS credential"):
        pool.named("zzz")


def test_a_member_free_now_ends_the_comparison() -> None:
    """No member can come sooner than one whose slot is free now, so the ones after it are not estimated;
    with none free, every member is (and the soonest serves)."""
    clock = ManualClock()
    pool = Pool(Provider.KIS, KisSettings(credentials=[member("a"), member("b"), member("c")]), clock)
    asked: list[str] = []

    def free(m: Any) -> float:
        asked.append(m.name)
        return FREE_WITHIN_S  # as good as now

    chosen = pool.soonest(free)
    assert asked == [chosen.name]
    asked.clear()
    waits = {"a": 0.3, "b": 2 * FREE_WITHIN_S, "c": 0.2}

    def wait(m: Any) -> float:
        asked.append(m.name)
        return waits[m.name]

    assert pool.soonest(wait).name == "b"
    assert sorted(asked) == ["a", "b", "c"]


def test_a_large_pool_finds_and_keeps_a_free_member_from_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forty members, one free: sampling a few finds it within a few choices and keeps choosing it. A
    sample of 4 of 40 misses it 9 times in 10, so an unseeded run would miss it for 40 choices about once
    in 70 runs: the sampling is seeded here."""
    monkeypatch.setattr("services.gateway.pool.random", random.Random(11))
    clock = ManualClock()
    pool = Pool(Provider.KIS, KisSettings(credentials=[member(f"m{i:02d}") for i in range(40)]), clock)

    def wait(m: Any) -> float:
        return 0.0 if m.name == "m17" else 1.0

    picks = [pool.soonest(wait).name for _ in range(60)]
    first = picks.index("m17")
    assert first < 40 and set(picks[first:]) == {"m17"}


# --- shared reads -----------------------------------------------------------------------------------


async def test_identical_reads_in_flight_share_one_upstream_call() -> None:
    """Ten identical reads at once make one call; every answer is the same data, nine name the first."""
    rig = build_gateway()
    requests = [ask(rig.clock, params=PRICE) for _ in range(10)]
    results = await serve(rig, requests)
    assert len(rig.dispatcher.calls("/quotations/")) == 1
    assert {a.response.status for a in results} == {Status.OK}
    assert len({json.dumps(a.response.data, sort_keys=True) for a in results}) == 1
    leader = requests[0].request_id
    assert [a.response.shared_with for a in results] == [None] + [leader] * 9
    assert [a.response.request_id for a in results] == [r.request_id for r in requests]


async def test_a_failing_shared_call_gives_every_waiter_the_same_answer() -> None:
    """The one upstream call fails (a business error): all five waiters get that answer, not five calls."""
    rig = build_gateway()
    rig.broker.then(kis_envelope("APBK0919", rt_cd="1"))
    results = await serve(rig, [ask(rig.clock, params=PRICE) for _ in range(5)])
    assert len(rig.dispatcher.calls("/quotations/")) == 1
    answers = {(a.response.status, a.response.reason, a.response.provider_code) for a in results}
    assert len(answers) == 1 and next(iter(answers))[0] is not Status.OK
    assert sum(a.response.shared_with is not None for a in results) == 4


async def test_a_read_sent_before_the_shared_call_and_taken_in_after_it_shares_its_answer() -> None:
    """A read sent before an identical one began leading, but handled after its answer (a burst read in
    two fetches), gets that answer, made by a call after it was sent; one sent after the leader began,
    a redelivery of the leader and a read after the answers are kept no longer are served again."""
    rig = build_gateway()
    early = ask(rig.clock, params=PRICE)
    await rig.clock.advance(0.01)
    (first,) = await serve(rig, [ask(rig.clock, params=PRICE)])
    (shared,) = await serve(rig, [early])
    assert len(rig.dispatcher.calls("/quotations/")) == 1
    assert shared.response.status is Status.OK and shared.response.attempts == 0
    assert shared.response.shared_with == first.response.request_id
    assert shared.response.data == first.response.data
    (later,) = await serve(rig, [ask(rig.clock, params=PRICE)])  # sent after the leader began
    assert later.response.shared_with is None
    assert len(rig.dispatcher.calls("/quotations/")) == 2
    leader = ask(rig.clock, params=PRICE)
    await rig.clock.advance(0.01)
    (delivered,) = await serve(rig, [leader])
    (redelivered,) = await serve(rig, [leader])  # answered from its record, not from itself
    assert redelivered.response == delivered.response and redelivered.response.shared_with is None
    early = ask(rig.clock, params=PRICE)
    await rig.clock.advance(0.01)
    await serve(rig, [ask(rig.clock, params=PRICE)])
    await rig.clock.advance(SETTLED_KEEP_S)
    calls = len(rig.dispatcher.calls("/quotations/"))
    (expired,) = await serve(rig, [early])
    assert expired.response.shared_with is None
    assert len(rig.dispatcher.calls("/quotations/")) == calls + 1


async def test_a_failed_or_replayed_answer_is_not_kept_for_later_reads() -> None:
    """Only an ok answer made since its leader began is kept: a failure is not (a later read tries the
    broker itself), nor an answer replayed from an idempotency record to a redelivery."""
    rig = build_gateway()
    rig.broker.then(kis_envelope("APBK0919", rt_cd="1"))
    early = ask(rig.clock, params=PRICE)
    await rig.clock.advance(0.01)
    (failed,) = await serve(rig, [ask(rig.clock, params=PRICE)])
    assert failed.response.status is not Status.OK
    (retried,) = await serve(rig, [early])
    assert retried.response.status is Status.OK and retried.response.shared_with is None
    replayed_request = ask(rig.clock, params=PRICE)
    (original,) = await serve(rig, [replayed_request])
    rig.gateway.sharing = SharedReads(rig.clock)  # a restart: nothing shared survives it
    early = ask(rig.clock, params=PRICE)
    await rig.clock.advance(0.01)
    (replayed,) = await serve(rig, [replayed_request])
    assert replayed.response == original.response  # from its record
    calls = len(rig.dispatcher.calls("/quotations/"))
    (own,) = await serve(rig, [early])
    assert own.response.shared_with is None
    assert len(rig.dispatcher.calls("/quotations/")) == calls + 1


def _kst_day(clock: ManualClock, days_ago: int) -> str:
    return (datetime.fromtimestamp(clock.time(), KST) - timedelta(days=days_ago)).strftime("%Y%m%d")


async def test_a_past_sessions_bars_come_from_the_cache() -> None:
    """One past day's minute bars are asked twice, one after the other: one upstream call, the second
    answer names the first request; today's bars are asked again each time."""
    rig = build_gateway()
    past = {
        "FID_COND_MRKT_DIV_CODE": "J",
        "FID_INPUT_ISCD": "005930",
        "FID_INPUT_HOUR_1": "153000",
        "FID_INPUT_DATE_1": _kst_day(rig.clock, 3),
        "FID_PW_DATA_INCU_YN": "Y",
        "FID_FAKE_TICK_INCU_YN": "",
    }
    today = {**past, "FID_INPUT_DATE_1": _kst_day(rig.clock, 0)}
    first = await serve(rig, [ask(rig.clock, "FHKST03010230", past), ask(rig.clock, "FHKST03010230", today)])
    again = await serve(rig, [ask(rig.clock, "FHKST03010230", past), ask(rig.clock, "FHKST03010230", today)])
    assert len(rig.dispatcher.calls("/inquire-time-dailychartprice")) == 3
    assert again[0].response.shared_with == first[0].response.request_id
    assert again[0].response.data == first[0].response.data
    assert again[1].response.shared_with is None


def test_immutable_reads_are_past_and_unadjusted() -> None:
    """Only a closed past day's bars count, and daily bars only at original (unadjusted) prices."""
    clock = ManualClock()

    def req(tr_id: str, **params: str) -> ApiRequest:
        return ask(clock, tr_id, params)

    assert immutable(req("FHKST03010230", FID_INPUT_DATE_1="20240105"), "20240108")
    assert not immutable(req("FHKST03010230", FID_INPUT_DATE_1="20240108"), "20240108")
    assert not immutable(req("FHKST03010230", FID_INPUT_DATE_1="2024-01-05"), "20240108")
    assert immutable(req("FHKST03010100", FID_INPUT_DATE_2="20240105", FID_ORG_ADJ_PRC="1"), "20240108")
    assert not immutable(req("FHKST03010100", FID_INPUT_DATE_2="20240105", FID_ORG_ADJ_PRC="0"), "20240108")
    assert not immutable(req(PRICE_TR, FID_INPUT_ISCD="005930"), "20240108")


async def test_cache_holds_answers_as_json_within_its_bytes() -> None:
    """The cache keeps each answer's JSON: the least recently used go once the bytes are over, an answer
    larger than the whole cache is not kept, and a hit gives back the answer that was kept."""
    clock = ManualClock()
    rig = build_gateway()

    def answer(day: str, rows: int) -> tuple[ApiRequest, Any]:
        request = ask(clock, "FHKST03010230", {"FID_INPUT_DATE_1": day})
        bars = [{"stck_cntg_hour": f"{i:06d}", "stck_prpr": "71200"} for i in range(rows)]
        ok = rig.gateway.answer(request, Status.OK).model_copy(update={"data": {"output2": bars}})
        return request, ok

    first, second, third = answer("20240101", 40), answer("20240102", 40), answer("20240103", 40)
    size = len(first[1].to_json())
    shared = SharedReads(clock, cache_entries=100, cache_bytes=int(size * 2.5))
    for day, (request, response) in zip((b"1", b"2", b"3"), (first, second, third), strict=True):
        shared.remember(day, request, response)
        if day == b"2":
            assert shared.cached(b"1") == first[1]  # used last: the second is now the oldest
    assert shared.cached(b"2") is None
    assert shared.cached(b"1") == first[1] and shared.cached(b"3") == third[1]
    assert shared.cached_bytes == len(first[1].to_json()) + len(third[1].to_json())
    assert REGISTRY.get_sample_value("apihub_shared_cache_bytes") == shared.cached_bytes
    huge = answer("20240104", 200)
    shared.remember(b"4", *huge)
    assert shared.cached(b"4") is None and shared.cached(b"1") is not None
    await clock.advance(3601)
    assert shared.cached(b"1") is None and shared.cached(b"3") is None and shared.cached_bytes == 0


async def test_cache_is_bounded_and_expires() -> None:
    """The least recently used answer goes first; an entry is dropped after its time to live."""
    clock = ManualClock()
    shared = SharedReads(clock, cache_entries=2, cache_ttl_s=10)
    rig = build_gateway()
    for day in ("20240101", "20240102", "20240103"):
        request = ask(clock, "FHKST03010230", {"FID_INPUT_DATE_1": day})
        shared.remember(day.encode(), request, rig.gateway.answer(request, Status.OK))
    assert shared.cached(b"20240101") is None and shared.cached(b"20240103") is not None
    await clock.advance(11)
    assert shared.cached(b"20240103") is None
