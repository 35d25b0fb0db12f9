"""Complete histories: a missing, replaced or reordered checkpoint is a CorruptHistoryError
for resume, show, history, diff and fork; retention (which removes only what the latest
checkpoint no longer needs) is not an error."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from durably import CheckpointManager
from durably._inspect import describe_execution
from durably.checkpoint import META_PREV
from durably.config import DurabilityConfig
from durably.errors import CorruptHistoryError, CorruptObjectError, NotFoundError
from durably.storage import META_BASE, CheckpointInfo
from durably.timetravel import checkpoint_points, diff_checkpoints, fork_execution

import memstore
from memstore import MemoryStore

EID = "hist"


async def run_counter(
    store: MemoryStore, config: DurabilityConfig | None = None, *, stop_after: int | None = None
) -> None:
    """Run the counter program; with ``stop_after``, drop every checkpoint after that one
    (as if the process had been killed there)."""
    await memstore.run_counter(store, config, execution_id=EID)
    if stop_after is not None:
        for seq in [s for s in store.checkpoints[EID] if s > stop_after]:
            del store.checkpoints[EID][seq]


def latest_seq(store: MemoryStore) -> int:
    return max(store.checkpoints[EID])


async def all_inspections(store: MemoryStore) -> list[str]:
    """Run every inspection; return the error message of each (all must fail)."""
    manager = CheckpointManager(EID, store)
    last = latest_seq(store)
    errors = []
    for action in (
        lambda: manager.load_execution(),
        lambda: manager.load_execution(inert=True),
        lambda: describe_execution(manager),
        lambda: checkpoint_points(manager),
        lambda: diff_checkpoints(manager, 0, last),
        lambda: fork_execution(manager, last, "forked"),
    ):
        with pytest.raises(CorruptHistoryError) as info:
            await action()
        errors.append(str(info.value))
    assert "forked" not in store.checkpoints
    return errors


@pytest.mark.asyncio
async def test_every_checkpoint_links_to_the_one_before() -> None:
    store = MemoryStore()
    await run_counter(store)
    stored = store.checkpoints[EID]
    for seq, (info, _data) in stored.items():
        link = info.metadata[META_PREV]
        if seq == 0:
            assert link == "start"
        else:
            manager = CheckpointManager(EID, store)
            previous = await manager.provider.load_checkpoint(EID, seq - 1)
            assert link == "sha256:" + hashlib.sha256(previous.data).hexdigest()


@pytest.mark.asyncio
async def test_a_missing_middle_checkpoint_is_named() -> None:
    store = MemoryStore()
    await run_counter(store, stop_after=14)
    assert (await CheckpointManager(EID, store).load_execution()) is not None
    del store.checkpoints[EID][7]
    del store.checkpoints[EID][9]
    for message in await all_inspections(store):
        assert "checkpoints 7, 9 are missing" in message, message
    with pytest.raises(CorruptHistoryError) as info:
        await CheckpointManager(EID, store).load_execution()
    assert info.value.missing == (7, 9)
    assert info.value.execution_id == EID
    # What comes before the gap is still complete: it can be shown and forked from.
    manager = CheckpointManager(EID, store)
    assert (await describe_execution(manager, at=6)) is not None
    assert await fork_execution(manager, 6, "before-gap") == 7


@pytest.mark.asyncio
async def test_a_missing_base_snapshot_is_named() -> None:
    store = MemoryStore()
    await run_counter(store, stop_after=14)
    del store.checkpoints[EID][0]
    with pytest.raises(CorruptHistoryError, match="checkpoint 0 is missing"):
        await CheckpointManager(EID, store).load_execution()


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["replaced", "swapped"])
async def test_a_replaced_or_reordered_checkpoint_breaks_the_chain(how: str) -> None:
    store = MemoryStore()
    await run_counter(store, stop_after=14)
    stored = store.checkpoints[EID]

    def moved(source: int, to: int) -> tuple[CheckpointInfo, bytes]:
        """Object ``source`` (its bytes and metadata) stored under sequence ``to``."""
        info, data = stored[source]
        return replace(info, seq=to), data

    if how == "replaced":
        stored[8] = moved(7, 8)  # a copy of its predecessor
        expected = (8, 9)
    else:
        stored[8], stored[9] = moved(9, 8), moved(8, 9)
        expected = (8, 9, 10)
    for message in await all_inspections(store):
        assert "does not follow" in message or "do not follow" in message, message
    with pytest.raises(CorruptHistoryError) as info:
        await CheckpointManager(EID, store).load_execution()
    assert info.value.broken == expected
    assert info.value.missing == ()


@pytest.mark.asyncio
async def test_retention_is_not_damage() -> None:
    store = MemoryStore()
    await run_counter(store, DurabilityConfig(keep_last=3, snapshot_every=4))
    stored = store.checkpoints[EID]
    first = min(stored)
    assert first > 0  # retention removed a prefix
    manager = CheckpointManager(EID, store)
    assert (await describe_execution(manager))["status"] == "completed"
    assert [p.seq for p in await checkpoint_points(manager)] == sorted(stored)
    # The oldest kept checkpoint builds on checkpoints retention removed: not damage,
    # but it can no longer be restored.
    assert int(stored[first][0].metadata[META_BASE]) < first
    with pytest.raises(NotFoundError, match="retention removed"):
        await manager.load_execution(at=first, inert=True)


@pytest.mark.asyncio
async def test_a_gap_below_the_base_is_retention_not_damage() -> None:
    """The contract lets a provider delete any checkpoint below the base (out of order,
    or a prune that stopped halfway): the history listing must not call that damage."""
    store = MemoryStore()
    await run_counter(store)
    stored = store.checkpoints[EID]
    base = int(stored[latest_seq(store)][0].metadata[META_BASE])
    assert base > 6
    del stored[5]
    manager = CheckpointManager(EID, store)
    assert 5 not in [p.seq for p in await checkpoint_points(manager)]
    assert (await describe_execution(manager))["status"] == "completed"


@pytest.mark.asyncio
async def test_a_checkpoint_without_a_link_after_linked_ones_is_unchecked() -> None:
    """An older durably (a rolling upgrade) writes checkpoints without a link."""
    store = MemoryStore()
    await run_counter(store, stop_after=14)
    info, data = store.checkpoints[EID][14]
    metadata = {k: v for k, v in info.metadata.items() if k != META_PREV}
    store.checkpoints[EID][14] = (replace(info, metadata=metadata), data)
    loaded = await CheckpointManager(EID, store).load_execution()
    assert loaded is not None
    assert loaded.latest_seq == 14


@pytest.mark.asyncio
async def test_checkpoints_written_before_the_chain_existed_still_load() -> None:
    store = MemoryStore()
    await run_counter(store, stop_after=14)
    for seq, (info, data) in list(store.checkpoints[EID].items()):
        metadata = {k: v for k, v in info.metadata.items() if k != META_PREV}
        store.checkpoints[EID][seq] = (replace(info, metadata=metadata), data)
    loaded = await CheckpointManager(EID, store).load_execution()
    assert loaded is not None
    assert loaded.latest_seq == 14


def test_the_error_lists_ranges() -> None:
    error = CorruptHistoryError("e", missing=(3, 4, 5, 9), broken=(12,))
    assert "checkpoints 3-5, 9 are missing" in str(error)
    assert "checkpoint 12 does not follow" in str(error)
    assert json.dumps(error.missing) == "[3, 4, 5, 9]"


# ------------------------------------------------------ inert loads and live restores


@pytest.mark.asyncio
async def test_inert_loads_never_import_and_resolve_restores_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib
    import sys

    from durably._codeobjects import ModuleReference

    name = "durably_canary_restore"
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'a').write('x')\n"
        "import dataclasses\n@dataclasses.dataclass\nclass Thing:\n    n: int = 0\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    store = MemoryStore()
    manager = CheckpointManager(EID, store)
    doc = {
        "type": "snapshot",
        "agent": "1000",
        "class": "A",
        "phase": "idle",
        "manifest": {"1000": 0},
        "header": {"program": "p.py"},
        "next_agent_id": 1001,
    }
    encoded = manager.codec.encode({"doc": doc, "state": {"m": module, "t": module.Thing(3)}})
    await store.save_checkpoint(EID, 0, encoded.data, metadata={"durably.prev": "start"})
    monkeypatch.delitem(sys.modules, name)
    marker.unlink()

    inert = await CheckpointManager(EID, store).load_execution(inert=True)
    assert inert is not None
    assert inert.unresolved == (name, f"{name}:Thing")
    state = inert.snapshots["1000"][2]
    assert isinstance(state["m"], ModuleReference)
    assert "not imported" in repr(state["t"])
    assert not marker.exists()
    assert name not in sys.modules

    # Restoring (after the program's fingerprint check) imports what LLM code imported.
    live = await manager.resolve(inert)
    assert marker.exists()
    state = live.snapshots["1000"][2]
    assert state["m"] is sys.modules[name]
    assert state["t"] == sys.modules[name].Thing(3)


def test_show_escapes_terminal_control_characters() -> None:
    from durably._inspect import render_show

    data = {
        "execution_id": "e",
        "status": "running",
        "checkpoints": 1,
        "bytes": 1,
        "latest_seq": 0,
        "agents": {},
        "llm_calls": [],
        "result": None,
        "transcript": [{"agent": "A", "id": "1", "text": "hi\x1b]0;pwned\x07\x1b[2J\r"}],
    }
    shown = render_show(data)
    assert "\x1b" not in shown
    assert "\x07" not in shown
    assert "\r" not in shown
    assert "hi\\x1b]0;pwned\\x07" in shown


@pytest.mark.asyncio
async def test_a_base_far_before_what_is_stored_is_reported_at_once() -> None:
    # Checkpoints moved far up (their manifests still name bases near 0): the gap is
    # 2**63 long; loading must find it by what is stored, not by reading it page by page.
    store = MemoryStore()
    await run_counter(store, stop_after=14)
    shift = 2**63 - 1 - 14
    store.checkpoints[EID] = {
        seq + shift: (replace(info, seq=seq + shift), data)
        for seq, (info, data) in store.checkpoints[EID].items()
    }
    manager = CheckpointManager(EID, store)
    for action in (
        lambda: manager.load_execution(),
        lambda: manager.load_execution(inert=True),
        lambda: describe_execution(manager),
    ):
        with pytest.raises(CorruptHistoryError, match="missing in all") as info:
            await action()
        assert len(info.value.missing) == 10_000
        assert info.value.missing[0] < 15


@pytest.mark.asyncio
async def test_no_checkpoint_is_saved_after_the_last_sequence_number() -> None:
    # The core's own saves skip re-validating their sequence number; resuming a history
    # whose latest checkpoint is 2**63 - 1 (one durably did not write) sets the next to
    # 2**63, which must still never reach a provider.
    store = MemoryStore()
    manager = CheckpointManager(EID, store)
    manager.next_seq = 2**63
    with pytest.raises(CorruptObjectError, match="the largest there can be"):
        await manager._store(2**63, {"doc": {}}, {"doc": "doc"}, {}, {})
    assert store.checkpoints == {}
    assert store.saves == 0
