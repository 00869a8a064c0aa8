"""``python -m tests.soak [--minutes N] [--short] [--sample-s S] [--output DIR]`` (``make soak``).

Starts the soak's own stack (``stack.py``), runs the load and the workers' tasks for ``--minutes``
(default ``$SOAK_MINUTES``, else 10) while sampling every ``--sample-s`` seconds, lets every pending request
end, counts the dead letters, stops the stack and writes ``SOAK.md`` and ``soak.png``: to ``docs/soak/``
only from a full run of a clean tree (``report.publish_target``), otherwise to ``.local/soak/<run>/``, where
the raw samples (``samples.jsonl``), ``summary.json`` and every process's log always go. ``--short`` is the
smoke run of the soak itself: one minute, a sample every two seconds. Exit 0 when every goal was met, 1
when one was missed, 2 when the stack could not be started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from hubclient import HubClient
from tests.bench.report import git_head, machine_facts, uncommitted_changes
from tests.soak import goals, plot, profile, report
from tests.soak.load import CALLER, TIMEOUT_S, LoadGenerator, rates_per_s
from tests.soak.sample import Sampler
from tests.soak.stack import SoakStack
from tests.soak.work import WorkFeeder

REPO = profile.REPO
SOAK_DIR = REPO / ".local" / "soak"
LOAD_SHARE = 0.8
DEAD_LETTER_TOPICS = ("api.requests.dlq", "workers.dlq")
DRAIN_S = TIMEOUT_S + 5


def say(message: str) -> None:
    """A progress line on stderr."""
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timings(minutes: float, short: bool, sample_s: float | None) -> tuple[float, float, float]:
    """(sample interval, warm-up, comparison window) in seconds for a run of ``minutes``."""
    duration_s = minutes * 60
    every = sample_s if sample_s is not None else (2.0 if short else 5.0)
    return every, min(120.0, duration_s / 5), min(60.0, duration_s / 10)


async def count_dead_letters(bootstrap: str, timeout_s: float = 20.0) -> dict[str, int]:
    """Committed records on each dead-letter topic (read from the beginning up to the end offsets)."""
    consumer = AIOKafkaConsumer(
        *DEAD_LETTER_TOPICS,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        enable_auto_commit=False,
    )
    counts = dict.fromkeys(DEAD_LETTER_TOPICS, 0)
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            while not consumer.assignment():
                await asyncio.sleep(0.1)
            ends = await consumer.end_offsets(list(consumer.assignment()))
            while True:
                positions = {tp: await consumer.position(tp) for tp in ends}
                if all(positions[tp] >= end for tp, end in ends.items()):
                    break
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    counts[tp.topic] += len(records)
    finally:
        await consumer.stop()
    return counts


async def soak(args: argparse.Namespace, info: report.RunInfo, run_dir: Path) -> int:
    """Run the whole soak; returns the exit code."""
    duration_s = info.minutes * 60
    stack = SoakStack(run_dir, keep_data=args.keep_data)
    samples: list[dict[str, Any]] = []
    try:
        addresses = await stack.start(say)
    except Exception:
        traceback.print_exc()
        say(f"the stack did not start; logs in {stack.log_dir}")
        return 2
    info.changed_settings = stack.changed_settings
    info.rates = rates_per_s(profile.parse_env_file(profile.PROD_ENV_FILE.read_text()), args.share)
    sampler = Sampler(
        kafka=addresses.kafka,
        redis_url=addresses.redis_url,
        sandbox_url=addresses.sandbox_url,
        gateway_url=f"http://127.0.0.1:{addresses.gateway_metrics_port}",
        worker_urls={n: f"http://127.0.0.1:{p}" for n, p in addresses.worker_health_ports.items()},
    )
    hub = HubClient.connect(addresses.kafka, caller=CALLER, max_pending=10_000)
    generator = LoadGenerator(hub, info.rates)

    async def clock_now() -> datetime:
        return datetime.fromisoformat(await sampler.clock_now_iso())

    feeder = WorkFeeder(addresses.kafka, clock_now)
    exited: list[str] = []
    dead_letters: dict[str, int] = {}
    started = time.monotonic()  # reset when the measured run begins, after the warm-up

    async def take() -> None:
        pids = {**stack.pids(), "soak": os.getpid()}
        sample = await sampler.take(time.monotonic() - started, pids, generator.snapshot())
        samples.append(sample)
        with (run_dir / "samples.jsonl").open("a") as out:
            out.write(json.dumps(sample) + "\n")

    async def sampling(stop: asyncio.Event) -> None:
        for n in range(int((duration_s + DRAIN_S) / info.sample_s) + 2):  # bounded by the run's length
            await take()
            if n and n % max(1, int(60 / info.sample_s)) == 0:
                load = samples[-1]["load"]
                say(
                    f"{samples[-1]['t_s'] / 60:.1f} min: "
                    + ", ".join(f"{p} {t['answered']}/{t['sent']} answered" for p, t in load.items())
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), info.sample_s)
            if stop.is_set():
                return

    try:
        await sampler.start()
        await hub.start()
        info.warm_reads = await generator.warm_up()
        say(f"{info.warm_reads} warm-up reads answered; now the load at {info.rates} per s and the workers'")
        say(f"tasks for {info.minutes:g} min")
        stop = asyncio.Event()
        started = time.monotonic()
        sampler_task = asyncio.create_task(sampling(stop))
        await asyncio.gather(generator.run(duration_s), feeder.run(duration_s))
        info.duration_s = time.monotonic() - started
        await generator.drain(DRAIN_S)
        stop.set()
        await sampler_task
        await take()  # the final counts, nothing pending
        exited = stack.exited()
        dead_letters = await count_dead_letters(addresses.kafka)
    finally:
        info.published = dict(feeder.published)
        with contextlib.suppress(Exception):
            await hub.stop()
        with contextlib.suppress(Exception):
            await sampler.stop()
        await stack.stop(say)
    return finish(info, samples, dead_letters, exited, args.output, run_dir)


def finish(
    info: report.RunInfo,
    samples: list[dict[str, Any]],
    dead_letters: dict[str, int],
    exited: list[str],
    output: Path | None,
    run_dir: Path,
) -> int:
    """Judge the goals, write SOAK.md, soak.png and summary.json; 0 when every goal was met."""
    load = samples[-1]["load"] if samples else {}
    growths = goals.memory_growth(samples, info.warmup_s, info.window_s)
    errors, expected = goals.unexpected_errors(samples, load, dead_letters, exited)
    sent = sum(int(t["sent"]) for t in load.values())
    results = [
        goals.memory_goal(growths),
        goals.lost_goal(load),
        goals.over_limit_goal(
            samples[-1].get("referee") if samples else None,
            samples[-1].get("sandbox_loop_lag") if samples else None,
        ),
        goals.errors_goal(errors, expected, sent),
    ]
    redis_per_request = None
    first_redis, last_redis = (samples[0].get("redis"), samples[-1].get("redis")) if samples else (None, None)
    answered = sum(int(t["answered"]) for t in load.values())
    if first_redis and last_redis and answered:
        redis_per_request = (last_redis["used_memory"] - first_redis["used_memory"]) / answered
    info.machine = machine_facts()
    target, refused = report.publish_target(info, output, run_dir)
    if refused:
        say(f"not writing {report.PUBLISHED.relative_to(REPO)}: {refused}; the report goes to {target}")
    target.mkdir(parents=True, exist_ok=True)
    text = report.render(info, results, growths, samples, load, dead_letters, redis_per_request)
    (target / "SOAK.md").write_text(text)
    title = f"API Hub soak, commit {info.commit}, {info.started_local}, {info.duration_s / 60:.1f} min"
    plot.write_png(target / "soak.png", plot.series(samples), warmup_min=info.warmup_s / 60, title=title)
    summary = {
        "info": info.__dict__,
        "goals": [g.__dict__ for g in results],
        "memory": [{**g.__dict__, "growth": g.growth, "rss_growth": g.rss_growth} for g in growths],
        "load": load,
        "dead_letters": dead_letters,
        "unexpected": errors,
        "expected_refusals": expected,
        "report": str(target / "SOAK.md"),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    for goal in results:
        say(f"{'met   ' if goal.met else 'MISSED'} {goal.name}: {goal.measured}")
    say(f"wrote {target / 'SOAK.md'} and {target / 'soak.png'}; samples and logs in {run_dir}")
    return 0 if all(g.met for g in results) else 1


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and run the soak."""
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES") or 10))
    parser.add_argument("--short", action="store_true", help="a one-minute smoke run of the soak itself")
    parser.add_argument("--sample-s", type=float, help="seconds between samples (default 5; 2 with --short)")
    parser.add_argument("--share", type=float, default=LOAD_SHARE, help="load as a share of the limits (0.8)")
    parser.add_argument("--output", type=Path, help="directory for SOAK.md and soak.png (default docs/soak)")
    parser.add_argument("--keep-data", action="store_true", help="keep the run's Kafka and Redis data")
    args = parser.parse_args(argv)
    minutes = 1.0 if args.short else args.minutes
    if minutes <= 0 or not 0 < args.share <= 1:
        parser.error("--minutes must be positive and --share in (0, 1]")
    sample_s, warmup_s, window_s = timings(minutes, args.short, args.sample_s)
    now = time.time()
    run_dir = SOAK_DIR / time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    info = report.RunInfo(
        command=".venv/bin/python -m tests.soak" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else ""),
        commit=git_head(),
        changes=uncommitted_changes(),
        started_local=time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(now)),
        started_utc=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)),
        minutes=minutes,
        short=args.short,
        warmup_s=warmup_s,
        window_s=window_s,
        sample_s=sample_s,
        feed={**profile.feed_env()},
        run_dir=str(run_dir.relative_to(REPO)),
    )
    if info.changes and not args.short:
        say(f"the tree has uncommitted changes: the report will go to {run_dir}, not docs/soak/")
    return asyncio.run(soak(args, info, run_dir))


if __name__ == "__main__":
    sys.exit(main())
