"""The soak's four goals, judged from its samples and end-of-run facts (pure functions).

1. **Memory flat after warm-up**: for every process of the hub (gateway, the three workers, the feed), the
   median RSS over the last ``window_s`` of the run is less than ``MAX_GROWTH`` (5 %) above the median over
   the ``window_s`` after warm-up, not counting what a bounded cache the process reports holds (the
   gateway's shared-read cache of past sessions' bars, ``apihub_shared_cache_bytes``, which fills up to
   ``APIHUB_SHARED_CACHE_BYTES`` as the history collector asks for past days; the RSS growth with it is
   reported beside). Kafka, Redis, the sandbox and the soak process itself are reported, not
   judged: the broker's JVM grows its heap up to ``-Xmx`` by design, Redis's memory is the allocator's
   (an answer's idempotency record lives until a minute past its deadline, so the records level off within
   the warm-up; its growth per request is reported), the sandbox stands in for the brokers, and the soak
   keeps its samples and latencies.
2. **Zero lost requests**: every request of the load generator was answered or refused with a reason
   (``lost = sent - answered - refused = 0``, nothing pending at the end).
3. **Zero over-limit arrivals** at the referee, per provider, the limit classes' windows included, and the
   most arrivals in any sliding second within the key's limit.
4. **Zero unexpected errors**. *Expected* is only a refusal the hub documents for load it cannot serve in
   time, ``rejected:deadline_unreachable``, and only while rare: at most ``MAX_EXPECTED_SHARE`` (0.1 %) of
   the generator's requests; past that, they all count as unexpected. *Unexpected* is everything else that
   is not a success: any other non-ok answer to the generator or a failed send; a gateway response with a
   status other than ok or rejected, or a rejection with a reason other than deadline_unreachable; an
   upstream call whose outcome is not ok (throttled, transient, business error ...); a token refresh not
   ``issued``; a gateway dead letter; an answer published after its deadline; a worker task whose outcome
   is not ``done``; a record on ``api.requests.dlq`` or ``workers.dlq``; a process that exited during the
   run; a gateway or worker metrics endpoint that did not answer a sample.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_GROWTH = 0.05
MAX_EXPECTED_SHARE = 0.001
EXPECTED_REFUSALS = frozenset({"rejected:deadline_unreachable"})
JUDGED = ("gateway", "history-collector", "verification-worker", "recovery-worker", "feed")
MONITORED_SOURCES = ("gateway", "history-collector", "verification-worker", "recovery-worker")


@dataclass
class Goal:
    """One goal: what it asks, what was measured, whether it was met, and the details behind it."""

    name: str
    target: str
    measured: str
    met: bool
    details: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Growth:
    """One process's memory: the median RSS after warm-up and at the end (KiB), the medians of what its
    bounded cache holds in the same windows (KiB, 0 for a process without one), and the growth."""

    process: str
    base_kib: float | None
    end_kib: float | None
    max_kib: float | None
    judged: bool
    cache_base_kib: float = 0.0
    cache_end_kib: float = 0.0

    @property
    def growth(self) -> float | None:
        """(end - base) / base without the cache; None without both medians."""
        if not self.base_kib or self.end_kib is None:
            return None
        return (self.end_kib - self.cache_end_kib) / (self.base_kib - self.cache_base_kib) - 1

    @property
    def rss_growth(self) -> float | None:
        """(end - base) / base, the cache included."""
        if not self.base_kib or self.end_kib is None:
            return None
        return self.end_kib / self.base_kib - 1


def _cache_kib(process: str, sample: Mapping[str, Any]) -> float | None:
    """What ``process``'s bounded cache held at ``sample`` (KiB); None when not read."""
    if process != "gateway":
        return 0.0
    figures = sample.get("gateway")
    return None if not figures else float(figures.get("shared_cache_bytes", 0.0)) / 1024


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def memory_growth(samples: Sequence[Mapping[str, Any]], warmup_s: float, window_s: float) -> list[Growth]:
    """Every sampled process's growth from the window after warm-up to the run's last window."""
    if not samples:
        return []
    last_t = float(samples[-1]["t_s"])
    names = list(dict.fromkeys(name for s in samples for name in s["rss_kib"]))
    out = []
    for name in names:
        series = [(float(s["t_s"]), s["rss_kib"].get(name)) for s in samples]
        values = [(t, float(v)) for t, v in series if v is not None]
        base = [v for t, v in values if warmup_s <= t < warmup_s + window_s]
        end = [v for t, v in values if t > last_t - window_s and t >= warmup_s + window_s]
        caches = [(float(s["t_s"]), _cache_kib(name, s)) for s in samples]
        cache = [(t, c) for t, c in caches if c is not None]
        cache_base = [c for t, c in cache if warmup_s <= t < warmup_s + window_s]
        cache_end = [c for t, c in cache if t > last_t - window_s and t >= warmup_s + window_s]
        out.append(
            Growth(
                name,
                _median(base),
                _median(end),
                max((v for _, v in values), default=None),
                name in JUDGED,
                _median(cache_base) or 0.0,
                _median(cache_end) or 0.0,
            )
        )
    return out


def memory_goal(growths: Sequence[Growth]) -> Goal:
    """Goal 1: every judged process grew less than ``MAX_GROWTH`` after warm-up."""
    judged = [g for g in growths if g.judged]
    missing = [g.process for g in judged if g.growth is None] + [
        p for p in JUDGED if p not in {g.process for g in judged}
    ]
    worst = max((g for g in judged if g.growth is not None), key=lambda g: g.growth or 0.0, default=None)
    met = not missing and all((g.growth or 0.0) < MAX_GROWTH for g in judged)
    measured = "no samples" if worst is None else f"largest growth {worst.growth:+.1%} ({worst.process})"
    details = [f"not enough samples after warm-up for {', '.join(missing)}"] if missing else []
    details += [
        f"{g.process}: {g.growth:+.1%}" for g in judged if g.growth is not None and g.growth >= MAX_GROWTH
    ]
    return Goal(
        "memory flat after warm-up",
        f"growth < {MAX_GROWTH:.0%} per hub process (a bounded cache left out)",
        measured,
        met,
        details,
    )


def lost_goal(load: Mapping[str, Mapping[str, Any]]) -> Goal:
    """Goal 2: nothing the load generator sent was lost or left pending."""
    sent = sum(int(t["sent"]) for t in load.values())
    lost = sum(int(t["lost"]) for t in load.values())
    pending = sum(int(t["pending"]) for t in load.values())
    details = [
        f"{p}: lost {t['lost']}, pending {t['pending']}" for p, t in load.items() if t["lost"] or t["pending"]
    ]
    measured = f"{lost} lost, {pending} pending of {sent} sent"
    return Goal(
        "zero lost requests",
        "sent - answered - refused = 0",
        measured,
        lost == 0 and pending == 0 and sent > 0,
        details,
    )


def over_limit_goal(
    referee: Mapping[str, Mapping[str, int]] | None, sandbox_lag: Mapping[str, float] | None = None
) -> Goal:
    """Goal 3: the referee counted no arrival over a limit and no second above the key's limit. When it did,
    the details give the sandbox's longest event-loop stall, which can bunch arrivals on its own."""
    if not referee:
        return Goal("zero over-limit arrivals", "0 at the referee", "the referee never answered", False)
    over = {p: r["over_limit"] + r["class_over_limit"] for p, r in referee.items()}
    above = [p for p, r in referee.items() if r["rate_per_s"] and r["max_in_window"] > r["rate_per_s"]]
    measured = ", ".join(
        f"{p} {over[p]} over, at most {r['max_in_window']}/{r['rate_per_s']} in a second"
        for p, r in referee.items()
    )
    met = not any(over.values()) and not above
    details = [f"{p}: most in a second above the limit" for p in above]
    if not met and sandbox_lag:
        details.append(
            f"the sandbox's event loop stalled up to {sandbox_lag.get('max_ms', 0):.0f} ms "
            f"({sandbox_lag.get('over_50ms', 0):.0f} wake-ups over 50 ms late): arrivals held up by a stall "
            "are counted together when it ends"
        )
    return Goal("zero over-limit arrivals", "0 at the referee", measured, met, details)


def _nonzero(
    counts: Mapping[str, float] | None, allowed: frozenset[str], label: str
) -> list[tuple[str, int]]:
    return [(f"{label} {key}", int(n)) for key, n in (counts or {}).items() if key not in allowed and n > 0]


def unexpected_errors(
    samples: Sequence[Mapping[str, Any]],
    load: Mapping[str, Mapping[str, Any]],
    dead_letters: Mapping[str, int],
    exited: Sequence[str],
) -> tuple[list[tuple[str, int]], int]:
    """Every unexpected error as (what, count), and the number of expected refusals."""
    last = samples[-1] if samples else {}
    out: list[tuple[str, int]] = []
    sent = sum(int(t["sent"]) for t in load.values())
    expected = 0
    for provider, tally in load.items():
        for key, n in tally["refused"].items():
            if key in EXPECTED_REFUSALS:
                expected += int(n)
            else:
                out.append((f"load {provider} answered {key}", int(n)))
        out += [(f"load {provider} send failed {key}", int(n)) for key, n in tally["send_failed"].items()]
    if sent and expected > MAX_EXPECTED_SHARE * sent:
        out.append((f"load: expected refusals above {MAX_EXPECTED_SHARE:.1%} of {sent} sent", expected))
    gateway = last.get("gateway") or {}
    statuses: dict[str, float] = {}
    for key, n in (gateway.get("responses") or {}).items():
        status = key.rsplit("/", 1)[-1]
        statuses[status] = statuses.get(status, 0.0) + n
    out += _nonzero(statuses, frozenset({"ok", "rejected"}), "gateway responses")
    reasons: dict[str, float] = {}
    for key, n in (gateway.get("rejections") or {}).items():
        reason = key.rsplit("/", 1)[-1]
        reasons[reason] = reasons.get(reason, 0.0) + n
    out += _nonzero(reasons, frozenset({"deadline_unreachable"}), "gateway rejected")
    other = int(statuses.get("rejected", 0) - sum(reasons.values()))
    if other > 0:
        out.append(("gateway rejected (not by pacing)", other))
    upstream = {k: v for k, v in (gateway.get("upstream") or {}).items() if not k.endswith("/ok")}
    out += _nonzero(upstream, frozenset(), "upstream")
    tokens = {k: v for k, v in (gateway.get("tokens") or {}).items() if not k.endswith("/issued")}
    out += _nonzero(tokens, frozenset(), "token refresh")
    out += _nonzero(gateway.get("dlq"), frozenset(), "gateway dead letter")
    if gateway.get("late"):
        out.append(("gateway answered after the deadline", int(gateway["late"])))
    for name, figures in (last.get("workers") or {}).items():
        out += _nonzero((figures or {}).get("tasks"), frozenset({"done"}), f"{name} tasks")
    out += [(f"records on {topic}", n) for topic, n in dead_letters.items() if n > 0]
    out += [(f"process exited: {line}", 1) for line in exited]
    unanswered = sum(
        1 for s in samples for e in s.get("errors", []) if e.split(":", 1)[0] in MONITORED_SOURCES
    )
    if unanswered:
        out.append(("metrics endpoint did not answer a sample", unanswered))
    return out, expected


def errors_goal(errors: Sequence[tuple[str, int]], expected: int, sent: int) -> Goal:
    """Goal 4 from ``unexpected_errors``'s result."""
    total = sum(n for _, n in errors)
    share = f"{expected / sent:.2%}" if sent else "-"
    measured = f"{total} unexpected; {expected} expected refusals ({share} of the load)"
    return Goal(
        "zero unexpected errors",
        "0 (see the definition)",
        measured,
        total == 0,
        [f"{w}: {n}" for w, n in errors],
    )
