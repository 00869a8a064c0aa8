"""Typed settings, built once at each process's edge from ``APIHUB_*`` variables and passed down.

Nested groups use ``__``: ``APIHUB_KAFKA__BOOTSTRAP_SERVERS``, ``APIHUB_KIS__APPKEY``,
``APIHUB_KIWOOM__SECRETKEY``. Secrets are ``SecretStr`` so they never print in a repr or a log.

A value the settings refuse (or a credentials file that cannot be read) raises ``SettingsInvalid``, which
names each variable and why, never the value: pydantic's own error quotes its input, and the input may be
a secret. The command line turns it into ``error:`` lines and exit status 2.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self
from urllib.parse import urlsplit

import orjson
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict, SettingsError

from hubclient.models import Provider

CALLER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")  # ApiRequest.caller's pattern

_UNPARSED_FIELD = re.compile(r'field "([^"]+)"')
NOT_JSON = 'not valid JSON (lists and objects are written as JSON, e.g. ["a", "b"])'

#: Default jitter budgets (``arrival_jitter_ms``): a broker across the internet, and one on this host.
TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka accepts as a topic name


def topic_name(name: str) -> str:
    """``name`` when Kafka accepts it as a topic name, else ``ValueError`` saying what it takes."""
    if not TOPIC_NAME.fullmatch(name):
        raise ValueError("not a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-')")
    return name


BOOTSTRAP_FORM = "host:port, comma-separated for several brokers (e.g. 127.0.0.1:19092)"


def _broker_problem(address: str) -> str | None:
    """Why ``address`` (one entry of a bootstrap list) is not ``host:port`` (``[v6]:port`` for IPv6)."""
    if address.startswith("["):
        host, closed, rest = address[1:].partition("]")
        if not closed or not host:
            return "an IPv6 address opened with '[' is not closed with ']'"
        sep, port = rest[:1], rest[1:]
    else:
        host, sep, port = address.rpartition(":")
        if ":" in host:
            return "an IPv6 address is written in brackets: [::1]:9092"
    if not sep:
        return "it has no port"
    if not host or any(char.isspace() for char in host):
        return "its host is empty or holds a space"
    if not (port.isdigit() and 0 < int(port) < 65536):
        return "its port is not a number from 1 to 65535"
    return None


def bootstrap_servers(text: str) -> str:
    """``text`` when every comma-separated entry is a broker's ``host:port`` (``[v6]:port``), else
    ``ValueError`` naming the entry by its place and why.

    aiokafka reads the list only as a client starts, where a port that is no number or out of range, or an
    unclosed ``[``, ends in a traceback instead of a line about the setting."""
    entries = [entry.strip() for entry in text.split(",")]
    for number, entry in enumerate(entries, 1):
        problem = "it is empty" if not entry else _broker_problem(entry)
        if problem is not None:
            where = f"broker {number} of {len(entries)}: " if len(entries) > 1 else ""
            raise ValueError(f"not {BOOTSTRAP_FORM}: {where}{problem}")
    return text


def http_url(url: str) -> str:
    """``url`` when it is an http(s) URL with a host (a broker's base URL), else ``ValueError``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL with a host")
    return url


REMOTE_JITTER_MS = 50.0
LOCAL_JITTER_MS = 20.0


class SettingsInvalid(ValueError):
    """Settings a process cannot run with: ``problems`` pairs each variable with why it was refused.

    No value is part of a problem: a refused value may be a secret."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {reason}" for name, reason in problems))

    @classmethod
    def unreadable(cls, variable: str, path: str, exc: OSError) -> SettingsInvalid:
        """The file ``variable`` names cannot be read."""
        return cls([(variable, f"cannot read {path}: {exc.strerror or type(exc).__name__}")])

    def report(self) -> str:
        """What a process prints as it refuses to start: each problem on a line of its own."""
        lines = ["error: the settings cannot be used (no value is shown, it may be a secret):"]
        lines += [f"  {name}: {reason}" for name, reason in self.problems]
        lines.append("apihub config check FILE reports every variable of an env file the same way")
        return "\n".join(lines)


def validation_errors(exc: ValidationError) -> list[Any]:
    """pydantic's errors without their input (which may be a secret) and without links."""
    return list(exc.errors(include_input=False, include_url=False, include_context=False))


_SHARED_KEY = "members {} have the same appkey: the broker limits the key, so a pool lists it once"


def _sharing_a_key(keys: list[tuple[str, SecretStr | None]]) -> list[str]:
    """The names of the members whose appkey another member has too (``default``: the provider's own)."""
    holders: dict[str, list[str]] = {}
    for name, key in keys:
        if key is not None:
            holders.setdefault(key.get_secret_value(), []).append(name)
    return sorted(name for names in holders.values() if len(names) > 1 for name in names)


def _path(loc: tuple[int | str, ...], error: Any) -> str:
    """Where in a JSON value ``error`` is; a field the model does not know is not named, as its name may be
    a secret pasted in the wrong place."""
    parts = list(loc)
    if error.get("type") == "extra_forbidden" and parts and isinstance(parts[-1], str):
        parts[-1] = "(a field it does not know)"
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


class KafkaSettings(BaseModel):
    """Where the topics live and what they are called."""

    bootstrap_servers: str = "127.0.0.1:19092"
    request_topic: str = "api.requests"
    response_topic: str = "api.responses"
    dlq_topic: str = "api.requests.dlq"
    events_topic: str = Field(
        default="apihub.events", description="ratelimit.rejected and redlock.contention, for any watcher"
    )
    group_id: str = "apihub-gateway"
    session_timeout_ms: int = Field(
        default=10_000,
        ge=1000,
        description="the group's session timeout: how long a silent gateway keeps its partitions",
    )
    extra_reply_topics: list[str] = Field(
        default_factory=list, description="reply topics besides response_topic"
    )
    caller_topics: dict[str, str] = Field(
        default_factory=dict,
        description="request topics bound to one caller each, topic -> caller (JSON): the gateway also "
        "reads them, a request there is that caller's, and the shared request topic refuses their names",
    )
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = Field(
        default="PLAINTEXT", description="how every Kafka client of the process connects"
    )
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = Field(default=None, description="the Kafka principal (User:<name>)")
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = Field(default=None, description="CA bundle; the system's when unset")
    ssl_certfile: str | None = Field(default=None, description="client certificate (mutual TLS)")
    ssl_keyfile: str | None = None

    @field_validator("bootstrap_servers")
    @classmethod
    def _broker_addresses(cls, text: str) -> str:
        return bootstrap_servers(text)

    @field_validator("request_topic", "response_topic", "dlq_topic", "events_topic")
    @classmethod
    def _legal_topic(cls, name: str) -> str:
        return topic_name(name)

    @field_validator("extra_reply_topics")
    @classmethod
    def _legal_topics(cls, names: list[str]) -> list[str]:
        return [topic_name(name) for name in names]

    @field_validator("caller_topics")
    @classmethod
    def _legal_caller_topics(cls, topics: dict[str, str]) -> dict[str, str]:
        for name in topics:
            topic_name(name)
        return topics

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and sasl_password"
            )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        return self

    @model_validator(mode="after")
    def _caller_topics_distinct(self) -> KafkaSettings:
        others = {self.request_topic, self.dlq_topic, self.events_topic, *self.reply_topics}
        for topic, caller in self.caller_topics.items():
            if topic in others:
                raise ValueError(
                    f"caller topic {topic!r} is already the gateway's request, reply or other topic"
                )
            if not CALLER_NAME.match(caller):
                raise ValueError(f"caller topic {topic!r}: {caller!r} is not a caller name")
        callers = list(self.caller_topics.values())
        twice = sorted({c for c in callers if callers.count(c) > 1})
        if twice:
            raise ValueError(f"a caller is bound to one request topic at most: {twice}")
        return self

    @property
    def request_topics(self) -> tuple[str, ...]:
        """Every topic the gateway reads requests from: the shared one first, then the callers' own."""
        return (self.request_topic, *sorted(self.caller_topics))

    @property
    def reply_topics(self) -> frozenset[str]:
        """Topics the gateway may answer on."""
        return frozenset([self.response_topic, *self.extra_reply_topics])


class RedisSettings(BaseModel):
    """The Redis holding tokens, locks, limiter state and idempotency records.

    Without ``sentinels`` the gateway connects to ``url``. With them it asks those Redis Sentinels for the
    primary of ``sentinel_master`` (and again after a failover); ``url`` then gives only the database number,
    password and TLS (``rediss://``) of the primary, its host and port are ignored.
    ``APIHUB_REDIS__SENTINELS`` is a JSON list or a comma-separated list of ``host:port``.
    """

    url: str = "redis://127.0.0.1:16379/0"
    key_prefix: str = "apihub:"
    sentinels: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Redis Sentinels as host:port; empty = connect to url directly"
    )
    sentinel_master: str = Field(default="mymaster", min_length=1, description="the primary's Sentinel name")

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        # The URL is not quoted back: it may hold the password.
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("not a Redis URL (redis://host:port/db, rediss:// for TLS, or unix:///path)")
        try:
            parts.port  # noqa: B018 - read for the check
        except ValueError:
            raise ValueError("its port is not a number from 0 to 65535") from None
        return url

    @field_validator("sentinels", mode="before")
    @classmethod
    def _split_sentinels(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return orjson.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("sentinels")
    @classmethod
    def _host_ports(cls, sentinels: list[str]) -> list[str]:
        for number, address in enumerate(sentinels, 1):
            host, sep, port = address.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                # named by its place, not quoted: a mistyped address may hold a password
                raise ValueError(f"sentinel {number} of {len(sentinels)} is not host:port")
        return sentinels

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The sentinels as (host, port) pairs."""
        return [(a.rpartition(":")[0].strip("[]"), int(a.rpartition(":")[2])) for a in self.sentinels]


#: The name of the member the provider's own ``appkey`` makes (its limit domain is the provider's name).
DEFAULT_MEMBER = "default"


class CredentialSettings(BaseModel):
    """One member of a provider's credential pool: a key, its secret, its account and its own limit."""

    model_config = {"extra": "forbid"}

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="how requests name it")
    appkey: SecretStr
    secret: SecretStr = Field(
        validation_alias=AliasChoices("secret", "appsecret", "secretkey"),
        description="KIS appsecret or Kiwoom secretkey (either name is accepted)",
    )
    account: str | None = Field(
        default=None, max_length=32, description="account number (KIS CANO); requests may name it instead"
    )
    product_code: str | None = Field(default=None, max_length=8, description="KIS ACNT_PRDT_CD")
    environment: Literal["real", "mock"] | None = Field(default=None, description="default: the provider's")
    base_url: str | None = Field(default=None, description="default: the provider's")
    rate_per_s: float | None = Field(default=None, gt=0, description="default: the provider's")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        return url if url is None else http_url(url)


class ProviderSettings(BaseModel):
    """One broker: endpoint, credentials and limits."""

    secret_field: ClassVar[str] = "secret"  # noqa: S105 - the name of the secret's setting
    env_group: ClassVar[str] = "APIHUB_<PROVIDER>"  # its variables' prefix, for error messages
    #: The broker's limit of a mock (virtual trading) key where it is below a real key's (None: the same).
    mock_rate_per_s: ClassVar[float | None] = None

    base_url: str
    environment: Literal["real", "mock"] = "real"
    appkey: SecretStr | None = None
    credentials: list[CredentialSettings] = Field(
        default_factory=list,
        description="the credential pool besides appkey (JSON list: name, appkey, secret, account, "
        "product_code, environment, base_url, rate_per_s); each member is a limit domain with its own token",
    )
    credentials_file: str | None = Field(
        default=None, description="a JSON file holding such a list, read at start (added to credentials)"
    )
    rate_per_s: float = Field(gt=0)
    timeout_s: float = Field(default=10.0, gt=0, description="upper bound of one upstream HTTP call")
    verify_tls: bool = True
    ca_bundle: str | None = Field(default=None, description="PEM file for a private or self-signed chain")
    account: str | None = Field(default=None, max_length=32, description="the appkey's account (KIS CANO)")
    product_code: str | None = Field(default=None, max_length=8, description="KIS ACNT_PRDT_CD")
    arrival_jitter_ms: float | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="jitter budget J: the most a send may take from its slot to the broker's counter beyond "
        "what the gateway measures itself; default 50 ms for a broker across a network, 20 ms for one on "
        "this host (the sandbox)",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url)

    @field_validator("credentials")
    @classmethod
    def _members_named_once(cls, credentials: list[CredentialSettings]) -> list[CredentialSettings]:
        names = [c.name for c in credentials]
        clash = {n for n in names if names.count(n) > 1 or n == DEFAULT_MEMBER}
        if clash:
            raise ValueError(f"credential names must be unique and not {DEFAULT_MEMBER!r}: {sorted(clash)}")
        shared = _sharing_a_key([(c.name, c.appkey) for c in credentials])
        if shared:
            raise ValueError(_SHARED_KEY.format(shared))
        return credentials

    @model_validator(mode="after")
    def _mock_pace(self) -> Self:
        """A mock provider that sets no rate is paced at the broker's mock limit, not a real key's."""
        if self.mock and self.mock_rate_per_s and "rate_per_s" not in self.model_fields_set:
            self.rate_per_s = min(self.rate_per_s, self.mock_rate_per_s)
        return self

    def rate_for(self, environment: Literal["real", "mock"]) -> float:
        """The pace of a pool member of ``environment`` that sets none: the provider's; for a mock key of a
        real provider no more than the broker's mock limit (a real key's 20/s would send a KIS mock key ten
        times its limit, more than the broker's throttling answers can slow it down)."""
        if environment == "mock" and not self.mock and self.mock_rate_per_s:
            return min(self.rate_per_s, self.mock_rate_per_s)
        return self.rate_per_s

    @property
    def mock(self) -> bool:
        """True for the broker's mock (virtual trading) server."""
        return self.environment == "mock"

    def pool(self) -> dict[str, Self]:
        """Every member of the credential pool by name, each as the settings of a provider of its own.

        ``appkey`` (with its secret) makes the member ``default``; ``credentials`` and ``credentials_file``
        add one member each, inheriting what they do not set. Without any key the pool is ``default``
        alone, whose token calls fail with a clear error (the sandbox-less, credential-less start).
        """
        listed = list(self.credentials)
        if self.credentials_file:
            listed += self._read_credentials_file(self.credentials_file)
        members: dict[str, Self] = {}
        if self.appkey is not None or not listed:
            members[DEFAULT_MEMBER] = self.model_copy(update={"credentials": [], "credentials_file": None})
        for cred in listed:
            if cred.name in members:  # the list alone is checked when read: the file is involved
                where = f"{self.env_group}__CREDENTIALS_FILE"
                reason = f"credential {cred.name!r} is configured twice (names are unique across the file "
                raise SettingsInvalid([(where, reason + f"and {self.env_group}__CREDENTIALS)")])
            members[cred.name] = self.model_copy(
                update={
                    "appkey": cred.appkey,
                    self.secret_field: cred.secret,
                    "environment": cred.environment or self.environment,
                    "base_url": cred.base_url or self.base_url,
                    "rate_per_s": cred.rate_per_s or self.rate_for(cred.environment or self.environment),
                    "credentials": [],
                    "credentials_file": None,
                    "account": cred.account,
                    "product_code": cred.product_code,
                }
            )
        shared = _sharing_a_key([(name, member.appkey) for name, member in members.items()])
        if shared:  # the list alone is checked when read: the provider's own key or the file is involved
            where = f"{self.env_group}__CREDENTIALS{'_FILE' if self.credentials_file else ''}"
            raise SettingsInvalid([(where, _SHARED_KEY.format(shared))])
        return members

    def _read_credentials_file(self, path: str) -> list[CredentialSettings]:
        """The members listed in the credentials file, or ``SettingsInvalid`` saying what is wrong."""
        where = f"{self.env_group}__CREDENTIALS_FILE"
        try:
            raw = orjson.loads(Path(path).read_bytes())
        except OSError as exc:
            raise SettingsInvalid.unreadable(where, path, exc) from None
        except orjson.JSONDecodeError:
            raise SettingsInvalid([(where, f"{path} is {NOT_JSON}")]) from None
        if not isinstance(raw, list):
            raise SettingsInvalid([(where, f"{path} must hold a JSON list of credentials")])
        members, problems = [], []
        for index, item in enumerate(raw):
            try:
                member = CredentialSettings.model_validate(item)
            except ValidationError as exc:
                inside = f"{path}: [{index}]"
                problems += [
                    (where, f"{inside}{_path(e['loc'], e)}: {validation_message(e)}")
                    for e in validation_errors(exc)
                ]
                continue
            if member.name == DEFAULT_MEMBER:
                problems.append((where, f"{path}: [{index}].name: {DEFAULT_MEMBER!r} is the provider's key"))
            members.append(member)
        if problems:
            raise SettingsInvalid(problems)
        return members

    @property
    def arrival_jitter_s(self) -> float:
        """The jitter budget in seconds (the setting, or the default for where the broker is)."""
        if self.arrival_jitter_ms is not None:
            return self.arrival_jitter_ms / 1000
        host = urlsplit(self.base_url).hostname or ""
        local = host == "localhost" or host.startswith("127.") or host == "::1"
        return (LOCAL_JITTER_MS if local else REMOTE_JITTER_MS) / 1000


class KisSettings(ProviderSettings):
    """KIS Open API; the secret is called ``appsecret`` there."""

    secret_field: ClassVar[str] = "appsecret"  # noqa: S105 - a field name
    env_group: ClassVar[str] = "APIHUB_KIS"
    #: KIS does not publish its mock server's limit; 2/s is what its own samples and python-kis pace at (and
    #: what the sandbox's mock enforces), where 5/s and 1/s are also quoted.
    mock_rate_per_s: ClassVar[float | None] = 2.0

    base_url: str = "http://127.0.0.1:18080/kis/real"
    appsecret: SecretStr | None = None
    rate_per_s: float = Field(
        default=20.0, gt=0, description="calls per second of the key; a mock key's default is 2"
    )
    ledger_rate_per_s: float = Field(
        default=10.0,
        gt=0,
        description="account and order calls per second (the ledger limit, EGW00215), inside rate_per_s; "
        "KIS publishes only 120 TPS for its whole ledger, so the default is a choice: half the key",
    )


class KiwoomSettings(ProviderSettings):
    """Kiwoom REST API; the secret is called ``secretkey`` there."""

    secret_field: ClassVar[str] = "secretkey"  # noqa: S105 - a field name
    env_group: ClassVar[str] = "APIHUB_KIWOOM"

    base_url: str = "http://127.0.0.1:18080/kiwoom/real"
    secretkey: SecretStr | None = None
    rate_per_s: float = Field(default=5.0, gt=0)
    query_rate_per_s: float = Field(
        default=5.0, gt=0, description="reads per second (Kiwoom's query limit), inside rate_per_s"
    )
    order_rate_per_s: float = Field(
        default=1.0,
        gt=0,
        description="orders per second (Kiwoom's order limit; its 1700 answers name 유량=1 for orders)",
    )


class EnvMapping(EnvSettingsSource):
    """pydantic-settings' own parsing of ``APIHUB_*`` variables, over a mapping instead of the environment."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._mapping = dict(env)
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            (key if self.case_sensitive else key.lower()): value
            for key, value in self._mapping.items()
            if not (self.env_ignore_empty and value == "")
        }


def _log_level(value: object) -> object:
    """A level name ``logging`` knows (any case), as its upper-case name."""
    if isinstance(value, str) and value.upper() in logging.getLevelNamesMapping():
        return value.upper()
    names = ", ".join(sorted(set(logging.getLevelNamesMapping()) - {"NOTSET", "WARN", "FATAL"}))
    raise ValueError(f"not a log level ({names})")


LogLevel = Annotated[str, BeforeValidator(_log_level)]
#: A TCP port to listen on (0: any free one).
Port = Annotated[int, Field(ge=0, le=65535)]


class HubSettings(BaseSettings):
    """The settings of one API Hub process, read from ``APIHUB_*`` variables; refusals raise
    ``SettingsInvalid`` naming the variables."""

    model_config = SettingsConfigDict(
        env_prefix="APIHUB_", env_nested_delimiter="__", env_ignore_empty=True, extra="ignore"
    )

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            prefix = str(self.model_config.get("env_prefix") or "")
            problems = [_refusal(type(self), prefix, error) for error in validation_errors(exc)]
            raise SettingsInvalid(problems) from None
        except SettingsError as exc:
            raise SettingsInvalid(_unparsed(type(self), str(exc))) from None


def _refusal(model: type[BaseModel], prefix: str, error: Any) -> tuple[str, str]:
    """The variable one validation error is about (``APIHUB_KIS__RATE_PER_S``) and the reason; where the
    error is inside a JSON value, the place in it leads the reason (``[0].appkey: Field required``)."""
    name, loc = prefix, tuple(error["loc"])
    for index, part in enumerate(loc):
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            break
        name += part.upper()
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model, name = annotation, name + "__"
            continue
        inside = _path(loc[index + 1 :], error).lstrip(".")
        return name, f"{inside}: {validation_message(error)}" if inside else validation_message(error)
    return name + "*", validation_message(error)


def validation_message(error: Any) -> str:
    """pydantic's message, without the "Value error, " its validators' messages start with."""
    return str(error["msg"]).removeprefix("Value error, ")


def _unparsed(settings_cls: type[BaseSettings], message: str) -> list[tuple[str, str]]:
    """The variables whose value pydantic-settings could not parse as JSON (each tried alone)."""
    prefix = str(settings_cls.model_config.get("env_prefix") or "").upper()
    culprits = []
    for key, value in os.environ.items():
        if not key.upper().startswith(prefix):
            continue
        try:
            EnvMapping(settings_cls, {key: value})()
        except SettingsError:
            culprits.append((key.upper(), NOT_JSON))
    if culprits:
        return culprits
    found = _UNPARSED_FIELD.search(message)
    group = f"{prefix}{found.group(1).upper()}*" if found else f"{prefix}*"
    return [(group, f"a value is {NOT_JSON}")]


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class GatewaySettings(HubSettings):
    """Everything the gateway process needs."""

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    kis: KisSettings = KisSettings()
    kiwoom: KiwoomSettings = KiwoomSettings()
    instance_id: str = Field(default_factory=_default_instance_id)
    metrics_host: str = "127.0.0.1"
    metrics_port: Port = 18081
    max_backlog: int = Field(default=10_000, gt=0, description="requests queued per limit domain")
    readahead_per_partition: int = Field(
        default=12_000, gt=0, description="records read and unanswered per partition before it is paused"
    )
    max_inflight: int = Field(default=25_000, gt=0, description="records read and unanswered in total")
    max_request_bytes: int = Field(
        default=65_536, gt=0, description="bytes of one request record; a larger one is dead-lettered"
    )
    max_param_keys: int = Field(default=64, gt=0, description="keys in a request's params")
    max_param_value_chars: int = Field(default=4_096, gt=0, description="characters of one params value")
    shared_cache_entries: int = Field(
        default=1000,
        ge=0,
        description="answers of immutable reads (past sessions' unadjusted bars) kept to share; 0: none",
    )
    shared_cache_bytes: int = Field(
        default=16 * 1024 * 1024,
        gt=0,
        description="bytes of JSON those cached answers may take in all (the least recently used go first)",
    )
    log_level: LogLevel = "INFO"
    permissions_file: str | None = Field(
        default=None,
        description="YAML file of caller permissions; unset: every caller may make every call",
    )

    def provider(self, provider: Provider) -> KisSettings | KiwoomSettings:
        """The settings of one provider."""
        return self.kis if provider is Provider.KIS else self.kiwoom


class WorkerTopics(BaseModel):
    """The topics the workers read and write (``APIHUB_TOPICS__CANDLES=...``)."""

    history_jobs: str = "history.jobs"
    history_progress: str = Field(
        default="history.progress", description="compacted: which symbol-days of history are held"
    )
    candles: str = "market.candles"
    ticks: str = "market.ticks"
    ticks_recovered: str = "market.ticks.recovered"
    verification_tasks: str = "verification.tasks"
    verification_results: str = "verification.results"
    recovery_tasks: str = "recovery.tasks"
    dlq: str = Field(default="workers.dlq", description="malformed and given-up tasks, with the reason")

    @field_validator("*")
    @classmethod
    def _legal(cls, name: str) -> str:
        return topic_name(name)


#: The topic names ``KafkaSettings`` holds (each defaults to its name in ``schemas/topics.yaml``).
_KAFKA_TOPICS = {"request_topic", "response_topic", "dlq_topic", "events_topic"}


class ClientSettings(HubSettings):
    """Settings of the command-line clients (``topics``, ``call``, ``demo``)."""

    kafka: KafkaSettings = KafkaSettings()
    topics: WorkerTopics = WorkerTopics()
    gateway_metrics_url: str = "http://127.0.0.1:18081"

    def topic_names(self) -> dict[str, str]:
        """Each topic's name in ``schemas/topics.yaml`` -> the name these settings give it
        (``APIHUB_KAFKA__REQUEST_TOPIC``, ``APIHUB_TOPICS__CANDLES``, ...)."""
        declared = {**KafkaSettings().model_dump(include=_KAFKA_TOPICS), **WorkerTopics().model_dump()}
        named = {**self.kafka.model_dump(include=_KAFKA_TOPICS), **self.topics.model_dump()}
        return {declared[field]: named[field] for field in declared}


def _default_worker_instance() -> str:
    return socket.gethostname()


class WorkerSettings(HubSettings):
    """Everything a worker process (``apihub worker NAME``) needs."""

    kafka: KafkaSettings = KafkaSettings()
    topics: WorkerTopics = WorkerTopics()
    group_id: str | None = Field(default=None, description="consumer group; default: the worker's name")
    instance_id: str = Field(
        default_factory=_default_worker_instance,
        description="stable across restarts: with the name it makes the transactional id, so a restarted "
        "worker fences its killed self; distinct per running instance (two on one host set their own)",
    )
    health_host: str = "127.0.0.1"
    health_port: Port | None = Field(
        default=None, description="default: 18091 history, 18092 verification, 18093 recovery"
    )
    task_deadline_s: float = Field(default=600.0, gt=0, description="time a task may take when it names none")
    call_timeout_s: float = Field(default=15.0, gt=0, description="timeout of one hub call")
    transaction_timeout_ms: int = Field(
        default=15_000, ge=1000, description="how long a killed worker's open transaction can hold readers"
    )
    log_level: LogLevel = "INFO"
