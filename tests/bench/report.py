"""Benchmark results and ``docs/BENCHMARKS.md``: a summary, then one section per benchmark.

Each section sits between ``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->`` with its headline
as JSON in a ``<!-- bench:NAME:data ... -->`` comment, so a run of a subset rewrites only its own sections
and the summary is rebuilt from every section's data.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.harness import REPO

ORDER = ("pacing", "priority", "overhead", "throughput", "tokens")
HISTORY = 5  # earlier runs' headlines kept per benchmark
_SECTION = re.compile(r"<!-- bench:(\w+):start -->\n(.*?)<!-- bench:\1:end -->", re.S)
_DATA = re.compile(r"<!-- bench:\w+:data (\{.*?\}) -->")


@dataclass
class Row:
    """One line of a benchmark's table: a measure for the hub and for its baseline."""

    metric: str
    hub: str
    baseline: str = "-"
    goal: str = "-"
    verdict: str = "-"


@dataclass
class Headline:
    """The one figure the summary shows for a benchmark."""

    figure: str
    baseline: str
    goal: str
    met: bool
    margin: str


@dataclass
class Result:
    """What one benchmark measured."""

    name: str
    title: str
    goal: str
    baseline_name: str
    headline: Headline
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    started: str = ""
    duration_s: float = 0.0
    command: str = ""
    quick: bool = False
    loadavg: str = ""
    commit: str = ""


def verdict(met: bool, margin: str) -> str:
    """``met (...)`` or ``MISSED (...)``."""
    return f"{'met' if met else 'MISSED'} ({margin})"


def machine_facts() -> dict[str, str]:
    """Facts that make figures comparable: CPUs, CPU model, memory, Python, Kafka, Redis, git commit."""
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
        "commit": git_commit(),
        "load average (1, 5, 15 min) at the end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def git_commit() -> str:
    """The checked-out commit, marked when tracked files differ from it."""
    commit = _output(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]) or "?"
    dirty = _output(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    return f"{commit}{' (with uncommitted changes)' if dirty else ''}"


def _output(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except OSError:
        return ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_section(result: Result, history: list[dict[str, Any]] | None = None) -> str:
    """One benchmark's section (without its markers); ``history`` holds earlier runs' headlines."""
    data = {
        "title": result.title,
        "headline": asdict(result.headline),
        "started": result.started,
        "quick": result.quick,
        "commit": result.commit,
        "history": history or [],
    }
    lines = [
        f"## {ORDER.index(result.name) + 1}. {result.title}",
        "",
        f"<!-- bench:{result.name}:data {json.dumps(data, ensure_ascii=False)} -->",
        f"**Goal:** {result.goal}  ",
        f"**Baseline:** {result.baseline_name}  ",
        f"**Result:** {verdict(result.headline.met, result.headline.margin)}  ",
        f"**Run:** {result.started}, {result.duration_s:.0f} s, 1-min load average {result.loadavg} at the "
        f"start, code {result.commit}, `{result.command}`"
        + (" (quick smoke run: shortened, not the reference figures)" if result.quick else ""),
        "",
        "| measure | hub | baseline | goal | verdict |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {_cell(r.metric)} | {_cell(r.hub)} | {_cell(r.baseline)} | {_cell(r.goal)} | {_cell(r.verdict)} |"
        for r in result.rows
    ]
    if result.notes:
        lines += ["", *[f"- {note}" for note in result.notes]]
    if history:
        earlier = "; ".join(
            f"{h['started']}{' (quick)' if h.get('quick') else ''}"
            f"{' at ' + h['commit'] if h.get('commit') else ''}: {h['figure']}, "
            f"{verdict(h['met'], h['margin'])}"
            for h in history
        )
        lines += ["", f"Earlier runs recorded in this file (newest first): {earlier}."]
    return "\n".join(lines) + "\n"


def _data(section: str) -> dict[str, Any] | None:
    match = _DATA.search(section)
    return json.loads(match.group(1)) if match else None


def _history(previous: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The earlier runs to keep after replacing ``previous``: it, then its own history, at most five."""
    if previous is None:
        return []
    h = previous["headline"]
    latest = {
        "started": previous["started"],
        "quick": previous.get("quick", False),
        "commit": previous.get("commit", ""),
        **h,
    }
    latest.pop("baseline", None)
    latest.pop("goal", None)
    return [latest, *previous.get("history", [])][:HISTORY]


def render(results: list[Result], previous: str, facts: dict[str, str], command: str, total_s: float) -> str:
    """The whole file: this run's sections replace their earlier versions, the others are kept."""
    sections = {m.group(1): m.group(2) for m in _SECTION.finditer(previous)}
    sections.update(
        {
            r.name: render_section(r, _history(_data(sections[r.name]) if r.name in sections else None))
            for r in results
        }
    )
    summary = [
        "| # | benchmark | hub | baseline | goal | result | measured |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, name in enumerate(ORDER, 1):
        if name not in sections:
            continue
        data = _data(sections[name])
        if data is None:
            continue
        h = data["headline"]
        summary.append(
            f"| {i} | [{data['title']}](#{_anchor(i, data['title'])}) | {_cell(h['figure'])} | "
            f"{_cell(h['baseline'])} | {_cell(h['goal'])} | {verdict(h['met'], h['margin'])} | "
            f"{data['started']} |"
        )
    ran = ", ".join(r.name for r in results)
    head = [
        "# Benchmarks",
        "",
        "The five benchmarks of issue 4, measured against the sandbox referee (its own process, so its clock",
        "does not share an event loop with the load or the gateway), each side by side with its baseline in",
        "the same run. Regenerate with `make bench` (all five, about 5 minutes) or",
        "`.venv/bin/python -m tests.bench NAME ...` for a subset (`pacing priority overhead throughput",
        "tokens`); a subset rewrites only its own sections below. `--quick` shortens every duration for a",
        "smoke run and writes `.local/bench/BENCHMARKS.quick.md` instead of this file (`--output PATH`",
        "chooses another file). Process logs of each run are kept in `.local/bench/<benchmark>-<run id>/`.",
        "",
        "The machine is small and shared: Kafka, Redis, the sandbox, the gateway(s) and the load generator",
        "all run on the same cores, so absolute figures move from run to run; compare each figure with",
        "the baseline measured next to it. Other sessions may share the machine and the local Kafka and",
        "Redis while a benchmark runs; each section gives the load average when it started.",
        "",
        "## Summary",
        "",
        *summary,
        "",
        "## Last run",
        "",
        f"- command: `{command}` ({ran}; {total_s:.0f} s)",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        *[f"- {k}: {v}" for k, v in facts.items()],
        "",
    ]
    body = [
        f"<!-- bench:{name}:start -->\n{sections[name]}<!-- bench:{name}:end -->\n"
        for name in ORDER
        if name in sections
    ]
    return "\n".join(head) + "\n" + "\n".join(body)


def _anchor(number: int, title: str) -> str:
    text = f"{number}. {title}".lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def write(path: Path, results: list[Result], command: str, total_s: float) -> None:
    """Rewrite ``path`` with this run's results, keeping sections of benchmarks not run."""
    previous = path.read_text() if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(results, previous, machine_facts(), command, total_s))


def command_line() -> str:
    """How this process was started, as a user would type it."""
    args = " ".join(sys.argv[1:])
    return f".venv/bin/python -m tests.bench{(' ' + args) if args else ''}"
