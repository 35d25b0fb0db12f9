"""Crash after every checkpoint k, resume, and compare with the uninterrupted run.

These run in one process against an in-memory store: the "crash" is an exception raised
right after checkpoint k is durable, which abandons every agent task and Python frame of
the run; the resumed run starts from a fresh Execution with nothing but the store. The
same property is checked with real processes and SIGKILL in ``tests/test_crash_resume.py``.
"""

from __future__ import annotations

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
}


class Crash(BaseException):
    """Stands for the process dying right after a checkpoint became durable."""


class CrashingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.crash_at: int | None = None

    async def _save(self, *args: Any, **kwargs: Any) -> Any:
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


async def run(
    program: str,
    store: CrashingStore,
    *,
    every: int,
    crash_at: int | None = None,
    resume: bool = False,
    chunk_seed: int = 0,
    keep_last: int = 0,
) -> Outcome:
    path, script, inputs = PROGRAMS[program]
    store.crash_at = crash_at
    config = DurabilityConfig(snapshot_every=every, keep_last=keep_last)
    manager = CheckpointManager("run", store, config=config)
    said: list[str] = []
    llm = open_llm(f"scripted:{script}?chunk_seed={chunk_seed}")
    assert isinstance(llm, ScriptedLLM)
    prompts: list[Any] = []
    original = llm.stream

    def recording(messages: Any, **kwargs: Any) -> Any:
        prompts.append((kwargs["agent"], kwargs["playbook"], kwargs["call"], messages))
        return original(messages, **kwargs)

    llm.stream = recording  # type: ignore[method-assign]
    execution = Execution(
        manager, program=Program.load(path), llm=llm, io=UserIO(inputs, echo=said.append)
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
    # What the user saw: every line exactly once, in order, across both processes.
    assert first.said + second.said == reference.said
    # Every LLM call made once: a call is only asked again for the part of its response
    # that had not arrived (prefix continuation), never from the start.
    fresh = [(c[0], c[1]) for c in first.llm.calls + second.llm.calls if not c[2]]
    assert sorted(fresh) == sorted((c[0], c[1]) for c in reference.llm.calls)
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
