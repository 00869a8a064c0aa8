"""Everything one sandbox process holds: clock, market, referee, credentials, tokens, faults and orders.

One ``SandboxState`` is built from the settings in ``create_app`` and stored on the aiohttp application
under ``STATE``; handlers reach it through ``request.app[STATE]``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from services.sandbox.clock import SimClock
from services.sandbox.faults import Faults
from services.sandbox.market import Market
from services.sandbox.referee import Environment, Referee
from services.sandbox.settings import SandboxSettings
from services.sandbox.tokens import Credentials, TokenBook, kis_style_token, kiwoom_style_token

KIS_APPKEY_LENGTH = 36
KIS_APPSECRET_LENGTH = 180
KIWOOM_MAX_KEY_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Order:
    """An order the simulated broker accepted (whatever the client was told)."""

    env_id: str
    appkey: str
    order_no: str
    tr_id: str
    symbol: str
    side: str  # buy | sell; generic endpoints also modify | cancel | order
    quantity: int
    price: int  # KRW, 0 for market orders
    accepted_at: datetime
    timed_out: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "env": self.env_id,
            "appkey": self.appkey,
            "order_no": self.order_no,
            "tr_id": self.tr_id,
            "symbol": self.symbol,
            "side": self.side,
            "quantity": self.quantity,
            "price": self.price,
            "accepted_at": self.accepted_at.isoformat(),
            "timed_out": self.timed_out,
        }


class SandboxState:
    """The sandbox's whole mutable state."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.clock = SimClock(settings.clock_start, settings.clock_rate, settings.clock_start_time_kst)
        self.market = Market(
            settings.market_seed,
            settings.market_history_start,
            settings.market_holidays,
            settings.market_cache_days,
        )
        kis_classes = (("ledger", settings.kis_ledger_rate_per_s),)
        kiwoom_classes = (("order", settings.kiwoom_order_rate_per_s),)
        self.environments = {
            env.env_id: env
            for env in (
                Environment("KIS", "real", settings.kis_real_rate_per_s, kis_classes),
                Environment("KIS", "mock", settings.kis_mock_rate_per_s, kis_classes),
                Environment("KIWOOM", "real", settings.kiwoom_real_rate_per_s, kiwoom_classes),
                Environment("KIWOOM", "mock", settings.kiwoom_mock_rate_per_s, kiwoom_classes),
            )
        }
        self.referee = Referee(self.clock, list(self.environments.values()))
        self.kis_credentials = Credentials(
            {"real": settings.kis_real_appkeys, "mock": settings.kis_mock_appkeys},
            key_ok=lambda key: len(key) == KIS_APPKEY_LENGTH,
            secret_ok=lambda secret: len(secret) == KIS_APPSECRET_LENGTH,
        )
        self.kiwoom_credentials = Credentials(
            {"real": settings.kiwoom_real_appkeys, "mock": settings.kiwoom_mock_appkeys},
            key_ok=lambda key: 0 < len(key) <= KIWOOM_MAX_KEY_LENGTH,
            secret_ok=lambda secret: 0 < len(secret) <= KIWOOM_MAX_KEY_LENGTH,
        )
        interval_s = settings.token_issue_interval_s
        self.kis_tokens = TokenBook(
            self.clock, settings.token_lifetime_s, settings.kis_token_reuse_s, interval_s, kis_style_token
        )
        self.kiwoom_tokens = TokenBook(
            self.clock,
            settings.token_lifetime_s,
            settings.kiwoom_token_reuse_s,
            interval_s,
            kiwoom_style_token,
        )
        self.faults = Faults(settings.faults, self.clock, self._invalidate_tokens)
        self.orders: list[Order] = []
        self._order_seq: Counter[str] = Counter()

    def _invalidate_tokens(self) -> int:
        return self.kis_tokens.invalidate_all() + self.kiwoom_tokens.invalidate_all()

    def next_order_no(self, env_id: str) -> int:
        """Next order number of an environment, starting at 1."""
        self._order_seq[env_id] += 1
        return self._order_seq[env_id]

    def record_order(self, order: Order) -> None:
        """Keep an accepted order in the ledger and tell the referee."""
        self.orders.append(order)
        self.referee.order(order.env_id, order.appkey, order.timed_out)

    def reset(self, clock: bool = False, faults: bool = False) -> None:
        """Clear stats, tokens, key bindings, limiter windows and orders; optionally clock and faults."""
        self.referee.reset()
        self.kis_tokens.reset()
        self.kiwoom_tokens.reset()
        self.kis_credentials.reset()
        self.kiwoom_credentials.reset()
        self.orders.clear()
        self._order_seq.clear()
        if clock:
            self.clock.reset()
        if faults:
            self.faults.reset()


STATE = web.AppKey("sandbox_state", SandboxState)
