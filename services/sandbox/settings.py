"""Settings of the sandbox process (env prefix ``APIHUB_SANDBOX__``, nested groups split by ``__``).

Every field has a default, so ``SandboxSettings()`` is a working sandbox on 127.0.0.1:18080. Facts the
reference marks uncertain (mock rate limits, throttle HTTP status, Kiwoom token rules) are fields here with
the stated default, so a test or a demo can switch them. ``FaultSettings`` is the same model the admin
endpoint ``POST /_sandbox/faults`` accepts, so every fault can be set at start-up (group ``faults``, e.g.
``APIHUB_SANDBOX__FAULTS__ARRIVAL_JITTER_MS=40``) or at runtime.
``FeedSettings`` (group ``feed``, e.g. ``APIHUB_SANDBOX__FEED__GAP_RATE``) configures the market feed.
``generic_rows`` / ``generic_rows_per_page`` size the lists of the catalog endpoints answered generically
(generic_kis.py, generic_kiwoom.py), e.g. ``APIHUB_SANDBOX__GENERIC_ROWS=45``.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from services.sandbox.clock import MAX_CLOCK_RATE, as_kst, first_instant, range_text, time_of_day, within
from services.sandbox.symbols import SYMBOLS
from services.settings import HubSettings, Port, bootstrap_servers, topic_name

LatencyDistribution = Literal["fixed", "uniform", "exponential", "normal"]
ENVIRONMENT_IDS = ("kis/real", "kis/mock", "kiwoom/real", "kiwoom/mock")


class FaultSettings(BaseModel):
    """Faults injected into provider endpoints (never into /healthz or /_sandbox/*)."""

    model_config = {"extra": "forbid"}

    targets: list[str] = Field(
        default_factory=list,
        description="environments hit, e.g. ['kis/real']; empty = all four",
    )
    latency_ms: float = Field(default=0.0, ge=0, description="added latency: mean (or fixed value), ms")
    latency_jitter_ms: float = Field(default=0.0, ge=0, description="uniform half-width or normal sigma, ms")
    latency_distribution: LatencyDistribution = Field(
        default="fixed", description="fixed, uniform, exponential or normal (of the added latency)"
    )
    error_rate: float = Field(default=0.0, ge=0, le=1, description="share of calls answered with a 5xx")
    error_status: int = Field(default=500, ge=500, le=599, description="HTTP status of injected errors")
    drop_rate: float = Field(default=0.0, ge=0, le=1, description="share of calls whose connection is cut")
    order_timeout_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of orders accepted but answered as timed out"
    )
    order_timeout_delay_ms: float = Field(default=0.0, ge=0, description="wait before the timeout answer, ms")
    arrival_jitter_ms: float = Field(
        default=0.0,
        ge=0,
        description="each request waits uniform [0, J] ms before the referee counts its arrival; 0 = none",
    )
    token_invalidate_every_s: float = Field(
        default=0.0, ge=0, description="maintenance: invalidate every token each N simulated s; 0 = never"
    )
    seed: int = Field(default=7, description="seed of the fault dice, for reproducible runs")

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, targets: list[str]) -> list[str]:
        unknown = set(targets) - set(ENVIRONMENT_IDS)
        if unknown:
            raise ValueError(f"unknown environments {sorted(unknown)}; use {list(ENVIRONMENT_IDS)}")
        return targets


CorruptionKind = Literal["zero_price", "negative_volume", "price_outlier"]
FeedSource = Literal["kis-ws", "kiwoom-ws", "alternate"]
CORRUPTION_KINDS: tuple[CorruptionKind, ...] = ("zero_price", "negative_volume", "price_outlier")
DEFAULT_FEED_SYMBOLS = ("005930", "000660", "035420", "035720", "005380")


class FeedGap(BaseModel):
    """A configured missing interval: trades of ``symbol`` at ``start <= time < end`` (KST) are not sent.

    Also accepted as text, ``SYMBOL@HH:MM-HH:MM`` (seconds optional), e.g. ``005930@10:00-10:30``;
    the symbol ``*`` means every symbol of the feed.
    """

    model_config = {"extra": "forbid"}

    symbol: str = Field(description="six-digit code, or '*' for every symbol of the feed")
    start: time = Field(description="first missing instant, KST wall time (inclusive)")
    end: time = Field(description="end of the missing interval, KST wall time (exclusive)")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        symbol, at, span = value.partition("@")
        start, dash, end = span.replace("\u2013", "-").partition("-")
        if not at or not dash:
            raise ValueError(f"gap {value!r} is not SYMBOL@HH:MM-HH:MM")
        return {"symbol": symbol.strip(), "start": start.strip(), "end": end.strip()}

    @model_validator(mode="after")
    def _ordered(self) -> FeedGap:
        if self.end <= self.start:
            raise ValueError(f"gap of {self.symbol} ends ({self.end}) before it starts ({self.start})")
        return self


class FeedSettings(BaseModel):
    """The market feed (``services.sandbox.feed``): what it publishes to ``market.ticks`` and what it breaks.

    Gaps and corruption are pure functions of (``seed``, symbol, day), so a run can be reproduced exactly.
    """

    model_config = {"extra": "forbid"}

    bootstrap_servers: str = Field(default="127.0.0.1:19092", description="Kafka bootstrap servers")
    topic: str = Field(default="market.ticks", description="topic the ticks are published to")
    client_id: str = Field(default="sandbox-feed", description="Kafka client id of the feed's producer")
    symbols: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FEED_SYMBOLS), min_length=1, description="six-digit codes"
    )
    day: date | None = Field(
        default=None, description="publish_day's day; None = the simulated clock's current trading day"
    )
    speed: float = Field(
        default=0.0,
        ge=0,
        description="publish_day replay speed, simulated seconds per real second; 0 = as fast as possible "
        "(run_feed follows the clock instead)",
    )
    source: FeedSource = Field(
        default="alternate",
        description="'source' field of the messages; 'alternate' = kis-ws, kiwoom-ws, ... by symbol order",
    )
    gaps: list[FeedGap] = Field(default_factory=list, description="configured missing intervals")
    gap_rate: float = Field(
        default=0.0,
        ge=0,
        le=0.5,
        description="share of each symbol's session minutes also left out, in random whole-minute intervals",
    )
    gap_min_minutes: int = Field(default=1, ge=1, description="shortest random gap, minutes")
    gap_max_minutes: int = Field(default=10, ge=1, description="longest random gap, minutes")
    corrupt_rate: float = Field(
        default=0.0, ge=0, le=1, description="share of ticks published with a corrupted value (unmarked)"
    )
    corrupt_kinds: list[CorruptionKind] = Field(
        default_factory=lambda: list(CORRUPTION_KINDS),
        min_length=1,
        description="zero_price: price 0; negative_volume: volume negated; price_outlier: price 3-10x "
        "beyond the day's high or low",
    )
    seed: int = Field(default=11, description="seed of the random gaps and corruption")
    max_in_flight: int = Field(default=1_000, ge=1, description="sends awaiting acknowledgement at most")
    linger_ms: int = Field(default=5, ge=0, description="producer batching delay, ms")
    progress_every: int = Field(default=5_000, ge=1, description="a feed.progress log line every N ticks")
    poll_interval_s: float = Field(
        default=1.0, gt=0, description="run_feed: longest real wait between looks at the clock, s"
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _broker_addresses(cls, text: str) -> str:
        return bootstrap_servers(text)

    @field_validator("topic")
    @classmethod
    def _legal_topic(cls, name: str) -> str:
        return topic_name(name)

    @field_validator("symbols")
    @classmethod
    def _known_symbols(cls, symbols: list[str]) -> list[str]:
        unknown = [code for code in symbols if code not in SYMBOLS]
        if unknown:
            raise ValueError(f"symbols {unknown} are not in the sandbox's symbol master")
        return list(dict.fromkeys(symbols))

    @model_validator(mode="after")
    def _consistent(self) -> FeedSettings:
        if self.gap_min_minutes > self.gap_max_minutes:
            raise ValueError("gap_min_minutes must not exceed gap_max_minutes")
        stray = sorted({g.symbol for g in self.gaps} - {*self.symbols, "*"})
        if stray:
            raise ValueError(f"gaps name symbols the feed does not publish: {stray}")
        return self


class SandboxSettings(HubSettings):
    """Everything the sandbox needs, built once at the edge and passed down."""

    model_config = SettingsConfigDict(env_prefix="APIHUB_SANDBOX__", env_ignore_empty=False)

    host: str = Field(default="127.0.0.1", description="address the sandbox listens on")
    port: Port = Field(default=18080, description="TCP port (`apihub sandbox --port` wins)")

    # Per-appkey request limits, sliding one-second window counted on arrival.
    kis_real_rate_per_s: int = Field(default=20, ge=1, description="KIS real: calls per second per appkey")
    kis_mock_rate_per_s: int = Field(default=2, ge=1, description="KIS mock: calls per second per appkey")
    kiwoom_real_rate_per_s: int = Field(
        default=5, ge=1, description="Kiwoom real: calls per second per appkey"
    )
    kiwoom_mock_rate_per_s: int = Field(
        default=5, ge=1, description="Kiwoom mock: calls per second per appkey"
    )
    # Per-appkey limits of a limit class, inside the key's (counted per class by the referee either way).
    # The brokers publish no per-key figure (KIS: 120 TPS for its whole ledger), so 0 = not limited.
    kis_ledger_rate_per_s: int = Field(
        default=0, ge=0, description="KIS account and order calls per second (EGW00215 above); 0 = unlimited"
    )
    kiwoom_order_rate_per_s: int = Field(
        default=0, ge=0, description="Kiwoom orders per second (1700 naming 유량 above); 0 = unlimited"
    )

    # Token rules.
    token_issue_interval_s: float = Field(default=60.0, ge=0, description="min gap between issuances")
    token_lifetime_s: float = Field(default=86_400.0, gt=0, description="a token's lifetime (simulated s)")
    kis_token_reuse_s: float = Field(
        default=6 * 3600.0, ge=0, description="KIS re-issue inside this returns the same token and expiry"
    )
    kiwoom_token_reuse_s: float = Field(default=0.0, ge=0, description="Kiwoom: 0 = a new token each time")

    # Status codes where the reference disagrees.
    kis_throttle_status: int = Field(
        default=500, description="HTTP status of KIS's EGW00201 (over the limit)"
    )
    kis_token_error_status: int = Field(
        default=500, description="HTTP status of a TR call's bearer token refused (EGW00121, EGW00123)"
    )
    kiwoom_throttle_status: int = Field(
        default=429, description="HTTP status of Kiwoom's 1700 (over the limit)"
    )

    # Optional appkey allow-lists; empty = any key of the right shape, bound on its first token.
    kis_real_appkeys: list[str] = Field(default_factory=list, description="KIS real: the only appkeys served")
    kis_mock_appkeys: list[str] = Field(default_factory=list, description="KIS mock: the only appkeys served")
    kiwoom_real_appkeys: list[str] = Field(
        default_factory=list, description="Kiwoom real: the only appkeys served"
    )
    kiwoom_mock_appkeys: list[str] = Field(
        default_factory=list, description="Kiwoom mock: the only appkeys served"
    )

    # Paging sizes.
    kis_balance_rows_real: int = Field(default=50, ge=1, description="KIS real: holdings per balance page")
    kis_balance_rows_mock: int = Field(default=20, ge=1, description="KIS mock: holdings per balance page")
    kis_balance_holdings: int = Field(default=57, ge=0, description="holdings in every simulated account")
    kiwoom_tick_rows_per_page: int = Field(default=900, ge=1, description="Kiwoom: tick chart rows per page")
    kiwoom_minute_rows_per_page: int = Field(
        default=900, ge=1, description="Kiwoom: minute chart rows per page"
    )
    kiwoom_daily_rows_per_page: int = Field(
        default=600, ge=1, description="Kiwoom: daily chart rows per page"
    )
    generic_rows: int = Field(
        default=45, ge=1, description="rows of a generic list answer over all its pages (generic_kis/kiwoom)"
    )
    generic_rows_per_page: int = Field(
        default=20,
        ge=1,
        description="rows per page of a generic list answer, and all rows of one that does not page",
    )

    # Market.
    market_seed: int = Field(default=20_260_101, description="seed of the deterministic market")
    market_history_start: date = Field(default=date(2024, 1, 2), description="first day with data")
    market_holidays: list[date] = Field(default_factory=list, description="weekdays without a session")
    minute_history_days: int = Field(default=365, ge=1, description="calendar days of minute bars kept")
    market_cache_days: int = Field(default=512, ge=1, description="symbol-days of ticks kept in the LRU")

    # Simulated clock; see clock.py for the default.
    clock_start: datetime | None = Field(
        default=None,
        description="simulated instant at start-up (naive = KST), from market_history_start 00:00 KST "
        "to the end of 2099, as POST /_sandbox/clock allows",
    )
    clock_start_time_kst: str = Field(
        default="15:30:00",
        description="time of day (HH:MM or HH:MM:SS) on the latest trading day when clock_start is unset",
    )
    clock_rate: float = Field(
        default=1.0,
        ge=0,
        le=MAX_CLOCK_RATE,
        description="simulated seconds per real second; 0 freezes; at most 86400, as POST /_sandbox/clock",
    )

    faults: FaultSettings = Field(default_factory=FaultSettings)
    feed: FeedSettings = Field(default_factory=FeedSettings)

    @field_validator("clock_start")
    @classmethod
    def _start_in_range(cls, start: datetime | None, info: ValidationInfo) -> datetime | None:
        """The start-up instant in the range ``POST /_sandbox/clock`` keeps the clock in: before the
        market's first day every price is 0 (a ``market_history_start`` already refused is not compared)."""
        if start is None or "market_history_start" not in info.data:
            return start
        earliest = first_instant(info.data["market_history_start"])
        if not within(as_kst(start), earliest):
            raise ValueError(f"out of range: not in {range_text(earliest)}")
        return start

    @field_validator("clock_start_time_kst")
    @classmethod
    def _a_time_of_day(cls, text: str) -> str:
        """Read as the settings are, so a time the clock cannot use is a setting's error, not a traceback."""
        time_of_day(text)
        return text


def reference(
    model: type[BaseModel] = SandboxSettings, prefix: str = "APIHUB_SANDBOX__"
) -> list[tuple[str, str, str]]:
    """Every variable the sandbox reads, as ``(name, default as written in the environment, meaning)``;
    a group's fields (``faults``, ``feed``) under its own prefix. ``docs/SANDBOX.md`` holds this table
    (``apihub sandbox --settings`` prints it; a test compares the two)."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += reference(annotation, f"{prefix}{name.upper()}__")
            continue
        default = field.get_default(call_default_factory=True)
        if default is None:
            written = ""
        elif isinstance(default, (list, dict)):
            written = json.dumps(default, default=str)
        elif isinstance(default, (date, time)):
            written = default.isoformat()
        else:
            written = str(default)
        rows.append((f"{prefix}{name.upper()}", written, field.description or ""))
    return rows


def reference_table() -> str:
    """``reference()`` as a Markdown table."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, default, meaning in reference():
        shown = f"`{default}`" if default else "(unset)"
        lines.append(f"| `{name}` | {shown} | {meaning.replace('|', '/')} |")
    return "\n".join(lines) + "\n"
