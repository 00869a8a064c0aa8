"""The tr_id catalog: every broker call the hub supports, and how to make it.

The gateway builds upstream requests from these entries and the client refuses anything not listed here
before it reaches Kafka. Paths and ids follow the brokers' public documentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from hubclient.errors import UnknownTrId
from hubclient.models import Provider


class Paging(StrEnum):
    """How a call continues to its next page."""

    NONE = "none"
    KIS_TR_CONT = "kis_tr_cont"  # response header tr_cont F/M + ctx_area_fk/nk keys in the body
    KIS_TIME_CURSOR = "kis_time_cursor"  # move FID_INPUT_HOUR_1 / FID_INPUT_DATE_2 back past the oldest row
    KIWOOM_CONT = "kiwoom_cont"  # response headers cont-yn: Y + opaque next-key


@dataclass(frozen=True, slots=True)
class TrSpec:
    """One supported call."""

    provider: Provider
    tr_id: str
    name: str
    method: Literal["GET", "POST"]
    path: str
    params_in: Literal["query", "body"]
    idempotent: bool
    paging: Paging = Paging.NONE
    mock_tr_id: str | None = None  # tr_id to send on the mock server when it differs
    mock_supported: bool = True

    def upstream_tr_id(self, *, mock: bool) -> str:
        """The tr_id to send for the real or the mock environment."""
        return self.mock_tr_id if mock and self.mock_tr_id else self.tr_id


_KIS_QUOTE = "/uapi/domestic-stock/v1/quotations"
_KIS_TRADE = "/uapi/domestic-stock/v1/trading"
_K, _W = Provider.KIS, Provider.KIWOOM

_ENTRIES = (
    TrSpec(_K, "FHKST01010100", "inquire-price", "GET", f"{_KIS_QUOTE}/inquire-price", "query", True),
    TrSpec(_K, "FHKST01010300", "inquire-ccnl", "GET", f"{_KIS_QUOTE}/inquire-ccnl", "query", True),
    TrSpec(
        _K, "FHKST01010400", "inquire-daily-price", "GET", f"{_KIS_QUOTE}/inquire-daily-price", "query", True
    ),
    TrSpec(
        _K,
        "FHKST03010100",
        "inquire-daily-itemchartprice",
        "GET",
        f"{_KIS_QUOTE}/inquire-daily-itemchartprice",
        "query",
        True,
        Paging.KIS_TIME_CURSOR,
    ),
    TrSpec(
        _K,
        "FHKST03010200",
        "inquire-time-itemchartprice",
        "GET",
        f"{_KIS_QUOTE}/inquire-time-itemchartprice",
        "query",
        True,
        Paging.KIS_TIME_CURSOR,
    ),
    TrSpec(
        _K,
        "FHKST03010230",
        "inquire-time-dailychartprice",
        "GET",
        f"{_KIS_QUOTE}/inquire-time-dailychartprice",
        "query",
        True,
        Paging.KIS_TIME_CURSOR,
        mock_supported=False,
    ),
    TrSpec(
        _K,
        "TTTC0012U",
        "order-cash-buy",
        "POST",
        f"{_KIS_TRADE}/order-cash",
        "body",
        False,
        mock_tr_id="VTTC0012U",
    ),
    TrSpec(
        _K,
        "TTTC0011U",
        "order-cash-sell",
        "POST",
        f"{_KIS_TRADE}/order-cash",
        "body",
        False,
        mock_tr_id="VTTC0011U",
    ),
    TrSpec(
        _K,
        "TTTC8434R",
        "inquire-balance",
        "GET",
        f"{_KIS_TRADE}/inquire-balance",
        "query",
        True,
        Paging.KIS_TR_CONT,
        mock_tr_id="VTTC8434R",
    ),
    TrSpec(_W, "ka10079", "tick-chart", "POST", "/api/dostk/chart", "body", True, Paging.KIWOOM_CONT),
    TrSpec(_W, "ka10080", "minute-chart", "POST", "/api/dostk/chart", "body", True, Paging.KIWOOM_CONT),
    TrSpec(_W, "ka10081", "daily-chart", "POST", "/api/dostk/chart", "body", True, Paging.KIWOOM_CONT),
    TrSpec(_W, "ka10082", "weekly-chart", "POST", "/api/dostk/chart", "body", True, Paging.KIWOOM_CONT),
    TrSpec(_W, "ka10083", "monthly-chart", "POST", "/api/dostk/chart", "body", True, Paging.KIWOOM_CONT),
    TrSpec(_W, "kt10000", "order-buy", "POST", "/api/dostk/ordr", "body", False),
    TrSpec(_W, "kt10001", "order-sell", "POST", "/api/dostk/ordr", "body", False),
)

CATALOG: dict[tuple[Provider, str], TrSpec] = {(e.provider, e.tr_id): e for e in _ENTRIES}


def lookup(provider: Provider | str, tr_id: str) -> TrSpec:
    """The catalog entry for ``provider``/``tr_id``; raises ``UnknownTrId`` when there is none."""
    try:
        spec = CATALOG.get((Provider(provider), tr_id))
    except ValueError:
        spec = None
    if spec is None:
        raise UnknownTrId(f"{provider}/{tr_id} is not in the catalog")
    return spec
