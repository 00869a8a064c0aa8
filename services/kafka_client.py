"""How every Kafka client of a process connects: the keyword arguments built from ``KafkaSettings``.

Each ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and ``AIOKafkaAdminClient`` the services build takes
``**client_kwargs(settings.kafka)`` beside its own arguments, so one set of ``APIHUB_KAFKA__*`` variables
moves the whole process onto SASL (SCRAM or PLAIN) and/or TLS:

| ``security_protocol`` | what is added |
|---|---|
| ``PLAINTEXT`` (default) | nothing: the local stack and the tests |
| ``SASL_PLAINTEXT`` | ``sasl_mechanism``, ``sasl_plain_username``, ``sasl_plain_password`` |
| ``SSL`` | ``ssl_context`` (CA bundle, optional client certificate) |
| ``SASL_SSL`` | both |

The password leaves its ``SecretStr`` only here, into the dict handed to aiokafka: never log that dict
(``describe`` is the loggable form).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from aiokafka.helpers import create_ssl_context
from pydantic import SecretStr

from services.settings import KafkaSettings, SettingsInvalid

# A group consumer subscribed to a topic that does not exist yet (started before `apihub topics ensure`, or
# just after it while the new topic's metadata is still on its way to the broker) is given no partitions
# and only looks again when its metadata expires: five minutes by default. The services' group consumers
# refresh every 5 s, so they pick the topic up within seconds of its creation.
GROUP_METADATA_MAX_AGE_MS = 5_000


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka's security keyword arguments for ``settings`` (empty for PLAINTEXT)."""
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return {}
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    if protocol.startswith("SASL_"):
        if settings.sasl_username is None or settings.sasl_password is None:  # the settings refuse this
            raise ValueError(f"{protocol} needs sasl_username and sasl_password")
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    if protocol.endswith("SSL"):
        kwargs["ssl_context"] = ssl_context(settings)
    return kwargs


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """The TLS context of the ``APIHUB_KAFKA__SSL_*`` files; ``SettingsInvalid`` names a file that cannot
    be read, or the files together when TLS cannot use them."""
    files = {
        "CAFILE": settings.ssl_cafile,
        "CERTFILE": settings.ssl_certfile,
        "KEYFILE": settings.ssl_keyfile,
    }
    for name, path in files.items():
        if path:
            try:
                Path(path).read_bytes()
            except OSError as exc:
                raise SettingsInvalid.unreadable(f"APIHUB_KAFKA__SSL_{name}", path, exc) from None
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=settings.ssl_cafile, certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile
        )
    except ssl.SSLError as exc:
        named = " / ".join(f"APIHUB_KAFKA__SSL_{name}" for name, path in files.items() if path)
        raise SettingsInvalid([(named, f"TLS cannot use these files ({exc.reason or exc})")]) from None
    return context


def describe(settings: KafkaSettings) -> str:
    """One loggable line: protocol, mechanism and principal, never the password."""
    if settings.security_protocol == "PLAINTEXT":
        return "PLAINTEXT"
    parts: list[str] = [settings.security_protocol]
    if settings.security_protocol.startswith("SASL_"):
        parts.append(f"{settings.sasl_mechanism} as User:{settings.sasl_username}")
    if settings.ssl_cafile:
        parts.append(f"CA {settings.ssl_cafile}")
    return ", ".join(parts)


#: The ``KafkaSettings`` fields that say how a client connects (not where, nor which topics).
SECURITY_FIELDS = (
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
)

#: What an operator is told when a Kafka client cannot connect.
SECURITY_HINT = (
    "if the brokers' listener requires SASL or TLS, give this process its principal with "
    "APIHUB_KAFKA__SECURITY_PROTOCOL, APIHUB_KAFKA__SASL_MECHANISM, APIHUB_KAFKA__SASL_USERNAME, "
    "APIHUB_KAFKA__SASL_PASSWORD (and APIHUB_KAFKA__SSL_CAFILE for TLS); see docs/RELIABILITY.md"
)


def with_security(target: KafkaSettings, source: KafkaSettings) -> KafkaSettings:
    """``target`` (its servers and topics) connecting as ``source`` does (protocol, principal, TLS)."""
    return target.model_copy(update={name: getattr(source, name) for name in SECURITY_FIELDS})


def security_env(settings: KafkaSettings) -> dict[str, str]:
    """The ``APIHUB_KAFKA__*`` variables that make a child process connect as ``settings`` does.

    They hold the password: pass them to a child's environment only, never to a log line."""
    env: dict[str, str] = {}
    for name in SECURITY_FIELDS:
        value = getattr(settings, name)
        if value is None:
            continue
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        env[f"APIHUB_KAFKA__{name.upper()}"] = text
    return env
