"""``metrics.child``: the labelled child of a gateway metric, made once and counted where it is exported;
label values kept bounded."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from services.gateway import metrics
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


def test_label_values_stay_bounded_whatever_the_requests_say(monkeypatch: pytest.MonkeyPatch) -> None:
    """Callers past the first MAX_CALLER_LABELS are counted as ``other`` (a known one keeps its name), and
    a TR id the catalog does not know as ``unknown``: free text on the request topic must not make a
    series per value."""
    monkeypatch.setattr(metrics, "_CALLERS", set())
    monkeypatch.setattr(metrics, "MAX_CALLER_LABELS", 3)
    assert [metrics.caller_label(f"w{i}") for i in range(5)] == ["w0", "w1", "w2", "other", "other"]
    assert metrics.caller_label("w1") == "w1"
    assert metrics.tr_id_label("KIS", "FHKST01010100") == "FHKST01010100"
    assert metrics.tr_id_label("KIS", "ka10080") == "unknown"  # Kiwoom's, asked of KIS
    assert metrics.tr_id_label("KIS", "websocket_credentials") == "websocket_credentials"
    assert metrics.tr_id_label("-", "-") == "-"
    assert metrics.tr_id_label("NYSE", "X") == "unknown"
