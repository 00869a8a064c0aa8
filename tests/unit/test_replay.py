"""apihub replay without Kafka: which requests are sent, as what, how answers compare, the guards."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import pytest

from hubclient.models import ApiRequest, ApiResponse, Priority, Status
from hubclient.testing import InMemoryTransport, ok
from services.audit.join import Exchange, join
from services.audit.progress import quiet
from services.audit.records import read_request, read_response
from services.replay import ReplayError
from services.replay.compare import DEFAULT_IGNORE, MISSING, NOT_RECORDED, Difference, compare
from services.replay.hub import gateway_settings, is_sandbox_answer
from services.replay.names import HubNames, check_names
from services.replay.options import ReplaySettings, add_arguments, target_from
from services.replay.plan import Decision, Send, Skip, decide, make_plan, replay_caller, replay_request
from services.replay.report import Outcome, count_lines, outcome_lines
from services.replay.sender import ReplaySender, Sent
from tests.unit.test_audit import NOW, T0, answer, raw, req_record, request, resp_record

KIWOOM_ORDER = {"dmst_stex_tp": "KRX", "stk_cd": "005930", "ord_qty": "1", "ord_uv": "", "trde_tp": "3"}


def exchange(req: ApiRequest | bytes, response: ApiResponse | None = None) -> Exchange:
    """One recorded exchange (a request given as bytes is an unreadable record)."""
    if isinstance(req, bytes):
        records = [read_request(raw("api.requests", 0, T0, req))]
    else:
        records = [read_request(req_record(req, 0))]
    answers = [] if response is None else [read_response(resp_record(response, 0, T0 + 5))]
    (result,) = join(records, answers, answers_read_until_ms=NOW).exchanges
    return result


ORDER = request(7, provider="KIWOOM", tr_id="kt10000", params=KIWOOM_ORDER, caller="trader")


@pytest.mark.parametrize(
    ("recorded", "named", "reason"),
    [
        (request(1), set(), Send.IDEMPOTENT),
        (request(1), {request(1).request_id}, Send.NAMED),
        (ORDER, set(), Skip.NON_IDEMPOTENT),
        (ORDER, {ORDER.request_id}, Send.NAMED),
        (ORDER, {request(1).request_id}, Skip.NON_IDEMPOTENT),  # naming another id does not send it
        (
            request(2, tr_id="websocket_credentials", params={}, kind="websocket_credentials"),
            set(),
            Skip.CREDENTIALS,
        ),
        (
            request(2, tr_id="websocket_credentials", params={}, kind="websocket_credentials"),
            {request(2).request_id},
            Skip.CREDENTIALS,  # a lent secret is never asked for again, named or not
        ),
        (request(3, caller="replay/history-collector"), set(), Skip.A_REPLAY),
        (request(3, caller="replay/history-collector"), {request(3).request_id}, Send.NAMED),
        (request(4, tr_id="NOPE0000"), set(), Skip.UNKNOWN_TR_ID),
        (b"not json", set(), Skip.UNREADABLE),
    ],
)
def test_decide(recorded: ApiRequest | bytes, named: set[str], reason: Send | Skip) -> None:
    """Reads are sent, orders only when named, credentials, replays, unknown ids and bad bodies never."""
    decision = decide(exchange(recorded), named)
    assert decision.reason is reason
    assert decision.send is isinstance(reason, Send)


def test_plan_limits_and_reports_unknown_names() -> None:
    """Past max_requests the rest are over_limit; a named id not in the range is reported."""
    recorded = [exchange(request(n)) for n in range(1, 5)] + [exchange(ORDER)]
    plan = make_plan(recorded, {ORDER.request_id, "01a22df9-0000-7000-8000-000000000000"}, max_requests=3)
    assert [d.reason for d in plan.decisions] == [
        Send.IDEMPOTENT,
        Send.IDEMPOTENT,
        Send.IDEMPOTENT,
        Skip.OVER_LIMIT,
        Skip.OVER_LIMIT,  # the named order is the fifth to send
    ]
    assert len(plan.sends) == 3
    assert plan.unknown_names == ["01a22df9-0000-7000-8000-000000000000"]


@pytest.mark.parametrize("keep_credential", [True, False])
def test_replay_request(keep_credential: bool) -> None:
    """A replay is a new request: new id, replay/ caller, bulk, fresh deadline, no idempotency key."""
    recorded = request(
        1,
        priority="interactive",
        idempotency_key="job-1",
        continuation={"tr_cont": "N"},
        credential="acct-2",
    )
    sent = replay_request(
        recorded,
        now_ms=NOW,
        timeout_s=30,
        reply_topic="apihub.replay.responses",
        reply_partition=3,
        keep_credential=keep_credential,
        new_id=lambda ms: f"01a22df9-2ab6-76c1-88a7-{ms % 10**12:012d}",
    )
    assert sent.request_id != recorded.request_id
    assert (sent.provider, sent.tr_id, sent.params, sent.continuation) == (
        recorded.provider,
        recorded.tr_id,
        recorded.params,
        recorded.continuation,
    )
    assert sent.caller == "replay/history-collector" and sent.priority is Priority.BULK
    assert (sent.created_at_ms, sent.deadline_ms) == (NOW, NOW + 30_000)
    assert (sent.reply_topic, sent.reply_partition) == ("apihub.replay.responses", 3)
    assert sent.idempotency_key is None
    assert sent.credential == ("acct-2" if keep_credential else None)


def test_replay_caller_fits_the_caller_pattern() -> None:
    """A long caller is cut to the 64 characters a request's caller may have."""
    assert replay_caller("history-collector") == "replay/history-collector"
    assert len(replay_caller("x" * 64)) == 64


# --- compare -----------------------------------------------------------------------------------------

BODY: dict[str, Any] = {
    "rt_cd": "0",
    "msg_cd": "MCA00000",
    "output": {"stck_prpr": "70000", "stck_cntg_hour": "090001"},
    "output2": [
        {"stck_bsop_date": "20261127", "cntg_vol": "10"},
        {"stck_bsop_date": "20261126", "cntg_vol": "5"},
    ],
}


def ok_answer(data: object, **fields: Any) -> ApiResponse:
    """An ok answer carrying ``data``."""
    return answer(request(1), data=data, **fields)


@pytest.mark.parametrize(
    ("replayed", "ignore", "expected"),
    [
        (ok_answer(BODY), DEFAULT_IGNORE, []),
        (  # a clock time differs: volatile by default
            ok_answer({**BODY, "output": {"stck_prpr": "70000", "stck_cntg_hour": "100000"}}),
            DEFAULT_IGNORE,
            [],
        ),
        (  # ...but compared when the defaults are off
            ok_answer({**BODY, "output": {"stck_prpr": "70000", "stck_cntg_hour": "100000"}}),
            (),
            [Difference("data.output.stck_cntg_hour", "090001", "100000")],
        ),
        (
            ok_answer({**BODY, "output": {"stck_prpr": "71000", "stck_cntg_hour": "090001"}}),
            DEFAULT_IGNORE,
            [Difference("data.output.stck_prpr", "70000", "71000")],
        ),
        (  # ignored by name or by path
            ok_answer({**BODY, "output": {"stck_prpr": "71000", "stck_cntg_hour": "090001"}}),
            ("stck_prpr",),
            [],
        ),
        (
            ok_answer({**BODY, "output": {"stck_prpr": "71000", "stck_cntg_hour": "090001"}}),
            ("data.output.*",),
            [],
        ),
        (
            ok_answer({**BODY, "output2": BODY["output2"][:1]}),
            DEFAULT_IGNORE,
            [Difference("data.output2[]", "2 items", "1 items")],
        ),
        (
            ok_answer(
                {**BODY, "output2": [{"stck_bsop_date": "20261127", "cntg_vol": "11"}, BODY["output2"][1]]}
            ),
            DEFAULT_IGNORE,
            [Difference("data.output2[0].cntg_vol", "10", "11")],
        ),
        (
            ok_answer({k: v for k, v in BODY.items() if k != "msg_cd"} | {"extra": 1}),
            DEFAULT_IGNORE,
            [Difference("data.msg_cd", "MCA00000", MISSING), Difference("data.extra", MISSING, 1)],
        ),
        (
            answer(request(1), Status.UPSTREAM_ERROR, provider_code="EGW00201", data=BODY),
            DEFAULT_IGNORE,
            [
                Difference("status", "ok", "upstream_error"),
                Difference("reason", None, "business_error"),
                Difference("provider_code", None, "EGW00201"),
            ],
        ),
        (
            ok_answer({**BODY, "access_token": "new-token"}),  # a secret never shows, even as a difference
            DEFAULT_IGNORE,
            [Difference("data.access_token", MISSING, "***")],
        ),
    ],
)
def test_compare(replayed: ApiResponse, ignore: tuple[str, ...], expected: list[Difference]) -> None:
    """Status, reason and codes, then data to any depth, volatile and named fields ignored, secrets hidden."""
    assert compare(ok_answer(BODY), replayed, ignore) == expected


def test_compare_without_a_recorded_answer() -> None:
    """A request that had no answer differs from any answer it gets now."""
    assert compare(None, ok_answer(BODY)) == [Difference("status", NOT_RECORDED, "ok")]


# --- guards ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "group", "topics", "refused", "redis_prefix"),
    [
        ("apihub.replay", "apihub-gateway", ("api.requests", "api.responses"), None, "apihub:"),
        ("api", "api.gateway", ("api.requests",), "group", "apihub:"),
        ("api", "apihub-gateway", ("api.requests", "api.responses"), "topics", "apihub:"),
        ("apihub", "apihub-gateway", ("api.requests",), "Redis key prefix 'apihub:' overlaps", "apihub:"),
        ("apihub:x", "apihub-gateway", ("api.requests",), "overlaps the gateway's", "apihub:"),
        ("apihub.replay", "apihub-gateway", ("api.requests",), "overlaps the gateway's", "apihub.r"),
        ("apihub.replay", "apihub-gateway", ("api.requests",), None, "hub:"),
    ],
)
def test_the_replay_hub_never_takes_the_gateways_group_or_topics(
    prefix: str, group: str, topics: tuple[str, ...], refused: str | None, redis_prefix: str
) -> None:
    """The replay hub's names are refused when they are the running gateway's group or topics, or when its
    Redis key prefix is the gateway's, inside it or around it (APIHUB_REDIS__KEY_PREFIX)."""
    names = HubNames.from_prefix(prefix)
    assert (names.requests, names.group_id, names.redis_prefix) == (
        f"{prefix}.requests",
        f"{prefix}.gateway",
        f"{prefix}:",
    )
    if refused is None:
        check_names(names, group, topics, redis_prefix)
    else:
        with pytest.raises(ReplayError, match=refused):
            check_names(names, group, topics, redis_prefix)


@pytest.mark.parametrize(
    ("status", "body", "sandbox"),
    [
        (200, {"environments": {"kis/real": {}}, "loop_lag": {}}, True),
        (200, {"rt_cd": "1", "msg1": "not found"}, False),  # a broker's envelope
        (404, None, False),
        (200, [], False),
    ],
)
def test_is_sandbox_answer(status: int, body: object, sandbox: bool) -> None:
    """Only the sandbox referee's report passes the check that guards the default target."""
    assert is_sandbox_answer(status, body) is sandbox


@pytest.mark.parametrize(
    ("argv", "refused"),
    [
        (["--target", "hub"], "--live"),
        (["--target", "hub", "--live"], None),
        ([], None),
        (["--replay-prefix", "api"], "topics"),  # would be the gateway's own topics
    ],
)
def test_target_from_arguments(argv: list[str], refused: str | None) -> None:
    """A running hub is a target only with --live; the sandbox target never borrows the gateway's names."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(argv)
    settings = ReplaySettings()
    if refused is None:
        target = target_from(args, settings)
        assert target.kind == (argv[1] if argv else "sandbox")
    else:
        with pytest.raises(ReplayError, match=refused):
            target_from(args, settings)


# --- report and sender -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "verdict"),
    [
        (Outcome(Decision(exchange(ORDER), Skip.NON_IDEMPOTENT)), "skipped"),
        (Outcome(Decision(exchange(request(1)), Send.IDEMPOTENT), dry_run=True), "would send"),
        (Outcome(Decision(exchange(request(1)), Send.IDEMPOTENT)), "not sent"),
        (
            Outcome(Decision(exchange(request(1)), Send.IDEMPOTENT), Sent(request(9), None, "no answer")),
            "no answer",
        ),
        (Outcome(Decision(exchange(request(1)), Send.IDEMPOTENT), Sent(request(9), ok_answer(BODY))), "same"),
        (
            Outcome(
                Decision(exchange(request(1)), Send.IDEMPOTENT),
                Sent(request(9), ok_answer(BODY)),
                [Difference("status", "ok", "rejected")],
            ),
            "different",
        ),
    ],
)
def test_verdicts_and_lines(outcome: Outcome, verdict: str) -> None:
    """Each outcome has its verdict; its lines fit 80 columns; a skipped order names its id."""
    assert outcome.verdict == verdict
    lines = outcome_lines(outcome)
    assert lines[0].startswith(verdict) and all(len(line) <= 80 for line in lines)
    if verdict == "skipped":
        assert ORDER.request_id in lines[1] and "--include-order" in lines[1]


def test_count_lines() -> None:
    """The counts name every skip reason and every verdict."""
    outcomes = [
        Outcome(Decision(exchange(ORDER), Skip.NON_IDEMPOTENT)),
        Outcome(Decision(exchange(request(1)), Send.IDEMPOTENT), Sent(request(9), ok_answer(BODY))),
    ]
    assert count_lines(outcomes) == ["recorded 2: send 1, skip 1 (non_idempotent 1)", "result   1 same"]


async def test_sender_matches_answers_and_times_out() -> None:
    """Answers are matched by request id; an unanswered request ends as 'no answer' after its deadline."""

    def respond(req: ApiRequest) -> ApiResponse | None:
        silent = req.params["FID_INPUT_ISCD"] == "000660"
        return None if silent else ok(req, {"answers": req.request_id})

    transport = InMemoryTransport(respond)
    async with ReplaySender(transport) as sender:
        topic, partition = sender.reply_address

        def build(n: int, symbol: str) -> Callable[[], ApiRequest]:
            recorded = request(n, params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": symbol})
            return lambda: replay_request(
                recorded,
                now_ms=int(time.time() * 1000),
                timeout_s=0.2,
                reply_topic=topic,
                reply_partition=partition,
                keep_credential=False,
            )

        results = await sender.send_all(
            [build(1, "005930"), build(2, "000660"), build(3, "005930")],
            concurrency=2,
            max_s=30,
            progress=quiet(),
        )
    assert len(transport.sent) == 3
    first, second, third = results
    assert first is not None and first.response is not None
    assert first.response.data == {"answers": first.request.request_id}
    assert third is not None and third.response is not None
    assert second is not None and second.response is None
    assert second.problem is not None and second.problem.startswith("no answer")


async def test_sender_stops_sending_after_max_s() -> None:
    """Nothing new is sent once max_s seconds have passed; those requests are reported as not sent."""
    transport = InMemoryTransport(lambda req: ok(req, {}))
    async with ReplaySender(transport) as sender:
        topic, partition = sender.reply_address
        make = [
            lambda: replay_request(
                request(1),
                now_ms=int(time.time() * 1000),
                timeout_s=1,
                reply_topic=topic,
                reply_partition=partition,
                keep_credential=False,
            )
        ] * 3
        results = await sender.send_all(make, concurrency=1, max_s=1e-9, progress=quiet())
    assert results == [None, None, None] and transport.sent == []


def test_the_replay_gateway_ignores_the_operators_broker_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """A live broker's address, environment or permissions in APIHUB_* never reach the replay's gateway."""
    monkeypatch.setenv("APIHUB_KIS__BASE_URL", "https://openapi.koreainvestment.com:9443")
    monkeypatch.setenv("APIHUB_KIS__ENVIRONMENT", "mock")
    monkeypatch.setenv("APIHUB_KIWOOM__BASE_URL", "https://api.kiwoom.com")
    monkeypatch.setenv("APIHUB_PERMISSIONS_FILE", "ops/permissions.example.yaml")
    names = HubNames.from_prefix("apihub.replay")
    settings = gateway_settings(
        names,
        bootstrap_servers="127.0.0.1:19092",
        redis_url="redis://127.0.0.1:16379/0",
        sandbox_url="http://sb/",
    )
    assert (settings.kis.base_url, settings.kis.environment) == ("http://sb/kis/real", "real")
    assert settings.kiwoom.base_url == "http://sb/kiwoom/real"
    assert getattr(settings, "permissions_file", None) is None
    assert (settings.kafka.request_topic, settings.kafka.group_id) == (
        "apihub.replay.requests",
        "apihub.replay.gateway",
    )
    assert settings.redis.key_prefix == "apihub.replay:"


def test_the_replay_gateway_connects_as_the_operators_principal(monkeypatch: pytest.MonkeyPatch) -> None:
    """APIHUB_KAFKA__SECURITY_* reach the replay's own gateway (and only how it connects, not its topics)."""
    for name, value in {
        "APIHUB_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "APIHUB_KAFKA__SASL_USERNAME": "replayer",
        "APIHUB_KAFKA__SASL_PASSWORD": "pw",
        "APIHUB_KAFKA__REQUEST_TOPIC": "api.requests",
    }.items():
        monkeypatch.setenv(name, value)
    args = argparse.Namespace(
        target="sandbox", live=False, replay_prefix="apihub.replay", sandbox_url=None, redis_url=None,
        hub_request_topic=None, hub_reply_topic=None,
    )  # fmt: skip
    target = target_from(args, ReplaySettings())
    settings = gateway_settings(
        target.names,
        bootstrap_servers="127.0.0.1:19092",
        redis_url="redis://127.0.0.1:16379/0",
        sandbox_url="http://sb/",
        security=target.security,
    )
    kafka = settings.kafka
    assert (kafka.security_protocol, kafka.sasl_username) == ("SASL_PLAINTEXT", "replayer")
    assert kafka.sasl_password is not None and kafka.sasl_password.get_secret_value() == "pw"
    assert kafka.request_topic == "apihub.replay.requests"


def test_a_replay_hub_without_its_redis_is_an_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The replay gateway's Redis not answering was a traceback with exit 1 (read as "results differ")."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from services import cli
    from services.replay import command

    async def no_redis(*_: object) -> int:
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")

    monkeypatch.setattr(command, "run_replay", no_redis)
    assert cli.main(["replay", "--last", "5m", "--redis-url", "redis://:pw@127.0.0.1:1/0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("apihub replay: error: Redis is not reachable (Error 111") and "pw" not in err
