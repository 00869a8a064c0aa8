"""``SOAK.md``: the command, the commit, when and how long, the goals and whether each was met, and the
samples summarised; plus where it may be written.

Like the benchmarks' report, ``docs/soak/`` takes only a full run (at least ``MIN_PUBLISHED_MINUTES``, not
``--short``) of a tree without uncommitted changes that stayed at one commit; anything else goes to the
run's own directory under ``.local/soak/``. Rendering is pure; ``publish_target`` asks git.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.report import git_head, uncommitted_changes
from tests.soak.goals import Goal, Growth

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = REPO / "docs" / "soak"
MIN_PUBLISHED_MINUTES = 10.0
ROWS = 10  # rows of the samples table


@dataclass
class RunInfo:
    """What was run, on which tree, and with which settings."""

    command: str
    commit: str
    changes: list[str]
    started_local: str
    started_utc: str
    minutes: float
    short: bool
    duration_s: float = 0.0
    warmup_s: float = 0.0
    window_s: float = 0.0
    sample_s: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    changed_settings: dict[str, str] = field(default_factory=dict)
    feed: dict[str, str] = field(default_factory=dict)
    machine: dict[str, str] = field(default_factory=dict)
    run_dir: str = ""
    warm_reads: int = 0


def publish_target(info: RunInfo, requested: Path | None, run_dir: Path) -> tuple[Path, str]:
    """The directory for ``SOAK.md`` and ``soak.png``, and why it is not ``docs/soak/`` ('' when it is)."""
    wanted = (requested or PUBLISHED).resolve()
    if wanted != PUBLISHED.resolve():
        return wanted, ""
    reasons = []
    if info.short or info.minutes < MIN_PUBLISHED_MINUTES:
        reasons.append(f"not a full run (at least {MIN_PUBLISHED_MINUTES:.0f} minutes, without --short)")
    changes = info.changes or uncommitted_changes()
    if changes:
        shown = "; ".join(changes[:5]) + (" ..." if len(changes) > 5 else "")
        reasons.append(f"the tree has uncommitted changes ({shown})")
    head = git_head()
    if head != info.commit:
        reasons.append(f"HEAD moved from {info.commit} to {head} during the run")
    if reasons:
        return run_dir.resolve(), "; ".join(reasons)
    return wanted, ""


def _mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f}"


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


Getter = Callable[[Mapping[str, Any]], float | None]


def _referee_requests(provider: str) -> Getter:
    def get(sample: Mapping[str, Any]) -> float | None:
        return ((sample.get("referee") or {}).get(provider) or {}).get("requests")

    return get


def _answered(sample: Mapping[str, Any]) -> float | None:
    load = sample.get("load")
    return None if not load else float(sum(int(t["answered"]) for t in load.values()))


def _gateway(field_name: str) -> Getter:
    def get(sample: Mapping[str, Any]) -> float | None:
        return (sample.get("gateway") or {}).get(field_name)

    return get


def _worker_lag(sample: Mapping[str, Any]) -> float | None:
    lags = sample.get("group_lag")
    return None if not lags else float(sum(lags.values()))


def _rate(get: Getter, first: Mapping[str, Any], last: Mapping[str, Any]) -> str:
    x, y, dt = get(first), get(last), float(last["t_s"]) - float(first["t_s"])
    return "-" if x is None or y is None or dt <= 0 else f"{(y - x) / dt:.1f}"


def _peak(get: Getter, inside: Sequence[Mapping[str, Any]]) -> str:
    values = [v for v in (get(s) for s in inside) if v is not None]
    return "-" if not values else f"{max(values):.0f}"


def summary_rows(samples: Sequence[Mapping[str, Any]], rows: int = ROWS) -> list[list[str]]:
    """The samples in ``rows`` equal spans of the run: per span, arrivals per second at the referee per
    provider, answers per second to the load, the largest gateway lag, worker lag (all groups) and queue
    depth, and the RSS at the span's last sample (MiB) of the gateway, the workers together, the feed,
    Kafka and Redis."""
    if len(samples) < 2:
        return []
    span = max(float(samples[-1]["t_s"]) / rows, 1e-9)
    out = []
    for r in range(rows):
        lo, hi = r * span, (r + 1) * span
        inside = [s for s in samples if lo < float(s["t_s"]) <= hi + 1e-6]
        if not inside:
            continue
        before = [s for s in samples if float(s["t_s"]) <= lo]
        first, last = (before[-1] if before else samples[0]), inside[-1]
        rss = last["rss_kib"]
        workers = [rss.get(w) for w in ("history-collector", "verification-worker", "recovery-worker")]
        workers_kib = None if None in workers else sum(w for w in workers if w is not None)
        out.append(
            [
                f"{lo / 60:.1f}-{hi / 60:.1f}",
                _rate(_referee_requests("KIS"), first, last),
                _rate(_referee_requests("KIWOOM"), first, last),
                _rate(_answered, first, last),
                _peak(_gateway("consumer_lag"), inside),
                _peak(_worker_lag, inside),
                _peak(_gateway("queue_depth"), inside),
                _mib(rss.get("gateway")),
                _mib(workers_kib),
                _mib(rss.get("feed")),
                _mib(rss.get("kafka")),
                _mib(rss.get("redis")),
            ]
        )
    return out


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]


def render(
    info: RunInfo,
    goals: Sequence[Goal],
    growths: Sequence[Growth],
    samples: Sequence[Mapping[str, Any]],
    load: Mapping[str, Mapping[str, Any]],
    dead_letters: Mapping[str, int],
    redis_per_request: float | None,
) -> str:
    """The whole of ``SOAK.md``."""
    met = all(g.met for g in goals)
    last = samples[-1] if samples else {}
    lines = [
        "# Soak: the production profile" + (" (short smoke run)" if info.short else ""),
        "",
        f"Written by `{info.command}`. **{'Every goal met' if met else 'Goals MISSED'}.**",
        "",
        f"- commit: `{info.commit}`" + (" (with uncommitted changes)" if info.changes else ""),
        f"- started: {info.started_local}"
        + ("" if info.started_local == f"{info.started_utc} UTC" else f" ({info.started_utc} UTC)")
        + "; measured for "
        f"{info.duration_s / 60:.1f} minutes ({info.minutes:g} asked), sampled every {info.sample_s:g} s, "
        f"warm-up {info.warmup_s:.0f} s",
        f"- load: reads through the hub at {', '.join(f'{p} {r:g}/s' for p, r in info.rates.items())}"
        " (80 % of each key's read limit in `.env.prod.example`), `normal` priority, 10 s deadline; workers: "
        + ", ".join(f"{n} on {t}" for t, n in info.published.items()),
        f"- before the measured run, {info.warm_reads} reads one after the other through the hub (tokens "
        "issued, the stand-in's market computed); the referee's counts include them",
        f"- raw samples, logs and the machine-readable summary: `{info.run_dir}`",
        "",
        "## Goals",
        "",
        *_table(
            ["goal", "target", "measured", "met"],
            [[g.name, g.target, g.measured, "yes" if g.met else "**NO**"] for g in goals],
        ),
    ]
    for goal in goals:
        if goal.details:
            lines += ["", f"{goal.name}:", *[f"- {d}" for d in goal.details]]
    lines += [
        "",
        "Expected errors: a `rejected` answer with reason `deadline_unreachable` (the hub's documented "
        "refusal of a request it cannot serve before its deadline), and only while at most 0.1 % of the "
        "load; anything else that is not a success counts as unexpected (see `tests/soak/goals.py`).",
        "",
        "## Memory (RSS, MiB)",
        "",
        f"Median over the {info.window_s:.0f} s after warm-up and over the last {info.window_s:.0f} s "
        "of the run. *Cache*: what the gateway's shared-read cache of past sessions' bars held at the end "
        "(`apihub_shared_cache_bytes`, bounded by `APIHUB_SHARED_CACHE_BYTES`); *growth* leaves it out, "
        "*RSS growth* counts it.",
        "",
        *_table(
            ["process", "after warm-up", "at the end", "max", "cache", "growth", "RSS growth", "judged"],
            [
                [
                    g.process,
                    _mib(g.base_kib),
                    _mib(g.end_kib),
                    _mib(g.max_kib),
                    _mib(g.cache_end_kib) if g.cache_end_kib else "-",
                    "-" if g.growth is None else f"{g.growth:+.1%}",
                    "-" if g.rss_growth is None else f"{g.rss_growth:+.1%}",
                    "yes" if g.judged else "no",
                ]
                for g in growths
            ],
        ),
    ]
    if redis_per_request is not None:
        lines += [
            "",
            f"Redis's used memory grew by {redis_per_request:.0f} bytes per answered request from the first "
            "sample to the last (an idempotency record is kept until its request's deadline and a minute "
            "more, so the records' share levels off within the warm-up).",
        ]
    lines += ["", "## Load generator", ""]
    lines += _table(
        [
            "provider",
            "sent",
            "answered",
            "refused",
            "timed out",
            "send failed",
            "lost",
            "latency p50 / p99 / max (ms)",
        ],
        [
            [
                p,
                str(t["sent"]),
                str(t["answered"]),
                ", ".join(f"{k} {v}" for k, v in t["refused"].items()) or "0",
                str(t["timed_out"]),
                ", ".join(f"{k} {v}" for k, v in t["send_failed"].items()) or "0",
                str(t["lost"]),
                " / ".join(_cell(t["latency_ms"].get(k)) for k in ("p50", "p99", "max")),
            ]
            for p, t in load.items()
        ],
    )
    gateway = last.get("gateway") or {}
    lines += ["", "## Hub and workers at the end", ""]
    lines += _table(["what", "counts"], _end_rows(gateway, last, dead_letters))
    lines += ["", "## Samples summarised", ""]
    lines += _table(
        [
            "minutes",
            "KIS calls/s",
            "Kiwoom calls/s",
            "load answered/s",
            "gateway lag (max)",
            "worker lag (max)",
            "queue (max)",
            "gateway MiB",
            "workers MiB",
            "feed MiB",
            "Kafka MiB",
            "Redis MiB",
        ],
        summary_rows(samples),
    )
    lines += ["", "![memory, lag and calls per second](soak.png)", "", "## Profile", ""]
    lines += [
        "The gateway ran with `.env.prod.example`, except (as compose sets them, or the sandbox "
        "standing in):",
        "",
    ]
    lines += [f"- `{k}={v}`" for k, v in info.changed_settings.items()]
    lines += ["", "The sandbox and the feed: " + ", ".join(f"`{k}={v}`" for k, v in info.feed.items()), ""]
    lines += ["Machine:", "", *[f"- {k}: {v}" for k, v in info.machine.items()], ""]
    return "\n".join(lines)


def _end_rows(
    gateway: Mapping[str, Any], last: Mapping[str, Any], dead_letters: Mapping[str, int]
) -> list[list[str]]:
    def counts(values: Mapping[str, float] | None) -> str:
        return ", ".join(f"{k} {v:.0f}" for k, v in sorted((values or {}).items())) or "-"

    rows = [
        ["gateway responses (caller/status)", counts(gateway.get("responses"))],
        ["pacing refusals (provider/reason)", counts(gateway.get("rejections"))],
        ["upstream calls (provider/outcome)", counts(gateway.get("upstream"))],
        ["token refreshes (provider/result)", counts(gateway.get("tokens"))],
    ]
    for name, figures in (last.get("workers") or {}).items():
        rows.append(
            [
                f"{name} tasks (outcome); retries",
                f"{counts((figures or {}).get('tasks'))}; {counts((figures or {}).get('retries'))}",
            ]
        )
    rows.append(["dead letters", ", ".join(f"{t} {n}" for t, n in dead_letters.items())])
    referee = last.get("referee") or {}
    rows.append(
        [
            "referee (arrivals; tokens issued)",
            ", ".join(f"{p} {r['requests']}; {r['tokens_issued']}" for p, r in referee.items()),
        ]
    )
    return rows
