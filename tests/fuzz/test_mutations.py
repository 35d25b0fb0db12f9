"""The fuzzer can fail: runtime bugs injected on purpose are caught by the default sample.

Each mutation breaks one thing exact resume depends on; the sample's programs are checked
in order until one fails. A mutation the sample cannot catch fails this test: the fuzzer
would be blind to that class of bug.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from durably._execution import Execution
from durably._runtime import AgentTask

from fuzzgen import Chooser, generate
from fuzzharness import Case, Checker
from test_fuzz import CRASH_POINTS, FORKS, SAMPLE_PROGRAMS, SAMPLE_SEED


def first_failure(directory: Path) -> str | None:
    for number in range(SAMPLE_PROGRAMS):
        case = Case.create(generate(Chooser(SAMPLE_SEED + number)), directory / str(number))
        checker = Checker(
            case, max_crash_points=CRASH_POINTS, forks=FORKS, seed=SAMPLE_SEED + number
        )
        report = asyncio.run(checker.check())
        if report.failures:
            return f"program {number}: {report.failures[0]}"
    return None


def drop_replayed_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed run does not deliver again the replies its journal holds (neither when
    the sender replays its reply nor when messages are re-delivered on restore)."""
    original_op, original_deliver = AgentTask.op, Execution.deliver
    replaying: list[bool] = []

    async def op(self: AgentTask, kind: str, args: Any, live: Any, **kw: Any) -> Any:
        replaying.append(kind == "reply" and self.journal.index in self.journal.replay)
        try:
            return await original_op(self, kind, args, live, **kw)
        finally:
            replaying.pop()

    def deliver(self: Execution, message: Any) -> None:
        if message.kind == "reply" and (self.done is None or (replaying and replaying[-1])):
            return
        original_deliver(self, message)

    monkeypatch.setattr(AgentTask, "op", op)
    monkeypatch.setattr(Execution, "deliver", deliver)


def rerun_completed_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tool whose call is journaled runs again on replay (its state change applied twice)."""
    original = AgentTask.op

    async def op(self: AgentTask, kind: str, args: Any, live: Any, **kw: Any) -> Any:
        if kind.startswith("tool:") and self.journal.index in self.journal.replay:
            await live()
        return await original(self, kind, args, live, **kw)

    monkeypatch.setattr(AgentTask, "op", op)


def forget_the_request_being_served(monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame resumed from a snapshot taken while serving a request ends without a reply
    (the bug of issue 12's first class)."""
    original = AgentTask.serve

    async def serve(self: AgentTask, request: Any, *, frame: Any = None) -> None:
        if frame is not None:
            spec = self.agent_class.playbooks[request.text]
            await self.loop.run_llm_playbook(spec, {}, frame=frame)
            self.phase, self.serving = "idle", None
            return
        await original(self, request, frame=frame)

    monkeypatch.setattr(AgentTask, "serve", serve)


def lose_consumed_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Restoring forgets how many of the user's inputs were consumed before the snapshot."""
    original = AgentTask.restore

    def restore(self: AgentTask, restored: Any, *args: Any) -> None:
        restored.snapshot = dataclasses.replace(restored.snapshot, inputs=0)
        original(self, restored, *args)
        self.execution.io.consumed = 0

    monkeypatch.setattr(AgentTask, "restore", restore)


def snapshot_inside_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot may be taken while a Python playbook runs (the LLM playbook it awaits
    looks like a bottom frame at a quiet point)."""
    monkeypatch.setattr(AgentTask, "quiet", property(lambda self: len(self.frames) <= 1))


def let_operations_run_concurrently(monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent's operations awaited in tasks of their own (``asyncio.gather``) are let
    through: a resume asks for them in another order (``ConcurrentAwaitError`` no more)."""
    import durably._runtime as runtime

    def check_running(task: AgentTask) -> None:
        if task.execution.outcome is not None:
            raise asyncio.CancelledError("the program has ended")

    monkeypatch.setattr(runtime, "_check_running", check_running)


MUTATIONS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "snapshot while a tool runs": snapshot_inside_tools,
    "drop the reply of a cross-agent call on replay": drop_replayed_replies,
    "run a completed tool again on replay": rerun_completed_tools,
    "forget the request a resumed frame serves": forget_the_request_being_served,
    "lose the count of consumed user inputs": lose_consumed_inputs,
    "let an agent's operations run concurrently": let_operations_run_concurrently,
}


@pytest.fixture
def sample_dir(tmp_path: Path) -> Iterator[Path]:
    return tmp_path


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_the_default_sample_catches_an_injected_runtime_bug(
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    sample_dir: Path,
) -> None:
    MUTATIONS[name](monkeypatch)
    found = first_failure(sample_dir)
    assert found is not None, f"the fuzz sample did not notice: {name}"
    print(f"{name}: caught by {found}")
