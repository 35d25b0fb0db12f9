"""Retention and limits: keep_last, on_completion, max_checkpoint_size."""

from __future__ import annotations

from pathlib import Path

import pytest

from durably import Agent, CheckpointManager, StreamingPythonExecutor
from durably.config import DurabilityConfig
from durably.errors import CheckpointTooLargeError

from memstore import MemoryStore, run_counter

HERE = Path(__file__).parent


@pytest.mark.asyncio
async def test_keep_last_bounds_what_is_stored_while_running() -> None:
    store = MemoryStore()
    await run_counter(store, DurabilityConfig(keep_last=3, snapshot_every=4))
    stored = len(store.checkpoints["ret"])
    assert store.saves > 20
    assert stored < store.saves / 2


@pytest.mark.asyncio
async def test_keep_all_by_default() -> None:
    store = MemoryStore()
    await run_counter(store, DurabilityConfig())
    assert len(store.checkpoints["ret"]) == store.saves


@pytest.mark.asyncio
async def test_on_completion_delete_removes_the_execution() -> None:
    store = MemoryStore()
    await run_counter(store, DurabilityConfig(on_completion="delete"))
    assert "ret" not in store.checkpoints


@pytest.mark.asyncio
async def test_on_completion_prune_keeps_the_final_state() -> None:
    store = MemoryStore()
    await run_counter(store, DurabilityConfig(on_completion="prune", keep_last=1))
    manager = CheckpointManager("ret", store)
    checkpoint = await manager.get_latest_checkpoint()
    assert checkpoint is not None
    assert checkpoint.status == "completed"
    assert checkpoint.execution_state["state"]["total"] == 15
    assert len(store.checkpoints["ret"]) < store.saves


class Big(Agent):
    """Holds big values."""


@pytest.mark.asyncio
async def test_a_checkpoint_over_the_limit_names_the_largest_variables() -> None:
    manager = CheckpointManager(
        "big",
        MemoryStore(),
        config=DurabilityConfig(max_checkpoint_size=4096, blob_threshold=1 << 20),
    )
    agent = manager.attach(Big, echo=None)
    executor = StreamingPythonExecutor(agent)
    await executor.add_chunk("small = 1\nhuge = 'x' * 20000\nmedium = 'y' * 3000\n")
    with pytest.raises(CheckpointTooLargeError, match=r"local 'huge' \(2\d,\d{3} bytes\)"):
        await executor.add_chunk('await self.Step("Main:01:EXE")\n')


@pytest.mark.asyncio
async def test_a_line_whose_checkpoint_is_refused_is_not_shown() -> None:
    """A Say is shown just before its checkpoint is written; a checkpoint refused before
    any write (here: over ``max_checkpoint_size``) must not have shown its line, which no
    resume would account for."""
    store = MemoryStore()
    manager = CheckpointManager(
        "big-say", store, config=DurabilityConfig(max_checkpoint_size=4096, blob_threshold=1 << 20)
    )
    said: list[str] = []
    agent = manager.attach(Big, echo=said.append)
    executor = StreamingPythonExecutor(agent)
    await executor.add_chunk('await self.Say("user", "short")\n')
    saves = store.saves
    with pytest.raises(CheckpointTooLargeError):
        await executor.add_chunk('await self.Say("user", "z" * 20000)\n')
    assert store.saves == saves, "the refused checkpoint was not written"
    assert len(said) == 1, said
    assert "short" in said[0]


@pytest.mark.asyncio
async def test_disabled_durability_runs_the_program_and_stores_nothing() -> None:
    store = MemoryStore()
    await run_counter(store, DurabilityConfig(enabled=False))
    assert store.saves == 0
    assert not store.blobs
    assert not store.leases
