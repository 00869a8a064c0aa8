"""``python -m tests.bench [NAME ...] [--quick] [--output PATH]``: run benchmarks, rewrite their report.

Names: pacing, priority, overhead, throughput, tokens (default: all five, in that order, about 5 minutes).
``--quick`` shortens every duration for a smoke run and writes ``.local/bench/BENCHMARKS.quick.md`` unless
``--output`` names a file; a full run writes ``docs/BENCHMARKS.md``.
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
from tests.bench.harness import BENCH_DIR, REPO, Bench, Stack, log, start_stack


async def run_one(stack: Stack, name: str, quick: bool) -> report.Result:
    """Run one benchmark module's ``run`` with a fresh private namespace, and clean up after it."""
    module = importlib.import_module(f"tests.bench.{name}")
    bench = Bench(stack, name, quick)
    loadavg = f"{os.getloadavg()[0]:.2f}"
    commit = report.git_commit()
    started = time.time()
    try:
        result: report.Result = await module.run(bench)
    finally:
        await bench.cleanup()
    result.started = time.strftime("%Y-%m-%d %H:%M", time.localtime(started))
    result.duration_s = time.time() - started
    result.command = report.command_line()
    result.quick = quick
    result.loadavg = loadavg
    result.commit = commit
    return result


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the chosen benchmarks, write the report; exit 1 if a benchmark failed."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"from {', '.join(report.ORDER)} (default: all five)"
    )
    parser.add_argument("--quick", action="store_true", help="short durations for a smoke run")
    parser.add_argument(
        "--output",
        type=Path,
        help="report file (default docs/BENCHMARKS.md; with --quick .local/bench/BENCHMARKS.quick.md)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(report.ORDER))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(report.ORDER)}")
    names = [n for n in report.ORDER if n in args.names] if args.names else list(report.ORDER)
    output = args.output or (
        BENCH_DIR / "BENCHMARKS.quick.md" if args.quick else REPO / "docs" / "BENCHMARKS.md"
    )
    stack = start_stack()
    started = time.monotonic()
    results: list[report.Result] = []
    failed: list[str] = []
    for name in names:
        log(f"{name}: start")
        try:
            result = asyncio.run(run_one(stack, name, args.quick))
        except Exception:
            traceback.print_exc()
            failed.append(name)
            log(f"{name}: FAILED (see the traceback above; nothing written for it)")
            continue
        results.append(result)
        log(
            f"{name}: {report.verdict(result.headline.met, result.headline.margin)} in "
            f"{result.duration_s:.0f} s"
        )
    total_s = time.monotonic() - started
    if results:
        report.write(output, results, report.command_line(), total_s)
        log(f"wrote {output} ({total_s:.0f} s in all)")
    for result in results:
        h = result.headline
        print(f"{result.name:<11} {h.figure}  | baseline: {h.baseline}  | {report.verdict(h.met, h.margin)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
