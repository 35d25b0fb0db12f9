"""The resume property, checked on generated programs (in one process, in-memory store).

For a generated program (:mod:`fuzzgen`) the harness runs:

* a baseline, and a second baseline with other chunk boundaries (they must agree);
* a crash right after checkpoint *k* (for every *k*, or a seeded sample), then a resume;
* crashes in the middle of an LLM stream (after *c* chunks), then a resume;
* a crash during a resume (crash at *k1*, resume and crash again at a later checkpoint,
  resume again);
* a fork right after every LLM call (:func:`durably.timetravel.fork_execution`), resumed
  with the same scripted responses.

A "crash" is a :class:`Crash` raised where the process would have died; from then on the
store refuses every write (the process is gone), and the next run starts from a fresh
:class:`~durably._execution.Execution` holding nothing but the store. Each resumed run must
equal the baseline: the store's view (``show --json``: transcript, every agent's state,
locals, phase and call stack, every LLM call with its prompt and response, the result,
the status), what the user saw (per agent, each line once), the LLM prompts, and the
number of times each tool ran (a tool whose call completed never runs again).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import textwrap
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from durably._execution import Execution, UserIO
from durably._inspect import describe_execution, without_measurements
from durably._resume import restore_agents
from durably.checkpoint import CheckpointManager
from durably.config import DurabilityConfig
from durably.errors import NotFoundError
from durably.llm import ScriptedLLM
from durably.runner import Program, _drive
from durably.timetravel import fork_execution, seq_after_llm_call

from fuzzgen import Chooser, Generated, generate
from memstore import MemoryStore

#: Keys of ``show --json`` that must equal the baseline's (checkpoint counts may differ).
COMPARED = ("status", "transcript", "agents", "llm_calls", "result")


class Crash(BaseException):
    """Stands for the death of the process (SIGKILL) at this point."""


class DyingStore(MemoryStore):
    """An in-memory store whose process dies right after its ``crash_at``-th write."""

    def __init__(self) -> None:
        super().__init__()
        self.crash_at: int | None = None
        self.dead = False
        self.writes = 0
        self.log: list[tuple[str, tuple[Any, ...]]] = []
        """Every change made to the store, in order (see :meth:`prefix`)."""

    def arm(self, crash_at: int | None) -> None:
        """Start a new process: alive, dying after ``crash_at`` more writes."""
        self.dead, self.writes, self.crash_at = False, 0, crash_at

    def die(self) -> None:
        self.dead = True
        raise Crash(f"after checkpoint {self.writes}")

    async def _save(self, *args: Any) -> Any:
        if self.dead:
            raise Crash("the process is dead")
        self.log.append(("_save", args))
        info = await super()._save(*args)
        self.writes += 1
        if self.writes == self.crash_at:
            self.die()
        return info

    async def _put_blob(self, *args: Any) -> bool:
        if self.dead:
            raise Crash("the process is dead")
        self.log.append(("_put_blob", args))
        result: bool = await super()._put_blob(*args)
        return result

    async def _delete(self, *args: Any) -> bool:
        self.log.append(("_delete", args))
        result: bool = await super()._delete(*args)
        return result

    async def _delete_blob(self, *args: Any) -> bool:
        self.log.append(("_delete_blob", args))
        result: bool = await super()._delete_blob(*args)
        return result

    async def prefix(self, writes: int) -> DyingStore:
        """The store as a process that died right after its ``writes``-th checkpoint left
        it: every change this store recorded up to that checkpoint, replayed in order."""
        store = DyingStore()
        saves = 0
        for method, args in self.log:
            await getattr(MemoryStore, method)(store, *args)
            if method == "_save":
                saves += 1
                if saves == writes:
                    break
        store.log.clear()
        return store

    def same_checkpoints(self, other: DyingStore, execution_id: str) -> bool:
        """Both stores hold the same checkpoints (sequence numbers and bytes) and blobs."""
        mine, theirs = (s.checkpoints.get(execution_id, {}) for s in (self, other))
        return {seq: data for seq, (_, data) in mine.items()} == {
            seq: data for seq, (_, data) in theirs.items()
        } and self.blobs.get(execution_id, {}) == other.blobs.get(execution_id, {})


class RecordingLLM:
    """The scripted client, recording every request and dying after ``crash_chunk`` chunks."""

    def __init__(
        self,
        script: dict[str, list[str]],
        store: DyingStore,
        *,
        chunk_seed: int,
        crash_chunk: int | None = None,
    ) -> None:
        self.inner = ScriptedLLM(script, spec="scripted:fuzz", chunk_seed=chunk_seed)
        self.spec = self.inner.spec
        self.store = store
        self.crash_chunk = crash_chunk
        self.chunks = 0
        self.requests: list[tuple[str, int, str]] = []
        self.requests_at: list[int] = []
        """How many checkpoints were durable when each request was made."""
        self.streams: list[tuple[tuple[str, int], int, int | None]] = []
        """(call, checkpoints durable when it started, ... when it ended or None)."""
        self.prompts: dict[tuple[str, int], Any] = {}
        self.open: list[tuple[str, int]] = []
        """Streams started and not finished (nested playbooks stream inside others)."""

    async def stream(
        self,
        messages: list[dict[str, str]],
        *,
        agent: str,
        playbook: str,
        call: int,
        prefix: str = "",
    ) -> AsyncIterator[str]:
        if self.store.dead:
            raise Crash("the process is dead")
        key = (f"{agent}.{playbook}", call)
        self.requests.append((key[0], call, prefix))
        self.requests_at.append(self.store.writes)
        self.prompts[key] = messages
        self.open.append(key)
        span = len(self.streams)
        self.streams.append((key, self.store.writes, None))
        async for chunk in self.inner.stream(
            messages, agent=agent, playbook=playbook, call=call, prefix=prefix
        ):
            if self.store.dead:
                raise Crash("the process is dead")
            yield chunk
            self.chunks += 1
            if self.chunks == self.crash_chunk:
                self.store.dead = True
                raise Crash(f"in the stream of {key}, after chunk {self.chunks}")
        self.open.remove(key)
        self.streams[span] = (key, self.streams[span][1], self.store.writes)


@dataclass
class Trace:
    """What one process did and what the store says afterwards."""

    crashed: bool
    status: str
    view: dict[str, Any] | None
    said: list[str]
    requests: list[tuple[str, int, str]]
    prompts: dict[tuple[str, int], Any]
    tools: Counter[tuple[str, str]]
    writes: int
    in_flight: list[tuple[str, int]] = field(default_factory=list)
    error: BaseException | None = None
    said_at: list[int] = field(default_factory=list)
    requests_at: list[int] = field(default_factory=list)
    tool_log: list[tuple[str, str, int]] = field(default_factory=list)
    streams: list[tuple[tuple[str, int], int, int | None]] = field(default_factory=list)

    def until(self, writes: int) -> Trace:
        """What this process did before its ``writes``-th checkpoint became durable and it
        died: the part of its events a crash right after that checkpoint leaves."""
        said = [line for line, w in zip(self.said, self.said_at, strict=True) if w < writes]
        requests = [r for r, w in zip(self.requests, self.requests_at, strict=True) if w < writes]
        tools: Counter[tuple[str, str]] = Counter(
            (event, name) for event, name, w in self.tool_log if w < writes
        )
        in_flight = [
            key
            for key, start, end in self.streams
            if start < writes and (end is None or end >= writes)
        ]
        return Trace(True, "crashed", None, said, requests, self.prompts, tools, writes, in_flight)


@dataclass
class Case:
    """A generated program written to disk, with its run settings."""

    generated: Generated
    program: Path
    config: DurabilityConfig
    loaded: Program | None = None
    """The program, loaded once (a process of its own would load the same module)."""
    counter: ToolCounter | None = None

    @classmethod
    def create(cls, generated: Generated, directory: Path) -> Case:
        program, _ = generated.write(directory)
        config = DurabilityConfig(
            snapshot_every=generated.snapshot_every,
            keep_last=generated.keep_last,
            on_unserializable="replay",  # the generator keeps iterators across awaits
        )
        return cls(generated, program, config)


async def run_process(
    case: Case,
    store: DyingStore,
    execution_id: str,
    *,
    resume: bool,
    crash_at: int | None = None,
    crash_chunk: int | None = None,
    chunk_seed: int = 0,
) -> Trace:
    """One process: run (or resume) ``execution_id`` until it ends or crashes."""
    store.arm(crash_at)
    gen = case.generated
    manager = CheckpointManager(execution_id, store, config=case.config)
    llm = RecordingLLM(gen.script, store, chunk_seed=chunk_seed, crash_chunk=crash_chunk)
    if case.loaded is None:
        case.loaded = Program.load(case.program)
        case.counter = ToolCounter(case.loaded)
    program, counter = case.loaded, case.counter
    assert counter is not None
    tools = counter.start(store)
    said: list[str] = []
    said_at: list[int] = []

    def echo(line: str) -> None:
        if not store.dead:  # a dead process shows nothing (see ToolCounter)
            said.append(line)
            said_at.append(store.writes)

    io = UserIO(list(gen.inputs), echo=echo)
    # A constant clock: the latency journaled with each LLM call is the same in every
    # run, so two runs' checkpoints can be compared byte for byte.
    execution = Execution(manager, program=program, llm=llm, io=io, clock=lambda: 0.0)
    crashed, status, error = False, "?", None
    try:
        if resume:
            loaded = await manager.load_execution()
            assert loaded is not None
            if loaded.status == "completed":
                status = "already-completed"
            else:
                await restore_agents(manager, execution, loaded=loaded)
        else:
            execution.header = {
                "program": str(case.program),
                "digest": program.digest,
                "llm": llm.spec,
                "inputs": list(gen.inputs),
            }
        if status != "already-completed":
            status = (await _drive(execution, manager, resume=resume)).status
    except Crash:
        crashed = True
    except Exception as exc:  # a loud failure: reported, never swallowed
        status, error = "error", exc
    store.dead = False
    view = (
        None
        if crashed
        else await describe_execution(CheckpointManager(execution_id, store, config=case.config))
    )
    return Trace(
        crashed,
        status,
        view,
        said,
        llm.requests,
        llm.prompts,
        tools,
        store.writes,
        llm.open if crashed else [],
        error,
        said_at,
        llm.requests_at,
        list(counter.log),
        llm.streams,
    )


class ToolCounter:
    """Counts the runs of every Python playbook (tool) of a program: ``("start", name)``
    when one starts, ``("end", name)`` when it returns or raises -- not what a dead process
    does (a SIGKILL runs no ``finally`` block, the in-process Crash does)."""

    def __init__(self, program: Program) -> None:
        self.runs: Counter[tuple[str, str]] = Counter()
        self.log: list[tuple[str, str, int]] = []
        self.store: DyingStore | None = None
        for cls in program.agent_classes:
            for spec in cls.playbooks.values():
                if not spec.llm and spec.func is not None:
                    object.__setattr__(
                        spec, "func", self._wrap(f"{cls.__name__}.{spec.name}", spec.func)
                    )

    def start(self, store: DyingStore) -> Counter[tuple[str, str]]:
        """Count the runs of a new process (the returned counter) against ``store``."""
        self.runs, self.store, self.log = Counter(), store, []
        return self.runs

    def _note(self, event: str, name: str) -> None:
        if self.store is not None and not self.store.dead:
            self.runs[event, name] += 1
            self.log.append((event, name, self.store.writes))

    def _wrap(self, name: str, func: Any) -> Any:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self._note("start", name)
            try:
                result = await func(*args, **kwargs)
            except Exception:
                self._note("end", name)
                raise
            self._note("end", name)
            return result

        return counted


def _by_agent(lines: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in lines:
        out.setdefault(line.partition(":")[0], []).append(line)
    return out


def _view(trace: Trace) -> dict[str, Any]:
    assert trace.view is not None
    view = without_measurements(trace.view)
    compared = {key: view[key] for key in COMPARED}
    # With Omega (a second agent that begins), each agent's lines and calls in its
    # order: how theirs interleave with the others' is up to the scheduler, in a resumed
    # run as in two uninterrupted ones. Without it, the order across agents counts too.
    if any(item["agent"] == "Omega" for item in compared["llm_calls"]):
        for key in ("transcript", "llm_calls"):
            compared[key] = sorted(compared[key], key=lambda item: item["id"])
    return compared


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return f"{path}/{key}: only in {'resumed' if key in b else 'baseline'}"
            if a[key] != b[key]:
                return _first_difference(a[key], b[key], f"{path}/{key}")
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
        if len(a) != len(b):
            return f"{path}: {len(a)} items in the baseline, {len(b)} resumed"
    text_a, text_b = json.dumps(a, default=repr)[:300], json.dumps(b, default=repr)[:300]
    return f"{path}: baseline {text_a} != resumed {text_b}"


@dataclass
class Failure:
    """A resumed run that differed from the baseline (or a baseline that is broken)."""

    mode: str
    detail: str

    def __str__(self) -> str:
        return f"{self.mode}: {self.detail}"


@dataclass
class Report:
    """What checking one program covered."""

    crash_points: int = 0
    stream_crashes: int = 0
    double_crashes: int = 0
    forks: int = 0
    failures: list[Failure] = field(default_factory=list)


class Checker:
    """Checks the resume property on one generated program."""

    def __init__(
        self,
        case: Case,
        *,
        max_crash_points: int | None = None,
        stream_crashes: int = 3,
        double_crashes: int = 2,
        forks: int | None = None,
        real_crash_points: int = 2,
        seed: int = 0,
    ) -> None:
        self.case = case
        self.max_crash_points = max_crash_points
        self.stream_crashes = stream_crashes
        self.double_crashes = double_crashes
        self.forks = forks
        self.rng = random.Random(seed)
        self.real_crash_points = real_crash_points
        self.baseline: Trace | None = None
        self.base_store = DyingStore()

    async def check(self, *, stop_at_first: bool = True) -> Report:
        report = Report()
        store = self.base_store = DyingStore()
        base = await run_process(self.case, store, "baseline", resume=False)
        other = await run_process(self.case, DyingStore(), "baseline", resume=False, chunk_seed=7)
        if base.status != "completed":
            report.failures.append(Failure("baseline", f"status {base.status}: {base.error!r}"))
            return report
        self.baseline = base
        problem = self.compare(base, [other], chunking=True)
        if problem:
            report.failures.append(Failure("chunking", problem))
            return report
        total = base.writes
        points = list(range(1, total + 1))
        if self.max_crash_points is not None and len(points) > self.max_crash_points:
            points = sorted(self.rng.sample(points, self.max_crash_points))
        real = set(self.rng.sample(points, min(self.real_crash_points, len(points))))
        for k in points:
            report.crash_points += 1
            problem = (
                await self.crash_and_resume("baseline", [k])
                if k in real
                else await self.resume_prefix(k)
            )
            if problem:
                report.failures.append(Failure(f"crash after checkpoint {k}", problem))
                if stop_at_first:
                    return report
        chunks = sum(len(r) for rs in self.case.generated.script.values() for r in rs)
        for _ in range(self.stream_crashes):
            c = self.rng.randint(1, max(1, chunks // 3))
            report.stream_crashes += 1
            problem = await self.crash_and_resume(f"s{c}", [None], chunk=c)
            if problem:
                report.failures.append(Failure(f"crash in an LLM stream after chunk {c}", problem))
                if stop_at_first:
                    return report
        for _ in range(self.double_crashes if total > 2 else 0):
            k1 = self.rng.randint(1, total - 1)
            k2 = self.rng.randint(1, max(1, total - k1))
            report.double_crashes += 1
            problem = await self.crash_and_resume(f"d{k1}-{k2}", [k1, k2])
            if problem:
                report.failures.append(
                    Failure(f"crash after checkpoint {k1}, resume, crash after {k2} more", problem)
                )
                if stop_at_first:
                    return report
        calls = len(base.view["llm_calls"]) if base.view else 0
        numbers = list(range(1, calls + 1))
        if self.forks is not None and len(numbers) > self.forks:
            numbers = sorted(self.rng.sample(numbers, self.forks))
        for n in numbers:
            report.forks += 1
            problem = await self.fork_and_resume(n)
            if problem:
                report.failures.append(Failure(f"fork at LLM call {n}, resume", problem))
                if stop_at_first:
                    return report
        return report

    async def resume_prefix(self, k: int) -> str | None:
        """Crash right after checkpoint ``k``, without running to it again: the store is
        the baseline's first ``k`` checkpoints (a crashed run writes exactly those; some
        crash points are run for real to check it), the dead process's events are the
        baseline's before checkpoint ``k``; resume and compare."""
        assert self.baseline is not None
        store = await self.base_store.prefix(k)
        traces = [self.baseline.until(k)]
        return await self.resume_until_done(store, "baseline", traces)

    async def resume_until_done(
        self, store: DyingStore, name: str, traces: list[Trace]
    ) -> str | None:
        for _ in range(3):
            if not traces[-1].crashed:
                break
            traces.append(await run_process(self.case, store, name, resume=True))
        return self.compare(self.baseline, traces)

    async def crash_and_resume(
        self, name: str, crashes: list[int | None], *, chunk: int | None = None
    ) -> str | None:
        """Run with the given crashes (a checkpoint number, or None for the stream crash at
        ``chunk``), resuming after each; compare the end with the baseline."""
        store = DyingStore()
        traces = [
            await run_process(
                self.case, store, name, resume=False, crash_at=crashes[0], crash_chunk=chunk
            )
        ]
        k = crashes[0]
        if name == "baseline" and k is not None and chunk is None:
            # A real crash after checkpoint k leaves what resume_prefix assumes it does.
            assert self.baseline is not None
            if not store.same_checkpoints(await self.base_store.prefix(k), name):
                return f"the run that crashed after checkpoint {k} wrote other checkpoints"
            expected, got = self.baseline.until(k), traces[0]
            if (expected.said, expected.requests, +expected.tools, expected.in_flight) != (
                got.said,
                got.requests,
                +got.tools,
                got.in_flight,
            ):
                return f"the run that crashed after checkpoint {k} did other things"
        for later in crashes[1:]:
            if not traces[-1].crashed:
                break
            traces.append(await run_process(self.case, store, name, resume=True, crash_at=later))
        return await self.resume_until_done(store, name, traces)

    async def fork_and_resume(self, number: int) -> str | None:
        base = self.baseline
        assert base is not None
        store = await self.base_store.prefix(base.writes)  # a copy of the baseline's store
        manager = CheckpointManager("baseline", store, config=self.case.config)
        try:
            seq = await seq_after_llm_call(manager, number)
        except NotFoundError:
            return None  # the call never completed (the program exited in the middle of it)
        if base.view and seq >= base.view["latest_seq"]:
            return None  # the fork point is the final record: nothing to resume
        try:
            await fork_execution(manager, seq, "fork")
        except NotFoundError as exc:
            if "retention removed" in str(exc):
                return None  # keep_last pruned what the fork needs: a typed, clear refusal
            return f"fork at checkpoint {seq} failed: {exc!r}"
        except Exception as exc:
            return f"fork at checkpoint {seq} failed: {exc!r}"
        resumed = await run_process(self.case, store, "fork", resume=True)
        if resumed.error is not None or resumed.status != "completed":
            return f"status {resumed.status}: {resumed.error!r}"
        if _view(resumed) != _view(base):
            return "store view: " + _first_difference(_view(base), _view(resumed))
        for key, messages in resumed.prompts.items():
            if base.prompts.get(key) != messages:
                return f"prompt of LLM call {key} differs from the baseline's"
        for agent, lines in _by_agent(resumed.said).items():
            full = _by_agent(base.said).get(agent, [])
            if full[len(full) - len(lines) :] != lines:
                return f"what {agent} said after the fork is not the end of the baseline's"
        return None

    def compare(
        self, base: Trace | None, traces: list[Trace], *, chunking: bool = False
    ) -> str | None:
        assert base is not None
        last = traces[-1]
        if last.error is not None:
            return f"the resumed run failed: {type(last.error).__name__}: {last.error}"
        if last.crashed:
            return "still crashed after 3 resumes"
        if last.status not in ("completed", "already-completed"):
            return f"status {last.status}"
        if _view(last) != _view(base):
            return "store view: " + _first_difference(_view(base), _view(last))
        said = [line for t in traces for line in t.said]
        if _by_agent(said) != _by_agent(base.said):
            return "what the user saw differs: " + _first_difference(
                _by_agent(base.said), _by_agent(said)
            )
        for trace in traces:
            for key, call, _prefix in trace.requests:
                if base.prompts.get((key, call)) != trace.prompts[(key, call)]:
                    return f"the prompt of LLM call {key} #{call + 1} differs from the baseline's"
        if chunking:
            return None
        # Every LLM call asked from its start once, as in the baseline; after a crash only
        # the part not yet journaled is asked for again (prefix continuation) -- except the
        # call a stream crash interrupted before any of its text was journaled.
        fresh = Counter((k, c) for t in traces for (k, c, p) in t.requests if not p)
        expected = Counter((k, c) for (k, c, p) in base.requests)
        for trace in traces:
            for key in trace.in_flight:
                if fresh[key] > expected[key]:
                    fresh[key] -= 1
        if fresh != expected:
            extra, missing = fresh - expected, expected - fresh
            return f"LLM calls asked again from the start: {dict(extra)}; never: {dict(missing)}"
        # A tool whose call completed never runs again, and none is lost: the runs that
        # completed in all processes are the baseline's. (A run in flight at a crash runs
        # again and completes once; one cut short by the program's exit never completes.)
        runs: Counter[str] = Counter()
        for trace in traces:
            runs.update({name: n for (event, name), n in trace.tools.items() if event == "end"})
        expected_runs = Counter(
            {name: n for (event, name), n in base.tools.items() if event == "end"}
        )
        if +runs != +expected_runs:
            return f"completed tool runs {dict(+runs)} != baseline {dict(+expected_runs)}"
        return None


def regression_test(generated: Generated, failure: Failure) -> str:
    """A ready-to-paste regression test reproducing ``failure`` (for tests/fuzz/)."""
    name = (
        "test_regression_"
        + hashlib.blake2b(repr(generated.choices).encode(), digest_size=4).hexdigest()
    )
    return textwrap.dedent(f'''
        def {name}(tmp_path):
            """Found by the fuzzer: {failure.mode}.

            {failure.detail[:200]}
            """
            from fuzzharness import check_choices

            assert check_choices({generated.choices!r}, tmp_path) == []
    ''')


def check_choices(choices: list[int], directory: Path, **options: Any) -> list[Failure]:
    """Regenerate the program of ``choices`` and check it (all crash points)."""
    generated = generate(Chooser(prefix=choices))
    case = Case.create(generated, directory)
    return asyncio.run(Checker(case, **options).check()).failures


def shrink(
    generated: Generated,
    directory: Path,
    *,
    budget: float = 60.0,
    fails: Callable[[Generated], bool] | None = None,
) -> Generated:
    """A smaller program that still fails, found greedily within ``budget`` seconds.

    Delta debugging on the generator's choices: blocks of choices (large first, then
    smaller) are set to 0, the simplest option, then single choices are halved; a
    candidate is kept when it still fails (checked on a sample of crash points, to stay
    fast). Fewer and lower choices mean fewer agents, statements and LLM calls.
    """
    counter = [0]

    def still_fails(candidate: Generated) -> bool:
        if fails is not None:
            return fails(candidate)
        counter[0] += 1
        case = Case.create(candidate, directory / f"shrink{counter[0]}")
        checker = Checker(case, max_crash_points=40, forks=4, stream_crashes=2, double_crashes=1)
        return bool(asyncio.run(checker.check()).failures)

    def smaller(a: list[int], b: list[int]) -> bool:
        return (len(a), sum(a)) < (len(b), sum(b))

    best = generated
    deadline = time.monotonic() + budget
    size = 32
    while size >= 1 and time.monotonic() < deadline:
        improved = False
        start = 0
        while start < len(best.choices) and time.monotonic() < deadline:
            choices = best.choices
            block = choices[start : start + size]
            for values in ([0] * len(block), [v // 2 for v in block]):
                if values == block:
                    continue
                candidate = generate(
                    Chooser(prefix=[*choices[:start], *values, *choices[start + size :]])
                )
                if smaller(candidate.choices, best.choices) and still_fails(candidate):
                    best, improved = candidate, True
                    break
            start += size
        if not improved:
            size //= 2
    return best
