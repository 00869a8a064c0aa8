"""``apihub``'s command line without a running stack: argument checks, exit codes and what it prints.

Every command here that would reach Kafka is pointed at a loopback port nobody listens on.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaError,
    ProducerFenced,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)

from hubclient import HubClient
from hubclient.models import ApiRequest, ApiResponse
from hubclient.testing import InMemoryTransport, ok
from services import cli, topics
from tests.unit.kafka_fakes import FakeAdmin, FakeCluster, factory
from tests.unit.test_gateway_core import ORDER

HISTORY_1D = ["history", "collect", "--symbols", "005930", "--from", "2026-11-23", "--to", "2026-11-27"]
HISTORY_1D += ["--timeframe", "1d"]
FIRST_INSTANT = "2024-01-02T00:00:00+09:00"  # 00:00 KST of the sandbox market's default first day


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def no_kafka(monkeypatch: pytest.MonkeyPatch) -> str:
    """Kafka's address for every command: a closed loopback port (never someone's running stack)."""
    address = f"127.0.0.1:{closed_port()}"
    monkeypatch.setenv("APIHUB_KAFKA__BOOTSTRAP_SERVERS", address)
    return address


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    """No command is a usage error (exit 2) listing the commands."""
    with pytest.raises(SystemExit) as caught:
        cli.main([])
    assert caught.value.code == 2
    assert "gateway" in capsys.readouterr().err


def test_history_collect_refuses_a_malformed_day(capsys: pytest.CaptureFixture[str]) -> None:
    """A day that is not YYYY-MM-DD is refused by the parser, naming it."""
    argv = ["history", "collect", "--symbols", "005930", "--from", "2026-13-01", "--to", "2026-11-27"]
    with pytest.raises(SystemExit):
        cli.main([*argv, "--timeframe", "1m"])
    assert "'2026-13-01' is not a day (YYYY-MM-DD)" in capsys.readouterr().err


def test_history_collect_checks_the_job_before_sending(capsys: pytest.CaptureFixture[str]) -> None:
    """A job the worker would refuse exits 2 before anything reaches Kafka."""
    code = cli.main([*HISTORY_1D, "--symbols", "12"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("apihub history collect: error:")


def test_history_collect_without_kafka_says_so(capsys: pytest.CaptureFixture[str], no_kafka: str) -> None:
    """With Kafka unreachable the command ends with the operator's hint, exit 2, no traceback."""
    argv = ["history", "collect", "--symbols", "005930", "--from", "2026-11-23", "--to", "2026-11-27"]
    code = cli.main([*argv, "--timeframe", "1d", "--timeout", "5"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Kafka is not reachable" in err and "make up" in err and "Traceback" not in err


def test_topics_ensure_without_kafka_says_so(capsys: pytest.CaptureFixture[str], no_kafka: str) -> None:
    """``topics ensure`` against nobody: exit 2 and the hint, naming the address it tried."""
    code = cli.main(["topics", "ensure", "--bootstrap-servers", no_kafka])
    assert code == 2
    err = capsys.readouterr().err
    assert "Kafka is not reachable" in err and no_kafka.split(":")[1] in err


def test_topics_ensure_names_a_topic_kafka_refused_and_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A topic Kafka will not create is listed REFUSED with Kafka's reason and counted, exit 1 (it was
    printed as created, exit 0, before)."""
    cluster = FakeCluster()
    cluster.refusals["market.candles"] = (29, "")  # TOPIC_AUTHORIZATION_FAILED
    monkeypatch.setattr(topics, "AIOKafkaAdminClient", factory(cluster, FakeAdmin, []))
    assert cli.main(["topics", "ensure", "--bootstrap-servers", "kafka:9092"]) == 1
    out = capsys.readouterr().out
    assert "REFUSED   market.candles: TopicAuthorizationFailedError\n" in out
    assert "created   market.candles" not in out
    assert out.rstrip().endswith("created, 0 unchanged, 0 drifted, 1 refused")


def test_feed_without_kafka_says_so(capsys: pytest.CaptureFixture[str], no_kafka: str) -> None:
    """``feed --once`` against nobody: exit 2 and the hint (the feed's settings are checked first)."""
    code = cli.main(["feed", "--once", "--symbols", "005930", "--gap", "005930@10:00-10:30"])
    assert code == 2
    assert "Kafka is not reachable" in capsys.readouterr().err


def test_call_without_kafka_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """``call`` against nobody: exit 2 and the hint, no traceback (and no client left unclosed: the suite
    turns warnings into errors)."""
    assert cli.main(["call", "KIS", "FHKST01010100", "FID_INPUT_ISCD=005930"]) == 2
    err = capsys.readouterr().err
    assert "Kafka is not reachable" in err and "make up" in err and "HubError" not in err


def test_call_sends_its_idempotency_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--idempotency-key`` goes out in the request, so running an order again is answered, not resent."""
    sent: list[ApiRequest] = []

    def answer(request: ApiRequest) -> ApiResponse:
        sent.append(request)
        return ok(request, {"rt_cd": "0"})

    def connect(_bootstrap: str, *, caller: str, **_: object) -> HubClient:
        return HubClient(InMemoryTransport(answer), caller=caller)

    monkeypatch.setattr(HubClient, "connect", connect)
    order = ["KIS", "TTTC0012U", *(f"{k}={v}" for k, v in ORDER.items())]
    assert cli.main(["call", *order, "--idempotency-key", "desk-order-17"]) == 0
    assert [r.idempotency_key for r in sent] == ["desk-order-17"]
    assert '"status": "ok"' in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["call", "KIS", "FHKST01010100", "FID_COND_MRKT_DIV_CODE=J", "FID_INPUT_ISCD"],
            "'FID_INPUT_ISCD' is not",
        ),
        (["call", "KIS", "FHKST01010100", "=J"], "parameter '=J' is not KEY=VALUE"),
        (["call", "KIS", "FHKST01010100", "--caller", ""], "'' is not a caller name"),
        (["call", "KIS", "FHKST01010100", "--timeout", "nan"], "'nan' must be more than 0"),
        ([*HISTORY_1D, "--timeout", "0"], "argument --timeout: '0' must be more than 0"),
        ([*HISTORY_1D, "--timeout", "nan"], "'nan' must be more than 0"),  # a traceback, exit 1, before
        ([*HISTORY_1D, "--timeout", "inf"], "'inf' must be more than 0 and at most 86400 seconds"),
        ([*HISTORY_1D, "--timeout", "1e300"], "at most 86400 seconds"),
        (["call", "KIS", "FHKST01010100", "--timeout", "soon"], "'soon' is not a number of seconds"),
        (["call", "KIS", "TTTC0012U", "--idempotency-key", ""], "an idempotency key has 1 to 200 characters"),
        (["call", "KIS", "TTTC0012U", "--idempotency-key", "k" * 201], "1 to 200 characters"),
        (["demo", "--rounds", "-1"], "argument --rounds: '-1' must be more than 0"),
        (["status", "--limit", "KIS=x"], "'x' is not a number of calls per second"),
        (["status", "--limit", "FOO=3"], "'FOO' is not a provider (KIS, KIWOOM)"),
    ],
)
def test_usage_errors_exit_2_before_connecting(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """``call`` parameters are KEY=VALUE and its caller a caller name, demo rounds are positive, a status
    limit is a provider's calls per second: anything else is a usage error (exit 2; 1 is a call's non-ok
    answer), one line, before anything connects."""
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "pydantic" not in err


def test_a_reader_that_leaves_early_ends_the_command_quietly() -> None:
    """``apihub catalog list | head -1``: the closed pipe ends the command without a traceback."""
    with subprocess.Popen(
        [sys.executable, "-m", "services.cli", "catalog", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().startswith(b"provider")
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=30) == 141, err
    assert err == ""


def test_schemas_check_passes_on_the_committed_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    """The committed schema files match the models, so ``schemas check`` exits 0 silently."""
    assert cli.main(["schemas", "check"]) == 0
    assert capsys.readouterr().err == ""


def test_schemas_check_names_a_stale_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A schema file that differs from the models is named with the fix, exit 1."""
    from services import schemas

    names = schemas.write(tmp_path)
    (tmp_path / names[0]).write_text("{}")
    monkeypatch.setattr(schemas, "SCHEMAS_DIR", tmp_path)
    monkeypatch.setattr(schemas.stale, "__defaults__", (tmp_path,))
    assert cli.main(["schemas", "check"]) == 1
    err = capsys.readouterr().err
    assert f"schemas/{names[0]} differs from the models" in err and "apihub schemas generate" in err


def test_config_check_knows_what_make_up_writes_for_apihub_status(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``.local/stack.env`` names the workers' health addresses, which ``apihub status`` reads: not unknown,
    while a misspelt one still is; a log level and a port are checked once, as the settings check them."""
    env = tmp_path / "stack.env"
    env.write_text(
        "APIHUB_WORKER_URLS__HISTORY_COLLECTOR=http://127.0.0.1:18091\n"
        "APIHUB_WORKER_URLS__RECOVERY_WORKER=http://127.0.0.1:18093\n"
        "APIHUB_WORKER_URL__HISTORY_COLLECTOR=http://127.0.0.1:18091\n"
        "APIHUB_METRICS_PORT=70000\n"
    )
    cli.main(["config", "check", str(env)])
    out = capsys.readouterr().out
    assert "unknown    APIHUB_WORKER_URL__HISTORY_COLLECTOR" in out
    assert "unknown    APIHUB_WORKER_URLS__" not in out and "WORKER_URLS__RECOVERY_WORKER" not in out
    assert out.count("APIHUB_METRICS_PORT") == 1


def test_config_check_reads_the_credentials_files_that_are_here(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A credentials file on this host is read as the gateway would read it (config check said ok, then
    the gateway refused to start); one that is not here (a container's path) is left to the gateway."""
    bad = tmp_path / "kiwoom.json"
    bad.write_text('[{"name": "a", "appkey": "k"}]')
    env = tmp_path / "prod.env"
    env.write_text(
        f"APIHUB_KIWOOM__CREDENTIALS_FILE={bad}\nAPIHUB_KIS__CREDENTIALS_FILE=/run/secrets/kis.json\n"
    )
    assert cli.main(["config", "check", str(env)]) == 1
    out = capsys.readouterr().out
    assert "malformed  APIHUB_KIWOOM__CREDENTIALS_FILE" in out and f"{bad}: [0].secret: Field required" in out
    assert "APIHUB_KIS__CREDENTIALS_FILE" not in out


def test_config_check_reads_the_other_files_that_are_here(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The permissions file, a CA bundle and Kafka's CA file are read as the processes read them where they
    are on this host; a good file passes, one that is not here is left to the start; a Sentinel address
    holding a password is never echoed."""
    junk, yaml_bad = tmp_path / "junk.pem", tmp_path / "permissions.yaml"
    junk.write_text("not a certificate\n")
    yaml_bad.write_text("callers: [\n")
    good = tmp_path / "good.yaml"
    good.write_text("callers: {}\n")
    env = tmp_path / "prod.env"
    env.write_text(
        f"APIHUB_PERMISSIONS_FILE={yaml_bad}\nAPIHUB_KIS__CA_BUNDLE={junk}\n"
        "APIHUB_KIWOOM__CA_BUNDLE=/run/secrets/kiwoom-ca.pem\n"
        f"APIHUB_KAFKA__SECURITY_PROTOCOL=SSL\nAPIHUB_KAFKA__SSL_CAFILE={junk}\n"
        "APIHUB_REDIS__SENTINELS=h:26379,user:hunter2-password@h\n"
    )
    assert cli.main(["config", "check", str(env)]) == 1
    out = capsys.readouterr().out
    assert f"malformed  APIHUB_PERMISSIONS_FILE   {yaml_bad} is not YAML" in out
    assert f"malformed  APIHUB_KIS__CA_BUNDLE     {junk} holds no usable PEM certificate" in out
    assert "malformed  APIHUB_KAFKA__SSL_CAFILE  TLS cannot use these files" in out
    assert "sentinel 2 of 2 is not host:port" in out and "hunter2" not in out
    assert "APIHUB_KIWOOM__CA_BUNDLE" not in out
    env.write_text(f"APIHUB_PERMISSIONS_FILE={good}\n")
    cli.main(["config", "check", str(env)])
    assert "APIHUB_PERMISSIONS_FILE" not in capsys.readouterr().out


def test_config_check_names_a_mock_member_of_a_credentials_file_paced_too_fast(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A credentials file's mock key listed at a real key's 20/s (ten times KIS's mock limit) is named with
    its fix; its neighbour that sets no rate is paced at the mock limit and passes."""
    members = [
        {
            "name": "paper",
            "appkey": "PS" + "p" * 34,
            "secret": "s" * 180,
            "environment": "mock",
            "rate_per_s": 20,
        },
        {"name": "quiet", "appkey": "PS" + "q" * 34, "secret": "s" * 180, "environment": "mock"},
    ]
    pool = tmp_path / "kis.json"
    pool.write_text(json.dumps(members))
    env = tmp_path / "prod.env"
    env.write_text(f"APIHUB_KIS__CREDENTIALS_FILE={pool}\n")
    assert cli.main(["config", "check", str(env)]) == 1
    out = capsys.readouterr().out
    assert (
        "malformed  APIHUB_KIS__CREDENTIALS_FILE  member 'paper' is a mock key with rate_per_s 20, but the "
        "broker's mock server allows about 2 calls a second; set 2, or leave its rate_per_s out"
    ) in out
    assert "'quiet'" not in out


def test_config_check_reads_the_named_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``config check FILE``: 0 for the sandbox's env file, 1 naming an unknown variable, 2 unreadable."""
    clean = Path(__file__).resolve().parents[2] / "ops" / "sandbox.env"
    assert cli.main(["config", "check", str(clean)]) == 0
    bad = tmp_path / "bad.env"
    bad.write_text("APIHUB_NO_SUCH_SETTING=1\n")
    assert cli.main(["config", "check", str(bad)]) == 1
    assert "APIHUB_NO_SUCH_SETTING" in capsys.readouterr().out
    assert cli.main(["config", "check", str(tmp_path / "missing.env")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Each command answers ``--help`` (exit 0) with its own usage line."""
    commands = ["gateway", "worker", "history", "sandbox", "topics", "schemas", "call", "feed", "demo"]
    for command in [*commands, "catalog", "status", "audit", "replay", "config"]:
        with pytest.raises(SystemExit) as caught:
            cli.main([command, "--help"])
        assert caught.value.code == 0
        assert f"apihub {command}" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["gateway"], ["credentials"], ["worker", "history-collector"]])
def test_settings_that_cannot_be_used_stop_a_command_with_exit_2(
    command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused setting ends the command before it starts anything: ``error:`` and one line per variable
    on stderr, no traceback, no value (a secret's tail would be in pydantic's own message), exit 2."""
    secret = "TOPSECRET-0a1b2c3d4e5f6a7b8c9d"
    members = [{"name": "a", "appkey": f"k{i}", "secret": secret} for i in range(2)]
    monkeypatch.setenv("APIHUB_KIS__CREDENTIALS", json.dumps(members))
    monkeypatch.setenv("APIHUB_KAFKA__SESSION_TIMEOUT_MS", "soon")
    assert cli.main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the settings cannot be used")
    assert "  APIHUB_KAFKA__SESSION_TIMEOUT_MS: Input should be a valid integer" in err
    assert "Traceback" not in err and secret[-10:] not in err


def test_a_credentials_file_the_gateway_cannot_read_stops_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The credentials file is read as the gateway starts: a missing one is named, exit 2."""
    monkeypatch.setenv("APIHUB_KIS__CREDENTIALS_FILE", str(tmp_path / "pool.json"))
    assert cli.main(["gateway"]) == 2
    assert f"  APIHUB_KIS__CREDENTIALS_FILE: cannot read {tmp_path / 'pool.json'}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("command", "variable", "value", "reason"),
    [
        (["gateway"], "APIHUB_LOG_LEVEL", "verbose", "not a log level"),
        (["worker", "history-collector"], "APIHUB_LOG_LEVEL", "chatty", "not a log level"),
        (["gateway"], "APIHUB_METRICS_PORT", "70000", "less than or equal to 65535"),
        (["worker", "history-collector"], "APIHUB_HEALTH_PORT", "70000", "less than or equal to 65535"),
    ],
)
def test_a_log_level_or_port_a_process_cannot_use_stops_it_as_a_setting(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    variable: str,
    value: str,
    reason: str,
) -> None:
    """Both were tracebacks, exit 1, from logging and bind(); now a setting's error line, exit 2."""
    monkeypatch.setenv(variable, value)
    assert cli.main(command) == 2
    err = capsys.readouterr().err
    assert f"  {variable}: " in err and reason in err and "Traceback" not in err


def test_the_sandbox_module_refuses_its_settings_the_same_way(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``python -m services.sandbox`` (the image's other entry) prints the same lines and exits 2."""
    from services.sandbox.__main__ import main

    monkeypatch.setenv("APIHUB_SANDBOX__KIS_REAL_RATE_PER_S", "0")
    assert main() == 2
    assert "  APIHUB_SANDBOX__KIS_REAL_RATE_PER_S: Input should be greater than or equal to 1" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("APIHUB_SANDBOX__CLOCK_START_TIME_KST", "25:00:00", "not a time of day: HH:MM or HH:MM:SS"),
        ("APIHUB_SANDBOX__CLOCK_START_TIME_KST", "12:61:00", "not a time of day: HH:MM or HH:MM:SS"),
        ("APIHUB_SANDBOX__CLOCK_START_TIME_KST", "9am", "not a time of day: HH:MM or HH:MM:SS"),
        ("APIHUB_SANDBOX__CLOCK_START_TIME_KST", "9:00", "not a time of day: HH:MM or HH:MM:SS"),
        ("APIHUB_SANDBOX__CLOCK_START", "2000-01-01", f"out of range: not in [{FIRST_INSTANT}, "),
        ("APIHUB_SANDBOX__CLOCK_START", "2024-01-01T23:59:59", f"out of range: not in [{FIRST_INSTANT}, "),
        ("APIHUB_SANDBOX__CLOCK_START", "2100-01-01T00:00:00+09:00", "2100-01-01T00:00:00+09:00)"),
        ("APIHUB_SANDBOX__CLOCK_RATE", "86401", "less than or equal to 86400"),
    ],
)
def test_a_sandbox_clock_it_cannot_run_stops_it_as_a_setting(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    reason: str,
) -> None:
    """A start time of day that is no time was a traceback (exit 1) as the clock was made; a start instant
    before the market's first day, or beyond 2099, started a clock ``POST /_sandbox/clock`` would refuse to
    set. Each is now the variable's error line, exit 2 (on a port that is taken, so a sandbox that accepted
    the value ends at once, not serving)."""
    monkeypatch.setenv(variable, value)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert cli.main(["sandbox", "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the settings cannot be used")
    assert f"  {variable}: " in err and reason in err and "Traceback" not in err


def test_the_gateway_without_redis_says_so(tmp_path: Path) -> None:
    """A gateway that cannot reach Redis as it starts ends with one ``error:`` line naming Redis, exit 2, no
    traceback (a process of its own: the gateway leaves its unstarted Kafka producer to the collector)."""
    env = {
        **os.environ,
        "APIHUB_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port()}",
        "APIHUB_REDIS__URL": f"redis://127.0.0.1:{closed_port()}/0",
        "APIHUB_METRICS_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "gateway"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith("error: Redis is not reachable"), done.stderr[-2000:]
    assert "APIHUB_REDIS__URL" in errors[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("error", "says", "never"),
    [
        (KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]"), "Kafka is not reachable", None),
        (UnknownTopicOrPartitionError(), "apihub topics ensure", "not reachable"),
        (ProducerFenced(), "transactional id", "not reachable"),
        (TopicAuthorizationFailedError(), "refused this principal", "not reachable"),
        (CommitFailedError("rebalanced"), "Kafka refused the command (CommitFailedError", "not reachable"),
    ],
)
def test_only_a_connection_failure_is_called_unreachable(
    error: KafkaError, says: str, never: str | None
) -> None:
    """Each Kafka error that ends a command gets one ``error:`` line; only failing to connect says "not
    reachable" (with the stack and SASL hints); an unknown topic points at ``apihub topics ensure``."""
    line = cli.kafka_failure(error)
    assert line.startswith("error: ") and "\n" not in line and says in line
    assert never is None or never not in line


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--gap", "005930@25:00-26:00"], "--gap 005930@25:00-26:00: start: Input should be in a valid time"),
        (["--gap", "garbage"], "--gap garbage: gap 'garbage' is not SYMBOL@HH:MM-HH:MM"),
        (["--gap", "005930@10:30-10:00"], "--gap 005930@10:30-10:00: gap of 005930 ends (10:00:00) before"),
        (["--corrupt-rate", "2"], "--corrupt-rate 2.0: Input should be less than or equal to 1"),
        (["--corrupt-rate", "-0.5"], "--corrupt-rate -0.5: Input should be greater than or equal to 0"),
        (["--speed", "-1"], "--speed -1.0: Input should be greater than or equal to 0"),
        (["--symbols", "12"], "--symbols 12: symbols ['12'] are not in the sandbox's symbol master"),
        (["--gap", "000660@10:00-10:30"], "error: gaps name symbols the feed does not publish: ['000660']"),
        (["--day", "2026-11-28"], "--day 2026-11-28: not a trading day of the sandbox market"),  # a Saturday
        (["--day", "2020-01-02"], "--day 2020-01-02: not a trading day"),  # before the market's history
        (
            ["--topic", "market ticks"],
            "--topic market ticks: not a Kafka topic name",
        ),  # aiokafka's log before
    ],
)
def test_feed_refuses_bad_values_one_line_each(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    """A value the feed cannot use is named by its flag on an ``error:`` line of its own, exit 2, before
    anything reaches Kafka; no pydantic dump."""
    assert cli.main(["feed", "--once", "--symbols", "005930", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("apihub feed: error: ") and message in err
    assert "Traceback" not in err and "pydantic" not in err and "For further information" not in err


def test_sandbox_on_a_taken_port_says_so_and_exits(capsys: pytest.CaptureFixture[str]) -> None:
    """The sandbox whose port is taken exits 2 with one line naming the address (it used to wait forever
    for a signal after the traceback)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["sandbox", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: the sandbox cannot listen on 127.0.0.1:{port} ("
    )
    assert errors[0].endswith("choose another --port (or APIHUB_SANDBOX_PORT for make up)")
    assert "Traceback" not in err


def test_sandbox_on_an_address_not_of_this_host_names_host(capsys: pytest.CaptureFixture[str]) -> None:
    """An address this host does not have is a wrong --host, not a taken port (the hint said --port)."""
    assert cli.main(["sandbox", "--host", "192.0.2.1", "--port", str(closed_port())]) == 2  # TEST-NET-1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: the sandbox cannot listen on 192.0.2.1:")
    assert errors[0].endswith("choose an address of this host with --host")


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_sandbox_refuses_a_port_that_is_none(capsys: pytest.CaptureFixture[str], port: str) -> None:
    """A --port outside 0-65535 is a usage error (exit 2) naming it."""
    with pytest.raises(SystemExit) as caught:
        cli.main(["sandbox", "--port", port])
    assert caught.value.code == 2
    assert f"{port!r} is not a TCP port (0-65535)" in capsys.readouterr().err


def test_worker_on_a_taken_health_port_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose APIHUB_HEALTH_PORT is taken exits 2 with one line naming it, before reaching Kafka."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("APIHUB_HEALTH_PORT", str(port))
        assert cli.main(["worker", "history-collector"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: cannot listen on 127.0.0.1:{port} for /healthz")
        and "APIHUB_HEALTH_PORT" in err
    )
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_gateway_on_a_taken_metrics_port_says_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway whose APIHUB_METRICS_PORT is taken exits 2 with one line naming it, before reaching Kafka
    or Redis (it printed a traceback, and a benchmark starting twenty gateways took the survivor's answers
    on the shared port for the dead one's readiness)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("APIHUB_METRICS_PORT", str(port))
        assert cli.main(["gateway"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the gateway cannot listen on 127.0.0.1:{port} for /healthz")
    assert "APIHUB_METRICS_PORT" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_permissions_file_it_cannot_read_stops_the_gateway_with_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The gateway names APIHUB_PERMISSIONS_FILE on the settings' error lines and exits 2 (a traceback and
    exit 1 before)."""
    monkeypatch.setenv("APIHUB_PERMISSIONS_FILE", str(tmp_path / "missing.yaml"))
    assert cli.main(["gateway"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the settings cannot be used")
    assert (
        f"  APIHUB_PERMISSIONS_FILE: cannot read {tmp_path / 'missing.yaml'}" in err
        and "Traceback" not in err
    )


def test_a_redis_url_whose_port_is_not_a_number_is_a_refused_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis://...:notaport is refused as the command starts (a traceback from redis-py before), the URL
    and its password not shown."""
    monkeypatch.setenv("APIHUB_REDIS__URL", "redis://:hunter2-password@127.0.0.1:notaport/0")
    assert cli.main(["credentials"]) == 2
    err = capsys.readouterr().err
    assert "  APIHUB_REDIS__URL: its port is not a number from 0 to 65535" in err
    assert "Traceback" not in err and "hunter2" not in err


@pytest.mark.parametrize("url", ["notaurl", "http://:hunter2-password@redis:6379/0"])
def test_a_redis_url_that_is_none_is_a_refused_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    """APIHUB_REDIS__URL must be redis://, rediss:// or unix://: anything else is refused as the command
    starts, on the settings' ``error:`` lines (the URL not shown: it may hold the password), exit 2."""
    monkeypatch.setenv("APIHUB_REDIS__URL", url)
    assert cli.main(["credentials"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the settings cannot be used")
    assert "  APIHUB_REDIS__URL: not a Redis URL" in err
    assert "Traceback" not in err and url not in err and "hunter2" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["audit", "--last", "15m", "--format", "csv", "--output", "{missing}"],
        ["audit", "--last", "15m", "--format", "csv", "--output", "{folder}"],
        ["replay", "--dry-run", "--format", "jsonl", "--output", "{missing}"],
    ],
)
def test_an_output_that_cannot_be_written_is_refused_before_reading(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    """``--output`` in a missing folder or naming a folder is one ``error:`` line and exit 2, before Kafka
    is read (here Kafka is unreachable, so reading first would have said that instead)."""
    paths = {"missing": str(tmp_path / "no" / "x.csv"), "folder": str(tmp_path)}
    assert cli.main([part.format(**paths) for part in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"apihub {argv[0]}: error: cannot write --output ") and "not reachable" not in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["call", "KIS", "FHKST01010100", "FID_INPUT_ISCD=005930"],
        ["topics", "ensure"],
        ["credentials"],
        HISTORY_1D,
    ],
)
def test_a_bootstrap_address_kafka_cannot_read_is_a_refused_setting(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """APIHUB_KAFKA__BOOTSTRAP_SERVERS with a port that is no number is refused as the command starts, on
    the settings' ``error:`` lines, exit 2 (aiokafka's ValueError traceback and exit 1 before)."""
    monkeypatch.setenv("APIHUB_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:abc")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the settings cannot be used")
    assert "  APIHUB_KAFKA__BOOTSTRAP_SERVERS: not host:port" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["topics", "ensure"],
        ["feed", "--once"],
        ["audit", "--last", "15m"],
        ["replay", "--dry-run"],
    ],
)
def test_a_bootstrap_servers_flag_kafka_cannot_read_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """``--bootstrap-servers 127.0.0.1:abc`` is bad input: one ``error:`` line naming the flag, exit 2,
    before anything connects (a traceback and exit 1 before)."""
    code: object
    try:
        code = cli.main([*argv, "--bootstrap-servers", "127.0.0.1:abc"])
    except SystemExit as stopped:  # argparse's own usage error
        code = stopped.code
    assert code == 2
    err = capsys.readouterr().err
    assert "--bootstrap-servers: not host:port" in err and "port is not a number" in err
    assert "Traceback" not in err


def test_call_refuses_a_parameter_given_twice(capsys: pytest.CaptureFixture[str]) -> None:
    """``FID_INPUT_ISCD=005930 FID_INPUT_ISCD=000660``: the call would have asked for 000660 alone, saying
    nothing; it is bad input (one line, exit 2) before anything connects."""
    argv = ["call", "KIS", "FHKST01010100", "FID_COND_MRKT_DIV_CODE=J"]
    assert cli.main([*argv, "FID_INPUT_ISCD=005930", "FID_INPUT_ISCD=000660"]) == 2
    err = capsys.readouterr().err
    assert err == "apihub call: error: parameter FID_INPUT_ISCD given more than once; give each KEY once\n"


def test_call_help_states_its_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    """``apihub call --help`` says what each exit status means, as the README does."""
    with pytest.raises(SystemExit):
        cli.main(["call", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Exit 0 ok, 1 another status, 2 no answer within --timeout" in out


def test_feed_refuses_a_day_that_is_none_as_history_collect_does(capsys: pytest.CaptureFixture[str]) -> None:
    """``--day 2026-13-01`` is named as not a day (YYYY-MM-DD), not as an "invalid fromisoformat value"."""
    with pytest.raises(SystemExit) as caught:
        cli.main(["feed", "--day", "2026-13-01"])
    assert caught.value.code == 2
    assert "argument --day: '2026-13-01' is not a day (YYYY-MM-DD)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv", [["call", "KIS", "FHKST01010100", "FID_INPUT_ISCD=005930"], ["topics", "ensure"]]
)
def test_a_command_against_a_kafka_that_is_down_says_so_on_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """Only the command's own ``error:`` line: aiokafka's ``Unable connect to ...`` came above it through
    Python's last-resort handler, as no logging is configured for these commands."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # a fresh process: no earlier test's handler
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Kafka is not reachable") and err.count("\n") == 1
