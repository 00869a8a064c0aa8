"""``python -m tests.bench [NAME ...] [--runs N] [--quick] [--output PATH]``: benchmarks and their report.

Names: pacing, pacing-jitter, pacing-cpu, pacing-kill, failover, priority, overhead, throughput, tokens,
pool, scale (default: all eleven). Every benchmark runs ``--runs`` times (default 3, at least 3 unless
``--quick``), in rounds: each round runs every chosen benchmark once, so a drift of the shared machine falls
on all of them. A full run of a clean tree writes ``docs/BENCHMARKS.md`` (about 40 minutes); anything else
writes to ``.local/bench/`` (see ``report.publish_target``). ``--quick`` shortens every duration for a smoke
run (default one run, ``.local/bench/BENCHMARKS.quick.md``, under 8 minutes for all eleven).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

from tests.bench import report
from tests.bench.harness import Bench, Stack, log, start_stack
from tests.bench.warmup import warm_up
from tests.bench.yardstick import yardstick_ms


def module_name(name: str) -> str:
    """The module of a benchmark name (``pacing-jitter`` -> ``tests.bench.pacing_jitter``)."""
    return f"tests.bench.{name.replace('-', '_')}"


async def run_one(stack: Stack, name: str, quick: bool, run: int) -> report.Result:
    """One run of one benchmark, with a fresh private namespace, cleaned up after it. A run that raises is
    returned as a failed result (it counts as a missed goal), never dropped."""
    module = importlib.import_module(module_name(name))
    bench = Bench(stack, name, quick)
    loadavg = f"{os.getloadavg()[0]:.2f}"
    speed_ms = yardstick_ms()
    commit = report.git_commit()
    started = time.time()
    try:
        result: report.Result = await module.run(bench)
    except Exception as exc:
        traceback.print_exc()
        result = report.failed_run(
            name, module.TITLE, module.GOAL, module.BASELINE, f"{type(exc).__name__}: {exc}"[:500]
        )
    finally:
        try:
            await bench.cleanup()
        except Exception as exc:  # cleanup must not hide the result
            log(f"{name}: cleanup failed: {exc!r}")
    result.run = run
    result.started = time.strftime("%Y-%m-%d %H:%M", time.localtime(started))
    result.duration_s = time.time() - started
    result.quick = quick
    result.loadavg = loadavg
    result.yardstick_ms = speed_ms
    result.commit = commit
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the chosen benchmarks ``--runs`` times, write the report; exit 1 if a run
    crashed."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"from {', '.join(report.ORDER)} (default: all)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        help=f"runs of each benchmark (default {report.MIN_FULL_RUNS}, or 1 with --quick; "
        f"at least {report.MIN_FULL_RUNS} without --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="short durations for a smoke run")
    parser.add_argument(
        "--output",
        type=Path,
        help="report file (default docs/BENCHMARKS.md, which only a full run of a clean tree may write; "
        "with --quick .local/bench/BENCHMARKS.quick.md)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(report.ORDER))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(report.ORDER)}")
    runs = args.runs if args.runs is not None else (1 if args.quick else report.MIN_FULL_RUNS)
    if runs < 1 or (runs < report.MIN_FULL_RUNS and not args.quick):
        parser.error(f"--runs must be at least {report.MIN_FULL_RUNS} (or at least 1 with --quick)")
    names = [n for n in report.ORDER if n in args.names] if args.names else list(report.ORDER)
    invocation = report.Invocation(
        command=report.command_line(),
        names=names,
        runs=runs,
        quick=args.quick,
        commit=report.git_head(),
        changes=report.uncommitted_changes(),
    )
    if invocation.changes and not args.quick:
        log(f"the tree has uncommitted changes: the report will go to {report.UNPUBLISHED}, not docs/")
    stack = start_stack()
    invocation.warm_up = asyncio.run(warm_up(stack, args.quick))
    started = time.monotonic()
    sections: dict[str, list[report.Result]] = {name: [] for name in names}
    for run in range(1, runs + 1):
        for name in names:
            log(f"{name}: run {run} of {runs}")
            result = asyncio.run(run_one(stack, name, args.quick, run))
            sections[name].append(result)
            state = "FAILED" if result.error else report.verdict(result.headline.met, result.headline.margin)
            log(f"{name}: run {run}: {result.headline.figure} - {state} in {result.duration_s:.0f} s")
    total_s = time.monotonic() - started
    path = report.write(args.output, sections, invocation, total_s)
    log(f"wrote {path} ({total_s:.0f} s in all)")
    for name, results in sections.items():
        hub, base = report.summary_figures(results)
        print(f"{name:<13} {hub}  | baseline: {base}  | {report.result_line(results)}")
    return 1 if any(r.error for results in sections.values() for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
