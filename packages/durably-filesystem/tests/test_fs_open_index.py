"""The open-executions index of the filesystem store (C31): crash windows and old stores."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from durably.errors import StoreError
from durably.storage import META_STATUS
from durably_filesystem import FilesystemProvider
from durably_filesystem import _checkpoints as checkpoints_module

RUNNING = {META_STATUS: "running"}
COMPLETED = {META_STATUS: "completed"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


async def _open_ids(provider: FilesystemProvider) -> list[str]:
    return [info.execution_id async for info in provider.iter_open_executions()]


@pytest.mark.asyncio
async def test_the_entry_exists_before_the_record_that_opens_the_execution(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A crash during the append that opens an execution leaves its entry in place."""
    seen: list[bool] = []
    real = checkpoints_module.append_sync

    def crashing_append(state: Any, parts: Any, apply: Any) -> None:
        seen.append((root / "open" / state.execution_id).exists())
        raise OSError(5, "simulated crash during the append")

    async with FilesystemProvider(root) as provider:
        await provider.save_checkpoint("run-1", 0, b"a", metadata=COMPLETED)
        monkeypatch.setattr(checkpoints_module, "append_sync", crashing_append)
        with pytest.raises(StoreError):
            await provider.save_checkpoint("run-1", 1, b"b", metadata=RUNNING)
        assert seen == [True], "the entry must be durable before the record is appended"
        monkeypatch.setattr(checkpoints_module, "append_sync", real)
        # Stale (the record never made it), so it is dropped on request, not before.
        assert await _open_ids(provider) == ["run-1"]
        assert await provider.forget_if_finished("run-1")
        assert await _open_ids(provider) == []


@pytest.mark.asyncio
async def test_a_crash_after_the_final_record_leaves_a_stale_entry(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The entry of a finished execution goes only after its final record is durable."""
    async with FilesystemProvider(root) as provider:
        await provider.save_checkpoint("run-1", 0, b"a", metadata=RUNNING)
        index = provider._store.open_index

        def crash(execution_id: str) -> bool:
            assert provider._store.open_index.has(execution_id)
            raise OSError(5, "simulated crash before the entry is removed")

        monkeypatch.setattr(index, "remove", crash)
        with pytest.raises(StoreError):
            await provider.save_checkpoint("run-1", 1, b"b", metadata=COMPLETED)
        monkeypatch.undo()
        latest = await provider.load_latest_checkpoint("run-1")
        assert latest is not None
        assert latest.metadata == COMPLETED
        assert await _open_ids(provider) == ["run-1"]  # stale, allowed
        assert await provider.forget_if_finished("run-1")
        assert await _open_ids(provider) == []


@pytest.mark.asyncio
async def test_a_store_without_the_index_is_indexed_once(root: Path) -> None:
    """A store written before the index existed: the first listing builds it."""
    async with FilesystemProvider(root) as provider:
        for n in range(5):
            await provider.save_checkpoint(f"open-{n}", 0, b"a", metadata=RUNNING)
            await provider.save_checkpoint(f"done-{n}", 0, b"a", metadata=COMPLETED)
        await provider.put_blob("blob-only", b"x")
    shutil.rmtree(root / "open")  # as an older version left it
    async with FilesystemProvider(root) as provider:
        assert await _open_ids(provider) == [f"open-{n}" for n in range(5)]
    assert (root / "open" / ".ready").exists()
    assert sorted(p.name for p in (root / "executions").iterdir()) == sorted(
        [*(f"open-{n}" for n in range(5)), *(f"done-{n}" for n in range(5)), "blob-only"]
    )
    (root / "open" / "open-0").unlink()  # once ready, the index is trusted as it is
    async with FilesystemProvider(root) as provider:
        assert await _open_ids(provider) == [f"open-{n}" for n in range(1, 5)]


@pytest.mark.asyncio
async def test_forgetting_an_unknown_execution_leaves_nothing_behind(root: Path) -> None:
    async with FilesystemProvider(root) as provider:
        await provider.save_checkpoint("run-1", 0, b"a", metadata=RUNNING)
        (root / "open" / "ghost").touch()
        assert await provider.forget_if_finished("ghost")
        assert not (root / "executions" / "ghost").exists()
        assert [e.execution_id async for e in provider.iter_executions()] == ["run-1"]
        assert await _open_ids(provider) == ["run-1"]


@pytest.mark.asyncio
async def test_an_entry_removed_by_another_instance_is_made_again(root: Path) -> None:
    """A writer skips the entry's check while nothing was appended since its own save
    made sure of it; whatever another instance appends (a final record that removes
    the entry, a deletion) makes the next save that reopens the execution check again."""
    async with FilesystemProvider(root) as a, FilesystemProvider(root) as b:
        await a.save_checkpoint("run-1", 0, b"a", metadata=RUNNING)
        await a.save_checkpoint("run-1", 1, b"a", metadata=RUNNING)  # entry known
        await b.save_checkpoint("run-1", 2, b"b", metadata=COMPLETED)
        assert await _open_ids(a) == []
        await a.save_checkpoint("run-1", 3, b"a", metadata=RUNNING)
        assert await _open_ids(b) == ["run-1"]
        await b.delete_checkpoint("run-1", 3)  # the latest is the completed one again
        assert await _open_ids(a) == []
        await a.save_checkpoint("run-1", 4, b"a", metadata=RUNNING)
        assert await _open_ids(b) == ["run-1"]
        assert await b.delete_execution("run-1")
        await a.save_checkpoint("run-1", 0, b"a", metadata=RUNNING)
        assert await _open_ids(b) == ["run-1"]
