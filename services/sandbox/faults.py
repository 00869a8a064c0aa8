"""Faults on demand: arrival jitter, latency, 5xx answers, cut connections, maintenance, timed-out orders.

Configured by ``SandboxSettings.faults`` at start-up and changed at runtime with ``POST /_sandbox/faults``
(a partial ``FaultSettings`` object; ``{"invalidate_tokens_now": true}`` runs a maintenance at once).
Dice are seeded (``seed``) so a run is reproducible. Each provider request rolls once, after it has been
counted as an arrival: drop first, then latency, then the 5xx error. Maintenance (every token of every
environment dies) runs lazily on the next request once ``token_invalidate_every_s`` simulated seconds have
passed. The order timeout is rolled by the order handlers after the order was accepted.

Arrival jitter (``arrival_jitter_ms`` = J) comes earlier: a request waits a delay drawn uniformly from
[0, J] ms *before* the referee counts it, standing for the unknown way from a client to a real broker's
counter (network, accept queue), so concurrent requests overtake each other and arrive reordered and
bunched. Its draws come from dice of their own (seeded from ``seed``, see ``_jitter_dice``), so switching
it on or off never shifts the other faults' sequence, and with J = 0 nothing is drawn at all.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.logs import log_event
from services.sandbox.clock import SimClock
from services.sandbox.settings import FaultSettings

log = logging.getLogger(__name__)


def _jitter_dice(seed: int) -> random.Random:
    """The arrival-jitter dice: derived from ``seed`` but not the same stream as the other faults' dice."""
    return random.Random(f"arrival-jitter/{seed}")


@dataclass(frozen=True, slots=True)
class FaultRoll:
    """What to do to one request."""

    drop: bool = False
    latency_s: float = 0.0
    error: bool = False


class Faults:
    """Current fault settings, their dice and the maintenance schedule."""

    def __init__(
        self, settings: FaultSettings, clock: SimClock, invalidate_tokens: Callable[[], int]
    ) -> None:
        self._initial = settings
        self._clock = clock
        self._invalidate = invalidate_tokens
        self._settings = settings
        self._rng = random.Random(settings.seed)
        self._jitter_rng = _jitter_dice(settings.seed)
        self._last_maintenance_s = clock.monotonic()
        self.maintenances = 0

    @property
    def settings(self) -> FaultSettings:
        """The fault settings in force."""
        return self._settings

    def update(self, patch: dict[str, Any]) -> FaultSettings:
        """Merge a partial settings object (validated; raises pydantic.ValidationError)."""
        patch = dict(patch)
        now = bool(patch.pop("invalidate_tokens_now", False))
        merged = FaultSettings.model_validate({**self._settings.model_dump(), **patch})
        if merged.seed != self._settings.seed:
            self._rng = random.Random(merged.seed)
            self._jitter_rng = _jitter_dice(merged.seed)
        if merged.token_invalidate_every_s != self._settings.token_invalidate_every_s:
            self._last_maintenance_s = self._clock.monotonic()
        self._settings = merged
        log_event(log, "sandbox.faults.updated", faults=merged.model_dump(mode="json"))
        if now:
            self.invalidate_now()
        return merged

    def reset(self) -> None:
        """Back to the start-up fault settings."""
        self._settings = self._initial
        self._rng = random.Random(self._initial.seed)
        self._jitter_rng = _jitter_dice(self._initial.seed)
        self._last_maintenance_s = self._clock.monotonic()

    def invalidate_now(self) -> int:
        """Maintenance: kill every live token now; returns how many died."""
        count = self._invalidate()
        self.maintenances += 1
        log_event(log, "sandbox.maintenance", tokens_invalidated=count)
        return count

    def maintain(self) -> None:
        """Run the periodic maintenance if it is due (called on every provider request)."""
        every_s = self._settings.token_invalidate_every_s
        if every_s <= 0:
            return
        mono = self._clock.monotonic()
        if mono - self._last_maintenance_s >= every_s:
            self._last_maintenance_s = mono
            self.invalidate_now()

    def _applies(self, env_id: str) -> bool:
        targets = self._settings.targets
        return not targets or env_id in targets

    def arrival_delay_s(self, env_id: str) -> float:
        """Real seconds a request to ``env_id`` waits before it arrives: uniform [0, J], or 0 (off)."""
        jitter_ms = self._settings.arrival_jitter_ms
        if jitter_ms <= 0 or not self._applies(env_id):
            return 0.0
        return self._jitter_rng.uniform(0.0, jitter_ms) / 1000.0

    def roll(self, env_id: str) -> FaultRoll:
        """Roll the dice for one request to ``env_id``."""
        s = self._settings
        if not self._applies(env_id):
            return FaultRoll()
        rng = self._rng
        if s.drop_rate and rng.random() < s.drop_rate:
            return FaultRoll(drop=True)
        latency_ms = s.latency_ms
        if s.latency_distribution == "uniform":
            latency_ms = rng.uniform(s.latency_ms - s.latency_jitter_ms, s.latency_ms + s.latency_jitter_ms)
        elif s.latency_distribution == "exponential" and s.latency_ms > 0:
            latency_ms = rng.expovariate(1.0 / s.latency_ms)
        elif s.latency_distribution == "normal":
            latency_ms = rng.gauss(s.latency_ms, s.latency_jitter_ms)
        error = bool(s.error_rate) and rng.random() < s.error_rate
        return FaultRoll(latency_s=max(0.0, latency_ms) / 1000.0, error=error)

    def order_times_out(self, env_id: str) -> bool:
        """Should this accepted order be answered as a timeout?"""
        rate = self._settings.order_timeout_rate
        return self._applies(env_id) and bool(rate) and self._rng.random() < rate

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready view for ``GET /_sandbox/faults``."""
        return {**self._settings.model_dump(), "maintenances": self.maintenances}
