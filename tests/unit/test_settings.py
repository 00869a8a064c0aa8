"""Settings come from APIHUB_* variables with __ nesting; .env.example lists them; secrets stay hidden."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from services.sandbox.settings import FeedSettings, SandboxSettings
from services.settings import (
    NOT_JSON,
    CredentialSettings,
    GatewaySettings,
    KafkaSettings,
    KiwoomSettings,
    SettingsInvalid,
    WorkerSettings,
    WorkerTopics,
    _unparsed,
)
from services.status.targets import StatusSettings

EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"


def env_names(model: type[BaseModel], prefix: str = "APIHUB_") -> set[str]:
    """Every variable name a settings model reads."""
    names = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def test_env_example_lists_every_setting() -> None:
    """Each gateway, worker and ``apihub status`` setting appears in .env.example, and nothing there is
    unknown (the extra reply topics and the status addresses were missing)."""
    listed = {line.split("=", 1)[0] for line in EXAMPLE.read_text().splitlines() if line and line[0] != "#"}
    known = env_names(GatewaySettings) | env_names(WorkerSettings) | env_names(StatusSettings)
    assert known - listed == set()
    assert listed - known == set()


def test_env_example_has_no_secret_values() -> None:
    """Secrets are named in .env.example but never given a value."""
    for line in EXAMPLE.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.endswith(("APPKEY", "APPSECRET", "SECRETKEY")):
            assert value == "", key


def test_nested_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """APIHUB_KIS__APPKEY and friends reach the nested groups; empty values fall back to defaults."""
    monkeypatch.setenv("APIHUB_KIS__APPKEY", "k" * 36)
    monkeypatch.setenv("APIHUB_KIS__RATE_PER_S", "2.5")
    monkeypatch.setenv("APIHUB_KIWOOM__SECRETKEY", "secret-value")
    monkeypatch.setenv("APIHUB_KAFKA__BOOTSTRAP_SERVERS", "")
    settings = GatewaySettings()
    assert settings.kis.appkey is not None and settings.kis.appkey.get_secret_value() == "k" * 36
    assert settings.kis.rate_per_s == 2.5
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert "secret-value" not in repr(settings) and "k" * 36 not in str(settings.model_dump())


SECRET = "TOPSECRET-9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def test_a_refused_value_names_its_variable_never_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every refusal names the variable (and the place inside a JSON value) and why, and no value at all:
    pydantic's own message quotes its input, which here holds a secret."""
    members = [
        {"name": "a", "appkey": "PS" + "a" * 34, "secret": SECRET, "rate_per_s": "fast"},
        {"name": "b", "appkey": "PS" + "b" * 34},
    ]
    monkeypatch.setenv("APIHUB_KIS__CREDENTIALS", json.dumps(members))
    monkeypatch.setenv("APIHUB_MAX_BACKLOG", "-1")
    with pytest.raises(SettingsInvalid) as caught:
        GatewaySettings()
    assert caught.value.problems == [
        (
            "APIHUB_KIS__CREDENTIALS",
            "[0].rate_per_s: Input should be a valid number, unable to parse string as a number",
        ),
        ("APIHUB_KIS__CREDENTIALS", "[1].secret: Field required"),
        ("APIHUB_MAX_BACKLOG", "Input should be greater than 0"),
    ]
    assert SECRET[-12:] not in str(caught.value) and "fast" not in str(caught.value)


def test_a_field_a_member_does_not_know_is_not_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret pasted as a field name (a JSON key) was printed back as the field's name."""
    members = [{"name": "a", "appkey": "PS" + "a" * 34, "secret": "s", SECRET: "s"}]
    monkeypatch.setenv("APIHUB_KIS__CREDENTIALS", json.dumps(members))
    with pytest.raises(SettingsInvalid) as caught:
        GatewaySettings()
    assert caught.value.problems == [
        ("APIHUB_KIS__CREDENTIALS", "[0].(a field it does not know): Extra inputs are not permitted")
    ]


def test_a_clash_of_names_is_the_list_s_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    """A validator's message loses pydantic's "Value error, " and is filed under the list it checked; the
    members' secrets (pydantic shows the tail of the input here) stay out."""
    members = [{"name": "a", "appkey": f"k{i}", "secret": SECRET} for i in range(2)]
    monkeypatch.setenv("APIHUB_KIWOOM__CREDENTIALS", json.dumps(members))
    with pytest.raises(SettingsInvalid) as caught:
        GatewaySettings()
    assert caught.value.problems == [
        ("APIHUB_KIWOOM__CREDENTIALS", "credential names must be unique and not 'default': ['a']")
    ]
    assert SECRET[-12:] not in str(caught.value)


def test_a_value_that_is_not_json_is_found_among_its_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic-settings names only the group ("kis") when a JSON value does not parse; each variable is
    tried alone to name the one at fault."""
    monkeypatch.setenv("APIHUB_KIS__CREDENTIALS", '[{"name": "a", "secret": "' + SECRET)
    monkeypatch.setenv("APIHUB_KIS__RATE_PER_S", "5")
    with pytest.raises(SettingsInvalid) as caught:
        GatewaySettings()
    assert caught.value.problems == [("APIHUB_KIS__CREDENTIALS", NOT_JSON)]
    assert SECRET not in str(caught.value)


def test_an_unparsed_group_is_named_when_no_variable_alone_fails() -> None:
    """Where no single variable can be blamed (the value came from elsewhere), the group is named."""
    assert _unparsed(GatewaySettings, 'error parsing value for field "kis" from source "X"') == [
        ("APIHUB_KIS*", f"a value is {NOT_JSON}")
    ]


def test_the_sandbox_settings_refuse_the_same_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process's settings (here the sandbox's, under its own prefix) report the same way."""
    monkeypatch.setenv("APIHUB_SANDBOX__PORT", "eighty")
    with pytest.raises(SettingsInvalid) as caught:
        SandboxSettings()
    assert caught.value.problems == [
        ("APIHUB_SANDBOX__PORT", "Input should be a valid integer, unable to parse string as an integer")
    ]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read {path}: No such file or directory"),
        ("[{", "{path} is " + NOT_JSON),
        ('{"name": "a"}', "{path} must hold a JSON list of credentials"),
        (
            json.dumps([{"name": "a", "appkey": "k", "secret": SECRET, SECRET: 1}, {"name": "b"}]),
            "{path}: [0].(a field it does not know): Extra inputs are not permitted; "
            "APIHUB_KIWOOM__CREDENTIALS_FILE: {path}: [1].appkey: Field required; "
            "APIHUB_KIWOOM__CREDENTIALS_FILE: {path}: [1].secret: Field required",
        ),
    ],
    ids=["missing", "not-json", "not-a-list", "bad-members"],
)
def test_a_credentials_file_that_cannot_be_used_says_why(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    """The credentials file is read when the pool is built: each way it can be wrong is named, with the
    file and the member's index, never a value from it."""
    path = tmp_path / "pool.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsInvalid) as caught:
        KiwoomSettings(credentials_file=str(path)).pool()
    assert str(caught.value) == "APIHUB_KIWOOM__CREDENTIALS_FILE: " + reason.format(path=path)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (WorkerTopics, {"candles": "bad topic name!"}),
        (WorkerTopics, {"dlq": "x" * 250}),
        (KafkaSettings, {"request_topic": ""}),
        (KafkaSettings, {"extra_reply_topics": ["ok.one", "no way"]}),
        (KafkaSettings, {"caller_topics": {"api requests": "history-collector"}}),
    ],
)
def test_a_topic_name_kafka_would_refuse_is_a_refused_setting(
    model: type[BaseModel], fields: dict[str, object]
) -> None:
    """A name Kafka cannot create is refused with the settings, where the variable is named (before,
    ``apihub topics ensure`` printed it as created and the services failed on the first produce)."""
    with pytest.raises(ValueError, match="not a Kafka topic name"):
        model.model_validate(fields)


def test_every_name_kafka_takes_is_a_topic_name() -> None:
    """Letters, digits, '.', '_' and '-', up to 249 of them."""
    assert WorkerTopics(candles="a.B-c_9", dlq="x" * 249).candles == "a.B-c_9"
    assert KafkaSettings(caller_topics={"api.requests.history-collector": "history-collector"}).caller_topics


@pytest.mark.parametrize(
    "url", ["ftp://kis.example", "http://", "openapi.koreainvestment.com:9443", "unix:///x"]
)
def test_a_base_url_that_is_no_http_url_with_a_host_is_refused(url: str) -> None:
    """A provider's base URL, or a pool member's, must be http(s) with a host: the gateway refuses anything
    else as it starts (it started, and every call failed, before)."""
    with pytest.raises(ValueError, match="not an http\\(s\\) URL with a host"):
        KiwoomSettings(base_url=url)
    with pytest.raises(ValueError, match="not an http\\(s\\) URL with a host"):
        CredentialSettings(name="a", appkey="k", secret="s", base_url=url)


@pytest.mark.parametrize(
    ("servers", "why"),
    [
        ("127.0.0.1:abc", "its port is not a number from 1 to 65535"),
        ("127.0.0.1:70000", "its port is not a number from 1 to 65535"),
        ("[::1", "is not closed with ']'"),
        ("kafka", "it has no port"),
        ("::1", "an IPv6 address is written in brackets"),
        ("host name:9092", "its host is empty or holds a space"),
        ("127.0.0.1:19092,", "broker 2 of 2: it is empty"),
    ],
)
def test_bootstrap_servers_kafka_cannot_read_are_a_refused_setting(servers: str, why: str) -> None:
    """The brokers' addresses are checked with the settings, where the variable is named: aiokafka read
    them only as a client started, and a port that is no number ended every command in a traceback."""
    with pytest.raises(ValueError, match="not host:port, comma-separated") as caught:
        KafkaSettings(bootstrap_servers=servers)
    assert why in str(caught.value)
    with pytest.raises(ValueError, match=re.escape(why)):
        FeedSettings(bootstrap_servers=servers)


@pytest.mark.parametrize("servers", ["127.0.0.1:19092", "kafka-1:9092, kafka-2:9092", "[::1]:9092"])
def test_broker_addresses_as_kafka_writes_them_are_taken(servers: str) -> None:
    """``host:port`` (``[v6]:port``), comma-separated, spaces after the commas allowed."""
    assert KafkaSettings(bootstrap_servers=servers).bootstrap_servers == servers
