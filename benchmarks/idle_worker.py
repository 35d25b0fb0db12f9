"""What an idle ``durably worker`` costs, with 100 and with 10,000 completed executions in
its store (issue 15, item 4: idle must be cheap, and not grow with finished executions).

For each backend and each store size, a fresh process runs the worker loop
(:func:`durably.worker.supervise`, ``--poll 1``, as ``durably worker`` does) against a
store holding only completed executions -- nothing to do. After a warm-up (the first
polls, where a scanning worker reads each finished execution once), it measures for a
window of ``--seconds`` (default 10):

* CPU seconds of the worker's process (user + system, ``getrusage``);
* store calls: calls of the provider's public methods (``iter_executions``,
  ``load_latest_checkpoint``, ``claim_next``, ...), and on PostgreSQL the statements
  sent to the server (``_run``, one round trip each).

and prints them per 10 s, with the ratio 10,000 / 100 per backend (1.0: flat). Each
(backend, size) pair is measured ``--repeat`` times, alternating sizes, and the median
is shown. How the stores are filled: filesystem and Redis through the provider (one
final checkpoint per execution; filesystem with ``fsync`` off to fill quickly);
PostgreSQL with ``generate_series`` inserts straight into its tables (rows as the
provider writes them). Redis needs a server at ``DURABLY_BENCH_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``); each size gets its own key prefix, deleted afterwards.

Run: ``python benchmarks/idle_worker.py [--quick] [--providers file,postgres,redis]
[--seconds 10] [--repeat 3]``. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c

SIZES = (100, 10_000)
WARMUP = 3.0


# --------------------------------------------------------------------- the measured child


def _count_calls(cls: type, counts: dict[str, int], names: list[str] | None = None) -> None:
    """Wrap ``cls``'s public coroutine and async-generator methods (or ``names``) so
    that each call adds one to ``counts[name]``."""
    for name in names or [n for n in dir(cls) if not n.startswith("_")]:
        fn = getattr(cls, name, None)
        if fn is None or name in ("close",):
            continue
        if inspect.isasyncgenfunction(fn):

            def gen_wrapper(fn: Any = fn, name: str = name) -> Any:
                async def wrapped(*args: Any, **kwargs: Any) -> Any:
                    counts[name] = counts.get(name, 0) + 1
                    async for item in fn(*args, **kwargs):
                        yield item

                return wrapped

            setattr(cls, name, gen_wrapper())
        elif inspect.iscoroutinefunction(fn):

            def co_wrapper(fn: Any = fn, name: str = name) -> Any:
                async def wrapped(*args: Any, **kwargs: Any) -> Any:
                    counts[name] = counts.get(name, 0) + 1
                    return await fn(*args, **kwargs)

                return wrapped

            setattr(cls, name, co_wrapper())


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _child(store: str, options: dict[str, Any], seconds: float) -> dict[str, Any]:
    from durably.config import DurabilityConfig, WorkerConfig
    from durably.storage import CheckpointProvider
    from durably.worker import supervise

    calls: dict[str, int] = {}
    queries: dict[str, int] = {}
    _count_calls(CheckpointProvider, calls)
    scheme = store.split("://", 1)[0]
    if scheme.startswith("postgres"):
        from durably_postgres import PostgresProvider

        _count_calls(PostgresProvider, calls, ["claim_next"])
        _count_calls(PostgresProvider, queries, ["_run"])
    table = (
        "postgres"
        if scheme.startswith("postgres")
        else "redis"
        if scheme.startswith("redis")
        else scheme
    )
    config = DurabilityConfig(store=store, providers={table: options} if options else {})
    task = asyncio.create_task(
        supervise(config=config, limits=WorkerConfig(), poll=1.0, concurrency=4)
    )
    await asyncio.sleep(WARMUP)
    warm_calls = sum(calls.values())
    calls_before, queries_before, cpu_before = dict(calls), sum(queries.values()), _cpu()
    start = time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - start
    cpu = _cpu() - cpu_before
    during = {k: v - calls_before.get(k, 0) for k, v in calls.items() if v - calls_before.get(k, 0)}
    n_queries = sum(queries.values()) - queries_before
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    scale = 10.0 / elapsed
    return {
        "cpu_s": cpu * scale,
        "calls": sum(during.values()) * scale,
        "queries": n_queries * scale if queries else None,
        "by_method": {k: round(v * scale, 1) for k, v in sorted(during.items())},
        "warmup_calls": warm_calls,
    }


# --------------------------------------------------------------------- filling the stores


async def _fill_file(root: str, count: int) -> None:
    from durably.storage import META_STATUS
    from durably_filesystem import FilesystemProvider

    async with FilesystemProvider.from_url(f"file://{root}", {"fsync": False}) as provider:
        for first in range(0, count, 200):
            await asyncio.gather(
                *(
                    provider.save_checkpoint(
                        f"done-{n:06d}",
                        0,
                        b"final" * 40,
                        metadata={META_STATUS: "completed", "durably.kind": "final"},
                    )
                    for n in range(first, min(count, first + 200))
                )
            )


def _redis_url() -> str:
    return os.environ.get("DURABLY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _fill_redis(url: str, prefix: str, count: int) -> None:
    from durably.storage import META_STATUS
    from durably_redis import RedisProvider

    async with RedisProvider.from_url(url, {"key_prefix": prefix}) as provider:
        for first in range(0, count, 200):
            await asyncio.gather(
                *(
                    provider.save_checkpoint(
                        f"done-{n:06d}",
                        0,
                        b"final" * 40,
                        metadata={META_STATUS: "completed", "durably.kind": "final"},
                    )
                    for n in range(first, min(count, first + 200))
                )
            )


async def _fill_postgres(url: str, schema: str, count: int) -> None:
    import psycopg

    from durably_postgres import migrate_async

    await migrate_async(url, {"schema": schema})
    s = f'"{schema}"'
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {s}.executions (id, lease_owner, epoch, lease_expires_at, released,"
            " status) SELECT 'done-' || lpad(i::text, 6, '0'), 'old-worker', i,"
            " now() - interval '1 hour', true, 'completed'"
            " FROM generate_series(1, %(n)s) AS i",
            {"n": count},
        )
        conn.execute(
            f"INSERT INTO {s}.checkpoints (execution_id, seq, version, data, metadata, size)"
            " SELECT 'done-' || lpad(i::text, 6, '0'), 0, 1, %(data)s,"
            ' \'{"durably.status": "completed", "durably.kind": "final"}\'::jsonb, 200'
            " FROM generate_series(1, %(n)s) AS i",
            {"n": count, "data": b"\x00" * 200},
        )
        conn.execute(f"ANALYZE {s}.executions")
        conn.execute(f"ANALYZE {s}.checkpoints")


def _measure(store: str, options: dict[str, Any], seconds: float) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", store, json.dumps(options), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        env={k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")},
    )
    if done.returncode != 0:
        raise RuntimeError(f"the measured worker failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- the report


async def bench(args: argparse.Namespace) -> None:
    seconds = 3.0 if args.quick else args.seconds
    repeat = 1 if args.quick else args.repeat
    wanted = [p.strip() for p in args.providers.split(",") if p.strip()]
    rows: list[list[Any]] = []
    ratios: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="durably-idle-") as work:
        stores: dict[str, dict[int, tuple[str, dict[str, Any]]]] = {}
        if "file" in wanted:
            stores["filesystem"] = {}
            for size in SIZES:
                root = str(Path(work) / f"store-{size}")
                c.progress(f"filesystem: {size:,} completed executions")
                await _fill_file(root, size)
                stores["filesystem"][size] = (f"file://{root}", {})
        pg_schemas = []
        if "postgres" in wanted:
            url = c.pg_url()
            why = c.pg_available(url)
            if why:
                c.note(f"PostgreSQL skipped: {why}")
            else:
                stores["postgresql"] = {}
                for size in SIZES:
                    schema = f"durably_idle_{size}_{os.getpid()}"
                    pg_schemas.append(schema)
                    c.progress(f"postgresql: {size:,} completed executions")
                    await _fill_postgres(url, schema, size)
                    stores["postgresql"][size] = (url, {"schema": schema})
        redis_prefixes = []
        if "redis" in wanted:
            stores["redis"] = {}
            for size in SIZES:
                prefix = f"durably-idle-{size}-{os.getpid()}"
                redis_prefixes.append(prefix)
                c.progress(f"redis: {size:,} completed executions")
                await _fill_redis(_redis_url(), prefix, size)
                stores["redis"][size] = (_redis_url(), {"key_prefix": prefix})
        try:
            for backend, by_size in stores.items():
                results: dict[int, list[dict[str, Any]]] = {size: [] for size in SIZES}
                for rep in range(repeat):
                    for size in SIZES:
                        c.progress(f"{backend}, {size:,} executions, run {rep + 1}/{repeat}")
                        results[size].append(_measure(*by_size[size], seconds))
                med: dict[int, dict[str, float]] = {}
                for size in SIZES:
                    runs = results[size]
                    med[size] = {
                        key: statistics.median(r[key] for r in runs) for key in ("cpu_s", "calls")
                    }
                    q = [r["queries"] for r in runs if r["queries"] is not None]
                    med[size]["queries"] = statistics.median(q) if q else float("nan")
                    last = runs[-1]
                    methods = ", ".join(f"{k} {v:g}" for k, v in last["by_method"].items())
                    rows.append(
                        [
                            backend,
                            f"{size:,}",
                            f"{med[size]['cpu_s']:.3f}",
                            f"{med[size]['calls']:.0f}",
                            "-" if not q else f"{med[size]['queries']:.0f}",
                            methods or "none",
                            last["warmup_calls"],
                        ]
                    )
                # Ratios per repetition (the two sizes measured side by side), then
                # their median.
                ratios.append(
                    [
                        backend,
                        *(
                            _ratio(
                                [big[key] for big in results[SIZES[1]]],
                                [small[key] for small in results[SIZES[0]]],
                            )
                            for key in ("cpu_s", "calls", "queries")
                        ),
                    ]
                )
        finally:
            if redis_prefixes:
                from durably_redis.testing import delete_prefix

                for prefix in redis_prefixes:
                    delete_prefix(_redis_url(), prefix)
            if pg_schemas:
                import psycopg

                with psycopg.connect(c.pg_url(), autocommit=True) as conn:
                    for schema in pg_schemas:
                        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    c.table(
        [
            "backend",
            "completed executions",
            "CPU s / 10 s",
            "store calls / 10 s",
            "SQL statements / 10 s",
            "calls by method (last run)",
            "calls in warm-up",
        ],
        rows,
        title=f"An idle worker (poll 1 s), per 10 s (window {seconds:g} s, "
        f"median of {repeat} runs)",
    )
    c.table(
        ["backend", "CPU 10,000 / 100", "store calls 10,000 / 100", "SQL statements 10,000 / 100"],
        ratios,
        title="Ratio of the cost with 10,000 to the cost with 100 completed executions "
        "(1.0: flat; median [min–max] of the per-run ratios)",
    )
    c.note(
        "PostgreSQL declares CLAIM_NEXT: each poll is one claim_next statement on the "
        "partial index of unfinished executions. The filesystem and Redis stores declare "
        "OPEN_INDEX: each poll lists the open executions only (the open/ directory, the "
        "<prefix>:open sorted set), which are none here."
    )


def _ratio(bigs: list[float | None], smalls: list[float | None]) -> str:
    """The median of the per-repetition ratios big / small, with their range."""
    pairs = [(b, s) for b, s in zip(bigs, smalls, strict=True) if b is not None and s is not None]
    if not pairs:
        return "-"
    if any(s == 0 for _, s in pairs):
        return "flat (0 and 0)" if all(b == 0 for b, _ in pairs) else "from 0"
    values = sorted(b / s for b, s in pairs)
    spread = f" [{values[0]:.2f}–{values[-1]:.2f}]" if len(values) > 1 else ""
    return f"{statistics.median(values):.2f}{spread}"


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measurement window per run (default 10)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per backend and size (default 3)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        out = asyncio.run(_child(sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])))
        print(json.dumps(out))
    else:
        if "--providers" not in sys.argv:
            sys.argv += ["--providers", "file,postgres,redis"]
        c.main(bench, "An idle durably worker: cost against completed executions", extra=_extra)
