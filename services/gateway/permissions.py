"""Caller permissions: which providers and catalog calls each caller may use.

A permissions file (``APIHUB_PERMISSIONS_FILE``, YAML) lists, per caller, grants; a call is permitted when
one grant covers its provider and names its tr_id (or catalog key), its catalog ``kind`` or its limit
class::

    default:                      # callers not listed (omitted: read-only quotes)
      - kinds: [quote, read]
    callers:
      demo:
        - providers: [KIS]
          tr_ids: [FHKST01010100]
      trader:
        - kinds: [quote, read, account, account_read]
        - providers: [KIS]
          limit_classes: [ledger]

Without a file every caller may make every call (the behaviour before permissions existed). With one,
a caller that is not listed gets ``default``, read-only quotation calls unless the file says otherwise;
orders and account calls always need a grant that names them, and so does a ``websocket_credentials``
request (``tr_ids: [websocket_credentials]``), whose answer lends the gateway's own credential (Kiwoom's
is the access token every call uses). A refused call is answered
``rejected`` / ``not_permitted`` at admission, before any upstream call, and logged as
``request.not_permitted``. The decision (``permitted``) is a pure function of the table and the call.

The name a request claims is bound to a Kafka principal by the topic it arrives on
(``APIHUB_KAFKA__CALLER_TOPICS``, ``CallerTopics``): a request on a caller's own topic is that caller's
(``intake`` refuses a body naming another), and one on any other topic claiming a bound caller is refused
``rejected`` / ``not_permitted`` by ``check_arrival`` before any grant is looked at, and logged as
``request.not_permitted`` with ``bound_topic``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hubclient.catalog import TrSpec
from hubclient.models import WEBSOCKET_CREDENTIALS_TR_ID, ApiRequest, Provider
from services.gateway.errors import NotPermitted
from services.logs import log_event
from services.settings import SettingsInvalid

logger = logging.getLogger(__name__)

PERMISSIONS_FILE = "APIHUB_PERMISSIONS_FILE"  # the variable naming the file

READ_ONLY_KINDS = frozenset({"quote", "read"})  # KIS quotations, Kiwoom market reads: no account, no order


@dataclass(frozen=True, slots=True)
class Grant:
    """Calls of ``providers`` (empty: any) matching one of ``tr_ids``, ``kinds`` or ``limit_classes``."""

    providers: frozenset[Provider] = frozenset()
    tr_ids: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    limit_classes: frozenset[str] = frozenset()

    def covers(self, spec: TrSpec) -> bool:
        """True when this grant allows the catalog call ``spec``."""
        if self.providers and spec.provider not in self.providers:
            return False
        return (
            spec.tr_id in self.tr_ids
            or spec.key in self.tr_ids
            or spec.kind in self.kinds
            or spec.limit_class.value in self.limit_classes
        )

    def lends(self, provider: Provider) -> bool:
        """True when this grant allows ``websocket_credentials`` requests for ``provider``."""
        if self.providers and provider not in self.providers:
            return False
        return WEBSOCKET_CREDENTIALS_TR_ID in self.tr_ids


READ_ONLY = (Grant(kinds=READ_ONLY_KINDS),)


@dataclass(frozen=True, slots=True)
class Permissions:
    """The grants of each listed caller and of everyone else (``default``)."""

    callers: dict[str, tuple[Grant, ...]] = field(default_factory=dict)
    default: tuple[Grant, ...] = READ_ONLY

    def grants(self, caller: str) -> tuple[Grant, ...]:
        """The grants that apply to ``caller``."""
        return self.callers.get(caller, self.default)


def permitted(permissions: Permissions | None, caller: str, spec: TrSpec) -> bool:
    """True when ``caller`` may make the call ``spec``; everything is permitted without a table."""
    if permissions is None:
        return True
    return any(grant.covers(spec) for grant in permissions.grants(caller))


def check_lending(permissions: Permissions | None, request: ApiRequest) -> None:
    """Raise ``NotPermitted`` (and log it) unless the caller may have the provider's WebSocket credential;
    everyone may without a table, no one by ``kinds`` or ``limit_classes`` alone."""
    if permissions is None or any(g.lends(request.provider) for g in permissions.grants(request.caller)):
        return
    raise _refused(
        request, f"caller {request.caller!r} may not have {request.provider.value}'s WebSocket credential"
    )


def check_permitted(permissions: Permissions | None, request: ApiRequest, spec: TrSpec) -> None:
    """Raise ``NotPermitted`` (and log ``request.not_permitted``) when the caller may not make this call."""
    if permitted(permissions, request.caller, spec):
        return
    raise _refused(request, f"caller {request.caller!r} may not call {spec.provider.value}/{spec.key}")


@dataclass(frozen=True, slots=True)
class CallerTopics:
    """Callers bound to a request topic of their own, which only their principal may write."""

    by_topic: Mapping[str, str] = field(default_factory=dict)  # topic -> caller
    by_caller: Mapping[str, str] = field(default_factory=dict)  # caller -> topic

    @classmethod
    def of(cls, topics: Mapping[str, str]) -> CallerTopics:
        """The binding of ``APIHUB_KAFKA__CALLER_TOPICS`` (topic -> caller, one topic per caller)."""
        return cls(dict(topics), {caller: topic for topic, caller in topics.items()})

    def caller_of(self, topic: str) -> str | None:
        """The caller every request on ``topic`` is, or None for a shared topic."""
        return self.by_topic.get(topic)

    def topic_of(self, caller: str) -> str | None:
        """The only topic ``caller``'s requests may arrive on, or None for an unbound caller."""
        return self.by_caller.get(caller)


def check_arrival(binding: CallerTopics, topic: str, request: ApiRequest) -> None:
    """Raise ``NotPermitted`` (and log it) when ``request``, read from ``topic``, claims a caller bound to
    another topic: whoever wrote it is not that caller's principal."""
    bound_topic = binding.topic_of(request.caller)
    if bound_topic is None or bound_topic == topic:
        return
    raise _refused(
        request,
        f"caller {request.caller!r} is bound to the request topic {bound_topic}; "
        f"a request on {topic} cannot claim it",
        topic=topic,
        bound_topic=bound_topic,
    )


def _refused(request: ApiRequest, message: str, **where: str) -> NotPermitted:
    """Log ``request.not_permitted`` for ``request`` and return the error to raise."""
    log_event(
        logger,
        "request.not_permitted",
        logging.WARNING,
        caller=request.caller,
        **where,
        provider=request.provider.value,
        tr_id=request.tr_id,
        request_id=request.request_id,
    )
    return NotPermitted(message)


def _names(raw: Any, what: str) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        raise ValueError(f"{what} must be a list of strings, got {raw!r}")
    return frozenset(raw)


def _grant(raw: Any) -> Grant:
    if not isinstance(raw, dict):
        raise ValueError(f"a grant must be a mapping, got {raw!r}")
    unknown = set(raw) - {"providers", "tr_ids", "kinds", "limit_classes"}
    if unknown:
        raise ValueError(f"unknown grant fields: {sorted(unknown)}")
    return Grant(
        providers=frozenset(Provider(p.upper()) for p in _names(raw.get("providers"), "providers")),
        tr_ids=_names(raw.get("tr_ids"), "tr_ids"),
        kinds=_names(raw.get("kinds"), "kinds"),
        limit_classes=_names(raw.get("limit_classes"), "limit_classes"),
    )


def _grants(raw: Any, what: str) -> tuple[Grant, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"{what} must be a list of grants, got {raw!r}")
    return tuple(_grant(item) for item in raw)


def parse_permissions(raw: Any) -> Permissions:
    """The table from a parsed YAML document; raises ``ValueError`` on anything it does not understand."""
    if not isinstance(raw, dict) or set(raw) - {"default", "callers"}:
        raise ValueError("a permissions file is a mapping with 'callers' and optionally 'default'")
    callers = raw.get("callers") or {}
    if not isinstance(callers, dict):
        raise ValueError("'callers' must map each caller to a list of grants")
    default = _grants(raw["default"], "default") if "default" in raw else READ_ONLY
    return Permissions(
        callers={str(name): _grants(grants, f"callers.{name}") for name, grants in callers.items()},
        default=default,
    )


def load_permissions(path: Path) -> Permissions:
    """Read and check the permissions file at ``path``; ``SettingsInvalid`` naming
    ``APIHUB_PERMISSIONS_FILE`` says what is wrong with it."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsInvalid.unreadable(PERMISSIONS_FILE, str(path), exc) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SettingsInvalid([(PERMISSIONS_FILE, f"{path} is not YAML: {first}")]) from None
    try:
        return parse_permissions(raw)
    except ValueError as exc:
        raise SettingsInvalid([(PERMISSIONS_FILE, f"{path}: {exc}")]) from None
