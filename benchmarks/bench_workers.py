"""Workers draining a queue (issue 19, goal 6): N queued executions on PostgreSQL, drained
by 1, 4 and 8 real ``durably worker`` processes, one run per worker count.

First, **the claim alone as the queue grows**: ``--depth`` executions (default 10,000)
are submitted, then claimed one ``claim_next`` at a time with a long lease and never
released, from the whole queue open down to none; the latencies of the first and the
last 10 % of the claims are compared (flat: the claim reads the partial index
``executions_open_idx``, whatever the queue's length).

Then, for each worker count, a run in a fresh PostgreSQL schema (dropped at the end):

1. **Queue**: N executions of a small program are submitted through the public API,
   :func:`durably.runner.submit_program` (what ``durably submit`` calls), a few at a time.
   The program's LLM playbook (scripted) steps, calls a Python tool and returns; the
   tool appends ``<idempotency key> <pid>`` to a ledger file -- a side effect outside the
   store, so an execution run twice shows as two ledger lines.
2. **Drain**: W ``python -m durably worker --config durably.toml --once`` processes start
   at once (``--concurrency`` per worker, default 4 as the command's default; every
   attempt runs in a child process of its worker). Meanwhile this process counts the
   completed executions every 0.25 s and, every 0.5 s, **probes the claim**: it times one
   ``claim_next`` (the statement workers claim with) and gives the claimed execution back
   at once (``release``), recording the open executions at that moment. Time to drain:
   from starting the workers to the last execution completed.
3. **Audit**, from the store and the ledger: every execution ``completed``, exactly one
   ``final`` checkpoint, sequence numbers 0..k without gaps, every checkpoint after the
   submission written under a single lease epoch (one run: no run was repeated and none
   was taken over), the tool's side effect exactly once per execution, and for a random
   sample the transcript, LLM calls and result equal to the first execution's.
4. **Claim plan**: ``EXPLAIN (ANALYZE, BUFFERS)`` of the claim statement (in a
   transaction rolled back) with the whole queue open and again once it is drained: the
   index it uses and the buffers it touches.

Claims/s is executions completed per second of drain (each needs one worker claim; the
extra claims, of an execution that another worker's child was about to claim, show as
``busy`` attempts in the workers' logs and are counted). Ratios are 4 and 8 workers
divided by 1 worker, from runs taken one after another in the same invocation.

Run: ``python benchmarks/bench_workers.py [--quick] [--executions N] [--depth N]
[--workers 1,4,8] [--concurrency 4]``. Needs PostgreSQL (see ``_common.pg_url``); with
``--providers`` not naming ``postgres`` it measures nothing. At the default size
(10,000 executions per worker count) a drain takes about an hour on a 2-core machine:
every attempt starts a Python process. Not a test: nothing is asserted; the audit's
verdict is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as c
import _goals

PROGRAM = '''\
"""A queued job: step, call a tool with a side effect, return."""

import os

from durably import Agent, playbook

LEDGER = {ledger!r}


class Job(Agent):
    """You do one small job."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE do the job
        - 02:RET the result"""

    @playbook
    async def Record(self, n: int) -> int:
        """Append this call to the ledger (a side effect outside the store)."""
        fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{{self.idempotency_key}} {{os.getpid()}}\\n".encode())
        finally:
            os.close(fd)
        return n * 2
'''

RESPONSE = (
    "```python\n"
    'await self.Step("Main:01:EXE")\n'
    "doubled = await self.Record(21)\n"
    'await self.Step("Main:02:RET")\n'
    "await self.Return(doubled)\n"
    "```\n"
)

SUBMIT_AT_ONCE = 16
"""Submissions in flight at once while filling the queue."""
PROBE_EVERY = 0.5
FLAT = 1.5
"""Issue 19, goal 6: "flat" claim latency -- the last 10 % of the claims of a full queue
take at most this many times the first 10 % (a scan growing with the queue would make the
first claims, with the whole queue open, the slow ones; a degrading index the last)."""
COUNT_EVERY = 0.25
SAMPLE = 30
"""Executions whose transcript, LLM calls and result are compared with the first one's."""


@dataclass
class Drain:
    """One run: W workers draining N executions."""

    workers: int
    executions: int
    submit_s: float = 0.0
    drain_s: float = float("nan")
    first_done_s: float = float("nan")
    probes: list[tuple[float, int, float]] = field(default_factory=list)
    """(seconds since the start, open executions, claim_next seconds)."""
    cpu_s: float = 0.0
    exit_codes: list[int] = field(default_factory=list)
    busy: int = 0
    completed_by_worker: list[int] = field(default_factory=list)
    audit: dict[str, Any] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)
    load_start: str = ""
    load_end: str = ""

    @property
    def claims_per_s(self) -> float:
        return self.executions / self.drain_s

    def latency(self, part: str) -> c.Summary:
        """Probe latencies while the queue was in its first (``start``: more than 75 %
        of N open) or last (``end``: less than 25 % open, at least one) quarter."""
        n = self.executions
        if part == "start":
            vals = [s for _, open_, s in self.probes if open_ > 0.75 * n]
        else:
            vals = [s for _, open_, s in self.probes if 0 < open_ < 0.25 * n]
        return c.Summary.of(vals)


# --------------------------------------------------------------------------- helpers


def _worker_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def _fill(config: Any, program: Any, llm: str, ids: list[str]) -> None:
    from durably.runner import submit_program

    queue = list(ids)

    async def submitter() -> None:
        while queue:
            execution_id = queue.pop()
            await submit_program(program, llm=llm, execution_id=execution_id, config=config)

    await asyncio.gather(*(submitter() for _ in range(SUBMIT_AT_ONCE)))


def _status_counts(conn: Any, schema: str) -> dict[str, int]:
    rows = conn.execute(
        f"SELECT coalesce(status, 'open'), count(*) FROM \"{schema}\".executions GROUP BY 1"
    ).fetchall()
    return {str(k): int(v) for k, v in rows}


def _open_count(conn: Any, schema: str) -> int:
    row = conn.execute(
        f'SELECT count(*) FROM "{schema}".executions'
        " WHERE status IS DISTINCT FROM 'completed' AND status IS DISTINCT FROM 'failed'"
    ).fetchone()
    return int(row[0])


def _explain_claim(conn: Any, provider: Any) -> str:
    """The claim statement's plan (``EXPLAIN ANALYZE BUFFERS``), in a transaction that is
    rolled back: the index scanned and the buffers touched, on one line."""
    sql = provider._db.sql["claim_next:1:1"]
    params = {"owner": "bench-explain", "ttl": 30.0, "now": time.time()}
    lines: list[str] = []
    with conn.transaction(force_rollback=True):
        for (line,) in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall():
            lines.append(str(line))
    keep = []
    for line in lines:
        text = line.strip().lstrip("-> ").strip()
        if any(
            key in text for key in ("Index Scan", "Seq Scan", "Bitmap", "Buffers", "Execution Time")
        ):
            keep.append(text)
    return "; ".join(dict.fromkeys(keep))


async def _probe_claim(provider: Any, owner: str) -> float:
    """Time one ``claim_next`` and give the claimed execution back at once."""
    start = c.now()
    lease = await provider.claim_next(owner, ttl=30.0)
    elapsed = c.now() - start
    if lease is not None:
        await provider.release(lease)
    return elapsed


def _busy(log: str) -> int:
    """Attempts whose child found the execution held by another worker (the worker logs
    ``execution ID: <why>`` for them, see ``Supervisor.attempt``)."""
    return sum(
        1
        for line in log.splitlines()
        if " durably.worker execution " in line
        and not line.endswith(": completed")
        and ": failed" not in line
        and "attempt" not in line
    )


# --------------------------------------------------------------------------- the audit


def _audit(conn: Any, schema: str, ids: list[str], ledger: Path) -> dict[str, Any]:
    """Exactly once, from the store's rows and the ledger (see the module docstring)."""
    s = f'"{schema}"'
    rows = conn.execute(
        f"SELECT execution_id, seq, metadata->>'durably.kind', metadata->>'durably.status',"
        f" metadata->>'durably.epoch', metadata->>'durably.owner'"
        f" FROM {s}.checkpoints ORDER BY execution_id, seq"
    ).fetchall()
    per: dict[str, list[tuple[int, str | None, str | None, str | None, str | None]]] = {}
    for execution_id, seq, kind, status, epoch, owner in rows:
        per.setdefault(str(execution_id), []).append((int(seq), kind, status, epoch, owner))
    ledger_lines = ledger.read_text().splitlines() if ledger.exists() else []
    effects = Counter(line.split(" ", 1)[0].split(":", 1)[0] for line in ledger_lines)
    problems: list[str] = []
    lost = [i for i in ids if i not in per]
    not_completed = [i for i in ids if i in per and per[i][-1][2] != "completed"]
    finals_wrong = [i for i in ids if i in per and sum(k == "final" for _, k, *_ in per[i]) != 1]
    gaps = [i for i in ids if i in per and [r[0] for r in per[i]] != list(range(len(per[i])))]
    runs: Counter[int] = Counter()
    for i in ids:
        if i in per:
            # seq 0 is the submission's snapshot; the rest were written by worker runs.
            runs[len({(r[3], r[4]) for r in per[i][1:]})] += 1
    more_runs = sum(v for k, v in runs.items() if k != 1)
    effect_wrong = [i for i in ids if effects.get(i, 0) != 1]
    for name, bad in (
        ("lost (no checkpoint)", lost),
        ("not completed", not_completed),
        ("final checkpoints != 1", finals_wrong),
        ("gaps in seq", gaps),
        ("tool side effect != once", effect_wrong),
    ):
        if bad:
            problems.append(f"{name}: {len(bad)} (e.g. {', '.join(bad[:3])})")
    if more_runs:
        problems.append(f"written by more than one lease: {more_runs} ({dict(runs)})")
    return {
        "executions": len(ids),
        "stored": len(per),
        "checkpoints": len(rows),
        "ledger_lines": len(ledger_lines),
        "runs": dict(runs),
        "problems": problems,
    }


async def _sample_same(config: Any, ids: list[str], rng: random.Random) -> tuple[int, list[str]]:
    """Compare transcript, LLM calls, agents and result of a sample with ``ids[0]``'s."""
    from durably import open_store
    from durably._inspect import describe_execution, without_measurements
    from durably.checkpoint import CheckpointManager

    keys = ("transcript", "agents", "llm_calls", "result")
    differ: list[str] = []
    sample = rng.sample(ids[1:], min(SAMPLE, len(ids) - 1))
    async with open_store(config=config) as provider:

        async def describe(execution_id: str) -> dict[str, Any]:
            found = await describe_execution(
                CheckpointManager(execution_id, provider, config=config)
            )
            data: dict[str, Any] = without_measurements(
                json.loads(json.dumps(found, default=repr, ensure_ascii=False))
            )
            return {k: data.get(k) for k in keys}

        reference = await describe(ids[0])
        for execution_id in sample:
            got = await describe(execution_id)
            # The ids differ; everything else must not.
            if json.dumps(got).replace(execution_id, "ID") != json.dumps(reference).replace(
                ids[0], "ID"
            ):
                differ.append(execution_id)
    return len(sample), differ


# --------------------------------------------------------------------------- one run


async def drain(args: argparse.Namespace, workers: int, n: int, work: Path) -> Drain:
    import psycopg

    from durably import open_store
    from durably.config import load_config
    from durably.runner import Program

    url = c.pg_url()
    run = Drain(workers=workers, executions=n)
    tag = f"w{workers}"
    ledger = work / f"ledger-{tag}.txt"
    program_path = work / f"job_{tag}.py"
    program_path.write_text(PROGRAM.format(ledger=str(ledger)))
    script = work / f"job_{tag}.scripted.json"
    script.write_text(json.dumps({"Job.Main": [RESPONSE]}))
    llm = f"scripted:{script}"
    with c.pg_schema(url, "durably_bench_workers") as schema:
        cfg = work / f"durably-{tag}.toml"
        cfg.write_text(
            f'[durability]\nstore = "{url}"\n[durability.postgres]\nschema = "{schema}"\n'
        )
        config = load_config(config_file=cfg, use_env=False)
        program = Program.load(program_path, llm=llm)
        ids = [f"job-{tag}-{k:05d}" for k in range(n)]
        c.progress(f"{workers} worker(s): submitting {n:,} executions")
        start = c.now()
        await _fill(config, program, llm, ids)
        run.submit_s = c.now() - start
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'ANALYZE "{schema}".executions')
            async with open_store(config=config) as provider:
                run.plans["full"] = _explain_claim(conn, provider)
                run.load_start = c.load()
                c.progress(f"{workers} worker(s): draining")
                logs = [(work / f"worker-{tag}-{k}.log").open("w") for k in range(workers)]
                cpu_before = _children_cpu()
                start = c.now()
                procs = [
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "durably",
                        "worker",
                        "--config",
                        str(cfg),
                        "--once",
                        "--concurrency",
                        str(args.concurrency),
                        env=_worker_env(),
                        cwd=work,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=log,
                    )
                    for log in logs
                ]
                try:
                    next_probe = 0.0
                    deadline = start + args.timeout
                    while True:
                        t = c.now() - start
                        open_ = _open_count(conn, schema)
                        done = n - open_
                        if done and run.first_done_s != run.first_done_s:
                            run.first_done_s = t
                        if open_ == 0:
                            run.drain_s = t
                            break
                        if all(p.returncode is not None for p in procs):
                            break  # every worker exited with work left
                        if c.now() > deadline:
                            c.progress(f"timed out with {open_:,} open")
                            break
                        if t >= next_probe:
                            run.probes.append((t, open_, await _probe_claim(provider, "probe")))
                            next_probe = t + PROBE_EVERY
                        await asyncio.sleep(COUNT_EVERY)
                    for p in procs:
                        try:
                            run.exit_codes.append(await asyncio.wait_for(p.wait(), 60))
                        except TimeoutError:
                            p.kill()
                            run.exit_codes.append(await p.wait())
                finally:
                    for p in procs:
                        if p.returncode is None:
                            p.kill()
                            await p.wait()
                    for log in logs:
                        log.close()
                run.cpu_s = _children_cpu() - cpu_before
                run.load_end = c.load()
                run.plans["drained"] = _explain_claim(conn, provider)
            for k in range(workers):
                text = (work / f"worker-{tag}-{k}.log").read_text()
                run.completed_by_worker.append(text.count(": completed"))
                run.busy += _busy(text)
            c.progress(f"{workers} worker(s): auditing")
            run.audit = _audit(conn, schema, ids, ledger)
            run.audit["statuses"] = _status_counts(conn, schema)
        sampled, differ = await _sample_same(config, ids, random.Random(workers))
        run.audit["sampled"] = sampled
        if differ:
            run.audit["problems"].append(
                f"transcript/LLM calls/result differ from the first execution's: "
                f"{len(differ)} of {sampled} sampled (e.g. {', '.join(differ[:3])})"
            )
    return run


# --------------------------------------------------------------------------- the sweep


@dataclass
class Sweep:
    """``claim_next`` alone, from a queue of ``depth`` executions down to none."""

    depth: int
    submit_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    plans: dict[str, str] = field(default_factory=dict)

    def part(self, first: float, last: float) -> c.Summary:
        """Latencies of the claims between the fractions ``first`` and ``last`` of the
        queue (0: the first claim, with the whole queue open)."""
        n = len(self.latencies)
        return c.Summary.of(self.latencies[int(first * n) : max(int(first * n) + 1, int(last * n))])


async def sweep(depth: int, work: Path) -> Sweep:
    """Queue ``depth`` executions (``submit_program``), then claim them all, one
    ``claim_next`` at a time with a long lease and no release, as workers that never
    finish would: the claim at every depth of the queue, from ``depth`` open to none.
    The claimed executions stay in the partial index (they are unfinished) behind the
    claimable ones, and each claim leaves a dead index entry at the front."""
    import psycopg

    from durably import open_store
    from durably.config import load_config
    from durably.runner import Program

    url = c.pg_url()
    result = Sweep(depth)
    ledger = work / "ledger-sweep.txt"
    program_path = work / "job_sweep.py"
    program_path.write_text(PROGRAM.format(ledger=str(ledger)))
    script = work / "job_sweep.scripted.json"
    script.write_text(json.dumps({"Job.Main": [RESPONSE]}))
    llm = f"scripted:{script}"
    with c.pg_schema(url, "durably_bench_workers") as schema:
        cfg = work / "durably-sweep.toml"
        cfg.write_text(
            f'[durability]\nstore = "{url}"\n[durability.postgres]\nschema = "{schema}"\n'
        )
        config = load_config(config_file=cfg, use_env=False)
        program = Program.load(program_path, llm=llm)
        c.progress(f"claim sweep: submitting {depth:,} executions")
        start = c.now()
        await _fill(config, program, llm, [f"sweep-{k:05d}" for k in range(depth)])
        result.submit_s = c.now() - start
        c.progress(f"claim sweep: claiming {depth:,} executions one by one")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'ANALYZE "{schema}".executions')
            async with open_store(config=config) as store:
                provider: Any = store  # a PostgresProvider: it has claim_next
                result.plans["full"] = _explain_claim(conn, provider)
                while True:
                    start = c.now()
                    lease = await provider.claim_next("sweep", ttl=3600.0)
                    elapsed = c.now() - start
                    if lease is None:
                        break
                    result.latencies.append(elapsed)
                result.plans["all claimed"] = _explain_claim(conn, provider)
    return result


# --------------------------------------------------------------------------- the report


def _ms(summary: c.Summary) -> str:
    return c.ms(summary, 2) if summary.n else "n/a"


async def bench(args: argparse.Namespace) -> None:
    n = args.executions or (40 if args.quick else 300)
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    if "postgres" not in args.providers.split(","):
        print("\nPostgreSQL not among --providers: nothing measured (workers on PostgreSQL).")
        return
    why = c.pg_available(c.pg_url())
    if why:
        print(f"\n**PostgreSQL unavailable** ({why}): nothing measured.")
        return
    depth = args.depth or (500 if args.quick else 10_000)
    runs: list[Drain] = []
    with tempfile.TemporaryDirectory(prefix="durably-bench-workers-") as tmp:
        swept = await sweep(depth, Path(tmp)) if depth > 0 else None
        for workers in counts:
            runs.append(await drain(args, workers, n, Path(tmp)))
    if swept is not None:
        parts = [(0.0, 0.1), (0.1, 0.5), (0.5, 0.9), (0.9, 1.0)]
        first, last = swept.part(*parts[0]), swept.part(*parts[-1])
        c.table(
            [
                "queued",
                "submit s (submit_program)",
                *(f"claim ms, claims {int(a * 100)}–{int(b * 100)} %" for a, b in parts),
                "last 10 % ÷ first 10 %",
            ],
            [
                [
                    f"{swept.depth:,}",
                    f"{swept.submit_s:.1f} ({swept.depth / swept.submit_s:.0f}/s)",
                    *(_ms(swept.part(a, b)) for a, b in parts),
                    f"{last.median / first.median:.2f}",
                ]
            ],
            title=f"claim_next alone, from {swept.depth:,} queued executions down to none "
            "(one claim at a time, never released; median [p10–p90])",
        )
        flat = last.median / first.median
        _goals.record(
            6,
            f"claim latency, last 10 % ÷ first 10 % of {swept.depth:,} queued",
            f"{flat:.2f}×",
            f"≤ {FLAT:g}×",
            flat <= FLAT,
        )
        c.table(
            ["queue", "claim plan (EXPLAIN ANALYZE BUFFERS, rolled back)"],
            [[k, v] for k, v in swept.plans.items()],
        )
    rows = []
    for r in runs:
        rows.append(
            [
                r.workers,
                r.workers * args.concurrency,
                f"{r.executions:,}",
                f"{r.submit_s:.1f}",
                f"{r.drain_s:.1f}",
                f"{r.claims_per_s:.1f}",
                f"{r.first_done_s:.2f}",
                f"{r.cpu_s / r.executions * 1e3:.0f}",
                _ms(r.latency("start")),
                _ms(r.latency("end")),
                f"{r.latency('end').median / r.latency('start').median:.2f}"
                if r.latency("start").n and r.latency("end").n
                else "n/a",
                f"{r.load_start.split()[0]} → {r.load_end.split()[0]}",
            ]
        )
    c.table(
        [
            "workers",
            "attempts at once",
            "executions",
            "submit s",
            "drain s",
            "claims/s",
            "first done s",
            "worker CPU ms/execution",
            "claim ms, queue > 75 %",
            "claim ms, queue < 25 %",
            "end ÷ start",
            "load (1 min) start → end",
        ],
        rows,
        title=f"Draining {n:,} queued executions on PostgreSQL "
        f"(--concurrency {args.concurrency} per worker; claim latency: probes every "
        f"{PROBE_EVERY:g} s, median [p10–p90])",
    )
    for r in runs:
        _goals.record(
            6,
            f"{r.workers} worker(s) drain {r.executions:,} executions",
            "exactly once, none lost"
            if not r.audit["problems"]
            else "; ".join(r.audit["problems"]),
            "exactly once, none lost",
            not r.audit["problems"],
        )
    base = next((r for r in runs if r.workers == 1), None)
    if base is not None:
        c.table(
            ["workers", "claims/s ÷ 1 worker", "drain time ÷ 1 worker"],
            [
                [
                    r.workers,
                    f"{r.claims_per_s / base.claims_per_s:.2f}×",
                    f"{r.drain_s / base.drain_s:.2f}×",
                ]
                for r in runs
                if r.workers != 1
            ],
            title="Ratios (same invocation, runs one after another)",
        )
    c.table(
        [
            "workers",
            "completed",
            "ledger lines",
            "lease epochs per execution",
            "sampled same",
            "busy attempts",
            "completed per worker",
            "worker exit codes",
            "verdict",
        ],
        [
            [
                r.workers,
                f"{r.audit['statuses'].get('completed', 0):,} / {r.executions:,}",
                f"{r.audit['ledger_lines']:,}",
                ", ".join(f"{k}: {v:,}" for k, v in sorted(r.audit["runs"].items())),
                f"{r.audit['sampled'] - sum('sampled' in p for p in r.audit['problems'])}"
                f" / {r.audit['sampled']}",
                r.busy,
                " ".join(str(x) for x in r.completed_by_worker),
                " ".join(str(x) for x in r.exit_codes),
                "exactly once, none lost"
                if not r.audit["problems"]
                else "; ".join(r.audit["problems"]),
            ]
            for r in runs
        ],
        title="Audit from the store and the tool's ledger",
    )
    c.table(
        ["workers", "queue", "claim plan (EXPLAIN ANALYZE BUFFERS, rolled back)"],
        [[r.workers, k, v] for r in runs for k, v in r.plans.items()],
        title="The claim statement's plan with the queue full and drained",
    )
    c.note(
        "claims/s = executions / drain time (each execution needs one worker claim). "
        "Drain time runs from starting the worker processes (interpreter start-up "
        "included: see 'first done') to the last execution completed. Worker CPU is the "
        "user + system time of the workers and their attempt processes, per execution. "
        f"The machine has {os.cpu_count()} cores, shared with PostgreSQL and this "
        "process: once the attempts at once exceed them, more workers measure "
        "contention, not scale-out."
    )


def _extra(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--executions",
        type=int,
        default=0,
        help="queued executions drained (default 300: a drain of 10,000 takes about an hour "
        "per worker count on 2 cores; quick 40)",
    )
    parser.add_argument(
        "--depth",
        type=int,
        default=0,
        help="queued executions of the claim sweep (default 10,000; quick 500; -1: none)",
    )
    parser.add_argument(
        "--workers", default="1,4,8", help="comma-separated worker counts (default 1,4,8)"
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="--concurrency of each worker (default 4, the command's default)",
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds a drain may take (default 3600)"
    )


if __name__ == "__main__":
    c.main(bench, "Workers draining a queue of executions on PostgreSQL", extra=_extra)
