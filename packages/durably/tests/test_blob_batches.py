"""Batched blob writes (issue 19, fixed cost of an execution): ``put_blobs`` and the
provider method ``_put_blobs``, its default (one ``_put_blob`` each, so a provider that
does not override it keeps working), and the core putting a checkpoint's new blobs in
one batch that is stored before the checkpoint that references them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from durably import CheckpointManager
from durably.errors import StoreError
from durably.storage import CheckpointInfo, Lease, WriteMode, blob_digest

from memstore import MemoryStore

EID = "exec-blobs"


class RecordingStore(MemoryStore):
    """A memory store that records its blob and save calls, in order."""

    def __init__(self, *, batch: bool = True, fail_batch: bool = False) -> None:
        super().__init__()
        self.batch = batch
        self.fail_batch = fail_batch
        self.calls: list[tuple[str, Any]] = []

    async def _put_blob(self, eid: str, digest: str, stored: bytes) -> bool:
        self.calls.append(("_put_blob", digest))
        return await super()._put_blob(eid, digest, stored)

    async def _put_blobs(self, eid: str, blobs: Mapping[str, bytes]) -> dict[str, bool]:
        self.calls.append(("_put_blobs", sorted(blobs)))
        if self.fail_batch:
            raise StoreError("the disk is full")
        if not self.batch:
            return await super()._put_blobs(eid, blobs)
        stored = self.blobs.setdefault(eid, {})
        written = {digest: digest not in stored for digest in blobs}
        for digest, data in blobs.items():
            stored.setdefault(digest, data)
        return written

    async def _save(
        self,
        eid: str,
        seq: int,
        stored: bytes,
        metadata: dict[str, str],
        mode: WriteMode,
        lease: Lease | None,
    ) -> CheckpointInfo:
        self.calls.append(("_save", seq))
        return await super()._save(eid, seq, stored, metadata, mode, lease)


def _state(count: int, seed: str) -> dict[str, Any]:
    """A state whose values each become a blob (above the 16 KiB blob threshold)."""
    return {f"v{i}": f"{seed}-{i}-" + "x" * 40_000 for i in range(count)}


def _blobs_of(manager: CheckpointManager, state: dict[str, Any]) -> set[str]:
    return set(manager.codec.encode({"state": state}).blobs)


async def _store(manager: CheckpointManager, seq: int, state: dict[str, Any]) -> None:
    await manager._store(seq, {"state": state}, {}, {"1000": seq}, {"durably.kind": "snapshot"})


@pytest.mark.asyncio
async def test_a_checkpoint_puts_its_new_blobs_in_one_batch_before_it_is_saved() -> None:
    store = RecordingStore()
    manager = CheckpointManager(EID, store)
    first = _state(5, "a")
    await _store(manager, 0, first)
    blobs = _blobs_of(manager, first)
    assert len(blobs) >= 5
    assert store.calls == [("_put_blobs", sorted(blobs)), ("_save", 0)]
    assert set(store.blobs[EID]) == blobs
    # The next checkpoint puts only the blobs that are new to the execution.
    store.calls.clear()
    second = {**first, "v5": "new-" + "y" * 40_000}
    await _store(manager, 1, second)
    assert store.calls == [("_put_blobs", sorted(_blobs_of(manager, second) - blobs)), ("_save", 1)]
    # Nothing new: no blob call at all.
    store.calls.clear()
    await _store(manager, 2, first)
    assert [name for name, _ in store.calls] == ["_save"]


@pytest.mark.asyncio
async def test_when_the_batch_fails_the_checkpoint_is_not_saved() -> None:
    store = RecordingStore(fail_batch=True)
    manager = CheckpointManager(EID, store)
    with pytest.raises(StoreError, match="disk is full"):
        await _store(manager, 0, _state(3, "b"))
    assert [name for name, _ in store.calls] == ["_put_blobs"]
    assert EID not in store.checkpoints
    assert manager.known_blobs == set()
    # Once the store works again, the same blobs are put again, then the checkpoint.
    store.fail_batch = False
    store.calls.clear()
    await _store(manager, 0, _state(3, "b"))
    assert store.calls == [("_put_blobs", sorted(_blobs_of(manager, _state(3, "b")))), ("_save", 0)]


@pytest.mark.asyncio
async def test_the_default_puts_each_blob_with_put_blob() -> None:
    """A provider that does not override _put_blobs keeps working, blob by blob."""
    store = MemoryStore()
    data = {blob_digest(b): b for b in (b"one", b"two", b"three")}
    assert await store.put_blobs(EID, data) == dict.fromkeys(data, True)
    for digest, payload in data.items():
        assert await store.get_blob(EID, digest) == payload
    more = {**data, blob_digest(b"four"): b"four"}
    written = await store.put_blobs(EID, more)
    assert written == {**dict.fromkeys(data, False), blob_digest(b"four"): True}
    assert await store.put_blobs(EID, {}) == {}

    recording = RecordingStore(batch=False)
    await recording.put_blobs(EID, data)
    assert [name for name, _ in recording.calls] == ["_put_blobs"] + ["_put_blob"] * 3


@pytest.mark.asyncio
async def test_put_blobs_refuses_a_digest_that_does_not_match_and_stores_nothing() -> None:
    store = RecordingStore()
    good = {blob_digest(b"good"): b"good"}
    with pytest.raises(ValueError, match="does not match"):
        await store.put_blobs(EID, {**good, blob_digest(b"other"): b"bad"})
    assert store.calls == []
    assert EID not in store.blobs
    with pytest.raises(ValueError):
        await store.put_blobs("../escape", good)


@pytest.mark.asyncio
async def test_a_provider_that_does_not_report_every_blob_is_refused() -> None:
    class Forgetful(MemoryStore):
        async def _put_blobs(self, eid: str, blobs: Mapping[str, bytes]) -> dict[str, bool]:
            return {}

    with pytest.raises(StoreError, match="did not report"):
        await Forgetful().put_blobs(EID, {blob_digest(b"x"): b"x"})
