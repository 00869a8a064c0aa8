"""Settings come from APIHUB_* variables with __ nesting; .env.example lists them; secrets stay hidden."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from services.settings import GatewaySettings, WorkerSettings

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
    """Each gateway and worker setting appears in .env.example, and nothing there is unknown."""
    listed = {line.split("=", 1)[0] for line in EXAMPLE.read_text().splitlines() if line and line[0] != "#"}
    known = env_names(GatewaySettings) | env_names(WorkerSettings)
    assert known - {"APIHUB_KAFKA__EXTRA_REPLY_TOPICS"} - listed == set()
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
