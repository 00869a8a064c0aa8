"""The tr_id catalog: every REST endpoint of both brokers, how to call it, and what a call must carry.

The entries come from ``catalog.json``, generated from the brokers' endpoint tables by
``apihub catalog generate`` (``hubclient.catalog_build``) and read once at import. The gateway builds
upstream requests from these entries; the client and the gateway refuse, before anything is sent, an id
that is not listed, an endpoint the broker has only announced (``planned``) and a call that lacks a
parameter the broker requires.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any, Literal

from hubclient.errors import UnknownTrId
from hubclient.models import Provider


class Paging(StrEnum):
    """How a call continues to its next page."""

    NONE = "none"
    KIS_TR_CONT = "kis_tr_cont"  # response header tr_cont F/M + ctx_area_fk/nk keys in the body
    KIS_TIME_CURSOR = "kis_time_cursor"  # move FID_INPUT_HOUR_1 / FID_INPUT_DATE_2 back past the oldest row
    KIWOOM_CONT = "kiwoom_cont"  # response headers cont-yn: Y + opaque next-key


class LimitClass(StrEnum):
    """Which of a credential's limits a call also counts against."""

    QUERY = "query"  # quotes and reads: only the credential's overall limit
    LEDGER = "ledger"  # KIS account and order calls: also KIS's ledger limit (EGW00215)
    ORDER = "order"  # Kiwoom orders: Kiwoom's separate order limit


@dataclass(frozen=True, slots=True)
class TrSpec:
    """One catalog endpoint; ``key`` is its catalog id, usually the tr_id itself."""

    provider: Provider
    tr_id: str  # the id the broker receives (KIS tr_id, Kiwoom api-id)
    name: str
    method: Literal["GET", "POST"]
    path: str
    params_in: Literal["query", "body"]
    idempotent: bool  # False for orders and their modifications/cancellations: never resent
    paging: Paging = Paging.NONE
    mock_tr_id: str | None = None  # tr_id to send on the mock server when it differs
    mock_supported: bool = True
    category: str = ""  # KIS category (domestic_stock, ...) or Kiwoom major category (국내주식, ...)
    subcategory: str = ""
    name_ko: str = ""  # the broker's Korean name
    function: str = ""  # the KIS samples' function name; "" for Kiwoom
    kind: str = ""  # KIS quote/account/order; Kiwoom read/account_read/order_write
    required: tuple[str, ...] = ()  # parameter names the broker requires, as published
    limit_class: LimitClass = LimitClass.QUERY
    planned: bool = False  # published by the broker, not live yet: refused
    mock: Literal["yes", "no", "undeclared"] = "undeclared"  # what the broker's samples say about mock
    paging_keys: tuple[str, ...] = ()  # the CTX_AREA_* keys a tr_cont page carries, as published
    key: str = ""  # catalog id; defaults to tr_id (differs only where one tr_id has two paths)

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.tr_id)

    def upstream_tr_id(self, *, mock: bool) -> str:
        """The tr_id to send for the real or the mock environment."""
        return self.mock_tr_id if mock and self.mock_tr_id else self.tr_id


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call cannot be sent: a machine-readable ``reason`` (the ``invalid`` response's) and a message."""

    reason: str
    message: str


def _spec(raw: dict[str, Any]) -> TrSpec:
    fields = {name: raw[name] for name in TrSpec.__dataclass_fields__ if name in raw}
    return TrSpec(
        **fields
        | {
            "provider": Provider(raw["provider"]),
            "paging": Paging(raw["paging"]),
            "limit_class": LimitClass(raw["limit_class"]),
            "required": tuple(raw["required"]),
            "paging_keys": tuple(raw["paging_keys"]),
        }
    )


def _load() -> tuple[TrSpec, ...]:
    text = resources.files("hubclient").joinpath("catalog.json").read_text(encoding="utf-8")
    return tuple(_spec(raw) for raw in json.loads(text)["entries"])


_ENTRIES = _load()
CATALOG: dict[tuple[Provider, str], TrSpec] = {(e.provider, e.key): e for e in _ENTRIES}


def lookup(provider: Provider | str, tr_id: str) -> TrSpec:
    """The catalog entry for ``provider``/``tr_id`` (a catalog key); raises ``UnknownTrId`` when none."""
    try:
        spec = CATALOG.get((Provider(provider), tr_id))
    except ValueError:
        spec = None
    if spec is None:
        raise UnknownTrId(f"{provider}/{tr_id} is not in the catalog")
    return spec


def entries(provider: Provider | str | None = None) -> tuple[TrSpec, ...]:
    """Every entry, or one provider's, sorted by provider and key; planned ones included."""
    if provider is None:
        return _ENTRIES
    wanted = Provider(provider)
    return tuple(e for e in _ENTRIES if e.provider is wanted)


def search(text: str) -> tuple[TrSpec, ...]:
    """Entries whose id, tr_id, path, name, function or Korean name contain every word of ``text``.

    Case-insensitive; words are separated by whitespace; an empty ``text`` matches nothing.
    """
    words = text.casefold().split()
    if not words:
        return ()
    found = []
    for spec in _ENTRIES:
        haystack = " ".join((spec.key, spec.tr_id, spec.path, spec.name, spec.function, spec.name_ko))
        haystack = haystack.casefold()
        if all(word in haystack for word in words):
            found.append(spec)
    return tuple(found)


def _is_paging_context(name: str) -> bool:
    # CTX_AREA_* keys are blank on a first page and come from the continuation afterwards.
    return name.upper().startswith("CTX_AREA_")


def missing_params(
    spec: TrSpec, params: dict[str, Any] | None, continuation: dict[str, str] | None = None
) -> tuple[str, ...]:
    """Required names present neither in ``params`` nor in ``continuation``, in published order.

    A name counts as present when its key is there, whatever the value (KIS samples send many fields
    empty), compared case-insensitively (some KIS quotes publish lower-case names); paging context keys
    (``CTX_AREA_*``) are never demanded.
    """
    present = {str(k).upper() for k in (params or {})} | {k.upper() for k in (continuation or {})}
    return tuple(n for n in spec.required if not _is_paging_context(n) and n.upper() not in present)


def refusal(
    spec: TrSpec, params: dict[str, Any] | None, continuation: dict[str, str] | None = None
) -> Refusal | None:
    """Why this call must not be sent (a planned endpoint, missing parameters), or None when it may."""
    if spec.planned:
        return Refusal(
            "endpoint_not_live",
            f"{spec.provider}/{spec.key} is published by the broker as planned and is not live yet",
        )
    missing = missing_params(spec, params, continuation)
    if missing:
        return Refusal(
            "missing_params", f"{spec.provider}/{spec.key} lacks required parameters: {', '.join(missing)}"
        )
    return None
