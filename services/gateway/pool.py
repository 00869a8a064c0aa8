"""Credential pools: which member of a provider's pool serves a request.

Each member (``ProviderSettings.pool``) is a limit domain of its own, with its own token and pacing: the
``default`` member (the provider's ``appkey``) is the domain ``KIS``, a member ``a`` is ``KIS/a``. A read
that names no credential goes to the member whose slot comes soonest among the provider's environment
(members that failed to get a token lately are passed over while others can serve); a call bound to an
account (an order, an account query) must name its member, by name or by account, unless the pool has
only one member to mean. Naming a member that does not exist is ``invalid`` / ``unknown_credential``; an
account call without a name in a pool of several is ``invalid`` / ``credential_required``; a KIS call whose
``CANO`` (or ``ACNT_PRDT_CD``) differs from the named member's account (or product code) is ``invalid`` /
``account_mismatch``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hubclient.catalog import TrSpec
from hubclient.models import ApiRequest, Provider
from services.gateway.clock import Clock
from services.gateway.errors import Invalid
from services.settings import DEFAULT_MEMBER, ProviderSettings

#: Catalog kinds of calls bound to an account (KIS quote/account/order; Kiwoom read/account_read/order_write).
ACCOUNT_KINDS = frozenset({"account", "order", "account_read", "order_write"})
SICK_S = 10.0  # a member whose token failed is passed over this long while others can serve
#: Pools larger than this compare a sample of members (and the last choice) instead of every one.
COMPARE_ALL_UP_TO = 8
SAMPLE = 4
#: A slot this close counts as free now (the pacing loop's timers are no finer): with limits off every
#: member is microseconds from its slot, and estimating each one sampled was a fifth of a read's Python.
FREE_WITHIN_S = 0.001


def domain_of(provider: Provider, name: str) -> str:
    """The limit domain of a member: the provider's name for ``default``, else ``<provider>/<name>``."""
    return provider.value if name == DEFAULT_MEMBER else f"{provider.value}/{name}"


def provider_of(domain: str) -> Provider:
    """The provider a limit domain belongs to."""
    return Provider(domain.split("/", 1)[0])


def account_bound(spec: TrSpec) -> bool:
    """True for calls whose answer depends on the account (orders, balances, fills)."""
    return not spec.idempotent or spec.kind in ACCOUNT_KINDS


@dataclass(frozen=True, eq=False)  # members are compared by identity
class Member:
    """One credential of a pool; ``settings`` are the provider's with this member's key, account and rate."""

    provider: Provider
    name: str
    settings: ProviderSettings
    domain: str = field(init=False)  # its limit domain (Redis keys, pacer names, partition key)

    def __post_init__(self) -> None:
        object.__setattr__(self, "domain", domain_of(self.provider, self.name))


class Pool:
    """The members of one provider and the choice among them."""

    def __init__(self, provider: Provider, settings: ProviderSettings, clock: Clock) -> None:
        self.provider = provider
        self.members = [Member(provider, name, s) for name, s in settings.pool().items()]
        self._by_name = {m.name: m for m in self.members}
        self._by_account = _by_account(self.members)
        # unnamed reads go to the members of the provider's own environment
        self._readers = [m for m in self.members if m.settings.environment == settings.environment]
        self._readers = self._readers or list(self.members)
        self._clock = clock
        self._sick_until: dict[str, float] = {}
        self._turn = 0
        self._last: Member | None = None

    def named(self, credential: str) -> Member:
        """The member a request names, by name or by account; raises ``Invalid("unknown_credential")``."""
        member = self._by_name.get(credential) or self._by_account.get(credential)
        if member is None:
            raise Invalid(
                "unknown_credential", f"no {self.provider.value} credential {credential!r} is configured"
            )
        return member

    def route(self, request: ApiRequest, spec: TrSpec, wait_s: Callable[[Member], float]) -> Member:
        """The member that serves ``request``; ``wait_s`` estimates a member's wait for it."""
        if request.credential is not None:
            member = self.named(request.credential)
            _check_account(member, request)
            return member
        if account_bound(spec):
            if len(self.members) > 1:
                raise Invalid(
                    "credential_required",
                    f"{spec.key} is bound to an account: name the credential (or its account) of the "
                    f"{self.provider.value} pool ({len(self.members)} members)",
                )
            return self.members[0]
        return self.soonest(wait_s)

    def soonest(self, wait_s: Callable[[Member], float], *, besides: str | None = None) -> Member:
        """The reader whose slot comes first (healthy ones before sick ones; ties in turn; one free now,
        within ``FREE_WITHIN_S``, ends the comparison). A large pool compares a random sample and the last
        choice (the best of a few choices balances nearly as well as comparing all, at a cost that does not
        grow with the pool)."""
        now = self._clock.monotonic()
        choices = self._readers
        if len(choices) > COMPARE_ALL_UP_TO:
            choices = random.sample(choices, SAMPLE)  # load balancing, not security
            if self._last is not None and self._last not in choices:
                choices.append(self._last)
        candidates = [m for m in choices if m.domain != besides] or choices
        healthy = [m for m in candidates if self._sick_until.get(m.domain, 0.0) <= now] or candidates
        if len(healthy) == 1:
            return healthy[0]
        self._turn = (self._turn + 1) % len(healthy)
        ordered = healthy[self._turn :] + healthy[: self._turn]
        best, best_wait = ordered[0], float("inf")
        for member in ordered:
            wait = wait_s(member)
            if wait <= FREE_WITHIN_S:  # free now: none can come sooner, so the rest need no estimate
                best = member
                break
            if wait < best_wait:
                best, best_wait = member, wait
        self._last = best
        return best

    def can_reroute(self, member_domain: str) -> bool:
        """True when another healthy reader could take over from ``member_domain``."""
        now = self._clock.monotonic()
        return any(
            m.domain != member_domain and self._sick_until.get(m.domain, 0.0) <= now for m in self._readers
        )

    def mark_sick(self, domain: str) -> None:
        """``domain`` could not get a token: pass it over for a while."""
        self._sick_until[domain] = self._clock.monotonic() + SICK_S


def account_of(settings: ProviderSettings) -> tuple[str, str | None] | None:
    """A member's account as (number, product code): ``account`` is ``50000001-01`` or ``50000001``, the
    product code then from ``product_code``; None for a member without an account."""
    if not settings.account:
        return None
    number, _, code = settings.account.partition("-")
    return number, code or settings.product_code


def account_name(settings: ProviderSettings) -> str | None:
    """A member's whole account: ``50000001-01``, or the number alone where no product code is known."""
    account = account_of(settings)
    if account is None:
        return None
    number, code = account
    return f"{number}-{code}" if code else number


def _by_account(members: list[Member]) -> dict[str, Member]:
    """Members by account: the whole number (``50000001-01``), and the number before the product code
    (``50000001``, KIS's ``CANO``) where no other member has that one."""
    found = {name: m for m in members if (name := account_name(m.settings))}
    numbers = Counter(whole.split("-")[0] for whole in found)
    for whole, member in list(found.items()):
        number = whole.split("-")[0]
        if numbers[number] == 1:
            found.setdefault(number, member)
    return found


def _check_account(member: Member, request: ApiRequest) -> None:
    """A KIS call naming an account (``CANO``, ``ACNT_PRDT_CD``) must name its member's, where known.

    What is compared is what the broker would get: the KIS adapter sends every value as a string,
    upper-cases a body's keys and adds the continuation's fields to the params, so ``cano``, a number or
    a continuation field name the account as well as ``CANO`` in the params does."""
    account = account_of(member.settings)
    if account is None or member.provider is not Provider.KIS:
        return
    fields = {**request.params, **(request.continuation or {})}
    for param, own in zip(("CANO", "ACNT_PRDT_CD"), account, strict=True):
        named = {str(v) for k, v in fields.items() if k.upper() == param and v is not None and v != ""}
        if own and named - {own}:
            raise Invalid(
                "account_mismatch",
                f"params {param} is not the account of credential {member.name!r}; name the account's "
                "credential",
            )


def pools(providers: Mapping[Provider, ProviderSettings], clock: Clock) -> dict[Provider, Pool]:
    """The pool of every configured provider."""
    return {p: Pool(p, s, clock) for p, s in providers.items()}
