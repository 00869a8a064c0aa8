"""Which catalog endpoint a request names, and whether the environment it reached serves it.

The sandbox serves every REST entry of ``hubclient.catalog`` (dedicated simulations first, kis.py and
kiwoom.py decide that; the rest through generic_kis.py / generic_kiwoom.py). The decisions are pure
functions of the index built here:

KIS, by path and ``tr_id`` header (``resolve_kis``):

- real server: the real tr_id is served; anything else on a known path is ``OPSQ0002`` (no such service),
  including a mock tr_id (``VTTC...``);
- mock server: the mock tr_id (published, or for undeclared entries the samples' rule: a leading T/J/C
  becomes V) is served; an endpoint the mock server does not offer (catalog ``mock`` "no") is
  ``MCA00124`` "해당 서비스를 찾을수 없습니다." whichever id is sent; a real tr_id whose mock id differs is
  ``OPSQ0002`` "모의투자 TR 이 아닙니다." (as the broker answers real-account TRs on the mock domain).

Kiwoom, by path group and ``api-id`` header (``resolve_kiwoom``): an api-id missing is 1501, unknown 1505,
served under another path group 1504; a planned (overseas ``usa*``/``ust*``) api-id is 1505 with the reason
that it is published but not live. Kiwoom publishes no list of what its mock server lacks, so both of its
servers serve every live api-id.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from hubclient.catalog import TrSpec, entries
from hubclient.models import Provider

KIWOOM_OAUTH_IDS = frozenset({"au10001", "au10002"})  # served under /oauth2, not an /api group
NOT_LIVE = "해외주식 API는 공개 예정으로 아직 제공되지 않습니다"


@dataclass(frozen=True, slots=True)
class KisPath:
    """The entries of one KIS path, indexed by the id each server accepts."""

    real: dict[str, TrSpec]  # real tr_id -> entry
    mock: dict[str, TrSpec]  # mock tr_id -> entry, for entries the mock server offers
    mock_refused: dict[str, TrSpec]  # any id of an entry the mock server does not offer


@dataclass(frozen=True, slots=True)
class Resolution:
    """The entry to serve, or the broker's error code (and detail) when there is none."""

    spec: TrSpec | None
    code: str = ""  # KIS msg_cd (key of kis_envelope.MESSAGES) or Kiwoom detail code as text
    detail: str = ""


def path_group(path: str) -> str:
    """The group of a Kiwoom path: ``/api/dostk/chart`` -> ``dostk/chart``."""
    return path.removeprefix("/api/")


@cache
def kis_index() -> dict[str, KisPath]:
    """Every KIS catalog path with its entries (built once)."""
    return build_kis_index(entries(Provider.KIS))


def build_kis_index(specs: Iterable[TrSpec]) -> dict[str, KisPath]:
    """KIS entries by path, each path's entries by the id each server accepts."""
    index: dict[str, KisPath] = {}
    for spec in specs:
        routes = index.setdefault(spec.path, KisPath({}, {}, {}))
        routes.real[spec.tr_id] = spec
        if spec.mock_supported:
            routes.mock[spec.upstream_tr_id(mock=True)] = spec
        else:
            routes.mock_refused[spec.tr_id] = spec
    return index


@cache
def kiwoom_index() -> dict[str, TrSpec]:
    """Every Kiwoom catalog api-id (built once)."""
    return {spec.tr_id: spec for spec in entries(Provider.KIWOOM)}


@cache
def kiwoom_groups() -> frozenset[str]:
    """The path groups of every Kiwoom entry, planned ones included (``dostk/chart``, ``us/ordr``, ...)."""
    return frozenset(path_group(spec.path) for spec in kiwoom_index().values())


def resolve_kis(routes: KisPath, tr_id: str, env: str) -> Resolution:
    """The entry a KIS server of environment ``env`` ("real" | "mock") serves for ``tr_id`` on this path."""
    if env == "real":
        spec = routes.real.get(tr_id)
        return Resolution(spec) if spec is not None else Resolution(None, "OPSQ0002")
    if tr_id in routes.mock_refused:
        return Resolution(None, "MCA00124")
    spec = routes.mock.get(tr_id)
    if spec is not None:
        return Resolution(spec)
    if tr_id in routes.real:
        return Resolution(None, "OPSQ0002/mock")
    return Resolution(None, "OPSQ0002")


def resolve_kiwoom(index: dict[str, TrSpec], group: str, api_id: str) -> Resolution:
    """The entry a Kiwoom server serves for ``api_id`` posted to path group ``group`` (``dostk/acnt``)."""
    if not api_id:
        return Resolution(None, "1501")
    if api_id in KIWOOM_OAUTH_IDS:
        return Resolution(None, "1504")
    spec = index.get(api_id)
    if spec is None:
        return Resolution(None, "1505")
    if spec.planned:
        return Resolution(None, "1505", f"{NOT_LIVE}: {api_id}")
    if path_group(spec.path) != group:
        return Resolution(None, "1504")
    return Resolution(spec)
