"""``soak.png``: memory per process, lag, and calls per second per provider over the run (matplotlib, Agg).

Four panels on one time axis: RSS of the hub's processes (gateway, workers, feed), RSS of the rest (Kafka,
Redis, the sandbox, the soak itself; apart, so their size does not flatten the hub's lines), consumer lag
(the gateway's and each worker group's), and arrivals per second at the referee per provider with the
key's limit dashed. A dotted line marks the end of the warm-up.

``series`` turns the samples into plain lists (pure, tested); ``write_png`` draws them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.soak.goals import JUDGED as HUB_PROCESSES


@dataclass
class Series:
    """What the panels show, on one time axis in minutes."""

    minutes: list[float] = field(default_factory=list)
    rss_mib: dict[str, list[float | None]] = field(default_factory=dict)
    lag: dict[str, list[float | None]] = field(default_factory=dict)
    calls_per_s: dict[str, list[float | None]] = field(default_factory=dict)  # at the referee, per interval
    limits: dict[str, int] = field(default_factory=dict)


def series(samples: Sequence[Mapping[str, Any]]) -> Series:
    """The plotted series of ``samples`` (a rate is None where a sample or its predecessor lacks it)."""
    out = Series()
    names = list(dict.fromkeys(name for s in samples for name in s["rss_kib"]))
    workers = list(dict.fromkeys(name for s in samples for name in (s.get("group_lag") or {})))
    providers = list(dict.fromkeys(p for s in samples for p in (s.get("referee") or {})))
    out.rss_mib = {name: [] for name in names}
    out.lag = {"gateway (api.requests)": [], **{f"{w} group": [] for w in workers}}
    out.calls_per_s = {p: [] for p in providers}
    for i, sample in enumerate(samples):
        out.minutes.append(float(sample["t_s"]) / 60)
        for name in names:
            kib = sample["rss_kib"].get(name)
            out.rss_mib[name].append(None if kib is None else kib / 1024)
        out.lag["gateway (api.requests)"].append((sample.get("gateway") or {}).get("consumer_lag"))
        lags = sample.get("group_lag") or {}
        for w in workers:
            out.lag[f"{w} group"].append(lags.get(w))
        referee = sample.get("referee") or {}
        before = (samples[i - 1].get("referee") or {}) if i else {}
        dt = float(sample["t_s"]) - float(samples[i - 1]["t_s"]) if i else 0.0
        for p in providers:
            now, then = referee.get(p), before.get(p)
            if now:
                out.limits[p] = int(now.get("rate_per_s", 0))
            rate = (now["requests"] - then["requests"]) / dt if now and then and dt > 0 else None
            out.calls_per_s[p].append(rate)
    return out


def write_png(path: Path, data: Series, *, warmup_min: float, title: str) -> None:
    """Draw the four panels into ``path`` (PNG, 1200x1200 px): the hub's memory, the rest's memory, lag,
    calls per second."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (memory, infra, lag, calls) = plt.subplots(
        4, 1, figsize=(12, 12), sharex=True, constrained_layout=True
    )
    fig.suptitle(title)
    for name, values in data.rss_mib.items():
        axis = memory if name in HUB_PROCESSES else infra
        axis.plot(data.minutes, _nan(values), label=name, linewidth=1.2)
    memory.set_ylabel("RSS of the hub's\nprocesses (MiB)")
    infra.set_ylabel("RSS of Kafka, Redis,\nthe sandbox, the soak (MiB)")
    for axis in (memory, infra):
        axis.legend(fontsize=8, ncol=3, loc="upper left")
    for name, values in data.lag.items():
        lag.plot(data.minutes, _nan(values), label=name, linewidth=1.2)
    lag.set_ylabel("lag (records)")
    lag.legend(fontsize=8, loc="upper left")
    for provider, values in data.calls_per_s.items():
        line = calls.plot(data.minutes, _nan(values), label=f"{provider} arrivals/s", linewidth=1.2)[0]
        if data.limits.get(provider):
            calls.axhline(data.limits[provider], color=line.get_color(), linestyle="--", linewidth=0.8)
    calls.set_ylabel("calls/s at the referee\n(dashed: the key's limit)")
    calls.set_xlabel("minutes into the run")
    calls.legend(fontsize=8, loc="lower right")
    for axis in (memory, infra, lag, calls):
        axis.axvline(warmup_min, color="grey", linestyle=":", linewidth=1)
        axis.grid(True, alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _nan(values: Sequence[float | None]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]
