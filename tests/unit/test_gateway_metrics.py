"""``metrics.child``: the labelled child of a gateway metric, made once and counted where it is exported."""

from __future__ import annotations

from prometheus_client import REGISTRY

from services.gateway.metrics import UPSTREAM_CALLS, UPSTREAM_INFLIGHT, child


def test_child_is_the_labelled_metric_made_once() -> None:
    first = child(UPSTREAM_CALLS, "KIS", "TEST0001", "ok")
    assert first is child(UPSTREAM_CALLS, "KIS", "TEST0001", "ok")
    assert first is UPSTREAM_CALLS.labels("KIS", "TEST0001", "ok")
    assert child(UPSTREAM_CALLS, "KIS", "TEST0001", "no_answer") is not first
    assert child(UPSTREAM_INFLIGHT, "KIS") is not child(UPSTREAM_CALLS, "KIS", "TEST0001", "ok")
    labels = {"provider": "KIS", "tr_id": "TEST0001", "outcome": "ok"}
    before = REGISTRY.get_sample_value("apihub_upstream_calls_total", labels) or 0.0
    child(UPSTREAM_CALLS, "KIS", "TEST0001", "ok").inc()
    child(UPSTREAM_CALLS, "KIS", "TEST0001", "ok").inc()
    assert REGISTRY.get_sample_value("apihub_upstream_calls_total", labels) == before + 2
