"""The Grafana dashboard (ops/grafana/dashboards/apihub.json) and its provisioning, checked as files: panels
laid out without overlap, every query on the provisioned Prometheus datasource, only metrics the services
export, the topics issue 9 asks for all present. tests/integration/test_monitoring.py runs every query
against a real Prometheus."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.unit.test_alert_rules import BUILTIN_SERIES, exported_metric_names, metric_names

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "apihub.json"
DASHBOARD_PROVIDER = GRAFANA / "provisioning" / "dashboards" / "apihub.yml"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
GRID_WIDTH = 24


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel: its PromQL as written and with the dashboard's variables filled in."""

    panel: str
    ref_id: str
    expr: str
    resolved: str


def load_dashboard() -> dict[str, Any]:
    """The dashboard JSON."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that queries (rows aside)."""
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def resolve(expr: str, variables: dict[str, str], rate_interval: str) -> str:
    """``expr`` with Grafana's ``$__rate_interval`` and the dashboard's own variables replaced; raises on a
    variable the dashboard does not define."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "__rate_interval":
            return rate_interval
        if name not in variables:
            raise ValueError(f"unknown variable ${name} in {expr!r}")
        return variables[name]

    return re.sub(r"\$(\w+)", value, expr)


def dashboard_queries(rate_interval: str = "1m") -> list[PanelQuery]:
    """Every panel's every query, resolved with the variables' current values."""
    dashboard = load_dashboard()
    variables = {v["name"]: str(v["current"]["value"]) for v in dashboard["templating"]["list"]}
    return [
        PanelQuery(
            panel["title"], target["refId"], target["expr"], resolve(target["expr"], variables, rate_interval)
        )
        for panel in data_panels(dashboard)
        for target in panel["targets"]
    ]


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    """Ids are unique, every panel fits the 24-column grid, and no two panels share a cell."""
    dashboard = load_dashboard()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_WIDTH, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_query_uses_the_provisioned_datasource() -> None:
    """Panels and targets name the datasource uid provisioned for Grafana; each target has a legend."""
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uids = {source["uid"] for source in provisioned if source["type"] == "prometheus"}
    for panel in data_panels(load_dashboard()):
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel.get("description"), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, panel["title"]
            assert target["expr"].strip() and target["legendFormat"], panel["title"]


def test_queries_resolve_and_select_only_exported_metrics() -> None:
    """Every variable is defined, and every metric a panel reads is one the gateway or the workers export."""
    exported = exported_metric_names() | BUILTIN_SERIES
    for query in dashboard_queries():
        assert "$" not in query.resolved, query
        used = metric_names(query.expr)
        assert used, query
        assert used <= exported, f"{query.panel} reads {sorted(used - exported)}, which nothing exports"


def test_dashboard_covers_what_operations_watch() -> None:
    """Pacing against the limit, queues, rejections, tokens, lock contention, upstream latency and errors,
    consumer lag and worker progress each have a panel."""
    used = set().union(*(metric_names(query.expr) for query in dashboard_queries()))
    assert {
        "apihub_upstream_calls_total",
        "apihub_pacing_jitter_seconds",
        "apihub_queue_depth",
        "apihub_queue_wait_seconds_bucket",
        "apihub_limiter_rejections_total",
        "apihub_token_refreshes_total",
        "apihub_lock_contention_total",
        "apihub_upstream_latency_seconds_bucket",
        "apihub_consumer_lag",
        "apihub_worker_tasks_total",
        "apihub_worker_outputs_total",
    } <= used
    pacing = [q for q in dashboard_queries() if "apihub_pacing_jitter_seconds" in q.expr and "/" in q.expr]
    assert {q.resolved.split("/")[0].strip() for q in pacing} == {"20", "5"}, "the limit lines use the rates"


def test_provider_loads_the_dashboard_folder() -> None:
    """Grafana's file provider reads the folder compose mounts the dashboards into, and the uid is stable."""
    provider = yaml.safe_load(DASHBOARD_PROVIDER.read_text())["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    dashboard = load_dashboard()
    assert dashboard["uid"] == "apihub" and dashboard["title"] == "API Hub"
