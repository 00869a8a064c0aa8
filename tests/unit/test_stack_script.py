"""ops/stack.sh's handling of env files, run function by function in bash, and its choice of Kafka (single
node or three-node cluster), run whole on a copy of the script whose ``java`` is a stand-in that only
listens (no real stack is started)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.config_check import parse_env, shell_pairs

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "ops" / "stack.sh"

POOL = '[{"name":"main","appkey":"k$HOME`touch ran`","appsecret":"a b $(touch ran)"}]'


def stack_function(name: str) -> str:
    """The text of one function of ops/stack.sh, as written there."""
    found = re.search(rf"^{name}\(\) {{\n.*?^}}\n", STACK.read_text(), re.S | re.M)
    assert found, f"ops/stack.sh has no function {name}"
    return found.group(0)


def run_bash(script: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``script`` in bash with stack.sh's shell options and its ``die``."""
    prelude = (
        'set -euo pipefail\ndie() { echo "stack: error: $*" >&2; exit 1; }\n'
        f"PYTHON={sys.executable}\nREPO_ROOT={REPO}\n"
    )
    return subprocess.run(
        ["bash", "-c", prelude + script, "bash", *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_shell_pairs_keep_values_as_written_and_leave_out_empty_ones() -> None:
    """Each variable is one NUL-ended KEY=VALUE, quotes and $ kept; an empty value is no variable."""
    parsed = parse_env(f"APIHUB_KIS__CREDENTIALS='{POOL}'\nAPIHUB_REDIS__URL=\nexport A=\"x y\"\nb.c=1\n")
    assert shell_pairs(parsed) == f"APIHUB_KIS__CREDENTIALS={POOL}\0A=x y\0".encode()


def test_the_gateway_gets_the_env_file_as_written(tmp_path: Path) -> None:
    """A JSON credential pool keeps its quotes, nothing in a value is expanded or run, and an empty line
    copied from .env.example does not hide the stack's Redis address set before it."""
    env = tmp_path / ".env"
    env.write_text(f"APIHUB_KIS__CREDENTIALS={POOL}\nAPIHUB_REDIS__URL=\nAPIHUB_KAFKA__BOOTSTRAP_SERVERS=\n")
    script = stack_function("export_env_file") + (
        "export APIHUB_REDIS__URL=redis://127.0.0.1:16379/0\n"
        'export_env_file "$1"\n'
        'printf "%s\\n" "$APIHUB_KIS__CREDENTIALS" "$APIHUB_REDIS__URL"\n'
        'printf "%s\\n" "${APIHUB_KAFKA__BOOTSTRAP_SERVERS-unset}"\n'
        'bash -c \'printf "%s\\n" "$APIHUB_KIS__CREDENTIALS"\'\n'  # exported, not just set
    )
    result = run_bash(script, tmp_path, str(env))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [POOL, "redis://127.0.0.1:16379/0", "unset", POOL]
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("text", ["APIHUB_KIS__APPKEY\n", 'APIHUB_KIS__APPSECRET="unclosed\n'])
def test_an_env_file_that_cannot_be_read_stops_the_gateway_start(tmp_path: Path, text: str) -> None:
    """A line that is not KEY=VALUE stops the start, naming the line but never echoing it."""
    env = tmp_path / ".env"
    env.write_text(text)
    result = run_bash(
        stack_function("export_env_file") + 'export_env_file "$1"\necho started\n', tmp_path, str(env)
    )
    assert result.returncode == 1 and "started" not in result.stdout
    assert "line 1" in result.stderr and "cannot be read" in result.stderr and "unclosed" not in result.stderr


def test_status_watches_the_workers_where_the_stack_put_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """stack.env, as ``make up`` writes it with moved ports, gives ``apihub status`` each worker's address
    (not the default 18091-18093)."""
    from services.status.targets import StatusSettings, targets

    stack_env = tmp_path / "stack.env"
    script = (
        f"LOCAL_DIR={tmp_path}\nSTACK_ENV={stack_env}\nHOST=127.0.0.1\nREDIS_PORT=1\nSANDBOX_PORT=2\n"
        "GATEWAY_METRICS_PORT=3\nHISTORY_PORT=33091\nVERIFICATION_PORT=33094\nRECOVERY_PORT=33095\n"
        "kafka_bootstrap() { echo 127.0.0.1:4; }\n" + stack_function("write_stack_env") + "write_stack_env\n"
    )
    assert run_bash(script, tmp_path).returncode == 0
    for name in list(os.environ):
        if name.startswith("APIHUB_"):
            monkeypatch.delenv(name)
    watched = targets(StatusSettings(_env_file=stack_env))
    assert {e.name: e.url for e in watched.endpoints} == {
        "gateway": "http://127.0.0.1:3",
        "history-collector": "http://127.0.0.1:33091",
        "verification-worker": "http://127.0.0.1:33094",
        "recovery-worker": "http://127.0.0.1:33095",
    }


@pytest.mark.parametrize("pool", ["APIHUB_KIS__CREDENTIALS", "APIHUB_KIS__CREDENTIALS_FILE"])
def test_a_credential_pool_keeps_the_sandbox_keys_from_its_provider(tmp_path: Path, pool: str) -> None:
    """A pool named for KIS stands in for KIS's own key (as ``apihub config check`` counts it): the gateway
    gets no made-up KIS key beside it, which would join the pool as ``default``; Kiwoom, named by nobody,
    still gets the sandbox's, and a key the environment sets is kept."""
    keys = tmp_path / "sandbox-credentials.env"
    keys.write_text(
        "APIHUB_KIS__APPKEY=PSkis\nAPIHUB_KIS__APPSECRET=kis-secret\n"
        "APIHUB_KIWOOM__APPKEY=PSkiwoom\nAPIHUB_KIWOOM__SECRETKEY=kiwoom-secret\n"
    )
    script = (
        stack_function("export_sandbox_keys")
        + f"export {pool}=pool APIHUB_KIWOOM__SECRETKEY=own\n"
        + 'export_sandbox_keys "$1"\n'
        + "env | grep -E '^APIHUB_(KIS|KIWOOM)__(APPKEY|APPSECRET|SECRETKEY)=' | sort\n"
    )
    result = run_bash(script, tmp_path, str(keys))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["APIHUB_KIWOOM__APPKEY=PSkiwoom", "APIHUB_KIWOOM__SECRETKEY=own"]


def test_without_a_pool_the_gateway_gets_the_sandbox_keys(tmp_path: Path) -> None:
    """An empty pool variable names no pool: both providers get the sandbox's keys."""
    keys = tmp_path / "sandbox-credentials.env"
    keys.write_text("APIHUB_KIS__APPKEY=PSkis\nAPIHUB_KIWOOM__APPKEY=PSkiwoom\n")
    script = (
        stack_function("export_sandbox_keys")
        + 'export APIHUB_KIS__CREDENTIALS=\nexport_sandbox_keys "$1"\n'
        + 'bash -c \'printf "%s\\n" "$APIHUB_KIS__APPKEY" "$APIHUB_KIWOOM__APPKEY"\'\n'
    )
    result = run_bash(script, tmp_path, str(keys))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["PSkis", "PSkiwoom"]


# A stand-in for the JVM: the storage format succeeds, a broker (kafka.Kafka PROPERTIES) listens on the
# PLAINTEXT port of its properties until SIGTERM; the command line keeps the arguments stack.sh checks.
FAKE_JAVA = """#!/usr/bin/env bash
for arg; do [[ $arg == kafka.Kafka ]] && exec "$FAKE_PYTHON" "$FAKE_BROKER" "$@"; done
exit 0
"""
FAKE_BROKER = """import re, socket, sys, time
props = open(sys.argv[-1]).read()
port = int(re.search(r"^listeners=PLAINTEXT://[^:]+:([0-9]+)", props, re.M).group(1))
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", port))
server.listen()
time.sleep(120)
"""
# The readiness probe (wait_kafka.py) answers yes; anything else is the real Python.
FAKE_VENV_PYTHON = """#!/usr/bin/env bash
[[ ${1:-} == */wait_kafka.py ]] && exit 0
exec "$FAKE_PYTHON" "$@"
"""


def free_port_run(count: int) -> int:
    """A port p with p .. p+count-1 free on loopback (bounded tries)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base: int = probe.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    pytest.fail(f"no run of {count} free ports found")


@dataclass
class Stack:
    """A copy of ops/stack.sh with its own .local/, run as ``bash ops/stack.sh ARGS``."""

    root: Path
    env: dict[str, str]

    def __call__(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(self.root / "ops" / "stack.sh"), *args],
            env={**self.env, **extra}, cwd=self.root, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def status(self, **extra: str) -> dict[str, str]:
        """``status``'s lines as component -> state."""
        result = self("status", **extra)
        assert result.returncode == 0, result.stderr
        return {line.split()[0]: line.split()[1] for line in result.stdout.splitlines()}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    root = tmp_path / "repo"
    (root / "ops" / "kafka").mkdir(parents=True)
    shutil.copy(STACK, root / "ops" / "stack.sh")
    for name in ("common.sh", "pom.xml"):
        shutil.copy(REPO / "ops" / "kafka" / name, root / "ops" / "kafka" / name)
    libs = root / ".local" / "kafka" / "libs"
    libs.mkdir(parents=True)
    (libs / ".pom-sha256").write_text(hashlib.sha256((root / "ops/kafka/pom.xml").read_bytes()).hexdigest())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("java", FAKE_JAVA), ("python", FAKE_VENV_PYTHON)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "broker.py").write_text(FAKE_BROKER)
    kafka = free_port_run(6)
    others = free_port_run(8)
    env = {name: value for name, value in os.environ.items() if not name.startswith("APIHUB_")}
    env.pop("KAFKA_NODES", None)
    env.update(
        PATH=f"{bin_dir}:{env.get('PATH', '/usr/bin:/bin')}",
        FAKE_PYTHON=sys.executable,
        FAKE_BROKER=str(tmp_path / "broker.py"),
        APIHUB_PYTHON=str(bin_dir / "python"),
        APIHUB_KAFKA_PORT=str(kafka),
        APIHUB_KAFKA_CONTROLLER_PORT=str(kafka + 1),
        **{
            f"APIHUB_{name}_PORT": str(others + i)
            for i, name in enumerate(
                ("REDIS", "SANDBOX", "GATEWAY_METRICS", "HISTORY", "VERIFICATION", "RECOVERY", "PROMETHEUS")
            )
        },
    )
    running = Stack(root, env)
    try:
        yield running
    finally:
        running("down", KAFKA_NODES="3")
        for pid_file in (root / ".local").glob("kafka*/kafka*.pid"):  # whatever `down` left
            with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)


def test_up_kafka_restarts_the_missing_node_of_the_cluster_without_kafka_nodes(stack: Stack) -> None:
    """After ``make up KAFKA_NODES=3`` and ``down kafka-2``, a plain ``up kafka`` (and ``make up``'s ``up``)
    keeps the cluster and restarts the missing node, instead of taking kafka-1 on the single node's port
    for a stranger; stack.env keeps the three brokers."""
    port = int(stack.env["APIHUB_KAFKA_PORT"])
    assert stack("up", "kafka", KAFKA_NODES="3").returncode == 0
    assert stack("down", "kafka-2").returncode == 0

    result = stack("up", "kafka")
    assert result.returncode == 0, result.stderr
    assert "kafka-2: starting" in result.stdout and "kafka-1: already running" in result.stdout
    kafkas = {name: state for name, state in stack.status().items() if name.startswith("kafka")}
    assert kafkas == {"kafka-1": "running", "kafka-2": "running", "kafka-3": "running"}
    result = stack("up", "kafka")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("already running") == 3
    brokers = ",".join(f"127.0.0.1:{port + 2 * i}" for i in range(3))
    assert f"KAFKA_BOOTSTRAP_SERVERS={brokers}\n" in (stack.root / ".local" / "stack.env").read_text()

    # Asked for the single node explicitly, the refusal names the node holding its port.
    result = stack("up", "kafka", KAFKA_NODES="1")
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is held by kafka-1 (pid" in result.stderr
    assert "did not start" not in result.stderr


def test_status_lists_every_node_of_the_cluster_and_not_the_single_one(stack: Stack) -> None:
    """``status`` after ``down kafka-2`` shows kafka-2 as stopped beside the two running nodes, and no
    stopped single node on the port kafka-1 serves; once ``down kafka`` stopped the whole cluster (the
    stack's Kafka without KAFKA_NODES), the single node is the stack's Kafka again."""
    assert stack("up", "kafka", KAFKA_NODES="3").returncode == 0
    assert stack("down", "kafka-2").returncode == 0
    kafkas = {name: state for name, state in stack.status().items() if name.startswith("kafka")}
    assert kafkas == {"kafka-1": "running", "kafka-2": "stopped", "kafka-3": "running"}

    result = stack("down", "kafka")
    assert result.returncode == 0, result.stderr
    assert "kafka-1: stopped" in result.stdout and "kafka-3: stopped" in result.stdout
    kafkas = {name: state for name, state in stack.status().items() if name.startswith("kafka")}
    assert kafkas == {"kafka": "stopped"}
    asked = {name for name in stack.status(KAFKA_NODES="3") if name.startswith("kafka")}
    assert asked == {"kafka-1", "kafka-2", "kafka-3"}
