"""Limit classes: every call counts against its credential's limit, some also against a limit of their class.

KIS counts account and order calls against its ledger as well (``EGW00215``); Kiwoom limits reads and
orders separately (``1700`` names the call's quota). The catalog names each endpoint's ``LimitClass``;
``class_rates`` says which classes of a provider have a limit of their own. Such a class is a limit
domain of its own (``KIS:ledger``, ``KIWOOM:order``): a ``DomainLimiter`` whose schedule lives in the same
slot store as the key's, so it is shared by every instance and survives crashes the same way.

``ClassLimiter`` gives every send a slot in both: first its class's, then the key's no earlier than
that. When the key's slot comes later, the class's slot is moved to it before anything leaves, so each
log records the moment the send really goes. Classes without a limit of their own (KIS reads) use the
key's slot alone, exactly as before classes existed. A throttle answer slows the domain it names: the
class for ``EGW00215`` and Kiwoom's ``1700``, the key for ``EGW00201``.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubclient.catalog import LimitClass
from services.gateway.clock import Clock
from services.gateway.limiter import DomainLimiter, Slot
from services.settings import KisSettings, KiwoomSettings, ProviderSettings

#: A key slot this much later than the class's moves the class's slot; less is the own lag ``sent`` measures.
POSTPONE_MIN_S = 0.001


def class_rates(settings: ProviderSettings) -> dict[LimitClass, float]:
    """The classes of a provider that have a limit of their own, with its rate (calls per second)."""
    if isinstance(settings, KisSettings):
        return {LimitClass.LEDGER: settings.ledger_rate_per_s}
    if isinstance(settings, KiwoomSettings):
        return {LimitClass.QUERY: settings.query_rate_per_s, LimitClass.ORDER: settings.order_rate_per_s}
    return {}


def class_domain(domain: str, limit_class: LimitClass) -> str:
    """The limit domain of a credential's class with a limit of its own, e.g. ``KIS:ledger``."""
    return f"{domain}:{limit_class.value}"


def pacer_name(domain: str, limit_class: LimitClass) -> str:
    """The name of a class's queue: the credential's domain for reads (as before classes), else the
    class domain."""
    return domain if limit_class is LimitClass.QUERY else class_domain(domain, limit_class)


@dataclass
class PacedSlot:
    """One send's slots: the key's, and its class's when the class has a limit of its own."""

    key: Slot
    own: Slot | None = None

    @property
    def start_s(self) -> float:
        """When the send may leave (monotonic seconds): no earlier than either slot."""
        return self.key.start_s if self.own is None else max(self.key.start_s, self.own.start_s)


class ClassLimiter:
    """Paces one limit class inside its credential's overall limit."""

    def __init__(
        self, limit_class: LimitClass, key: DomainLimiter, own: DomainLimiter | None, *, clock: Clock
    ) -> None:
        self.limit_class = limit_class
        self.key = key
        self.own = own
        self._clock = clock

    @property
    def interval_s(self) -> float:
        """Seconds between this class's slots at most demand: the slower of its two paces."""
        return self.key.interval_s if self.own is None else max(self.key.interval_s, self.own.interval_s)

    def next_slot_in_s(self) -> float:
        """How long a reservation made now would wait, as far as this process knows."""
        wait = self.key.next_slot_in_s()
        return wait if self.own is None else max(wait, self.own.next_slot_in_s())

    async def reserve(self) -> PacedSlot:
        """Record a slot in the class's domain and one in the key's no earlier; never raises for Redis."""
        if self.own is None:
            return PacedSlot(await self.key.reserve())
        own = await self.own.reserve()
        now = self._clock.monotonic()
        key = await self.key.reserve(not_before_s=max(0.0, own.start_s - now))
        if key.start_s - own.start_s > POSTPONE_MIN_S:
            await self.own.postpone(own, key.start_s)
        return PacedSlot(key, own)

    async def reserve_run(self, count: int) -> list[PacedSlot]:
        """Up to ``count`` slots in one step; a class with a limit of its own reserves one at a time."""
        if self.own is not None or count <= 1:
            return [await self.reserve()]
        return [PacedSlot(key) for key in await self.key.reserve_run(count)]

    def usable(self, slot: PacedSlot) -> bool:
        """Whether a slot reserved ahead may still be sent now (see ``DomainLimiter.usable``)."""
        return self.key.usable(slot.key) and (
            self.own is None or slot.own is None or self.own.usable(slot.own)
        )

    async def sent(self, slot: PacedSlot) -> None:
        """The send is leaving: both domains measure their lag and extend a late arrival bound."""
        await self.key.sent(slot.key)
        if self.own is not None and slot.own is not None:
            await self.own.sent(slot.own)

    def throttled(self, *, class_limit: bool) -> None:
        """The broker said slow down: the class when it named the class's limit (and has one), else the
        key."""
        if class_limit and self.own is not None:
            self.own.throttled()
        else:
            self.key.throttled()

    def succeeded(self) -> None:
        """A call went through: both win back a little of their pace."""
        self.key.succeeded()
        if self.own is not None:
            self.own.succeeded()
