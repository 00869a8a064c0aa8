"""The Prometheus side of monitoring: the alert rules pass their ``promtool test rules`` unit tests
(ops/prometheus/tests/), every alert is tested firing and staying quiet, names only metrics the services
export and has a runbook entry in docs/MONITORING.md; both Prometheus configs are valid and agree;
docs/MONITORING.md's metrics table is every metric the code defines, and the docs name no other.

promtool comes with Debian's ``prometheus`` package, which .ci/run and ``ops/stack.sh up prometheus``
install. These tests install nothing: without promtool they skip where it cannot be installed (not root, or
no apt-get) and fail where it could have been.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "ops" / "prometheus"
RULES = PROMETHEUS_DIR / "rules" / "apihub-alerts.yml"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
LOCAL_CONFIG = PROMETHEUS_DIR / "prometheus-local.yml"
COMPOSE_CONFIG = PROMETHEUS_DIR / "prometheus-compose.yml"
STACK = REPO / "ops" / "stack.sh"
MONITORING_DOC = REPO / "docs" / "MONITORING.md"
#: Series Prometheus makes itself for every target.
BUILTIN_SERIES = {"up"}
METRIC_DEFINITION = re.compile(r'\b(?:Counter|Gauge|Histogram|Summary)\(\s*"apihub_')


def find_tool(name: str) -> str:
    """The path of ``promtool`` or ``prometheus``; skips the test where Debian's package cannot be installed,
    fails where it could (CI installs it, so a missing tool there is a broken .ci/run)."""
    found = shutil.which(name)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        pytest.fail(
            f"{name} is not installed but could be: apt-get install --no-install-recommends prometheus "
            "(.ci/run and `bash ops/stack.sh up prometheus` do it)"
        )
    pytest.skip(
        f"{name} is not installed and cannot be installed here (Debian's prometheus package needs root)"
    )


def metric_modules() -> list[ModuleType]:
    """Every module of ``services`` and ``libs/hubclient`` that defines an ``apihub_*`` metric, found in the
    source, so a metric defined in a new module is not left out of the checks below."""
    modules = []
    for root, top in ((REPO, REPO / "services"), (REPO / "libs", REPO / "libs" / "hubclient")):
        for path in sorted(top.rglob("*.py")):
            if METRIC_DEFINITION.search(path.read_text()):
                modules.append(
                    importlib.import_module(".".join(path.relative_to(root).with_suffix("").parts))
                )
    return modules


def defined_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each ``apihub_*`` metric defined, by the name it is queried by (a counter's with ``_total``, a
    histogram's bare): its type and label names."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for module in metric_modules():
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                for family in value.describe():
                    name = family.name + ("_total" if family.type == "counter" else "")
                    found[name] = (family.type, tuple(value._labelnames))
    return found


def exported_metric_names() -> set[str]:
    """Every series name the gateway and the workers export (counters with ``_total``, histograms with
    ``_bucket``/``_sum``/``_count``), from their metric definitions."""
    suffixes = {"counter": ("",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {name + suffix for name, (kind, _) in defined_metrics().items() for suffix in suffixes[kind]}


def documented_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The rows of docs/MONITORING.md's metrics table: each series' type and label names."""
    section = MONITORING_DOC.read_text().split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(apihub_\w+)` \| (\w+) \|([^|]*)\|", section, re.MULTILINE)
    return {name: (kind, tuple(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


def metric_names(expr: str) -> set[str]:
    """The ``apihub_*`` series names (and ``up``) a PromQL expression selects."""
    return set(re.findall(r"\bapihub_\w+", expr)) | ({"up"} if re.search(r"\bup\s*[{\[]", expr) else set())


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the rules file."""
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"] if "alert" in rule]


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=[path.stem for path in RULE_TESTS])
def test_promtool_unit_tests_pass(test_file: Path) -> None:
    """``promtool test rules`` passes the file's cases (series in, alerts expected or not at given times)."""
    promtool = find_tool("promtool")
    run = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """Each alert has a promtool case where it fires and one where it must not, and tests name no other."""
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        loaded = yaml.safe_load(path.read_text())
        assert loaded["rule_files"] == ["../rules/apihub-alerts.yml"], path
        for case in loaded["tests"]:
            for check in case["alert_rule_test"]:
                (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= {
        "ApihubGatewayDown",
        "ApihubGatewayStalled",
        "ApihubRateLimitRejections",
        "ApihubTokenLockContention",
        "ApihubTokenRefreshFailing",
        "ApihubUpstreamErrorRate",
        "ApihubConsumerLagHigh",
        "ApihubWorkerTasksFailing",
    }
    assert names - fires == set(), "never seen firing"
    assert names - quiet == set(), "never checked to stay quiet"
    assert (fires | quiet) - names == set(), "tests of alerts that do not exist"


def test_alerts_select_only_exported_metrics() -> None:
    """A renamed or removed metric breaks this test instead of silencing an alert for good."""
    exported = exported_metric_names() | BUILTIN_SERIES
    for rule in alert_rules():
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= exported, f"{rule['alert']} selects {sorted(used - exported)}, which nothing exports"


def test_the_monitoring_doc_lists_every_metric_as_defined() -> None:
    """docs/MONITORING.md's metrics table names every ``apihub_*`` metric with its type and labels, and
    nothing else: a metric added, renamed or relabelled in the code fails here until the table follows."""
    defined = defined_metrics()
    assert len(defined) >= 26 and "apihub_client_unmatched_replies_total" in defined
    assert documented_metrics() == defined


def test_the_docs_name_only_metrics_that_exist() -> None:
    """A metric named anywhere in the docs (a series, or a family as prometheus_client names it) is one the
    code defines: a rename cannot leave a page pointing at nothing."""
    known = exported_metric_names() | {name.removesuffix("_total") for name in defined_metrics()}
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        named = set(re.findall(r"\bapihub_[a-z_]+\b", page.read_text()))
        assert named <= known, f"{page.name} names {sorted(named - known)}, which nothing defines"


def test_alerts_carry_severity_summary_and_runbook() -> None:
    """Every alert has a severity, a summary and a runbook link to its own section of docs/MONITORING.md."""
    doc_anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in MONITORING_DOC.read_text().splitlines()
        if line.startswith("#")
    }
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name
        anchor = name.lower()
        assert rule["annotations"]["runbook_url"] == f"docs/MONITORING.md#{anchor}", name
        assert anchor in doc_anchors, f"docs/MONITORING.md has no section '{name}'"


@pytest.mark.parametrize("config", [LOCAL_CONFIG, COMPOSE_CONFIG], ids=["local", "compose"])
def test_config_is_valid_and_loads_the_rules(config: Path) -> None:
    """``promtool check config`` accepts the config and finds the rules file through its rule glob."""
    promtool = find_tool("promtool")
    run = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in run.stdout + run.stderr


def stack_default_port(variable: str) -> int:
    """The default of ``APIHUB_<variable>`` in ops/stack.sh."""
    match = re.search(rf"\$\{{APIHUB_{variable}:-(\d+)\}}", STACK.read_text())
    assert match, variable
    return int(match.group(1))


def scrape_jobs(config: Path) -> dict[str, list[tuple[str, str]]]:
    """Job name -> [(target, service label)] of a Prometheus config."""
    loaded = yaml.safe_load(config.read_text())
    return {
        job["job_name"]: [
            (target, static["labels"]["service"])
            for static in job["static_configs"]
            for target in static["targets"]
        ]
        for job in loaded["scrape_configs"]
    }


def test_local_and_compose_configs_agree() -> None:
    """Same jobs, service labels, ports, rules and intervals; the local one on the stack's default ports."""
    local, compose = yaml.safe_load(LOCAL_CONFIG.read_text()), yaml.safe_load(COMPOSE_CONFIG.read_text())
    assert local["global"] == compose["global"]
    assert local["rule_files"] == compose["rule_files"] == ["rules/*.yml"]
    local_jobs, compose_jobs = scrape_jobs(LOCAL_CONFIG), scrape_jobs(COMPOSE_CONFIG)
    assert set(local_jobs) == set(compose_jobs) == {"gateway", "workers"}
    for job, targets in local_jobs.items():
        assert [(t.split(":")[1], s) for t, s in targets] == [
            (t.split(":")[1], s) for t, s in compose_jobs[job]
        ], job
    ports = {
        "gateway-worker-real": stack_default_port("GATEWAY_METRICS_PORT"),
        "history-collector": stack_default_port("HISTORY_PORT"),
        "verification-worker": stack_default_port("VERIFICATION_PORT"),
        "recovery-worker": stack_default_port("RECOVERY_PORT"),
    }
    assert {s: t for targets in local_jobs.values() for t, s in targets} == {
        s: f"127.0.0.1:{p}" for s, p in ports.items()
    }
