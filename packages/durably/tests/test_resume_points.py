"""Crash after every checkpoint k, resume, and compare with the uninterrupted run.

These run in one process against an in-memory store: the "crash" is an exception raised
right after checkpoint k is durable, which abandons every agent task and Python frame of
the run; the resumed run starts from a fresh Execution with nothing but the store. The
same property is checked with real processes and SIGKILL in ``tests/test_crash_resume.py``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from durably._execution import Execution, UserIO
from durably._resume import restore_agents
from durably.checkpoint import CheckpointManager
from durably.config import DurabilityConfig
from durably.llm import ScriptedLLM, open_llm
from durably.runner import Program

from memstore import MemoryStore

HERE = Path(__file__).parent
ROOT = HERE.parents[2]
KITCHEN_INPUT = (
    "I've got chickpeas, a bag of spinach, a can of tomatoes and some rice. I'm vegetarian."
)
PROGRAMS = {
    "kitchen": (
        ROOT / "examples/kitchen/kitchen.py",
        ROOT / "examples/kitchen/kitchen.scripted.json",
        [KITCHEN_INPUT],
    ),
    "counter": (
        HERE / "programs/counter.py",
        HERE / "programs/counter.scripted.json",
        ["forty-two"],
    ),
    # Two agents saying lines to the user at the same time: their checkpoints interleave.
    "duet": (HERE / "programs/duet.py", HERE / "programs/duet.scripted.json", []),
    # Top-level loops that await, stepped (snapshots between iterations) or not.
    "loops": (HERE / "programs/loops.py", HERE / "programs/loops.scripted.json", []),
    # Three agents that begin at once (a crash can come before some first snapshots).
    "begins": (HERE / "programs/begins.py", HERE / "programs/begins.scripted.json", []),
}


SAY_TOGETHER = {"duet", "begins"}
"""Programs whose agents say lines to the user at the same time."""
SEVERAL_AGENTS = {"kitchen", "duet", "begins"}
"""Programs whose agents run at the same time (one agent's checkpoint can fall while
another waits for the LLM)."""


def by_agent(said: list[str]) -> dict[str, list[str]]:
    """Lines said (``"Agent: text"``) grouped by agent, in order."""
    lines: dict[str, list[str]] = {}
    for line in said:
        lines.setdefault(line.split(":", 1)[0], []).append(line)
    return lines


class Crash(BaseException):
    """Stands for the process dying right after a checkpoint became durable."""


class CrashingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.crash_at: int | None = None

    async def _save(self, *args: Any, **kwargs: Any) -> Any:
        # A save takes time, as on a real store: other agents run meanwhile.
        await asyncio.sleep(0)
        info = await super()._save(*args, **kwargs)
        if self.crash_at is not None and self.saves == self.crash_at:
            self.crash_at = None
            raise Crash(f"after checkpoint {self.saves}")
        return info


@dataclass
class Outcome:
    status: str
    value: Any
    said: list[str]
    states: dict[str, tuple[str, dict[str, Any]]]
    transcript: list[tuple[str, int, str]]
    llm: ScriptedLLM
    prompts: list[Any]
    said_at: list[int]
    """Checkpoints stored when each line of ``said`` was shown."""
    calls_at: list[int]
    """Checkpoints stored when each call of ``llm.calls`` was asked."""

    def until(self, k: int) -> tuple[list[str], list[tuple[str, int, str]]]:
        """The lines shown and LLM calls asked before checkpoint ``k`` was stored: what a
        process that died right after storing it did (in process, the other agents' tasks
        go on a little after the crash)."""
        said = [line for line, at in zip(self.said, self.said_at, strict=True) if at < k]
        calls = [c for c, at in zip(self.llm.calls, self.calls_at, strict=True) if at < k]
        return said, calls


async def run(
    program: str,
    store: CrashingStore,
    *,
    every: int,
    crash_at: int | None = None,
    resume: bool = False,
    chunk_seed: int = 0,
    keep_last: int = 0,
    options: dict[str, Any] | None = None,
) -> Outcome:
    path, script, inputs = PROGRAMS[program]
    store.crash_at = crash_at
    config = DurabilityConfig(snapshot_every=every, keep_last=keep_last, **(options or {}))
    manager = CheckpointManager("run", store, config=config)
    said: list[str] = []
    said_at: list[int] = []
    calls_at: list[int] = []

    def echo(line: str) -> None:
        said.append(line)
        said_at.append(store.saves)

    llm = open_llm(f"scripted:{script}?chunk_seed={chunk_seed}")
    assert isinstance(llm, ScriptedLLM)
    prompts: list[Any] = []
    original = llm.stream

    def recording(messages: Any, **kwargs: Any) -> Any:
        prompts.append((kwargs["agent"], kwargs["playbook"], kwargs["call"], messages))
        inner = original(messages, **kwargs)

        async def timed() -> Any:
            async for chunk in inner:  # the call is asked (llm.calls) at the first chunk
                if len(calls_at) < len(llm.calls):
                    calls_at.append(store.saves)
                yield chunk

        return timed()

    llm.stream = recording  # type: ignore[method-assign]
    execution = Execution(
        manager, program=Program.load(path), llm=llm, io=UserIO(inputs, echo=echo)
    )
    if resume:
        await restore_agents(manager, execution)
    status, value = await execution.run(resume=resume)
    return Outcome(
        status,
        value,
        said,
        {
            t.agent_id: (t.agent_class.__name__, dict(t.agent.state.to_dict()))
            for t in execution.agents.values()
        },
        sorted(
            (x["id"], x["index"], x["text"])
            for t in execution.agents.values()
            for x in t.journal.transcript
        ),
        llm,
        prompts,
        said_at,
        calls_at,
    )


def total_checkpoints(program: str, every: int, keep_last: int) -> int:
    import asyncio

    store = CrashingStore()
    asyncio.run(run(program, store, every=every, keep_last=keep_last))
    return store.saves


# (snapshot_every, keep_last): snapshots after every statement that awaited; the default;
# frequent snapshots with retention pruning all but what resume needs.
CONFIGS = [(1, 0), (16, 0), (4, 2)]
CASES = [
    (program, every, keep, k)
    for program in PROGRAMS
    for every, keep in CONFIGS
    for k in range(1, total_checkpoints(program, every, keep) + 1)
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("program", "every", "keep", "k"), CASES)
async def test_resume_after_checkpoint_k_equals_uninterrupted_run(
    program: str,
    every: int,
    keep: int,
    k: int,
) -> None:
    reference = await run(program, CrashingStore(), every=every, keep_last=keep)
    assert reference.status == "completed"

    store = CrashingStore()
    first = await run(program, store, every=every, crash_at=k, keep_last=keep)
    assert first.status == "failed"
    assert isinstance(first.value, Crash)
    second = await run(program, store, every=every, resume=True, keep_last=keep)

    assert second.status == "completed", second.value
    assert second.value == reference.value
    assert second.states == reference.states
    assert second.transcript == reference.transcript
    # What the user saw: every line exactly once, in order, across both processes (each
    # agent's lines in order where agents talk at the same time: how their lines
    # interleave is up to the scheduler, in a resumed run as in two uninterrupted ones).
    said, calls = first.until(k)
    if program in SAY_TOGETHER:
        assert by_agent(said + second.said) == by_agent(reference.said)
    else:
        assert said + second.said == reference.said
    # Every LLM call made once: a call is only asked again for the part of its response
    # that had not arrived (prefix continuation), never from the start -- except, where
    # agents run at the same time, a call that another agent's checkpoint (the crash
    # point) caught before any of its text was in one of its own agent's checkpoints.
    fresh = Counter((c[0], c[1]) for c in calls + second.llm.calls if not c[2])
    expected = Counter((c[0], c[1]) for c in reference.llm.calls)
    if program in SEVERAL_AGENTS:
        again = fresh - expected
        assert +(expected - fresh) == Counter()
        assert set(again) <= {(c[0], c[1]) for c in calls}, again
        assert all(again[key] == 1 for key in again), again
    else:
        assert fresh == expected
    # Later LLM prompts are byte-identical to the uninterrupted run's.
    by_call = {(a, p, n): m for a, p, n, m in reference.prompts}
    for agent, playbook, number, messages in second.prompts:
        assert messages == by_call[(agent, playbook, number)]


@pytest.mark.asyncio
@pytest.mark.parametrize("program", list(PROGRAMS))
@pytest.mark.parametrize("chunk_seed", [1, 2, 3])
async def test_chunking_does_not_change_the_run(program: str, chunk_seed: int) -> None:
    reference = await run(program, CrashingStore(), every=16)
    other = await run(program, CrashingStore(), every=16, chunk_seed=chunk_seed)
    assert (other.status, other.value, other.states, other.transcript, other.said) == (
        reference.status,
        reference.value,
        reference.states,
        reference.transcript,
        reference.said,
    )


@pytest.mark.asyncio
async def test_a_tools_state_change_is_applied_exactly_once_whatever_the_crash_point() -> None:
    reference = await run("counter", CrashingStore(), every=16)
    assert reference.states["1000"][1]["squared"] == 1
    probe = CrashingStore()
    await run("counter", probe, every=16)
    for k in range(1, probe.saves + 1):
        store = CrashingStore()
        await run("counter", store, every=16, crash_at=k)
        resumed = await run("counter", store, every=16, resume=True)
        assert resumed.states["1000"][1]["squared"] == 1, k
