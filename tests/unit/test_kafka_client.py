"""The Kafka client's security arguments are built from ``KafkaSettings`` and never show the password."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.kafka_client import client_kwargs, describe
from services.settings import KafkaSettings, SettingsInvalid


def test_plaintext_adds_nothing() -> None:
    assert client_kwargs(KafkaSettings()) == {}
    assert describe(KafkaSettings()) == "PLAINTEXT"


def test_sasl_scram() -> None:
    settings = KafkaSettings(
        security_protocol="SASL_PLAINTEXT", sasl_username="worker-a", sasl_password="s3cret-pw"
    )
    assert client_kwargs(settings) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "worker-a",
        "sasl_plain_password": "s3cret-pw",
    }
    assert "s3cret-pw" not in describe(settings)
    assert "s3cret-pw" not in repr(settings)
    assert describe(settings) == "SASL_PLAINTEXT, SCRAM-SHA-512 as User:worker-a"


def test_sasl_ssl_has_a_context() -> None:
    settings = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_username="u", sasl_password="p"
    )
    kwargs = client_kwargs(settings)
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)


@pytest.mark.parametrize(
    ("files", "variable", "says"),
    [
        ({"ssl_cafile": "{missing}"}, "APIHUB_KAFKA__SSL_CAFILE", "cannot read {missing}: No such file"),
        ({"ssl_certfile": "{pem}", "ssl_keyfile": "{missing}"}, "APIHUB_KAFKA__SSL_KEYFILE", "cannot read"),
        ({"ssl_cafile": "{pem}"}, "APIHUB_KAFKA__SSL_CAFILE", "TLS cannot use these files"),
    ],
)
def test_tls_files_it_cannot_use_are_a_refused_setting(
    tmp_path: Path, files: dict[str, str], variable: str, says: str
) -> None:
    """A TLS file that is missing, or one TLS cannot use, names its variable (a traceback before)."""
    pem, missing = tmp_path / "junk.pem", tmp_path / "missing.pem"
    pem.write_text("not a certificate\n")
    named = {key: value.format(pem=pem, missing=missing) for key, value in files.items()}
    with pytest.raises(SettingsInvalid) as refused:
        client_kwargs(KafkaSettings(security_protocol="SSL", **named))
    [(name, reason)] = refused.value.problems
    assert variable in name and reason.startswith(says.format(missing=missing))


def test_ssl_alone_has_no_sasl() -> None:
    kwargs = client_kwargs(KafkaSettings(security_protocol="SSL"))
    assert set(kwargs) == {"security_protocol", "ssl_context"}


@pytest.mark.parametrize(
    "fields",
    [
        {"security_protocol": "SASL_PLAINTEXT"},
        {"security_protocol": "SASL_SSL", "sasl_username": "u"},
        {"ssl_certfile": "/x.pem"},
        {"security_protocol": "TLS"},
        {"sasl_mechanism": "GSSAPI"},
    ],
)
def test_incomplete_or_unknown_is_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        KafkaSettings.model_validate(fields)


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.settings import ClientSettings

    monkeypatch.setenv("APIHUB_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("APIHUB_KAFKA__SASL_USERNAME", "gateway")
    monkeypatch.setenv("APIHUB_KAFKA__SASL_PASSWORD", "pw")
    kwargs = client_kwargs(ClientSettings().kafka)
    assert kwargs["sasl_plain_username"] == "gateway" and kwargs["sasl_plain_password"] == "pw"
