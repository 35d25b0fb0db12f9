"""Throughput: executions and checkpoints per second with 1, 10 and 100 concurrent
executions, per provider.

Each execution is short: the scripted LLM's code sets a 1 KB state and awaits ``Step``
10 times in a loop, then returns. One repetition runs the same number of executions at
every concurrency level -- in batches of ``level`` executions started together with
``asyncio.gather(run_program(...), ...)`` in this one process (one event loop) -- and
times the whole batch series. Each ``run_program`` opens its own provider (that is what
the API does), claims a lease, writes its checkpoints and releases the lease.

A row "durability off" runs the same executions with ``enabled=False`` on the filesystem
store: the runtime's own ceiling on this machine. A row "filesystem, fsync off" runs them
on the filesystem store with ``fsync = false`` (everything written, nothing flushed): the
ceiling that the CPU of one event loop puts on the filesystem store, whatever group
commit achieves.

Each repetition runs every level once (the order alternates between repetitions), so
the throughput ratio to one execution -- the group-commit goal of issue 19 -- is computed
within a repetition, and the single-execution latency is measured in the same run.

Run: ``python benchmarks/bench_concurrency.py [--quick] [--providers file,s3,postgres]
[--repetitions N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import traceback
import warnings
from dataclasses import replace
from typing import Any

import _common as c
import _goals

AWAITS = 10
LEVELS = (1, 10, 100)
GROUP_GOALS = {"filesystem": 8.0, "PostgreSQL": 5.0}
"""Issue 19, goal 3: throughput at the highest level ÷ one execution, per store."""


class _Counter(logging.Handler):
    """Counts warnings the PostgreSQL pool logs (failed connection attempts it retries)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def executions(args: argparse.Namespace, backend: c.Backend, level: int) -> int:
    """Executions per repetition at a level (a multiple of it): fewer on slow stores."""
    base = 10 if args.quick else (20 if isinstance(backend, c.S3Backend) else 50)
    return max(level, base // level * level)


APP = "durably-bench-concurrency"
"""The PostgreSQL application_name of the benchmark's connections (counted while it runs)."""


class PeakConnections:
    """Samples the number of the benchmark's PostgreSQL connections while it runs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.peak = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PeakConnections:
        import psycopg

        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)

        async def sample() -> None:
            async with conn:
                while not self._stop.is_set():
                    cur = await conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                        (APP,),
                    )
                    row = await cur.fetchone()
                    self.peak = max(self.peak, int(row[0]) if row else 0)
                    await asyncio.sleep(0.01)

        self._task = asyncio.create_task(sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def batch_series(
    work: c.Workdir, llm: str, config: Any, level: int, total: int
) -> tuple[float, list[str]]:
    """Run ``total`` executions, ``level`` at a time; return (seconds, execution ids)."""
    ids: list[str] = []
    gc.collect()
    start = c.now()
    for _ in range(total // level):
        results = await asyncio.gather(*(c.run(work.program, llm, config) for _ in range(level)))
        ids += [r.execution_id for _t, r in results]
    return c.now() - start, ids


async def bench(args: argparse.Namespace) -> None:
    reps = args.repetitions or (2 if args.quick else 3)
    levels = (1, 10, 20) if args.quick else LEVELS
    counter = _Counter()
    pool_log = logging.getLogger("psycopg.pool")
    pool_log.addHandler(counter)
    pool_log.propagate = False
    work = c.Workdir("concurrency")
    llm = work.script(c.response(c.loop_body(AWAITS, c.SMALL), c.SMALL))
    rows = []
    failures = []
    kinds: list[str] = []
    try:
        async with c.backends(args, work.path, "durably_bench_conc") as stores:
            variants: list[tuple[str, c.Backend, bool]] = [(b.name, b, True) for b in stores]
            if stores and isinstance(stores[0], c.FilesystemBackend):
                variants.append(("filesystem, fsync off", stores[0], True))
                variants.append(("durability off", stores[0], False))
            for name, backend, enabled in variants:
                config = backend.config(enabled=enabled)
                if name == "filesystem, fsync off":
                    config = replace(config, providers={"file": {"fsync": False}})
                pg_url = None
                if isinstance(backend, c.PostgresBackend):  # count its connections
                    pg_url = backend.url
                    options = {**backend.options(), "application_name": APP}
                    config = replace(config, providers={"postgres": options})
                per_execution = 0
                if enabled:  # calibrate: checkpoints one execution writes
                    _t, result = await c.run(work.program, llm, config)
                    per_execution = (await c.store_usage(config, result.execution_id)).checkpoints
                    await c.delete_executions(config, [result.execution_id])
                # side by side: each repetition runs every level once (the order
                # alternates), so the ratio to one execution is taken within a repetition
                eps: dict[int, list[float]] = {level: [] for level in levels}
                latency: dict[int, list[float]] = {level: [] for level in levels}
                speedup: dict[int, list[float]] = {level: [] for level in levels}
                errors: dict[int, str] = {}
                counts: dict[int, int] = {level: 0 for level in levels}
                peaks: dict[int, int] = {level: 0 for level in levels}
                for rep in range(reps):
                    order = levels if rep % 2 == 0 else tuple(reversed(levels))
                    this: dict[int, float] = {}
                    for level in order:
                        if level in errors:
                            continue
                        total = executions(args, backend, level)
                        c.progress(
                            f"concurrency: {name}, {level} at a time, repetition {rep + 1}/{reps}"
                        )
                        counter.count = 0
                        try:
                            if pg_url is None:
                                seconds, ids = await batch_series(work, llm, config, level, total)
                            else:
                                async with PeakConnections(pg_url) as sampler:
                                    seconds, ids = await batch_series(
                                        work, llm, config, level, total
                                    )
                                peaks[level] = max(peaks[level], sampler.peak)
                        except Exception as exc:
                            errors[level] = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
                            failures.append(
                                f"{name} at {level} concurrent executions:\n"
                                + "".join(traceback.format_exception_only(exc))
                            )
                            continue
                        counts[level] += counter.count
                        this[level] = total / seconds
                        eps[level].append(total / seconds)
                        latency[level].append(seconds / (total // level))
                        if enabled:
                            await c.delete_executions(config, ids)
                    for level, value in this.items():
                        if levels[0] in this:
                            speedup[level].append(value / this[levels[0]])
                for level in levels:
                    total = executions(args, backend, level)
                    if level in errors:
                        rows.append([name, level, "failed", "failed", "–", "–", errors[level]])
                        continue
                    s = c.Summary.of(eps[level])
                    cps = c.Summary(
                        s.median * per_execution, s.p10 * per_execution, s.p90 * per_execution, s.n
                    )
                    notes = [f"{total} per repetition"]
                    if peaks[level]:
                        notes.append(f"at most {peaks[level]} connections")
                    if counts[level]:
                        notes.append(
                            f"{counts[level]} failed connection attempts retried by "
                            "the pool (max_connections)"
                        )
                    rows.append(
                        [
                            name,
                            level,
                            s.fmt(digits=1),
                            cps.fmt(digits=0) if enabled else "–",
                            c.ratio(c.Summary.of(speedup[level])),
                            c.ms(c.Summary.of(latency[level]), digits=1),
                            "; ".join(notes),
                        ]
                    )
                top = levels[-1]
                if enabled and top not in errors and speedup[top] and name in GROUP_GOALS:
                    gain = c.Summary.of(speedup[top]).median
                    _goals.record(
                        3,
                        f"{name}, {top} vs {levels[0]} concurrent executions",
                        f"{gain:.2f}×",
                        f"≥ {GROUP_GOALS[name]:g}×",
                        gain >= GROUP_GOALS[name],
                    )
                if enabled:
                    kinds.append(f"{name}: {per_execution} checkpoints per execution")
    finally:
        work.cleanup()
    c.table(
        [
            "store",
            "concurrent executions",
            "executions/s",
            "checkpoints/s",
            f"throughput ÷ {levels[0]} execution",
            "latency ms/execution",
            "note",
        ],
        rows,
        title=f"## Throughput (executions of {AWAITS} awaits each, {reps} repetitions, "
        "one process)",
    )
    c.note(
        f"Checkpoints per execution (counted in the store, final record included): "
        f"{'; '.join(kinds)}. Lease requests (claim, release) and blob writes are not "
        "counted as checkpoints but take time too. Each run_program opens its own "
        "provider: on S3 its own client; on PostgreSQL the providers of the process share "
        "one pool, owner-lock session and group committer per server (durably_postgres."
        "_engine), and 'at most N connections' is the peak count in pg_stat_activity. "
        f"'throughput ÷ {levels[0]} execution' is the ratio of executions/s (so of "
        f"checkpoints/s) to the {levels[0]}-at-a-time row, computed within each repetition "
        "(every repetition runs every level once, in alternating order). 'latency "
        "ms/execution' is the wall time of one batch of concurrent executions, i.e. how long "
        f"each execution took from start to end; at {levels[0]} it is the single-execution "
        "latency."
    )
    for failure in failures:
        print(f"\nFailure: {failure}")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repetitions",
        type=int,
        default=0,
        help="repetitions of every level (default: 3, or 2 with --quick)",
    )


if __name__ == "__main__":
    # "filesystem, fsync off" warns once per provider that fsync is disabled: we know
    warnings.filterwarnings("ignore", message="the file store .* has fsync disabled")
    c.main(bench, "durably benchmark: throughput with concurrent executions", extra=_options)
