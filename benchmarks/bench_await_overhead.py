"""Per-await overhead of durability vs. the storage primitive it stands on, per provider.

For each store (filesystem in a temp dir, S3 on a local moto server over HTTP, PostgreSQL
in a throwaway schema), each program shape and each state size, one repetition runs, side
by side:

* the same LLM code with N awaits through the real runtime (``run_program`` with the
  scripted LLM), durability ON and OFF (``DurabilityConfig(enabled=False)``): durably's
  per-await overhead is ``(t_on - t_off) / N``;
* the same program with no await in it (ON and OFF): the fixed per-execution cost
  (claim, first and final snapshots, final record, release), which the headline number
  includes (amortized over N) and the "marginal" column excludes;
* the raw primitive for a durable write of the bytes durably writes per await (measured
  from the store: checkpoint and blob sizes, marginal over the no-await run):
  ``append + fdatasync`` and ``write tmp + fsync + rename + dir fsync`` on the same disk,
  one ``put_object`` to the same endpoint, one single-row ``INSERT`` + commit on the same
  server (and, on PostgreSQL, the provider's own fenced save statement run on one plain
  connection: what the SQL costs, without the provider's Python around it);
* ``provider.save_checkpoint`` of the same bytes with a lease (the provider layer alone).

Shapes: ``loop`` -- one ``for`` statement with N awaits (no quiet point inside: every
await writes a small journal delta; the state is recomputed on resume, not stored);
``statements`` -- N top-level statements, each changing the state and awaiting (a
snapshot every ``snapshot_every`` = 16 operations stores the changed part of the state).

Run: ``python benchmarks/bench_await_overhead.py [--quick] [--providers file,s3,postgres]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import uuid
import warnings
from typing import Any

import _common as c
import _goals

GOALS = {"file": 1.3, "s3": 1.3, "postgres": 1.3}
"""Issue 19, goal 1: durably's per-await overhead within this factor of the first
primitive (an earlier issue's goal for the filesystem was 2.0)."""
FIXED_GOAL_MS = 3.0
"""Issue 19, goal 2: the fixed cost of an execution with a 100 KB state, filesystem and
PostgreSQL."""


def sizes(args: argparse.Namespace, key: str) -> tuple[int, int, int]:
    """(N awaits, repetitions, primitive operations per repetition) for a store."""
    if args.quick:
        return {"file": (40, 2, 40), "s3": (20, 2, 10), "postgres": (30, 2, 30)}[key]
    return {"file": (300, 7, 150), "s3": (100, 7, 30), "postgres": (200, 7, 100)}[key]


async def provider_save(config: Any, size: int, count: int) -> float:
    """Mean seconds of ``save_checkpoint`` of ``size`` bytes, fenced by a lease."""
    from durably import open_store

    execution_id = f"probe-{uuid.uuid4().hex[:12]}"
    data = os.urandom(size)
    async with open_store(config=config) as provider:
        lease = await provider.claim(execution_id, "bench", ttl=60)
        await provider.save_checkpoint(execution_id, 0, data, lease=lease)  # connect, warm
        start = c.now()
        for seq in range(1, count + 1):
            await provider.save_checkpoint(
                execution_id, seq, data, metadata={"durably.kind": "delta"}, lease=lease
            )
        elapsed = (c.now() - start) / count
        await provider.delete_execution(execution_id)
    return elapsed


async def primitives_for(
    prims: c.Primitives, backend: c.Backend, size: int, count: int
) -> list[tuple[str, float]]:
    if isinstance(backend, c.FilesystemBackend):
        return [
            ("append+fdatasync", prims.append_fdatasync(size, count)),
            ("tmp+fsync+rename+dir fsync", prims.atomic_replace(size, max(20, count // 4))),
        ]
    if isinstance(backend, c.S3Backend):
        return [("put_object", await prims.s3_put(backend, size, count))]
    assert isinstance(backend, c.PostgresBackend)
    return [
        ("INSERT+COMMIT", await prims.pg_insert(backend, size, count)),
        ("fenced save statement", await pg_save_statement(backend, size, count)),
    ]


async def pg_save_statement(backend: c.PostgresBackend, size: int, count: int) -> float:
    """Mean seconds of the PostgreSQL provider's own fenced checkpoint statement, run on
    one plain autocommit connection: the SQL's share of ``save_checkpoint``, without the
    pool, the group committer, the envelope and the retries around it."""
    import psycopg

    from durably import open_store
    from durably_postgres._sql import render  # the provider's statements, as it renders them

    config = backend.config()
    execution_id = f"probe-{uuid.uuid4().hex[:12]}"
    data = os.urandom(size)
    async with open_store(config=config) as provider:
        lease = await provider.claim(execution_id, "bench", ttl=60)
        await provider.save_checkpoint(execution_id, 0, data, lease=lease)  # the schema, warm
        sql = render(f'"{backend.schema}"', "server").save("create", True)
        params: dict[str, Any] = {
            "id": execution_id,
            "data": data,
            "size": size,
            "meta": '{"durably.kind":"delta"}',
            "status": None,
            "epoch": lease.epoch,
            "owner": lease.owner,
        }
        async with await psycopg.AsyncConnection.connect(backend.url, autocommit=True) as conn:
            start = c.now()
            for seq in range(1, count + 1):
                params["seq"] = seq
                cur = await conn.execute(sql, params, binary=True)
                fenced, version, _ = (await cur.fetchall())[0]
                if not fenced or version is None:
                    raise RuntimeError(f"the fenced save statement wrote nothing: {fenced}")
            elapsed = (c.now() - start) / count
        await provider.delete_execution(execution_id)
    return elapsed


async def timed(work: c.Workdir, llm: str, config: Any) -> float:
    gc.collect()
    elapsed, result = await c.run(work.program, llm, config)
    if config.enabled:
        await c.delete_executions(config, [result.execution_id])
    return elapsed


async def measure(
    args: argparse.Namespace,
    work: c.Workdir,
    prims: c.Primitives,
    backend: c.Backend,
    shape: str,
    state: c.StateShape,
) -> dict[str, Any]:
    n, reps, count = sizes(args, backend.key)
    full = work.script(c.response(c.SHAPES[shape](n, state), state))
    empty = work.script(c.response("", state))
    on, off = backend.config(), backend.config(enabled=False)
    # The filesystem also runs with nothing flushed (``fsync = false``): durably's own CPU
    # per await, which the goal's budget (goal - 1) x the primitive has to cover.
    nosync = (
        backend.config(providers={"file": {"fsync": False}})
        if isinstance(backend, c.FilesystemBackend)
        else None
    )

    # Calibration (also the warm-up): what durably writes per await, from the store.
    _, res_full = await c.run(work.program, full, on)
    _, res_empty = await c.run(work.program, empty, on)
    use_full = await c.store_usage(on, res_full.execution_id)
    use_empty = await c.store_usage(on, res_empty.execution_id)
    await c.delete_executions(on, [res_full.execution_id, res_empty.execution_id])
    await c.run(work.program, full, off)
    per_await_bytes = (use_full.total - use_empty.total) / n
    writes_per_await = (use_full.writes - use_empty.writes) / n
    size = max(1, round(per_await_bytes))

    rows: dict[str, list[float]] = {
        "overhead": [],
        "marginal": [],
        "fixed": [],
        "off": [],
        "save": [],
    }
    prim_names: list[str] = []
    for rep in range(reps):
        c.progress(f"{backend.name} {shape} {state.name}: repetition {rep + 1}/{reps}")
        order = (on, off) if rep % 2 == 0 else (off, on)
        t: dict[bool, float] = {}
        t0: dict[bool, float] = {}
        for cfg in order:
            t[cfg.enabled] = await timed(work, full, cfg)
        for cfg in order:
            t0[cfg.enabled] = await timed(work, empty, cfg)
        prim = await primitives_for(prims, backend, size, count)
        save = await provider_save(on, size, count)
        overhead = (t[True] - t[False]) / n
        fixed = t0[True] - t0[False]
        if nosync is not None:
            cpu = (await timed(work, full, nosync) - await timed(work, empty, nosync)) / n
            rows.setdefault("cpu", []).append(cpu - (t[False] - t0[False]) / n)
            rows.setdefault("cpu_ratio", []).append(rows["cpu"][-1] / prim[0][1])
        rows["overhead"].append(overhead)
        rows["marginal"].append(overhead - fixed / n)
        rows["fixed"].append(fixed)
        rows["off"].append((t[False] - t0[False]) / n)
        rows["save"].append(save)
        prim_names = [name for name, _ in prim]
        for name, seconds in prim:
            rows.setdefault(f"prim:{name}", []).append(seconds)
            rows.setdefault(f"ratio:{name}", []).append(overhead / seconds)
            rows.setdefault(f"mratio:{name}", []).append((overhead - fixed / n) / seconds)
        rows.setdefault("save_ratio", []).append(save / prim[0][1])
    return {
        "n": n,
        "reps": reps,
        "bytes": per_await_bytes,
        "size": size,
        "writes": writes_per_await,
        "kinds": use_full.kinds,
        "prims": prim_names,
        "s": {k: c.Summary.of(v) for k, v in rows.items()},
    }


async def bench(args: argparse.Namespace) -> None:
    work = c.Workdir("overhead")
    prims = c.Primitives(work.path)
    verdicts: list[list[str]] = []
    try:
        async with c.backends(args, work.path) as stores:
            for backend in stores:
                results = []
                for shape in ("loop", "statements"):
                    for state in (c.SMALL, c.MEDIUM):
                        results.append(
                            (shape, state, await measure(args, work, prims, backend, shape, state))
                        )
                report(backend, results, verdicts)
    finally:
        await prims.close()
        work.cleanup()
    c.table(
        ["store", "shape", "state", "durably ÷ primitive", "goal", "met?"],
        verdicts,
        title="## Goals",
    )


def report(
    backend: c.Backend,
    results: list[tuple[str, c.StateShape, dict[str, Any]]],
    verdicts: list[list[str]],
) -> None:
    goal = GOALS[backend.key]
    prim_names = results[0][2]["prims"]
    n = results[0][2]["n"]
    headers = ["shape", "state", "bytes/await", "writes/await", "durably ms/await"]
    for name in prim_names:
        headers += [f"{name} ms", f"ratio vs {name}"]
    rows = []
    for shape, state, r in results:
        s = r["s"]
        row = [shape, state.name, f"{r['bytes']:,.0f}", f"{r['writes']:.2f}", c.ms(s["overhead"])]
        for name in prim_names:
            row += [c.ms(s[f"prim:{name}"]), c.ratio(s[f"ratio:{name}"])]
        rows.append(row)
        first = s[f"ratio:{prim_names[0]}"]
        case = f"{backend.name}, {shape}, {state.name}"
        _goals.record(
            1, case, f"{first.median:.2f}× vs {prim_names[0]}", f"≤ {goal}×", first.median <= goal
        )
        if state == c.MEDIUM and backend.key in ("file", "postgres"):
            fixed = s["fixed"].median * 1e3
            _goals.record(
                2, case, f"{fixed:.1f} ms", f"≤ {FIXED_GOAL_MS:g} ms", fixed <= FIXED_GOAL_MS
            )
        verdicts.append(
            [
                backend.name,
                shape,
                state.name,
                f"{first.median:.2f}× vs {prim_names[0]}",
                f"≤ {goal}×",
                "yes" if first.median <= goal else "no",
            ]
        )
    c.table(
        headers,
        rows,
        title=f"## {backend.name}: per-await overhead vs. the primitive "
        f"(N = {n} awaits, {results[0][2]['reps']} repetitions; "
        f"store {backend.describe()})",
    )
    rows = []
    for shape, state, r in results:
        s = r["s"]
        rows.append(
            [
                shape,
                state.name,
                c.ms(s["marginal"]),
                c.ratio(s[f"mratio:{prim_names[0]}"]),
                c.ms(s["fixed"], 2),
                c.ms(s["off"]),
                c.ms(s["save"]),
                c.ratio(s["save_ratio"]),
                ", ".join(f"{k} {v}" for k, v in sorted(r["kinds"].items())),
            ]
        )
    if "cpu" in results[0][2]["s"]:
        c.table(
            [
                "shape",
                "state",
                f"{prim_names[0]} ms",
                f"budget ms/await at {goal}× ((goal - 1) × primitive)",
                "durably ms/await with nothing flushed (fsync = false; marginal)",
                f"that ÷ {prim_names[0]}",
            ],
            [
                [
                    shape,
                    state.name,
                    c.ms(r["s"][f"prim:{prim_names[0]}"]),
                    f"{(goal - 1) * r['s'][f'prim:{prim_names[0]}'].median * 1e3:.3f}",
                    c.ms(r["s"]["cpu"]),
                    c.ratio(r["s"]["cpu_ratio"]),
                ]
                for shape, state, r in results
            ],
            title=f"### {backend.name}: durably's own work per await against the goal's budget",
        )
        c.note(
            "With fsync = false the store writes everything and flushes nothing: what is left"
            " of the overhead is durably's work per await (encoding, journaling, the"
            " provider's record, the fixed cost excluded). The goal leaves (goal - 1) times the"
            " primitive for it; where this column is above that budget, the goal cannot be met"
            " on this disk whatever the flushing costs."
        )
    c.table(
        [
            "shape",
            "state",
            "marginal ms/await (fixed cost excluded)",
            f"marginal ratio vs {prim_names[0]}",
            "fixed ms/execution",
            "runtime ms/await with durability off (marginal)",
            "provider.save_checkpoint ms (same bytes)",
            f"save ratio vs {prim_names[0]}",
            "checkpoints of a run (by kind)",
        ],
        rows,
        title=f"### {backend.name}: where the time goes",
    )


if __name__ == "__main__":
    # The "nothing flushed" runs (fsync = false) warn once per provider that fsync is
    # disabled: we know, and 56 copies of the warning buried the tables.
    warnings.filterwarnings("ignore", message="the file store .* has fsync disabled")
    c.main(bench, "durably benchmark: per-await overhead vs. the storage primitive")
