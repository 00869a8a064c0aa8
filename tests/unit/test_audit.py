"""apihub audit without Kafka: time parsing, the join, filters, percentiles, redaction and the formats."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import orjson
import pytest

from hubclient.headers import (
    CORRELATION_ID,
    DLQ_REASON,
    DLQ_SOURCE,
    REPLY_PARTITION,
    REPLY_TOPIC,
    encode_partition,
    request_headers,
)
from hubclient.models import ApiRequest, ApiResponse, RequestKind, Status, Timing
from services.audit import AuditError
from services.audit.join import PENDING, UNANSWERED, Exchange, Filters, join, missing_outcome
from services.audit.output import (
    exchange_row,
    latency_cell,
    summary_lines,
    table_lines,
    time_cell,
    wrap_items,
    write_csv,
    write_jsonl,
)
from services.audit.progress import Progress
from services.audit.records import RawRecord, read_dead_letter, read_request, read_response
from services.audit.redact import redact, safe_data, safe_params
from services.audit.stats import percentile, summarize
from services.audit.timerange import (
    TimeRange,
    describe,
    format_kst,
    parse_duration_ms,
    parse_instant,
    resolve_range,
)
from services.replay.plan import Send, decide

# 2026-11-27 09:00:00 KST = 2026-11-27 00:00:00 UTC
T0 = int(datetime(2026, 11, 27, 0, 0, tzinfo=UTC).timestamp() * 1000)
NOW = T0 + 3_600_000  # 10:00 KST
SECRET = "PSsecretappkey0123456789abcdef012345"


def request(n: int, *, at_ms: int = T0, **fields: object) -> ApiRequest:
    """The n-th test request (request ids differ in their last digits)."""
    values: dict[str, object] = {
        "request_id": f"01a22df9-2ab6-76c1-88a7-{n:012d}",
        "provider": "KIS",
        "tr_id": "FHKST01010100",
        "params": {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "005930"},
        "caller": "history-collector",
        "deadline_ms": at_ms + 5_000,
        "created_at_ms": at_ms,
        "reply_topic": "api.responses",
        "reply_partition": 0,
    }
    values.update(fields)
    return ApiRequest.model_validate(values)


def answer(req: ApiRequest, status: Status = Status.OK, **fields: object) -> ApiResponse:
    """An answer to ``req``."""
    values: dict[str, object] = {
        "request_id": req.request_id,
        "status": status,
        "reason": None if status is Status.OK else "business_error",
        "data": {"rt_cd": "0", "output": {"stck_prpr": "70000"}},
        "timing": Timing(queued_ms=1, upstream_ms=12, total_ms=20),
        "attempts": 1,
        "gateway": "gw-1",
    }
    values.update(fields)
    return ApiResponse.model_validate(values)


def raw(topic: str, offset: int, at_ms: int, value: bytes | None, headers: object = ()) -> RawRecord:
    """A record as the reader returns it."""
    return RawRecord(topic, 0, offset, at_ms, value, tuple(headers))  # type: ignore[arg-type]


def req_record(req: ApiRequest, offset: int, at_ms: int | None = None) -> RawRecord:
    """The request record of ``req``, with the headers hubclient writes."""
    return raw(
        "api.requests",
        offset,
        req.created_at_ms if at_ms is None else at_ms,
        req.to_json(),
        request_headers(req),
    )


def resp_record(resp: ApiResponse, offset: int, at_ms: int, headers: object = None) -> RawRecord:
    """The response record of ``resp``."""
    hdrs = [(CORRELATION_ID, resp.request_id.encode())] if headers is None else headers
    return raw("api.responses", offset, at_ms, resp.to_json(), hdrs)


# --- time range --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-27T09:00:00+09:00", T0),
        ("2026-11-27T00:00:00Z", T0),
        ("2026-11-27T00:00:00+00:00", T0),
        ("2026-11-27T09:00", T0),  # no offset: KST
        ("2026-11-27 09:00:00", T0),
        ("2026-11-27", T0 - 9 * 3_600_000),  # midnight KST
        ("2026-11-27T09:00:00.250+09:00", T0 + 250),
        ("09:30", T0 + 30 * 60_000),  # today in KST (NOW is 10:00 KST on the 27th)
        ("9:30:15", T0 + 30 * 60_000 + 15_000),
        ("now", NOW),
        ("now-15m", NOW - 15 * 60_000),
        ("now - 2h", NOW - 2 * 3_600_000),
        (str(T0), T0),  # epoch milliseconds, as Kafka tools print them
    ],
)
def test_parse_instant(text: str, expected: int) -> None:
    """Each accepted form gives the epoch milliseconds meant; a bare date or time is KST."""
    assert parse_instant(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "25:00", "now+5m", "27/11/2026", ""])
def test_parse_instant_refuses(text: str) -> None:
    """Anything else is refused with the accepted forms named."""
    with pytest.raises(AuditError, match="KST"):
        parse_instant(text, NOW)


@pytest.mark.parametrize(
    ("text", "ms"), [("90s", 90_000), ("15m", 900_000), ("2h", 7_200_000), ("1d", 86_400_000), ("500ms", 500)]
)
def test_parse_duration(text: str, ms: int) -> None:
    """Durations in ms, s, m, h and d."""
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["15", "m", "-5m", "0s", "1w"])
def test_parse_duration_refuses(text: str) -> None:
    """A number without a unit, a negative, zero or an unknown unit is refused."""
    with pytest.raises(AuditError):
        parse_duration_ms(text)


@pytest.mark.parametrize(
    ("start", "end", "last", "expected"),
    [
        (None, None, None, TimeRange(NOW - 900_000, NOW)),  # the last 15 minutes
        (None, None, "1h", TimeRange(NOW - 3_600_000, NOW)),
        ("09:00", None, None, TimeRange(T0, NOW)),
        ("09:00", "09:30", None, TimeRange(T0, T0 + 1_800_000)),
        (None, "09:30", "30m", TimeRange(T0, T0 + 1_800_000)),
    ],
)
def test_resolve_range(start: str | None, end: str | None, last: str | None, expected: TimeRange) -> None:
    """--to defaults to now, --last counts back from --to, nothing given means the last 15 minutes."""
    assert resolve_range(start, end, last, NOW) == expected


@pytest.mark.parametrize(
    ("start", "end", "last", "message"),
    [
        ("09:00", None, "1h", "not both"),
        ("10:00", "09:00", None, "empty"),
        ("09:00", "09:00", None, "empty"),
        ("25:00", "26:00", None, "'25:00'"),  # the first bad value is the one named
    ],
)
def test_resolve_range_refuses(start: str, end: str | None, last: str | None, message: str) -> None:
    """--from with --last, an empty or backwards range, and a time that is none (--from named first)
    are refused."""
    with pytest.raises(AuditError, match=message):
        resolve_range(start, end, last, NOW)


def test_describe_shows_both_zones() -> None:
    """A range is shown in KST and in UTC."""
    assert describe(TimeRange(T0, NOW)) == ["2026-11-27 09:00:00 → 10:00:00 KST", "(00:00:00 → 01:00:00 UTC)"]
    assert format_kst(T0 + 5, ms=True) == "2026-11-27 09:00:00.005"


def test_a_range_across_utc_midnight_fits_the_header() -> None:
    """Across UTC midnight both UTC dates are named, and the header wraps within 80 columns."""
    start = T0 + 23 * 3_600_000 + 46 * 60_000  # 2026-11-27 23:46 UTC
    items = describe(TimeRange(start, start + 15 * 60_000))
    assert items[1] == "(2026-11-27 23:46:00 → 2026-11-28 00:01:00 UTC)"
    lines = wrap_items("audit   ", items)
    assert len(lines) == 2 and all(len(line) <= 80 for line in lines)


# --- join --------------------------------------------------------------------------------------------


def test_join_by_request_id_with_latency() -> None:
    """Each request gets its answer by request id, latency is the log-time difference, order is log time."""
    a, b = request(1, at_ms=T0 + 10), request(2, at_ms=T0)
    result = join(
        [read_request(req_record(a, 0)), read_request(req_record(b, 1))],
        [
            read_response(resp_record(answer(b, Status.UPSTREAM_ERROR), 0, T0 + 7)),
            read_response(resp_record(answer(a), 1, T0 + 40)),
        ],
        answers_read_until_ms=NOW,
    )
    assert [(e.request.request_id, e.outcome, e.latency_ms) for e in result.exchanges] == [
        (b.request_id, "upstream_error", 7),
        (a.request_id, "ok", 30),
    ]
    assert result.unmatched_answers == 0


def test_join_keeps_the_first_of_repeated_answers_and_counts_foreign_ones() -> None:
    """A repeated answer is counted, not joined twice; an answer to a request not read is unmatched."""
    a, other = request(1), request(9)
    result = join(
        [read_request(req_record(a, 0))],
        [
            read_response(resp_record(answer(a, Status.EXPIRED, reason="deadline_too_close"), 0, T0 + 5)),
            read_response(resp_record(answer(a), 1, T0 + 9)),
            read_response(resp_record(answer(other), 2, T0 + 9)),
        ],
        answers_read_until_ms=NOW,
    )
    (exchange,) = result.exchanges
    assert (exchange.outcome, exchange.extra_answers, result.unmatched_answers) == ("expired", 1, 1)


def test_join_an_unreadable_request_by_its_correlation_header() -> None:
    """A body that is not JSON is still listed, and joined with the gateway's invalid answer by header id."""
    rid = "01a22df9-2ab6-76c1-88a7-000000000042"
    broken = raw("api.requests", 3, T0, b"not json", [(CORRELATION_ID, rid.encode())])
    invalid = ApiResponse(request_id=rid, status=Status.INVALID, reason="invalid_request")
    letter = raw(
        "api.requests.dlq",
        0,
        T0 + 2,
        b"not json",
        [(DLQ_REASON, b"unparseable: expected value"), (DLQ_SOURCE, b"api.requests:0:3")],
    )
    result = join(
        [read_request(broken)],
        [read_response(resp_record(invalid, 0, T0 + 3))],
        [read_dead_letter(letter)],
        answers_read_until_ms=NOW,
    )
    (exchange,) = result.exchanges
    assert exchange.request.problem is not None and exchange.request.problem.startswith("unparseable")
    assert (exchange.request.request_id, exchange.outcome) == (rid, "invalid")
    assert exchange.dead_letter is not None and exchange.dead_letter.reason.startswith("unparseable")


def test_join_a_spring_request_whose_header_id_is_not_the_body_id() -> None:
    """A Spring client's own correlation id in the header does not hide the body's request id."""
    a = request(1)
    spring = [(k, v) if k != CORRELATION_ID else (k, bytes(16)) for k, v in request_headers(a)]
    result = join(
        [read_request(raw("api.requests", 0, T0, a.to_json(), spring))],
        [read_response(resp_record(answer(a), 0, T0 + 5, [(CORRELATION_ID, bytes(16))]))],
        answers_read_until_ms=NOW,
    )
    assert result.exchanges[0].outcome == "ok"


def test_a_request_addressed_by_its_headers_is_read_as_the_gateway_read_it() -> None:
    """A Spring ``ReplyingKafkaTemplate`` request names its reply address in the headers only; the gateway
    serves it, so the audit reads it (it was "unreadable", ``schema: reply_partition: Field required``,
    and ``apihub replay`` skipped it as a body it could not read)."""
    a = request(1)
    body = {k: v for k, v in orjson.loads(a.to_json()).items() if k not in ("reply_topic", "reply_partition")}
    headers = [(REPLY_TOPIC, b"api.responses"), (REPLY_PARTITION, encode_partition(3))]
    recorded = read_request(raw("api.requests", 0, T0, orjson.dumps(body), headers))
    assert recorded.problem is None and recorded.request is not None
    assert (recorded.request.reply_topic, recorded.request.reply_partition) == ("api.responses", 3)
    exchange = join([recorded], [], answers_read_until_ms=NOW).exchanges[0]
    assert decide(exchange, ()).reason is Send.IDEMPOTENT
    headless = read_request(raw("api.requests", 1, T0, orjson.dumps(body)))
    assert headless.request is None and headless.problem is not None  # nowhere to answer: unreadable still


def test_an_unreadable_request_names_a_rule_across_fields_without_pydantic_prefix() -> None:
    """The audit reads a body's problem as the gateway's dead-letter reason does."""
    late = orjson.loads(request(1).to_json()) | {"deadline_ms": T0 - 1}
    recorded = read_request(raw("api.requests", 0, T0, orjson.dumps(late)))
    assert recorded.problem == "schema: body: deadline_ms is before created_at_ms"


SPRING_CORRELATION = bytes(range(0x80, 0x90))  # a Spring client's binary correlation id: no request id
DERIVED_ID = "5f0f7c5a-3b1e-5c4e-9a57-0d7c8e0f1a2b"  # an id the gateway derived from the record's place


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "unparseable"),
        (orjson.dumps({"request_id": "not-a-uuid", "provider": "KIS"}), "schema"),
        (request(1).to_json(), None),  # too_large: the gateway never read the body, the audit could
    ],
)
def test_join_an_answer_under_a_derived_id_by_the_echoed_correlation_bytes(
    body: bytes, problem: str | None
) -> None:
    """An unreadable (or too large) request whose correlation header is no request id is answered under an
    id the gateway derives, with the header's bytes echoed: joined by those bytes, it is ``invalid``, not
    ``unanswered`` beside an answer ``to a request outside the range``."""
    broken = raw("api.requests", 3, T0, body, [(CORRELATION_ID, SPRING_CORRELATION)])
    invalid = ApiResponse(request_id=DERIVED_ID, status=Status.INVALID, reason="invalid_request")
    result = join(
        [read_request(broken)],
        [read_response(resp_record(invalid, 0, T0 + 3, [(CORRELATION_ID, SPRING_CORRELATION)]))],
        answers_read_until_ms=NOW,
    )
    (exchange,) = result.exchanges
    assert (exchange.outcome, exchange.latency_ms, result.unmatched_answers) == ("invalid", 3, 0)
    assert (exchange.request.problem or "").split(":")[0] == (problem or "")


def test_the_echoed_correlation_bytes_never_take_an_answer_another_request_owns_by_id() -> None:
    """Two requests sent with the same correlation bytes: the readable one keeps its answer (found by its
    body's id), the unreadable one, not answered, stays unanswered."""
    a = request(1)
    readable = raw("api.requests", 0, T0, a.to_json(), [(CORRELATION_ID, SPRING_CORRELATION)])
    broken = raw("api.requests", 1, T0 + 1, b"not json", [(CORRELATION_ID, SPRING_CORRELATION)])
    result = join(
        [read_request(readable), read_request(broken)],
        [read_response(resp_record(answer(a), 0, T0 + 5, [(CORRELATION_ID, SPRING_CORRELATION)]))],
        answers_read_until_ms=NOW,
    )
    assert [e.outcome for e in result.exchanges] == ["ok", UNANSWERED]
    assert result.unmatched_answers == 0


def test_unanswered_dead_lettered_request() -> None:
    """A request without an answer shows its dead letter, found by the record's position."""
    a = request(1, reply_topic="nowhere")
    letter = raw(
        "api.requests.dlq",
        0,
        T0 + 1,
        a.to_json(),
        [(DLQ_REASON, b"reply_topic_not_allowed: nowhere"), (DLQ_SOURCE, b"api.requests:0:4")],
    )
    result = join([read_request(req_record(a, 4))], [], [read_dead_letter(letter)], answers_read_until_ms=NOW)
    (exchange,) = result.exchanges
    assert exchange.outcome == UNANSWERED and exchange.latency_ms is None
    assert (
        exchange.dead_letter is not None and exchange.dead_letter.reason == "reply_topic_not_allowed: nowhere"
    )


@pytest.mark.parametrize(
    ("deadline_offset_ms", "read_until_offset_ms", "outcome"),
    [
        (5_000, 60_000, UNANSWERED),  # the deadline passed within what was read
        (5_000, 5_000, PENDING),  # read up to the deadline itself: the answer may still come
        (600_000, 60_000, PENDING),  # a long deadline not reached yet
    ],
)
def test_missing_outcome(deadline_offset_ms: int, read_until_offset_ms: int, outcome: str) -> None:
    """Unanswered once the deadline has passed within the answers read; pending before."""
    a = read_request(req_record(request(1, deadline_ms=T0 + deadline_offset_ms), 0))
    assert missing_outcome(a, T0 + read_until_offset_ms) == outcome


# --- filters and stats -------------------------------------------------------------------------------


def exchanges() -> list[Exchange]:
    """Four exchanges of two providers, three callers and three outcomes."""
    reqs = [
        request(1, caller="history-collector"),
        request(
            2,
            caller="verification-worker",
            tr_id="FHKST03010200",
            params={
                "FID_COND_MRKT_DIV_CODE": "J",
                "FID_INPUT_ISCD": "005930",
                "FID_INPUT_HOUR_1": "090000",
                "FID_PW_DATA_INCU_YN": "Y",
                "FID_ETC_CLS_CODE": "",
            },
        ),
        request(3, provider="KIWOOM", tr_id="ka10080", caller="replay/history-collector"),
        request(4, caller="history-collector"),
    ]
    answers = [answer(reqs[0]), answer(reqs[1], Status.UPSTREAM_ERROR), answer(reqs[2])]
    return join(
        [read_request(req_record(r, i, T0 + i)) for i, r in enumerate(reqs)],
        [read_response(resp_record(a, i, T0 + 10 * (i + 1))) for i, a in enumerate(answers)],
        answers_read_until_ms=NOW,
    ).exchanges


@pytest.mark.parametrize(
    ("filters", "kept"),
    [
        (Filters(), [1, 2, 3, 4]),
        (Filters(providers=("KIWOOM",)), [3]),
        (Filters(providers=("kis",)), [1, 2, 4]),
        (Filters(tr_ids=("FHKST03*",)), [2]),
        (Filters(tr_ids=("fhkst01010100", "KA10080")), [1, 3, 4]),  # case-insensitive
        (Filters(callers=("history-*",)), [1, 4]),
        (Filters(callers=("replay/*",)), [3]),
        (Filters(outcomes=("unanswered",)), [4]),
        (Filters(outcomes=("ok", "upstream_error")), [1, 2, 3]),
        (Filters(providers=("KIS",), outcomes=("ok",)), [1]),
    ],
)
def test_filters(filters: Filters, kept: list[int]) -> None:
    """Each filter keeps what it names, combined filters keep what all name."""
    assert [int((e.request.request_id or "")[-2:]) for e in filters.apply(exchanges())] == kept


def test_filters_refuse_an_unknown_status() -> None:
    """A status that is no outcome is refused, naming the known ones."""
    with pytest.raises(ValueError, match="unanswered"):
        Filters(outcomes=("lost",))


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([], 50, None),
        ([7.0], 99, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.0),  # order does not matter
        ([1.0, 2.0, 3.0, 4.0], 75, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([float(v) for v in range(1, 101)], 95, 95.0),
        ([float(v) for v in range(1, 101)], 99, 99.0),
        ([float(v) for v in range(1, 11)], 99, 10.0),  # nearest rank rounds up
    ],
)
def test_percentile_nearest_rank(values: list[float], p: float, expected: float | None) -> None:
    """The smallest value with at least p % of the values at or below it."""
    assert percentile(values, p) == expected


def test_summary_counts_and_percentiles() -> None:
    """The status mix counts every outcome; latencies are of answered requests only."""
    summary = summarize(exchanges())
    assert summary.outcomes == {"ok": 2, "upstream_error": 1, "unanswered": 1}
    assert summary.share("ok") == 50.0 and summary.answered == 3
    assert summary.latency_ms == {50: 19.0, 95: 28.0, 99: 28.0}  # 10-0, 20-1, 30-2
    assert summary.upstream_ms[50] == 12


# --- redaction and output ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"appkey": SECRET, "x": 1}, {"appkey": "***", "x": 1}),
        ({"Authorization": "Bearer t"}, {"Authorization": "***"}),
        ({"a": [{"access_token": "t"}, {"b": 2}]}, {"a": [{"access_token": "***"}, {"b": 2}]}),
        ([{"secret": "s"}], [{"secret": "***"}]),
        ("plain", "plain"),
    ],
)
def test_redact(value: object, expected: object) -> None:
    """Secret fields are replaced at any depth, inside lists too."""
    assert redact(value) == expected


def test_token_calls_and_lent_credentials_are_withheld_whole() -> None:
    """Parameters of a token call and the data of a WebSocket credential answer are not shown at all."""
    assert safe_params({"grant_type": "client_credentials", "x": SECRET}, "au10001", "call") == "***"
    assert (
        safe_data(
            {"kind": "approval_key", "key": SECRET},
            "websocket_credentials",
            RequestKind.WEBSOCKET_CREDENTIALS.value,
        )
        == "***"
    )
    assert safe_params({"stk_cd": "005930"}, "ka10001", "call") == {"stk_cd": "005930"}


def test_rows_never_carry_a_secret() -> None:
    """JSONL and CSV rows of a request with an appkey parameter and a lent credential hide both."""
    a = request(1, params={"FID_INPUT_ISCD": "005930", "appkey": SECRET})
    ws = request(2, tr_id="websocket_credentials", params={}, kind="websocket_credentials")
    lent = answer(ws, data={"provider": "KIS", "kind": "approval_key", "secret": SECRET, "expires_at_ms": 1})
    joined = join(
        [read_request(req_record(a, 0)), read_request(req_record(ws, 1))],
        [read_response(resp_record(lent, 0, T0 + 5))],
        answers_read_until_ms=NOW,
    ).exchanges
    out = io.StringIO()
    write_jsonl(joined, out, with_data=True)
    write_csv(joined, out, with_data=True)
    assert SECRET not in out.getvalue()
    assert '"appkey":"***"' in out.getvalue()


def test_table_fits_80_columns() -> None:
    """Every line of the table and the summary fits an 80-column terminal; rows are capped."""
    rows = table_lines(exchanges(), limit=3)
    assert rows[0].split() == ["time", "(KST)", "prov", "tr_id", "caller", "status", "ms", "id"]
    assert rows[1].startswith("09:00:00.000 KIS    FHKST01010100 history-coll… ok")
    assert rows[-1].startswith("... 1 more rows")
    summary = summary_lines(
        summarize(exchanges()),
        exchanges(),
        time_range=TimeRange(T0, NOW),
        read_total=4,
        topics=["api.requests ⋈ api.responses", "(dead letters: api.requests.dlq)"],
        filters="no filter",
        unmatched_answers=2,
        truncated="record limit (10) reached while reading api.requests",
    )
    assert all(len(line) <= 80 for line in [*rows, *summary]), [
        line for line in rows + summary if len(line) > 80
    ]
    text = "\n".join(summary)
    assert "ok 2 (50.0%)" in text and "p50 19 ms" in text and "unanswered 1" in text
    assert request(4).request_id in text  # unanswered requests are listed with their full id
    assert "2 answers to requests outside the range" in text and "WARNING" in text


@pytest.mark.parametrize(
    ("at_ms", "with_day", "cell"),
    [(T0 + 1_234, False, "09:00:01.234"), (T0 + 1_234, True, "11-27 09:00:01")],
)
def test_time_cell(at_ms: int, with_day: bool, cell: str) -> None:
    """Times are KST; the day is shown when the rows span several."""
    assert time_cell(at_ms, with_day=with_day) == cell


@pytest.mark.parametrize(("ms", "cell"), [(None, "-"), (0, "0"), (99_999, "99999"), (123_456, "123s")])
def test_latency_cell(ms: int | None, cell: str) -> None:
    """Milliseconds, then seconds past 99,999 ms, a dash without an answer."""
    assert latency_cell(ms) == cell


def test_wrap_items_continues_under_the_label() -> None:
    """Items wrap onto lines indented past the label, none over the width."""
    lines = wrap_items("status  ", [f"item-{i} 1,000 (10.0%)" for i in range(6)], width=50)
    assert len(lines) > 1 and all(len(line) < 50 for line in lines)
    assert all(line.startswith(" " * 9) for line in lines[1:])


def test_jsonl_and_csv_rows() -> None:
    """JSONL has one object per exchange; CSV reads back with the same fields and values."""
    joined = exchanges()
    out = io.StringIO()
    assert write_jsonl(joined, out) == 4
    rows = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [r["outcome"] for r in rows] == ["ok", "upstream_error", "ok", "unanswered"]
    assert rows[0]["requested_at"] == "2026-11-27T09:00:00.000+09:00" and rows[0]["latency_ms"] == 10
    assert "data" not in rows[0]
    assert rows[3]["answered_at_ms"] is None and rows[3]["request_position"] == "api.requests:0:3"
    out = io.StringIO()
    write_csv(joined, out)
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["outcome"] for r in parsed] == ["ok", "upstream_error", "ok", "unanswered"]
    assert orjson.loads(parsed[0]["params"]) == rows[0]["params"]
    assert exchange_row(joined[0], with_data=True)["data"] == {"rt_cd": "0", "output": {"stck_prpr": "70000"}}


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [False, True])
def test_progress_is_throttled(tty: bool) -> None:
    """Nothing in the first second, then at most one report a second; a terminal's line is rewritten."""
    now = [0.0]
    stream = _Stream(tty)
    progress = Progress(stream, clock=lambda: now[0])
    shown = []
    for step in range(30):  # 3 s in steps of 0.1 s
        now[0] = step / 10
        shown.append(progress.report(f"read {step}"))
    progress.done()
    assert shown.count(True) == 2  # at 1.0 s and 2.0 s
    text = stream.getvalue()
    assert ("\rread 10\x1b[K" in text and text.endswith("\n")) if tty else text == "read 10\nread 20\n"
