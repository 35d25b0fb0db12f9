"""The snapshots at the end of a run: an agent idle since its latest snapshot, with the
same content, is not snapshotted again (the final record names the one it has)."""

from __future__ import annotations

from typing import Any

import pytest

from durably import CheckpointManager
from durably.config import DurabilityConfig

from memstore import MemoryStore, run_counter


class Info:
    """The execution-wide keys a checkpoint carries (``ExecutionInfo``)."""

    def __init__(self) -> None:
        self.header: dict[str, Any] = {"program": "p.py"}
        self.next_agent_id = 1001
        self.snapshots: dict[str, int] = {}

    def manifest(self) -> dict[str, int]:
        return dict(self.snapshots)


DOC = {"type": "snapshot", "agent": "1000", "index": 4, "inbox": [], "phase": "idle"}
STATE = {"total": 15, "items": ["x" * 5000, "y"]}  # over the blob threshold: chunks too


async def written(manager: CheckpointManager, info: Info, doc: dict[str, Any]) -> int:
    seq = await manager.write(info, "1000", doc, kind="snapshot", state=STATE, local_vars={})
    info.snapshots["1000"] = seq
    return seq


@pytest.mark.asyncio
async def test_a_snapshot_repeats_the_latest_one_only_with_the_same_content() -> None:
    manager = CheckpointManager("e", MemoryStore(), config=DurabilityConfig(blob_threshold=1024))
    info = Info()

    def repeats(doc: dict[str, Any], state: dict[str, Any] = STATE) -> bool:
        return manager.repeats_snapshot(info, "1000", doc, state=state, local_vars={})

    assert not repeats(DOC)  # nothing written yet
    await written(manager, info, DOC)
    info.snapshots["1001"] = 7  # another agent snapshotted since: not this one's content
    info.next_agent_id = 1002
    assert repeats(dict(DOC))
    assert repeats({**DOC, "index": 5})  # an operation started, not finished
    assert not repeats({**DOC, "index": 3})
    assert not repeats({**DOC, "inbox": [{"id": "m1", "text": "hi"}]})
    assert not repeats(DOC, {**STATE, "total": 16})
    assert not repeats(DOC, {**STATE, "items": ["x" * 4999 + "z", "y"]})  # in a chunk
    info.header = {"program": "other.py"}
    assert not repeats(DOC)
    # Written by another manager (another process): unsure, so not a repeat.
    assert not CheckpointManager("e", MemoryStore()).repeats_snapshot(
        info, "1000", DOC, state=STATE, local_vars={}
    )


@pytest.mark.asyncio
async def test_nothing_is_a_repeat_when_nothing_is_stored() -> None:
    manager = CheckpointManager("e", MemoryStore(), config=DurabilityConfig(enabled=False))
    info = Info()
    await written(manager, info, DOC)
    assert not manager.repeats_snapshot(info, "1000", DOC, state=STATE, local_vars={})


@pytest.mark.asyncio
async def test_a_completed_run_ends_with_no_repeated_snapshot() -> None:
    store = MemoryStore()
    await run_counter(store, DurabilityConfig())
    history = [store.checkpoints["ret"][seq] for seq in sorted(store.checkpoints["ret"])]
    kinds = [info.metadata["durably.kind"] for info, _ in history]
    # The agent went idle after its last operation (a snapshot), then the program ended:
    # the final record follows that snapshot, which is its final state.
    assert kinds[-3:] == ["delta", "snapshot", "final"]
    final = CheckpointManager("ret", store)
    latest = await final.get_latest_checkpoint()
    assert latest is not None
    assert latest.status == "completed"
    assert latest.execution_state["state"]["total"] == 15
