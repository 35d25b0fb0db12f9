"""Resume time: a new process's start to the first resumed statement, as the history and
the state grow.

For each case a real process runs the program (``durably run``) and SIGKILLs itself
right after the checkpoint that precedes ``await self.Say("user", "resumed")``
(``DURABLY_CRASH_AFTER_CHECKPOINT``, with ``DURABLY_LEASE_TTL=0.2``). Then, on fresh
copies of that store (filesystem provider), each repetition measures:

* **process**: from spawning ``python -m durably resume ID --wait`` to the first line on
  its stdout (the resumed ``Say``);
* **in-process**: ``resume_execution(...)`` in this process, from the call to the resumed
  ``Say`` (claim + load + decode + restore + replay), and ``load_execution()`` alone
  (load + decode), so replay = in-process − load;
* **start-up**: spawning ``python -c "import durably.cli, durably.runner,
  durably_filesystem"`` to its exit (interpreter and imports, no store access).

Shapes: ``loop`` -- the N awaits are one ``for`` statement over a ``range``, which durably
runs an iteration at a time with a quiet point between iterations (``durably._loops``),
so resume restores the latest snapshot inside the loop (at most ``snapshot_every`` = 16
operations back) and replays the rest; ``statements`` -- N top-level statements, so
resume restores the latest snapshot (at most 16 operations back) and replays the rest.
Before loops were stepped, the loop shape restored the snapshot from before the loop
and replayed all N journaled operations.

Run: ``python benchmarks/bench_resume.py [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as c
import _goals

from durably.config import DurabilityConfig

GOAL_AWAITS = 10_000
GOAL_MS = 200.0
"""Issue 19, goal 5: a history of 10,000 awaits resumes in under 200 ms in-process."""
STARTUP = "import durably.cli, durably.runner, durably_filesystem"


@dataclass(frozen=True)
class Case:
    shape: str
    n: int
    state: c.StateShape

    def script(self, work: c.Workdir) -> str:
        """The scripted LLM: the shape's N awaits, then the Say that the resume shows."""
        body = c.SHAPES[self.shape](self.n, self.state)
        return work.script(
            c.response(
                body, self.state, tail="await self.Say('user', 'resumed')\nawait self.Return(0)\n"
            )
        )


LARGE = c.StateShape("large (1 MB)", 1000)


def cases(quick: bool) -> list[Case]:
    if quick:
        return [Case(s, n, c.MEDIUM) for s in ("loop", "statements") for n in (10, 200)]
    out = []
    for shape in ("loop", "statements"):
        out += [Case(shape, n, c.MEDIUM) for n in (10, 1000, 10_000)]
        out += [Case(shape, 1000, c.SMALL), Case(shape, 1000, LARGE)]
    return out


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    e.update(extra)
    return e


def _run(work: c.Workdir, llm: str, store: Path, execution_id: str, **environ: str) -> Any:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "durably",
            "run",
            str(work.program_path),
            "--llm",
            llm,
            "--store",
            f"file://{store}",
            "--execution-id",
            execution_id,
        ],
        env=env(**environ),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


async def checkpoints_before_say(work: c.Workdir, llm: str) -> int:
    """How many checkpoints precede the resumed Say's (the crash point), counted in an
    uninterrupted run: the first snapshot, one delta per await, and the snapshots taken
    between statements or iterations (how often inside a loop depends on the state's
    size, see ``durably._loops``)."""
    store = work.path / f"calibrate-{uuid.uuid4().hex[:8]}"
    execution_id = "calibrate"
    proc = _run(work, llm, store, execution_id)
    if proc.returncode != 0:
        raise RuntimeError(f"the calibration run failed: {proc.stderr[-500:]!r}")
    from durably import open_store

    kinds = []
    async with open_store(config=DurabilityConfig(store=f"file://{store}")) as provider:
        async for info in provider.iter_checkpoints(execution_id):
            kinds.append(info.metadata.get("durably.kind"))
    shutil.rmtree(store)
    deltas = [i for i, kind in enumerate(kinds) if kind == "delta"]
    return deltas[-2]  # the last delta is the Return's, the one before it the Say's


async def crash(work: c.Workdir, case: Case, store: Path) -> tuple[str, str, float]:
    """Run the program in a child process that SIGKILLs itself at the crash point."""
    llm = case.script(work)
    crash_at = await checkpoints_before_say(work, llm)
    execution_id = f"resume-{uuid.uuid4().hex[:10]}"
    start = c.now()
    proc = _run(
        work,
        llm,
        store,
        execution_id,
        DURABLY_CRASH_AFTER_CHECKPOINT=str(crash_at),
        DURABLY_LEASE_TTL="0.2",
    )
    elapsed = c.now() - start
    if proc.returncode != -9 or "resumed" in proc.stdout:
        raise RuntimeError(
            f"the crash run did not stop where expected (exit {proc.returncode}, "
            f"stdout {proc.stdout[-200:]!r}, stderr {proc.stderr[-500:]!r})"
        )
    return execution_id, llm, elapsed


def spawn_resume(execution_id: str, store: Path) -> tuple[float, float]:
    """(seconds to the first stdout line, seconds to exit) of ``durably resume``."""
    start = c.now()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "durably",
            "resume",
            execution_id,
            "--wait",
            "--store",
            f"file://{store}",
        ],
        env=env(DURABLY_LEASE_TTL="0.2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    first = c.now() - start
    _out, err = proc.communicate(timeout=600)
    total = c.now() - start
    if "resumed" not in line or proc.returncode != 0:
        raise RuntimeError(
            f"resume failed: first line {line!r}, exit {proc.returncode}, stderr {err[-500:]!r}"
        )
    return first, total


def startup() -> float:
    start = c.now()
    subprocess.run([sys.executable, "-c", STARTUP], check=True, env=env())
    return c.now() - start


async def in_process(execution_id: str, store: Path) -> tuple[float, float, int]:
    """(load + decode seconds, seconds from resume_execution to the resumed Say,
    journal entries replayed)."""
    from durably import open_store
    from durably.checkpoint import CheckpointManager
    from durably.runner import resume_execution

    config = DurabilityConfig(store=f"file://{store}")
    gc.collect()
    async with open_store(config=config) as provider:
        start = c.now()
        loaded = await CheckpointManager(execution_id, provider, config=config).load_execution()
        load = c.now() - start
    assert loaded is not None
    replayed = len(loaded.deltas)
    marks: list[float] = []

    def echo(line: str) -> None:
        if "resumed" in line and not marks:
            marks.append(c.now())

    gc.collect()
    start = c.now()
    result = await resume_execution(execution_id, config=config, echo=echo)
    if result.status != "completed" or not marks:
        raise RuntimeError(f"in-process resume failed: {result}")
    return load, marks[0] - start, replayed


async def bench(args: argparse.Namespace) -> None:
    reps = 2 if args.quick else 5
    work = c.Workdir("resume")
    rows = []
    parts = []
    try:
        startup()  # warm the page cache and the bytecode caches
        base: list[float] = []
        goals: list[list[str]] = []
        for case in cases(args.quick):
            c.progress(f"resume: {case.shape}, {case.n} awaits, state {case.state.name}")
            original = work.path / f"crashed-{case.shape}-{case.n}-{case.state.items}"
            execution_id, _llm, crash_s = await crash(work, case, original)
            usage = await c.store_usage(DurabilityConfig(store=f"file://{original}"), execution_id)
            if usage.kinds.get("delta") != case.n:  # the crash point is right before the Say
                raise RuntimeError(
                    f"expected {case.n} journal deltas before the crash, found {usage.kinds}"
                )
            first, total, loads, inproc = [], [], [], []
            replayed = 0
            for rep in range(reps):
                copy = work.path / f"copy-{rep}"
                shutil.copytree(original, copy)
                base.append(startup())
                f, t = spawn_resume(execution_id, copy)
                first.append(f)
                total.append(t)
                shutil.rmtree(copy)
                shutil.copytree(original, copy)
                load, inp, replayed = await in_process(execution_id, copy)
                loads.append(load)
                inproc.append(inp)
                shutil.rmtree(copy)
            shutil.rmtree(original)
            s_first, s_in, s_load = (c.Summary.of(first), c.Summary.of(inproc), c.Summary.of(loads))
            rows.append(
                [
                    case.shape,
                    f"{case.n:,}",
                    case.state.name,
                    c.ms(s_first, 0),
                    c.ms(c.Summary.of(total), 0),
                    c.ms(s_in, 1),
                    f"{(s_first.median - s_in.median) * 1e3:.0f}",
                ]
            )
            if case.n == GOAL_AWAITS and case.state == c.MEDIUM:
                met = s_in.median * 1e3 < GOAL_MS
                _goals.record(
                    5,
                    f"{case.shape}, {case.n:,} awaits, {case.state.name}",
                    f"{s_in.median * 1e3:.0f} ms",
                    f"< {GOAL_MS:.0f} ms",
                    met,
                )
                goals.append(
                    [
                        f"resume of {case.n:,} awaits in-process ({case.shape})",
                        f"< {GOAL_MS:.0f} ms",
                        c.ms(s_in, 1),
                        "met" if met else "not met",
                    ]
                )
            parts.append(
                [
                    case.shape,
                    f"{case.n:,}",
                    case.state.name,
                    f"{usage.checkpoints:,}",
                    f"{usage.total / 1024:,.0f} KB",
                    f"{replayed:,}",
                    c.ms(s_load, 1),
                    f"{(s_in.median - s_load.median) * 1e3:.1f}",
                    f"{crash_s:.1f}",
                ]
            )
        c.table(
            [
                "shape",
                "awaits before the crash",
                "state",
                "process: spawn → first resumed line (ms)",
                "process: spawn → exit (ms)",
                "in-process: resume → first resumed line (ms)",
                "difference = start-up + imports + program load (ms)",
            ],
            rows,
            title=f"## Resume time ({reps} repetitions; filesystem store)",
        )
        c.note(
            f"Interpreter start-up with durably's imports alone ({STARTUP!r}, spawn to "
            f"exit, measured next to every resume): {c.ms(c.Summary.of(base), 0)} ms."
        )
        c.table(
            [
                "shape",
                "awaits",
                "state",
                "checkpoints in the store",
                "store size",
                "journaled deltas loaded",
                "load + decode (ms)",
                "restore + replay (ms, median difference)",
                "original run until the crash (s)",
            ],
            parts,
            title="### The in-process part",
        )
        if goals:
            c.table(
                ["goal", "target", "measured (ms, median [p10–p90])", ""],
                goals,
                title="### Goal 5 of issue 19",
            )
    finally:
        work.cleanup()


if __name__ == "__main__":
    c.main(bench, "durably benchmark: resume time")
