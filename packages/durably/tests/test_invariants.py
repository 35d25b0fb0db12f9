"""Nothing is recorded ``completed`` unless it is: each violation of the completion
invariants is a loud, typed failure, and the history stays resumable."""

from __future__ import annotations

from pathlib import Path

import pytest

from durably._execution import Execution, UserIO
from durably._invariants import check_complete
from durably._journal import Entry, Frame, Message
from durably.checkpoint import CheckpointManager
from durably.config import DurabilityConfig
from durably.errors import IncompleteExecutionError
from durably.llm import open_llm
from durably.runner import Program, _drive

from memstore import MemoryStore

HERE = Path(__file__).parent
KITCHEN = HERE.parents[2] / "examples" / "kitchen"


def finished_execution() -> Execution:
    """The kitchen program's agents as a correct completion leaves them."""
    program = Program.load(KITCHEN / "kitchen.py")
    manager = CheckpointManager("x", MemoryStore(), config=DurabilityConfig())
    execution = Execution(manager, program=program, llm=None, io=UserIO(echo=None))
    for cls in program.agent_classes:
        task = execution.create_agent(cls)
        task.phase = "idle"
        task.begin_returned = task.has_begin
    return execution


def test_a_correct_completion_passes() -> None:
    assert check_complete(finished_execution()) == []


def test_a_call_stack_left_is_a_violation() -> None:
    execution = finished_execution()
    task = execution.agents["1001"]
    task.frames.append(Frame("SuggestDish", {}))
    task.phase = "serve"
    problems = check_complete(execution)
    assert any("still has a call stack ['SuggestDish']" in p for p in problems)
    assert any("phase 'serve'" in p for p in problems)


def test_an_unanswered_request_is_a_violation() -> None:
    execution = finished_execution()
    execution.agents["1001"].mailbox.inbox.append(
        Message("1000:7", "1000", "1001", "SuggestDish", kind="request")
    )
    assert any(
        "never consumed request/reply message(s) ['1000:7']" in p for p in check_complete(execution)
    )


def test_a_begin_playbook_that_never_returned_is_a_violation() -> None:
    execution = finished_execution()
    execution.agents["1000"].begin_returned = False
    assert check_complete(execution) == ["the begin playbook of Concierge(1000) never returned"]


def test_an_unconsumed_journal_entry_is_a_violation_even_after_an_exit() -> None:
    execution = finished_execution()
    execution.exiting = True
    execution.agents["1001"].journal.replay[12] = Entry(12, "say", "k")
    execution.agents["1000"].journal.replay_llm[3] = None  # type: ignore[assignment]
    problems = check_complete(execution)
    assert any(
        "Chef(1001) never replayed 1 journaled operation(s), from #12 ('say')" in p
        for p in problems
    )
    assert any("Concierge(1000) never replayed LLM call(s) [3]" in p for p in problems)


@pytest.mark.asyncio
async def test_waiting_forever_fails_loudly_and_stays_resumable() -> None:
    """Every agent waits, but the begin playbook waits for a message nobody will send:
    before, this was recorded `completed` with result None."""
    store = MemoryStore()
    program = HERE / "programs" / "silent.py"
    llm = open_llm(f"scripted:{HERE / 'programs' / 'silent.scripted.json'}")
    with pytest.raises(
        IncompleteExecutionError,
        match="waits for a message from agent 1001 that no agent will send",
    ):
        await _run(program, llm, store)
    latest = await store.load_latest_checkpoint("silent")
    assert latest is not None
    assert latest.metadata["durably.status"] == "failed"
    loaded = await CheckpointManager("silent", store).load_execution()
    assert loaded is not None
    assert loaded.status == "failed"
    assert "never returned" in loaded.result
    assert loaded.snapshots  # the history is there to resume or fork from


async def _run(program: Path, llm: object, store: MemoryStore) -> None:
    """Run the program as `durably run` does (the final record included)."""
    manager = CheckpointManager("silent", store, config=DurabilityConfig())
    execution = Execution(manager, program=Program.load(program), llm=llm, io=UserIO(echo=None))
    await _drive(execution, manager, resume=False)


def test_argument_digests_survive_a_checkpoint() -> None:
    """A set of strings restored from a checkpoint may iterate in another order: the
    divergence check must not see another argument (a false DivergenceError)."""
    from durably._codec import ValueCodec
    from durably._journal import digest

    value = {"tags": frozenset({"delta", "alpha", "charlie", "bravo"}), "n": {3, 1, 2}}
    codec = ValueCodec()
    restored = codec.decode_value(codec.encode_value(value))
    assert restored == value
    assert digest([value]) == digest([restored])
    # 8 and 16 collide in a small set's table: these two equal sets iterate (and print)
    # in insertion order, as a restored set may differ from the original.
    first, second = {8, 16}, {16, 8}
    assert first == second
    assert repr(first) != repr(second)
    assert digest([first]) == digest([second])
    assert digest([{"a", "b"}]) != digest([frozenset({"a", "b"})])
