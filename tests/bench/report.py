"""Benchmark results and their report file: a summary, then one section per benchmark.

Every benchmark runs several times (``--runs``, at least 3 for a full run). A section shows the goal, the
verdict over all runs (met only when every run met it; a run that crashed counts as missed), a table of the
headline measures with each run's value and the worst, one line per run, and each run's full table and
notes. The file holds the runs of one invocation only: it is rewritten whole every time, never merged with
earlier results.

Publishing: the committed ``docs/BENCHMARKS.md`` is written only by a full run (every benchmark, at least 3
runs, not ``--quick``) of a clean tree (``git status --porcelain`` empty apart from untracked files under
``.local/``) whose commit did not change while it ran; anything else goes to ``.local/bench/`` and says so
on stderr (``publish_target``).
"""

from __future__ import annotations

import math
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.bench.harness import BENCH_DIR, REPO

ORDER = (
    "pacing",
    "pacing-jitter",
    "pacing-cpu",
    "pacing-kill",
    "failover",
    "priority",
    "overhead",
    "throughput",
    "tokens",
    "pool",
    "scale",
)
PUBLISHED = REPO / "docs" / "BENCHMARKS.md"
UNPUBLISHED = BENCH_DIR / "BENCHMARKS.md"
QUICK_OUTPUT = BENCH_DIR / "BENCHMARKS.quick.md"
MIN_FULL_RUNS = 3


@dataclass
class Row:
    """One line of a run's table: a measure for the hub and for its baseline."""

    metric: str
    hub: str
    baseline: str = "-"
    goal: str = "-"
    verdict: str = "-"


@dataclass
class Headline:
    """A run's figure in one line, its baseline's, the goal and whether the run met it."""

    figure: str
    baseline: str
    goal: str
    met: bool
    margin: str


@dataclass
class Measure:
    """A headline number of one run, aggregated over runs: the worst value for the hub side, the value most
    favourable to the baseline for the baseline side (so the comparison never flatters the hub)."""

    label: str
    value: float
    text: str
    higher_is_worse: bool
    goal: str = "-"
    met: bool | None = None  # None: information, not part of the goal
    side: str = "hub"  # or "baseline"

    def worse_than(self, other: Measure) -> bool:
        """True when this value is worse than ``other``'s (NaN, a missing value, counts as the worst)."""
        if math.isnan(self.value):
            return not math.isnan(other.value)
        if math.isnan(other.value):
            return False
        return self.value > other.value if self.higher_is_worse else self.value < other.value


@dataclass
class Result:
    """What one run of one benchmark measured."""

    name: str
    title: str
    goal: str
    baseline_name: str
    headline: Headline
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    measures: list[Measure] = field(default_factory=list)
    run: int = 0
    started: str = ""
    duration_s: float = 0.0
    quick: bool = False
    loadavg: str = ""
    yardstick_ms: float | None = None  # the host's speed at the start (``yardstick``); lower is faster
    commit: str = ""
    error: str = ""

    @property
    def met(self) -> bool:
        """The run finished and met its goal."""
        return not self.error and self.headline.met


def failed_run(name: str, title: str, goal: str, baseline_name: str, error: str) -> Result:
    """A run that raised: it stays in the report and counts as a missed goal."""
    return Result(
        name=name,
        title=title,
        goal=goal,
        baseline_name=baseline_name,
        headline=Headline("FAILED", "-", goal, False, error),
        rows=[],
        error=error,
    )


def verdict(met: bool, margin: str) -> str:
    """``met (...)`` or ``MISSED (...)``."""
    return f"{'met' if met else 'MISSED'} ({margin})"


# --- git and the machine ---------------------------------------------------------------------------


def _output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def git_head() -> str:
    """``git rev-parse --short HEAD`` ('?' outside a repository)."""
    return _output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]) or "?"


def uncommitted_changes() -> list[str]:
    """``git status --porcelain`` lines, except untracked files under ``.local/``."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return [f"(git status failed: {exc})"]  # unknown counts as changed: never publish blind
    return [line.strip() for line in out.splitlines() if line.strip() and not line.startswith("?? .local/")]


def git_commit() -> str:
    """The checked-out commit, marked when the tree has uncommitted changes."""
    return f"{git_head()}{' (with uncommitted changes)' if uncommitted_changes() else ''}"


def machine_facts() -> dict[str, str]:
    """Facts that make figures comparable: CPUs, CPU model, memory, Python, Kafka, Redis, OS."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = "?"
    with open("/proc/meminfo") as info:
        for line in info:
            if line.startswith("MemTotal"):
                mem_gib = f"{int(line.split()[1]) / 1024 / 1024:.1f}"
                break
    jars = sorted((REPO / ".local" / "kafka" / "libs").glob("kafka-server-*.jar"))
    kafka = jars[0].stem.removeprefix("kafka-server-") if jars else "unknown"
    redis_version = _output(["redis-server", "--version"])  # "Redis server v=7.0.15 sha=..."
    redis = redis_version.split(" v=")[-1].split()[0] if " v=" in redis_version else "?"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": f"{mem_gib} GiB",
        "python": platform.python_version(),
        "kafka": f"Apache Kafka {kafka} (KRaft, local stack, one broker)",
        "redis": f"Redis {redis}",
        "os": f"{platform.system()} {platform.release()}",
        "load average (1, 5, 15 min) at the end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


@dataclass
class Invocation:
    """One ``python -m tests.bench`` invocation: what was asked and of which tree."""

    command: str
    names: list[str]
    runs: int
    quick: bool
    commit: str  # short HEAD at the start
    changes: list[str]  # uncommitted changes at the start
    started: float = field(default_factory=time.time)
    warm_up: str = ""  # what ran before the first run (``warmup``)

    @property
    def full(self) -> bool:
        """Every benchmark, at least ``MIN_FULL_RUNS`` runs, full durations."""
        return not self.quick and self.runs >= MIN_FULL_RUNS and list(self.names) == list(ORDER)


def publish_target(invocation: Invocation, requested: Path | None) -> tuple[Path, str]:
    """Where the report goes, and why it does not go to ``docs/BENCHMARKS.md`` ('' when it does).

    Checked at the end of the run: the tree must have been clean at the start and still be, at the same
    commit."""
    default = QUICK_OUTPUT if invocation.quick else PUBLISHED
    path = (requested or default).resolve()
    if path != PUBLISHED.resolve():
        return path, ""
    reasons = []
    if not invocation.full:
        reasons.append(
            f"not a full run (all {len(ORDER)} benchmarks, --runs >= {MIN_FULL_RUNS}, without --quick)"
        )
    changes = invocation.changes or uncommitted_changes()
    if changes:
        shown = "; ".join(changes[:5]) + (" ..." if len(changes) > 5 else "")
        reasons.append(f"the tree has uncommitted changes ({shown})")
    head = git_head()
    if head != invocation.commit:
        reasons.append(f"HEAD moved from {invocation.commit} to {head} during the run")
    if reasons:
        return UNPUBLISHED.resolve(), "; ".join(reasons)
    return path, ""


# --- rendering -------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _aggregate(runs: list[Result]) -> list[tuple[Measure, list[Measure | None]]]:
    """Per measure label (first-seen order): the aggregated measure and each run's own (None if absent)."""
    labels: list[tuple[str, str]] = []
    for result in runs:
        for m in result.measures:
            if (m.side, m.label) not in labels:
                labels.append((m.side, m.label))
    out = []
    for side, label in labels:
        per_run = [next((m for m in r.measures if (m.side, m.label) == (side, label)), None) for r in runs]
        present = [m for m in per_run if m is not None]
        pick = present[0]
        for m in present[1:]:
            # hub: the worst run; baseline: the run most favourable to the baseline
            if (m.worse_than(pick)) if side == "hub" else (pick.worse_than(m)):
                pick = m
        met = None if pick.met is None else all(m.met for m in present) and len(present) == len(runs)
        worst = Measure(label, pick.value, pick.text, pick.higher_is_worse, pick.goal, met, side)
        out.append((worst, per_run))
    return out


def section_met(runs: list[Result]) -> bool:
    """Met only when there was at least one run and every run finished and met the goal."""
    return bool(runs) and all(r.met for r in runs)


def summary_figures(runs: list[Result]) -> tuple[str, str]:
    """The summary's hub cell (worst of the runs) and baseline cell (best for the baseline)."""
    hub: list[str] = []
    base: list[str] = []
    for measure, _ in _aggregate(runs):
        (hub if measure.side == "hub" else base).append(f"{measure.label} {measure.text}")
    failed = sum(1 for r in runs if r.error)
    if failed:
        hub.insert(0, f"{failed} run(s) FAILED")
    return "; ".join(hub) or "-", "; ".join(base) or "-"


def result_line(runs: list[Result]) -> str:
    """``met in all 3 runs`` or ``MISSED in run(s) 2, 3 of 3``."""
    if not runs:
        return "MISSED (no run)"
    missed = [str(r.run) for r in runs if not r.met]
    if not missed:
        return f"met in all {len(runs)} run(s)"
    return f"MISSED in run(s) {', '.join(missed)} of {len(runs)}"


def render_section(number: int, runs: list[Result]) -> str:
    """One benchmark's section: verdict over the runs, the worst figures, one line per run, details."""
    first = runs[0]
    lines = [
        f"## {number}. {first.title}",
        "",
        f"**Goal:** {first.goal}  ",
        f"**Baseline:** {first.baseline_name}  ",
        f"**Result:** {result_line(runs)}  ",
    ]
    hub, base = summary_figures(runs)
    lines += [f"**Worst of {len(runs)} run(s):** {hub}  ", f"**Baseline (most favourable run):** {base}", ""]
    aggregated = _aggregate(runs)
    if aggregated:
        head = " | ".join(f"run {r.run}" for r in runs)
        lines += [
            f"| measure | {head} | worst (hub) / best (baseline) | goal | verdict |",
            "|---|" + "---|" * len(runs) + "---|---|---|",
        ]
        for measure, per_run in aggregated:
            cells = " | ".join(_cell(m.text) if m is not None else "-" for m in per_run)
            shown = "-" if measure.met is None else ("met in every run" if measure.met else "MISSED")
            who = "hub" if measure.side == "hub" else "baseline"
            lines.append(
                f"| {_cell(measure.label)} ({who}) | {cells} | {_cell(measure.text)} | "
                f"{_cell(measure.goal)} | {shown} |"
            )
        lines.append("")
    lines += [
        "| run | started | duration | 1-min load at start | CPU yardstick at start | commit | hub | "
        "baseline | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.run} | {r.started} | {r.duration_s:.0f} s | {r.loadavg} | "
            f"{'-' if r.yardstick_ms is None else f'{r.yardstick_ms:.1f} ms'} | {r.commit} | "
            f"{_cell(r.headline.figure)} | {_cell(r.headline.baseline)} | "
            f"{_cell(verdict(r.met, r.headline.margin))} |"
        )
    for r in runs:
        lines += ["", f"<details><summary>Run {r.run}: every measure and note</summary>", ""]
        if r.error:
            lines += [f"The run failed: `{_cell(r.error)}`"]
        else:
            lines += ["| measure | hub | baseline | goal | verdict |", "|---|---|---|---|---|"]
            lines += [
                f"| {_cell(x.metric)} | {_cell(x.hub)} | {_cell(x.baseline)} | {_cell(x.goal)} | "
                f"{_cell(x.verdict)} |"
                for x in r.rows
            ]
            if r.notes:
                lines += ["", *[f"- {note}" for note in r.notes]]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _anchor(number: int, title: str) -> str:
    text = f"{number}. {title}".lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


INTRO = """\
Eleven benchmarks, measured against the sandbox referee (its own process, so its clock shares no event
loop with the load or the gateway), each side by side with a baseline measured in the same run:
`pacing` (three callers each demanding 5x a 20 req/s KIS key), `pacing-jitter` (the same with 50 ms of
arrival jitter at the sandbox, the gateway's J set to 65 ms: the injected 50 plus 15 for the sandbox's
own delays on this host), `pacing-cpu` (the same while two busy processes
load both cores), `pacing-kill` (two gateways, the owner SIGKILLed and restarted five times), `failover`
(time from a SIGKILL to the next owner's first answer, with and without a restart), `priority`,
`overhead` (latency added per request over a direct call made right next to it), `throughput` (one
gateway process, 20 credentials, limits off, next to a raw Kafka echo), `tokens`, `pool` (20 keys at
20 req/s behind one gateway, and a burst of identical reads) and `scale` (1, 2 and 4 gateway processes
over 40 credentials). The pacing baselines are the client-side limiters of the libraries the hub
replaces, python-kis (a fixed one-second window of 19 calls) and krsec (a token bucket of 15 req/s with a
burst of 3), driving a key of their own straight at the sandbox under the same conditions.

Every benchmark runs at least three times (`make bench`, or `.venv/bin/python -m tests.bench --runs N`
with N >= 3) and a goal counts as met only when every run met it; a run that crashes counts as missed.
Each section shows every run's figures and the worst. This file is written only by a full run (all
benchmarks, at least three runs, not `--quick`) of a committed tree, and holds that run's results only;
a subset (`.venv/bin/python -m tests.bench NAME ...`), a `--quick` smoke run (one run, shortened) or a
run from a tree with uncommitted changes writes to `.local/bench/` instead. Process logs of each run are
kept in `.local/bench/<benchmark>-<run id>/`.

The machine is small and shared: Kafka, Redis, the sandbox, the gateway(s) and the load generator all
run on the same cores, so absolute figures move from run to run; compare each figure with the baseline
measured next to it. Each run gives the load average when it started and a CPU yardstick: the CPU time
of a fixed piece of Python and JSON work just before the run (`tests/bench/yardstick.py`; lower is a
faster host; it has read 24 ms on a fast hour and 45-100 ms on a slow one). Before the first run a burst
through a raw Kafka echo warms Kafka up (`tests/bench/warmup.py`: a Kafka started just before spends its
first minute compiling, which cost the first `pacing` run up to 2.4 points of utilisation)."""


def render(sections: dict[str, list[Result]], invocation: Invocation, total_s: float) -> str:
    """The whole file, from this invocation's runs only."""
    names = [n for n in ORDER if n in sections]
    summary = [
        "| # | benchmark | hub (worst run) | baseline (most favourable run) | result |",
        "|---|---|---|---|---|",
    ]
    for i, name in enumerate(names, 1):
        runs = sections[name]
        hub, base = summary_figures(runs)
        summary.append(
            f"| {i} | [{runs[0].title}](#{_anchor(i, runs[0].title)}) | {_cell(hub)} | {_cell(base)} | "
            f"{result_line(runs)} |"
        )
    changes = invocation.changes
    head = [
        "# Benchmarks",
        "",
        INTRO,
        "",
        "## Summary",
        "",
        *summary,
        "",
        "## This run",
        "",
        f"- command: `{invocation.command}` ({', '.join(names)}; {invocation.runs} run(s) each; "
        f"{total_s:.0f} s in all{'; quick smoke run, shortened' if invocation.quick else ''})",
        f"- commit: {invocation.commit}"
        + (f" with uncommitted changes ({len(changes)} path(s))" if changes else " (clean tree)"),
        f"- started: {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(invocation.started))}",
        *([f"- warm-up: {invocation.warm_up}"] if invocation.warm_up else []),
        *[f"- {k}: {v}" for k, v in machine_facts().items()],
        "",
    ]
    body = [render_section(i, sections[name]) for i, name in enumerate(names, 1)]
    return "\n".join(head) + "\n" + "\n".join(body)


def write(
    requested: Path | None, sections: dict[str, list[Result]], invocation: Invocation, total_s: float
) -> Path:
    """Write the report where ``publish_target`` allows; returns the path written."""
    path, refused = publish_target(invocation, requested)
    if refused:
        print(
            f"[bench] not writing {PUBLISHED.relative_to(REPO)}: {refused}; the report goes to {path}",
            file=sys.stderr,
            flush=True,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(sections, invocation, total_s))
    return path


def command_line() -> str:
    """How this process was started, as a user would type it."""
    args = " ".join(sys.argv[1:])
    return f".venv/bin/python -m tests.bench{(' ' + args) if args else ''}"
