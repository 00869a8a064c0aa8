"""Input validation of the admin endpoints: a body that is not a JSON object, or a field that is unknown, of
the wrong type or out of range, is refused with HTTP 400 naming it, and nothing changes; every body the
project sends is still accepted."""

from __future__ import annotations

from typing import Any

import pytest

from services.sandbox.clock import CLOCK_END, MAX_CLOCK_RATE
from tests.sandbox.sandbox_kit import SESSION_NOW, Sandbox

FIRST_DAY = "2024-01-02T00:00:00+09:00"  # the default market_history_start, 00:00 KST
GETS = ("stats", "faults", "clock", "orders", "symbols")


async def refused(sandbox: Sandbox, path: str, body: Any = None, raw: bytes | None = None) -> list[Any]:
    """POST (GET for a ``GET:`` path) ``body`` as JSON (or ``raw``); assert a JSON 400, return its detail."""
    method, _, path = path.rpartition(":")
    resp = await sandbox.client.request(method or "POST", f"/_sandbox/{path}", json=body, data=raw)
    text = await resp.text()
    assert resp.status == 400, text
    assert resp.content_type == "application/json", text
    answer = await resp.json()
    assert answer["error"] == f"invalid {method or 'POST'} /_sandbox/{path.partition('?')[0]}"
    detail: list[Any] = answer["detail"]
    return detail


def named(detail: list[Any]) -> list[list[Any]]:
    """The fields (loc) a 400's detail names."""
    return [error["loc"] for error in detail]


async def test_reset_refuses_an_unknown_field_and_resets_nothing(sandbox: Sandbox) -> None:
    """{"bogus": 1} is a 400 naming bogus; the referee keeps its counts."""
    await sandbox.kis_token()
    assert named(await refused(sandbox, "reset", {"bogus": 1})) == [["bogus"]]
    assert (await sandbox.env_stats("kis/real"))["requests"] == 1


@pytest.mark.parametrize("value", ["no", 1, 0, None, "true"])
async def test_reset_refuses_a_non_boolean(sandbox: Sandbox, value: Any) -> None:
    """clock and faults are JSON booleans: "no", 1 or null is a 400, and the clock is not reset."""
    await sandbox.set_clock(now="2026-11-26T14:00:00")
    assert named(await refused(sandbox, "reset", {"clock": value})) == [["clock"]]
    assert named(await refused(sandbox, "reset", {"faults": value})) == [["faults"]]
    assert (await sandbox.set_clock())["now"] == "2026-11-26T14:00:00+09:00"


async def test_clock_refuses_an_unknown_field(sandbox: Sandbox) -> None:
    """{"bogus": 1} is a 400 naming bogus, also beside a valid field (which is then not applied)."""
    assert named(await refused(sandbox, "clock", {"bogus": 1})) == [["bogus"]]
    assert named(await refused(sandbox, "clock", {"advance_s": 5, "bogus": 1})) == [["bogus"]]
    assert (await sandbox.set_clock())["now"] == SESSION_NOW.isoformat()


@pytest.mark.parametrize("advance_s", [1e18, 1e12, (CLOCK_END - SESSION_NOW).total_seconds()])
async def test_clock_refuses_an_advance_out_of_range(sandbox: Sandbox, advance_s: float) -> None:
    """An advance past the end of the clock's range is a 400 saying so (1e18 s was a 500: OverflowError)."""
    detail = await refused(sandbox, "clock", {"advance_s": advance_s})
    assert named(detail) == [["advance_s"]] and "out of range" in detail[0]["msg"]
    assert (await sandbox.set_clock())["now"] == SESSION_NOW.isoformat()


@pytest.mark.parametrize(
    "now", ["9999-12-31T23:59:59", "2100-01-01T00:00:00", "2099-12-31T15:00:00+00:00", "2024-01-01T23:59:59"]
)
async def test_clock_refuses_an_instant_out_of_range(sandbox: Sandbox, now: str) -> None:
    """The clock is set only from the market's first day (00:00 KST) to the end of 2099 KST: after it a
    token's expiry overflows (9999) and the market's prices have drifted beyond any real level; before it
    there is no market at all."""
    detail = await refused(sandbox, "clock", {"now": now})
    assert named(detail) == [["now"]] and "out of range" in detail[0]["msg"]
    assert FIRST_DAY in detail[0]["msg"] and CLOCK_END.isoformat() in detail[0]["msg"]
    assert (await sandbox.set_clock())["now"] == SESSION_NOW.isoformat()
    await sandbox.kis_token()  # the sandbox still serves


@pytest.mark.parametrize("now", ["9999-12-31T23:59:59-10:00", "0001-01-01T00:00:00+14:00"])
async def test_clock_refuses_an_instant_beyond_the_calendar_in_kst(sandbox: Sandbox, now: str) -> None:
    """An instant whose KST date is before year 1 or after 9999 is a 400, not a 500 (OverflowError)."""
    detail = await refused(sandbox, "clock", {"now": now})
    assert named(detail) == [["now"]] and "out of range" in detail[0]["msg"]


async def test_clock_range_ends_are_accepted(sandbox: Sandbox) -> None:
    """The first instant of the market's first day and the last second of 2099 are both accepted."""
    assert (await sandbox.set_clock(now=FIRST_DAY))["now"] == FIRST_DAY
    assert (await sandbox.set_clock(now="2099-12-31T23:59:59"))["now"] == "2099-12-31T23:59:59+09:00"
    detail = await refused(sandbox, "clock", {"advance_s": 1})
    assert named(detail) == [["advance_s"]] and "out of range" in detail[0]["msg"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rate": True}, "rate"),  # a JSON true is no number (Python's bool is an int)
        ({"advance_s": True}, "advance_s"),
        ({"advance_s": "61"}, "advance_s"),
        ({"rate": "0"}, "rate"),
        ({"now": 5}, "now"),
        ({"now": ""}, "now"),
        ({"now": "yesterday"}, "now"),
        ({"rate": -1}, "rate"),
        ({"rate": 1e300}, "rate"),  # accepted before, and then every request was a 500
        ({"rate": MAX_CLOCK_RATE * 2}, "rate"),
        ({"advance_s": -1}, "advance_s"),
    ],
)
async def test_clock_refuses_a_wrong_type_or_range(
    sandbox: Sandbox, body: dict[str, Any], field: str
) -> None:
    """Each bad field is a 400 naming it; the clock is unchanged and still readable."""
    assert named(await refused(sandbox, "clock", body)) == [[field]]
    clock = await sandbox.set_clock()
    assert clock["now"] == SESSION_NOW.isoformat() and clock["rate"] == 0.0
    await sandbox.kis_token()


async def test_clock_request_is_applied_whole_or_not_at_all(sandbox: Sandbox) -> None:
    """A valid now beside an invalid advance_s or rate leaves the clock where it was (it used to jump)."""
    await refused(sandbox, "clock", {"now": "2026-11-26T14:00:00", "advance_s": -1})
    await refused(sandbox, "clock", {"now": "2026-11-26T14:00:00", "rate": -1})
    await refused(sandbox, "clock", {"rate": 2, "advance_s": 1e18})
    clock = await sandbox.set_clock()
    assert clock["now"] == SESSION_NOW.isoformat() and clock["rate"] == 0.0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"invalidate_tokens_now": "no"}, "invalidate_tokens_now"),
        ({"invalidate_tokens_now": 1}, "invalidate_tokens_now"),
        ({"error_rate": True}, "error_rate"),
        ({"latency_ms": "200"}, "latency_ms"),
        ({"seed": True}, "seed"),
        ({"seed": 7.5}, "seed"),
        ({"error_status": 503.0}, "error_status"),
        ({"targets": "kis/real"}, "targets"),
    ],
)
async def test_faults_refuse_a_wrong_type(sandbox: Sandbox, body: dict[str, Any], field: str) -> None:
    """A string, number or boolean where another type is expected is a 400 naming it; no token dies."""
    token = await sandbox.kis_token()
    before = await (await sandbox.client.get("/_sandbox/faults")).json()
    assert named(await refused(sandbox, "faults", body)) == [[field]]
    assert await (await sandbox.client.get("/_sandbox/faults")).json() == before
    assert (await sandbox.kis_price(token)).status == 200


@pytest.mark.parametrize("path", ["reset", "clock", "faults", *(f"GET:{p}" for p in GETS)])
@pytest.mark.parametrize(
    "raw", [b"[]", b'"reset"', b"1", b"null", b"{", b'{"latency_ms": NaN}', b'{"rate": Infinity}', b"1e400"]
)
async def test_every_endpoint_refuses_a_body_that_is_no_json_object(
    sandbox: Sandbox, path: str, raw: bytes
) -> None:
    """Not a JSON object (NaN and Infinity are not JSON) is a JSON 400 on every admin endpoint."""
    assert named(await refused(sandbox, path, raw=raw)) == [[]]


@pytest.mark.parametrize("path", [f"GET:{p}" for p in GETS])
async def test_the_get_endpoints_take_no_fields(sandbox: Sandbox, path: str) -> None:
    """A GET with a field in its body or a query parameter is a 400 naming it."""
    assert named(await refused(sandbox, path, {"bogus": 1})) == [["bogus"]]
    assert named(await refused(sandbox, f"{path}?bogus=1")) == [["query", "bogus"]]


async def test_a_query_string_is_refused_not_ignored(sandbox: Sandbox) -> None:
    """POST /_sandbox/reset?clock=true is a 400, not a reset that silently keeps the clock."""
    await sandbox.kis_token()
    assert named(await refused(sandbox, "reset?clock=true")) == [["query", "clock"]]
    assert (await sandbox.env_stats("kis/real"))["requests"] == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("reset", None),
        ("reset", {}),
        ("reset", {"faults": True}),
        ("reset", {"clock": True, "faults": True}),
        ("reset", {"clock": False}),
        ("clock", {"now": "2026-11-27T10:30:00+09:00"}),
        ("clock", {"now": "2026-11-26T14:00:00"}),
        ("clock", {"now": "2026-11-26T05:00:00+00:00"}),
        ("clock", {"advance_s": 61}),
        ("clock", {"advance_s": 0.5}),
        ("clock", {"advance_s": 6 * 3600 + 1}),
        ("clock", {"rate": 0}),
        ("clock", {"rate": 1.5, "now": "2026-11-28T11:00:00+09:00", "advance_s": 30}),
        ("clock", {"now": None, "rate": None, "advance_s": None}),
        ("faults", {"latency_ms": 200, "targets": ["kis/real"]}),
        ("faults", {"latency_ms": 350, "latency_jitter_ms": 300, "latency_distribution": "uniform"}),
        ("faults", {"drop_rate": 0.3}),
        ("faults", {"order_timeout_rate": 0.6, "order_timeout_delay_ms": 3000}),
        ("faults", {"error_rate": 0.5, "error_status": 503}),
        ("faults", {"targets": ["kis/real"], "seed": 23}),
        ("faults", {"arrival_jitter_ms": 40.0}),
        ("faults", {"invalidate_tokens_now": True}),
    ],
)
async def test_the_bodies_the_project_sends_are_accepted(
    sandbox: Sandbox, path: str, body: dict[str, Any] | None
) -> None:
    """Every body a test, benchmark or the docs send still answers 200."""
    resp = await sandbox.client.post(f"/_sandbox/{path}", json=body)
    assert resp.status == 200, await resp.text()
