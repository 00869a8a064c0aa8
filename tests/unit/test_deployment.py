"""Deployment: docker-compose.yml's structure, the Dockerfile, the env templates, `apihub config check`,
the image's health probe, and `docker compose config` where Docker Compose v2 is installed."""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from services.cli import main
from services.config_check import REQUIRED, catalog, check_env, parse_env
from services.settings import GatewaySettings
from tests.conftest import KAFKA_CONTAINER_ENV, KAFKA_IMAGE, REDIS_IMAGE, kafka_start_script

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "ops" / "docker" / "Dockerfile"
POM = REPO / "ops" / "kafka" / "pom.xml"
SANDBOX_ENV = REPO / "ops" / "sandbox.env"
PROD_EXAMPLE = REPO / ".env.prod.example"
DEV_EXAMPLE = REPO / ".env.example"

WORKERS = ("history-collector", "verification-worker", "recovery-worker")
GATEWAY = "gateway-worker-real"
SECRET_NAME = re.compile(r"APPKEY|APPSECRET|SECRETKEY|SECRET|PASSWORD|TOKEN", re.I)
# A fake but well-shaped credential set; used only in these tests' temporary files.
KIS_KEY = "PS" + "k" * 34
KIS_SECRET = "s" * 180
KIWOOM_KEY = "kiwoom-app-key-0123456789"
KIWOOM_SECRET = "kiwoom-secret-key-9876543210"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """docker-compose.yml, anchors and merge keys resolved."""
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = compose["services"]
    return result


def long_running(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every service except the one-shot ones (restart "no")."""
    return {name: s for name, s in services(compose).items() if str(s.get("restart", "no")) != "no"}


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping (a list entry without '=' passes a variable through: None)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {k: (v if sep else None) for k, sep, v in (item.partition("=") for item in env)}
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


# --- docker-compose.yml ---------------------------------------------------------------------------------


def test_kafka_is_the_official_image_of_the_local_stack_version(compose: dict[str, Any]) -> None:
    """Kafka is apache/kafka 4.x pinned by digest, the local stack's version, and the testcontainers image."""
    image = services(compose)["kafka"]["image"]
    pom_version = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    assert pom_version is not None
    match = re.fullmatch(r"apache/kafka:(\d+)\.(\d+)\.(\d+)@sha256:[0-9a-f]{64}", image)
    assert match, image
    assert match.group(1) == "4" == pom_version.group(1).split(".")[0]
    assert image.split("@")[0] == f"apache/kafka:{pom_version.group(1)}"
    assert image == KAFKA_IMAGE
    assert services(compose)["redis"]["image"] == REDIS_IMAGE


def test_kafka_is_a_single_kraft_node_on_a_named_volume(compose: dict[str, Any]) -> None:
    """One combined broker/controller in KRaft mode whose log directory is a named volume."""
    kafka = services(compose)["kafka"]
    env = environment(kafka)
    assert set(str(env["KAFKA_PROCESS_ROLES"]).split(",")) == {"broker", "controller"}
    assert str(env["KAFKA_CONTROLLER_QUORUM_VOTERS"]).startswith("1@")
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    volume, _, path = kafka["volumes"][0].partition(":")
    assert volume in compose["volumes"] and path == env["KAFKA_LOG_DIRS"]
    # A KRaft cluster id is a base64url UUID: 22 characters.
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", str(env["CLUSTER_ID"]))


def test_redis_persists_on_a_named_volume(compose: dict[str, Any]) -> None:
    """Redis keeps an append-only file on a named volume, so tokens and records survive a restart."""
    redis = services(compose)["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    volume, _, path = redis["volumes"][0].partition(":")
    assert volume in compose["volumes"] and path == "/data"


def test_topics_initialiser_runs_once(compose: dict[str, Any]) -> None:
    """The topic initialiser is a one-shot `apihub topics ensure` against the compose Kafka."""
    topics = services(compose)["topics"]
    assert topics["command"][:2] == ["topics", "ensure"]
    assert str(topics["restart"]) == "no"
    assert topics["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_gateway_is_checked_on_readyz_and_restarts(compose: dict[str, Any]) -> None:
    """gateway-worker-real is healthy only when /readyz answers, and restarts unless stopped."""
    gateway = services(compose)[GATEWAY]
    assert gateway["command"] == ["gateway"]
    assert any("/readyz" in part for part in gateway["healthcheck"]["test"])
    assert gateway["restart"] == "unless-stopped"
    for dependency in ("kafka", "redis"):
        assert gateway["depends_on"][dependency]["condition"] == "service_healthy"
    assert gateway["depends_on"]["topics"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("worker", WORKERS)
def test_every_worker_waits_for_a_healthy_gateway_and_the_topics(
    compose: dict[str, Any], worker: str
) -> None:
    """Each worker starts only after the gateway is healthy and the initialiser has finished."""
    service = services(compose)[worker]
    assert service["command"] == ["worker", worker]
    assert service["depends_on"][GATEWAY]["condition"] == "service_healthy"
    assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("worker", WORKERS)
def test_workers_never_see_credentials(compose: dict[str, Any], worker: str) -> None:
    """Workers get no env file and no credential variable: only the gateway holds the brokers' keys."""
    service = services(compose)[worker]
    assert "env_file" not in service
    assert not [name for name in environment(service) if SECRET_NAME.search(name)]


def test_every_long_running_service_has_health_restart_and_limits(compose: dict[str, Any]) -> None:
    """Each long-running service has a health check, a restart policy and CPU and memory limits."""
    running = long_running(compose)
    assert {"kafka", "redis", GATEWAY, *WORKERS, "sandbox", "feed", "prometheus", "grafana"} <= set(running)
    for name, service in running.items():
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name}: no health check"
        assert service["restart"] in ("unless-stopped", "always"), f"{name}: restart {service['restart']}"
    for name, service in services(compose).items():
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("cpus") and limits.get("memory"), f"{name}: no resource limits"


def test_worker_health_checks_probe_their_own_port(compose: dict[str, Any]) -> None:
    """Workers get distinct health ports, and their probe reads the port from their own environment."""
    ports = {str(environment(services(compose)[w])["APIHUB_HEALTH_PORT"]) for w in WORKERS}
    assert ports == {"18091", "18092", "18093"}
    for worker in WORKERS:
        assert services(compose)[worker]["healthcheck"]["test"] == ["CMD", "apihub-healthcheck"]


def test_profiles(compose: dict[str, Any]) -> None:
    """The sandbox and the market feed are in profile sandbox; Prometheus and Grafana in monitoring."""
    all_services = services(compose)
    assert all_services["sandbox"]["profiles"] == ["sandbox"]
    assert all_services["feed"]["profiles"] == ["sandbox"]
    assert all_services["feed"]["command"][0] == "feed"
    assert all_services["prometheus"]["profiles"] == ["monitoring"]
    assert all_services["grafana"]["profiles"] == ["monitoring"]
    assert all_services["prometheus"]["image"].startswith("prom/prometheus:")
    assert all_services["grafana"]["image"].startswith("grafana/grafana:")
    # Everything the real-broker profile runs is outside any profile.
    for name in ("kafka", "redis", "topics", GATEWAY, *WORKERS):
        assert "profiles" not in all_services[name], name
    # The gateway waits for the sandbox only when that profile is on.
    assert all_services[GATEWAY]["depends_on"]["sandbox"]["required"] is False


def test_third_party_images_are_pinned(compose: dict[str, Any]) -> None:
    """Every image not built here is pinned by tag and digest."""
    for name, service in services(compose).items():
        if "build" in service:
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", service["image"]), name


def test_monitoring_configuration_is_in_the_repository(compose: dict[str, Any]) -> None:
    """Prometheus scrapes the gateway and every worker on their compose ports; Grafana finds Prometheus."""
    mounts = [
        volume.split(":")[0]
        for name in ("prometheus", "grafana")
        for volume in services(compose)[name]["volumes"]
        if volume.startswith("./")
    ]
    for mount in mounts:
        assert (REPO / mount).exists(), mount
    prometheus = yaml.safe_load((REPO / "ops" / "prometheus" / "prometheus-compose.yml").read_text())
    targets = {
        target
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for target in c["targets"]
    }
    assert targets == {
        f"{GATEWAY}:18081",
        "history-collector:18091",
        "verification-worker:18092",
        "recovery-worker:18093",
    }
    datasources = (REPO / "ops" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "http://prometheus:9090" in datasources


def test_gateway_reads_credentials_only_from_an_env_file(compose: dict[str, Any]) -> None:
    """The gateway's credentials come from the env file named by APIHUB_ENV_FILE, never from compose."""
    gateway = services(compose)[GATEWAY]
    assert gateway["env_file"] == [{"path": "${APIHUB_ENV_FILE:-.env}", "required": True}]
    assert not [name for name in environment(gateway) if SECRET_NAME.search(name)]


def test_no_secret_literal_in_the_compose_file(compose: dict[str, Any]) -> None:
    """No credential value, interpolation default or long random-looking string is written in the file."""
    text = COMPOSE_FILE.read_text()
    for name, service in services(compose).items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert value is None, f"{name}: {key} has a value in docker-compose.yml"
    for variable, default in re.findall(r"\$\{(\w+):?-([^}]*)\}", text):
        assert not (SECRET_NAME.search(variable) and default), f"{variable} has a default value"
    # Random-looking: a long run of token characters mixing letters and digits (names are letters only).
    without_digests = re.sub(r"sha256:[0-9a-f]{64}", "", text)
    tokens = re.findall(r"[A-Za-z0-9+/=_-]{24,}", without_digests)
    assert not [t for t in tokens if re.search(r"\d", t) and re.search(r"[A-Za-z]", t)]
    for line in SANDBOX_ENV.read_text().splitlines():
        key, _, value = line.partition("=")
        if SECRET_NAME.search(key) and value:
            assert value not in text, key


# --- ops/docker/Dockerfile ------------------------------------------------------------------------------


def dockerfile_lines() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_dockerfile_is_multi_stage_with_a_pinned_base() -> None:
    """Two or more stages, each FROM a base pinned by tag and by digest."""
    lines = dockerfile_lines()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", "\n".join(lines), re.M))
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert len(froms) >= 2
    for base in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+@sha256:[0-9a-f]{64}", image), image
    assert any(line.startswith("COPY --from=") for line in lines)


def test_dockerfile_runs_as_an_unprivileged_user_with_the_apihub_entrypoint() -> None:
    """The last USER is not root, the entry point is apihub, and the image has a health check."""
    lines = dockerfile_lines()
    user = [line.split()[1] for line in lines if line.startswith("USER ")][-1]
    assert user.split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["apihub"]' in lines
    assert any(line.startswith("HEALTHCHECK ") and "apihub-healthcheck" in line for line in lines)
    assert any("ops/docker/healthcheck.py" in line for line in lines)


def test_build_context_leaves_secrets_and_local_state_out() -> None:
    """.dockerignore keeps env files (not the templates), the virtualenv and .local out of the context."""
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert {".env", ".env.*", ".venv", ".local", ".git"} <= set(ignored)
    assert {"!.env.example", "!.env.prod.example"} <= set(ignored)


def test_compose_builds_the_one_image_for_every_apihub_service(compose: dict[str, Any]) -> None:
    """The gateway, the workers, the sandbox, the feed and the initialiser share one build and one image."""
    ours = {name: s for name, s in services(compose).items() if "build" in s}
    assert set(ours) == {"topics", "sandbox", "feed", GATEWAY, *WORKERS}
    assert {s["build"]["dockerfile"] for s in ours.values()} == {"ops/docker/Dockerfile"}
    assert {s["image"] for s in ours.values()} == {"apihub:local"}


# --- env templates ------------------------------------------------------------------------------------


def test_prod_example_lists_every_gateway_setting_with_a_comment_and_no_secret() -> None:
    """.env.prod.example names each gateway setting under a comment, secrets without a value."""
    lines = PROD_EXAMPLE.read_text().splitlines()
    parsed = parse_env("\n".join(lines))
    assert parsed.problems == []
    secrets = {name for name, setting in catalog().items() if setting.secret}
    gateway = {name for name, setting in catalog().items() if GatewaySettings in setting.owners}
    assert set(parsed.values) == gateway
    for name in secrets & gateway:
        assert parsed.values[name] == "", name
    for name, number in parsed.lines.items():
        above = number - 2  # index of the line above
        while above >= 0 and lines[above].startswith("APIHUB_"):
            above -= 1  # a group of settings under one comment
        assert above >= 0 and lines[above].startswith("#"), f"{name}: no comment above it"


def test_prod_example_is_complete_but_for_the_credentials() -> None:
    """`apihub config check` on the template reports exactly the four credentials as missing."""
    report = check_env(parse_env(PROD_EXAMPLE.read_text()).values)
    assert {(p.kind, p.name) for p in report.problems} == {
        ("missing", name) for name in REQUIRED if SECRET_NAME.search(name)
    }


def test_sandbox_env_is_a_valid_configuration() -> None:
    """ops/sandbox.env passes the check and points both providers at the compose sandbox."""
    parsed = parse_env(SANDBOX_ENV.read_text())
    assert parsed.problems == [] and check_env(parsed.values).ok
    assert parsed.values["APIHUB_KIS__BASE_URL"].startswith("http://sandbox:")
    assert parsed.values["APIHUB_KIWOOM__BASE_URL"].startswith("http://sandbox:")


def test_dev_example_parses_cleanly() -> None:
    """.env.example is well-formed and names nothing unknown (its empty credentials are expected)."""
    parsed = parse_env(DEV_EXAMPLE.read_text())
    assert parsed.problems == []
    kinds = {p.kind for p in check_env(parsed.values).problems}
    assert kinds == {"missing"}


# --- apihub config check ------------------------------------------------------------------------------

GOOD = f"""# a complete production file
APIHUB_KIS__BASE_URL=https://openapi.koreainvestment.com:9443
APIHUB_KIS__APPKEY={KIS_KEY}
APIHUB_KIS__APPSECRET='{KIS_SECRET}'
export APIHUB_KIWOOM__BASE_URL=https://api.kiwoom.com
APIHUB_KIWOOM__APPKEY="{KIWOOM_KEY}"
APIHUB_KIWOOM__SECRETKEY={KIWOOM_SECRET}  # trailing comment
APIHUB_KIS__RATE_PER_S=18.5
APIHUB_LOG_LEVEL=debug
APIHUB_KAFKA__EXTRA_REPLY_TOPICS=["java.replies"]
APIHUB_REDIS__URL=redis://:pw@redis:6379/0
APIHUB_HEALTH_PORT=18091
APIHUB_SANDBOX__PORT=18080
TZ=Asia/Seoul
"""


KIS_MOCK = (  # KIS's mock server, and the environment that goes with it
    "APIHUB_KIS__BASE_URL=https://openapivts.koreainvestment.com:29443",
    "APIHUB_KIS__ENVIRONMENT=mock",
)


def without(text: str, name: str) -> str:
    return "".join(f"{line}\n" for line in text.splitlines() if name not in line)


def plus(text: str, *lines: str) -> str:
    return text + "\n".join(lines) + "\n"


def _member(name: str, **fields: object) -> str:
    """One credential pool member as JSON, with a KIS-shaped key of its own."""
    key = "PS" + name[0] * 34
    return json.dumps({"name": name, "appkey": key, "secret": KIS_SECRET, **fields})


CASES = [
    pytest.param(GOOD, set(), id="complete"),
    pytest.param(
        without(GOOD, "APIHUB_KIS__APPSECRET"), {("missing", "APIHUB_KIS__APPSECRET")}, id="no-secret"
    ),
    pytest.param(
        plus(without(GOOD, "APIHUB_KIWOOM__APPKEY"), "APIHUB_KIWOOM__APPKEY="),
        {("missing", "APIHUB_KIWOOM__APPKEY")},
        id="empty-key",
    ),
    pytest.param(
        without(GOOD, "BASE_URL"),
        {("missing", "APIHUB_KIS__BASE_URL"), ("missing", "APIHUB_KIWOOM__BASE_URL")},
        id="no-base-urls",
    ),
    pytest.param(
        plus(GOOD, "APIHUB_KIS__RATE_PER_S=0"),
        {("malformed", "APIHUB_KIS__RATE_PER_S"), ("duplicate", "APIHUB_KIS__RATE_PER_S")},
        id="rate-zero-and-duplicate",
    ),
    pytest.param(plus(GOOD, "APIHUB_MAX_BACKLOG=lots"), {("malformed", "APIHUB_MAX_BACKLOG")}, id="not-int"),
    pytest.param(
        plus(GOOD, "APIHUB_KIWOOM__ENVIRONMENT=paper"),
        {("malformed", "APIHUB_KIWOOM__ENVIRONMENT")},
        id="literal",
    ),
    pytest.param(
        plus(GOOD, "APIHUB_TASK_DEADLINE_S=-5"),
        {("malformed", "APIHUB_TASK_DEADLINE_S")},
        id="worker-setting",
    ),
    pytest.param(
        plus(GOOD, "APIHUB_KAFKA__EXTRA_REPLY_TOPICS=a,b"),
        {
            ("malformed", "APIHUB_KAFKA__EXTRA_REPLY_TOPICS"),
            ("duplicate", "APIHUB_KAFKA__EXTRA_REPLY_TOPICS"),
        },
        id="list-not-json",
    ),
    pytest.param(
        plus(GOOD, "APIHUB_KAFKA__BOOTSTRAP_SERVERS=kafka"),
        {("malformed", "APIHUB_KAFKA__BOOTSTRAP_SERVERS")},
        id="bootstrap-without-port",
    ),
    pytest.param(
        plus(without(GOOD, "APIHUB_LOG_LEVEL"), "APIHUB_LOG_LEVEL=LOUD"),
        {("malformed", "APIHUB_LOG_LEVEL")},
        id="log-level",
    ),
    pytest.param(
        plus(without(GOOD, "APIHUB_KIS__BASE_URL"), "APIHUB_KIS__BASE_URL=openapi.koreainvestment.com"),
        {("malformed", "APIHUB_KIS__BASE_URL")},
        id="url-without-scheme",
    ),
    pytest.param(
        plus(
            without(GOOD, "APIHUB_KIS__BASE_URL"),
            "APIHUB_KIS__BASE_URL=https://openapivts.koreainvestment.com:29443",
        ),
        {("malformed", "APIHUB_KIS__ENVIRONMENT")},
        id="mock-server-with-real-environment",
    ),
    pytest.param(
        plus(without(GOOD, "APIHUB_KIS__BASE_URL"), *KIS_MOCK),
        {("malformed", "APIHUB_KIS__RATE_PER_S")},
        id="mock-key-at-a-real-keys-rate",
    ),
    pytest.param(
        plus(without(without(GOOD, "APIHUB_KIS__BASE_URL"), "APIHUB_KIS__RATE_PER_S"), *KIS_MOCK),
        set(),
        id="mock-key-at-the-mock-default",
    ),
    pytest.param(
        plus(
            without(without(GOOD, "APIHUB_KIS__BASE_URL"), "APIHUB_KIS__RATE_PER_S"),
            *KIS_MOCK,
            "APIHUB_KIS__RATE_PER_S=2",
        ),
        set(),
        id="mock-key-at-the-mock-limit",
    ),
    pytest.param(
        plus(without(GOOD, "APIHUB_KIWOOM__BASE_URL"), "APIHUB_KIWOOM__BASE_URL=http://api.kiwoom.com"),
        {("malformed", "APIHUB_KIWOOM__BASE_URL")},
        id="broker-over-http",
    ),
    pytest.param(
        plus(without(GOOD, "APIHUB_KIS__APPKEY"), "APIHUB_KIS__APPKEY=PS-too-short"),
        {("malformed", "APIHUB_KIS__APPKEY")},
        id="kis-key-length",
    ),
    pytest.param(
        plus(without(GOOD, "APIHUB_KIWOOM__SECRETKEY"), "APIHUB_KIWOOM__SECRETKEY=<your secret>"),
        {("malformed", "APIHUB_KIWOOM__SECRETKEY")},
        id="placeholder",
    ),
    pytest.param(
        plus(without(GOOD, "APIHUB_KIWOOM__SECRETKEY"), "APIHUB_KIWOOM__SECRETKEY=' padded '"),
        {("malformed", "APIHUB_KIWOOM__SECRETKEY")},
        id="secret-whitespace",
    ),
    pytest.param(
        plus(GOOD, "APIHUB_KISS__APPKEY=x"), {("unknown", "APIHUB_KISS__APPKEY")}, id="unknown-name"
    ),
    pytest.param(
        plus(
            without(without(GOOD, "APIHUB_KIS__APPKEY"), "APIHUB_KIS__APPSECRET"),
            f'APIHUB_KIS__CREDENTIALS=[{{"name": "a", "appkey": "{KIS_KEY}", "appsecret": "{KIS_SECRET}"}}]',
        ),
        set(),
        id="a-pool-instead-of-the-own-key",
    ),
    pytest.param(
        plus(
            without(GOOD, "APIHUB_KIWOOM__APPKEY"), "APIHUB_KIWOOM__CREDENTIALS_FILE=/run/secrets/kiwoom.json"
        ),
        set(),
        id="a-pool-file-instead-of-the-own-key",
    ),
    pytest.param(
        plus(GOOD, 'APIHUB_KIS__CREDENTIALS=[{"name": "a", "appkey": "k"}]'),
        {("malformed", "APIHUB_KIS__CREDENTIALS")},
        id="a-pool-member-without-its-secret",
    ),
    pytest.param(
        plus(
            GOOD,
            'APIHUB_KIS__CREDENTIALS=[{"name": "a", "appkey": "k", "secret": "s"}, '
            '{"name": "b", "appkey": "k", "secret": "s"}]',
        ),
        {("malformed", "APIHUB_KIS__CREDENTIALS")},
        id="two-pool-members-with-one-key",
    ),
    pytest.param(
        plus(GOOD, f"APIHUB_KIS__CREDENTIALS=[{_member('paper', environment='mock', rate_per_s=20)}]"),
        {("malformed", "APIHUB_KIS__CREDENTIALS")},
        id="a-mock-member-at-a-real-keys-rate",
    ),
    pytest.param(
        plus(GOOD, f"APIHUB_KIS__CREDENTIALS=[{_member('paper', environment='mock')}]"),
        set(),
        id="a-mock-member-at-the-mock-default",
    ),
    pytest.param(
        plus(
            without(without(GOOD, "APIHUB_KIS__BASE_URL"), "APIHUB_KIS__RATE_PER_S"),
            *KIS_MOCK,
            f"APIHUB_KIS__CREDENTIALS=[{_member('paper', rate_per_s=20)}, {_member('slow', rate_per_s=1)}]",
        ),
        {("malformed", "APIHUB_KIS__CREDENTIALS")},
        id="a-member-of-a-mock-provider-at-a-real-keys-rate",
    ),
    pytest.param(plus(GOOD, "just some words"), {("syntax", "line 15")}, id="no-equals"),
    pytest.param(plus(GOOD, "APIHUB_LOG_LEVEL2 = 'open"), {("syntax", "APIHUB_LOG_LEVEL2")}, id="open-quote"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_config_check_finds_each_problem(text: str, expected: set[tuple[str, str]]) -> None:
    """Each kind of mistake is reported once, on the variable it concerns, and nothing else is."""
    parsed = parse_env(text)
    report = check_env(parsed.values)
    found = {(p.kind, p.name) for p in parsed.problems + report.problems}
    assert found == expected


def test_config_check_reads_values_as_compose_does() -> None:
    """Quotes, `export` and trailing comments are handled as Docker Compose's env_file handles them."""
    values = parse_env(GOOD).values
    assert values["APIHUB_KIS__APPSECRET"] == KIS_SECRET
    assert values["APIHUB_KIWOOM__APPKEY"] == KIWOOM_KEY
    assert values["APIHUB_KIWOOM__SECRETKEY"] == KIWOOM_SECRET
    assert values["APIHUB_KIWOOM__BASE_URL"] == "https://api.kiwoom.com"
    assert parse_env('A="x\\"y" # c\nB=\'$literal\'\n').values == {"A": 'x"y', "B": "$literal"}


def test_config_check_ignores_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the file counts: a bad variable in the shell running the check does not leak into the result."""
    monkeypatch.setenv("APIHUB_KIS__RATE_PER_S", "-1")
    monkeypatch.setenv("APIHUB_KIS__APPSECRET", KIS_SECRET)
    report = check_env(parse_env(without(GOOD, "APIHUB_KIS__APPSECRET")).values)
    assert {(p.kind, p.name) for p in report.problems} == {("missing", "APIHUB_KIS__APPSECRET")}


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    return tmp_path / "prod.env"


@pytest.mark.parametrize(
    ("text", "code"),
    [(GOOD, 0), (without(GOOD, "APIHUB_KIS__APPKEY"), 1), (plus(GOOD, "APIHUB_NOPE=1"), 1)],
    ids=["ok", "missing", "unknown"],
)
def test_config_check_command_exit_codes(
    env_file: Path, text: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """`apihub config check FILE` exits 0 when the file is fine and 1 when it has problems."""
    env_file.write_text(text)
    assert main(["config", "check", str(env_file)]) == code
    out = capsys.readouterr().out
    assert out.startswith(f"{env_file}: {'ok' if code == 0 else '1 problem'}")


@pytest.mark.parametrize("kind", ["absent", "directory", "binary"])
def test_config_check_unreadable_file_exits_2(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file, a directory or bytes that are not UTF-8 exit 2 with the reason on stderr."""
    path = tmp_path / "x.env"
    if kind == "directory":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"APIHUB_KIS__APPKEY=\xff\xfe\n")
    assert main(["config", "check", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and f"cannot read {path}" in captured.err


def test_config_check_defaults_to_dot_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a FILE argument the command checks ./.env."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(GOOD)
    assert main(["config", "check"]) == 0
    assert capsys.readouterr().out.startswith(".env: ok")


def test_config_check_never_prints_a_secret(env_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Secrets, valid or not, misspelt names' values and pasted lines never reach the output."""
    pasted = "c2VjcmV0LXBhc3RlZC1hbG9uZQ"
    env_file.write_text(
        "\n".join(
            [
                f"APIHUB_KIS__APPKEY={KIS_KEY}x",  # wrong length
                f"APIHUB_KIS__APPSECRET= {KIS_SECRET}",
                f"APIHUB_KIWOOM__APPKEY={KIWOOM_KEY}",
                f"APIHUB_KIWOOM__SECRETKEY={KIWOOM_SECRET}",
                f"APIHUB_KIWOOM_SECRETKEY={KIWOOM_SECRET}",  # misspelt: unknown
                "APIHUB_REDIS__URL=redis://:hunter2-password@redis:6379/x",
                "APIHUB_REDIS__URL=http://:hunter2-password@redis:6379/0",
                f'APIHUB_KIS__CREDENTIALS=[{{"name": "a b", "appkey": "pool-key-1", "secret": "{pasted}x"}}]',
                pasted,
            ]
        )
    )
    assert main(["config", "check", str(env_file)]) == 1
    out = capsys.readouterr().out
    for secret in (KIS_KEY, KIS_SECRET, KIWOOM_KEY, KIWOOM_SECRET, "hunter2-password", pasted, "pool-key-1"):
        assert secret not in out
    assert re.search(r"APIHUB_KIS__CREDENTIALS +\[0\]\.name: String should match pattern", out)  # not shown
    assert "APIHUB_KIS__APPKEY set" in out and "APIHUB_KIWOOM__SECRETKEY set" in out
    assert "redis://:***@redis" in out or "http://:***@redis" in out


# --- the image's health probe -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def healthcheck() -> ModuleType:
    """ops/docker/healthcheck.py, loaded as a module (the image installs it as apihub-healthcheck)."""
    spec = importlib.util.spec_from_file_location("apihub_healthcheck", REPO / "ops/docker/healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def http_server() -> Iterator[str]:
    """A server on 127.0.0.1 answering /readyz 200 and anything else 503."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/readyz" else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_health_probe(healthcheck: ModuleType, http_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe is healthy on a 2xx or an open TCP port, unhealthy otherwise, and finds its own port."""
    assert healthcheck.main(["x", f"http://{http_server}/readyz"]) == 0
    assert healthcheck.main(["x", f"http://{http_server}/other"]) == 1
    assert healthcheck.main(["x", f"tcp://{http_server}"]) == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    assert healthcheck.main(["x", f"tcp://127.0.0.1:{closed}"]) == 1
    assert healthcheck.main(["x", "ftp://example"]) == 1
    monkeypatch.setenv("APIHUB_HEALTH_PORT", http_server.split(":")[1])
    assert healthcheck.main(["x"]) == 0
    monkeypatch.delenv("APIHUB_HEALTH_PORT")
    monkeypatch.setenv("APIHUB_METRICS_PORT", "18999")
    assert healthcheck.own_readyz() == "http://127.0.0.1:18999/readyz"


# --- the testcontainers path ----------------------------------------------------------------------------


def test_testcontainers_kafka_matches_compose(compose: dict[str, Any]) -> None:
    """The fixture's Kafka container is configured as the compose broker and advertises its published port."""
    kafka = environment(services(compose)["kafka"])
    for key in (
        "CLUSTER_ID",
        "KAFKA_PROCESS_ROLES",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
    ):
        assert KAFKA_CONTAINER_ENV[key] == kafka[key], key
    script = kafka_start_script("10.1.2.3", 32771)
    assert "KAFKA_ADVERTISED_LISTENERS='PLAINTEXT://10.1.2.3:32771,BROKER://localhost:19092'" in script
    assert script.rstrip().endswith("exec /etc/kafka/docker/run")


def test_testcontainers_imports_are_current() -> None:
    """The fixture imports testcontainers' current module paths, not the deprecated ones."""
    conftest = (REPO / "tests" / "conftest.py").read_text()
    assert "testcontainers.community.redis" in conftest
    assert "from testcontainers.kafka" not in conftest and "from testcontainers.redis" not in conftest


# --- docker compose config (only where Docker Compose v2 is installed) ----------------------------------


CONFIG_JSON = ("config", "--format", "json")


def compose_command() -> list[str] | None:
    """`docker compose` or a standalone `docker-compose`, if either is Docker Compose v2."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        try:
            answer = subprocess.run(
                [*command, "version", "--short"], capture_output=True, text=True, timeout=30, check=False
            )
        except OSError:
            continue
        if answer.returncode == 0 and answer.stdout.strip().lstrip("v").startswith("2."):
            return command
    return None


@pytest.mark.parametrize("env_file", ["ops/sandbox.env", ".env.prod.example"])
def test_docker_compose_config(env_file: str) -> None:
    """`docker compose config` accepts the file with every profile; only the gateway gets the env file."""
    command = compose_command()
    if command is None:
        pytest.skip("Docker Compose v2 is not installed here (no `docker compose` or `docker-compose` v2)")
    env = {**os.environ, "APIHUB_ENV_FILE": env_file}
    env.pop("COMPOSE_PROFILES", None)
    answer = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "--profile", "sandbox", "--profile", "monitoring", *CONFIG_JSON],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert answer.returncode == 0, answer.stderr
    rendered = json.loads(answer.stdout)["services"]
    assert "APIHUB_KIS__APPKEY" in rendered[GATEWAY]["environment"]
    for worker in WORKERS:
        assert not [name for name in rendered[worker]["environment"] if SECRET_NAME.search(name)]
    assert set(rendered) == set(services(yaml.safe_load(COMPOSE_FILE.read_text())))
