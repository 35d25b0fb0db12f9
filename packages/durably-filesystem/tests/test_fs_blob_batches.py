"""The batched blob write (C33) of a layout-1 store (one file per blob): the flushes of
a batch are issued together, a failure leaves neither a half-written blob nor a
temporary file, and a batch racing the deletion of its execution still stores every
blob. Layout-2 stores write packs: ``test_fs_blob_packs.py``."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import threading
import time
from pathlib import Path

import pytest

from durably.errors import StoreError
from durably.storage import blob_digest
from durably_filesystem import FilesystemProvider
from durably_filesystem import _blobfiles as blobs_module
from durably_filesystem import _fsutil as fsutil_module

RUN = "run-batch"
INLINE = blobs_module.INLINE_LIMIT
FLUSH = 0.05
"""Seconds one (simulated) flush takes in the timing test."""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A store created by a durably-filesystem of layout 1, before blob packs."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "durably-store.json").write_text('{"layout": "durably-filesystem", "version": 1}')
    return store


def _batch(count: int, seed: int = 0) -> dict[str, bytes]:
    payloads = [f"blob {seed}:{i} ".encode() * (50 + i) for i in range(count)]
    return {blob_digest(data): data for data in payloads}


def _files(root: Path) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(d, n), root) for d, _, names in os.walk(root) for n in names
    )


@pytest.mark.asyncio
async def test_the_flushes_of_a_batch_are_issued_together(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 new blobs, each a file, a directory entry and (mostly) a new fan-out
    directory: blob by blob that is ~48 flushes one after the other; a batch issues them
    in two rounds of concurrent flushes."""
    real_fsync = os.fsync
    active = 0
    most = 0
    lock = threading.Lock()

    def slow_fsync(fd: int) -> None:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        try:
            time.sleep(FLUSH)
            real_fsync(fd)
        finally:
            with lock:
                active -= 1

    batch = _batch(16)
    async with FilesystemProvider(root) as provider:
        await provider.put_blob("warm-up", b"creates the store")
        monkeypatch.setattr(os, "fsync", slow_fsync)
        start = time.perf_counter()
        written = await provider.put_blobs(RUN, batch)
        elapsed = time.perf_counter() - start
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert written == dict.fromkeys(batch, True)
        for digest, data in batch.items():
            assert await provider.get_blob(RUN, digest) == data
    assert most >= 8, f"at most {most} flushes ran at the same time"
    # two rounds (plus the new execution's directories) -- blob by blob: >= 48 rounds
    assert elapsed < 12 * FLUSH, f"{elapsed:.3f} s for 16 blobs"


@pytest.mark.asyncio
async def test_a_failed_write_in_a_batch_leaves_no_blob_and_no_temporary_file(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = _batch(6, seed=1)
    doomed = sorted(batch)[2].partition(":")[2]
    real_write_new = fsutil_module.write_new

    def failing_write_new(tmp: str, parts: list[bytes], *, fsync: bool) -> None:
        if tmp.endswith(doomed):
            raise OSError(errno.ENOSPC, "No space left on device", tmp)
        real_write_new(tmp, parts, fsync=fsync)

    async with FilesystemProvider(root) as provider:
        await provider.put_blob(RUN, b"already there")
        before = _files(root)
        monkeypatch.setattr(blobs_module, "write_new", failing_write_new)
        with pytest.raises(StoreError, match="No space left"):
            await provider.put_blobs(RUN, batch)
        # no blob of the batch is visible, no temporary file is left behind (the new
        # fan-out directories may stay: they are empty, as after a put_blob that failed)
        assert _files(root) == before
        assert [info.digest for info in (await provider.list_blobs(RUN)).items] == [
            blob_digest(b"already there")
        ]
        monkeypatch.setattr(blobs_module, "write_new", real_write_new)
        assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, True)
        for digest, data in batch.items():
            assert await provider.get_blob(RUN, digest) == data
    assert not [name for name in _files(root) if ".tmp-" in name]


@pytest.mark.asyncio
async def test_a_batch_racing_the_deletion_of_its_execution_stores_every_blob(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The execution is deleted after the blobs were linked, before their directories
    were flushed: the batch starts over and every blob is there when it returns."""
    batch = _batch(5, seed=2)
    real_fsync_dir = blobs_module.fsync_dir
    deleted = False

    def fsync_dir_after_a_deletion(path: str) -> None:
        nonlocal deleted
        if not deleted and os.listdir(path) and os.path.basename(path) != "blobs":
            deleted = True
            for blob_file in os.listdir(path):
                os.unlink(os.path.join(path, blob_file))
            os.rmdir(path)
        real_fsync_dir(path)

    async with FilesystemProvider(root) as provider:
        await provider.put_blob(RUN, b"creates the execution")
        monkeypatch.setattr(blobs_module, "fsync_dir", fsync_dir_after_a_deletion)
        written = await provider.put_blobs(RUN, batch)
        assert deleted
        assert written == dict.fromkeys(batch, True)
        for digest, data in batch.items():
            assert await provider.get_blob(RUN, digest) == data


@pytest.mark.asyncio
async def test_concurrent_batches_of_the_same_blobs_write_each_once(root: Path) -> None:
    batch = _batch(8, seed=3)
    async with FilesystemProvider(root) as provider:
        results = await asyncio.gather(*(provider.put_blobs(RUN, batch) for _ in range(4)))
        for digest in batch:
            assert sum(result[digest] for result in results) == 1, digest
            assert await provider.get_blob(RUN, digest) == batch[digest]
    assert not [name for name in _files(root) if ".tmp-" in name]


@pytest.mark.asyncio
async def test_a_batch_cancelled_while_its_flushes_run_leaves_no_temporary_file(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The caller is cancelled while the threads write and flush: the cancellation waits
    for them (they work under the caller's locks), then every temporary file is gone."""
    real_fsync = os.fsync
    started = threading.Event()

    def slow_fsync(fd: int) -> None:
        started.set()
        time.sleep(0.2)
        real_fsync(fd)

    batch = _batch(6, seed=4)
    async with FilesystemProvider(root) as provider:
        await provider.put_blob(RUN, b"creates the execution")
        monkeypatch.setattr(os, "fsync", slow_fsync)
        task = asyncio.create_task(provider.put_blobs(RUN, batch))
        while not started.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        monkeypatch.setattr(os, "fsync", real_fsync)
        assert not [name for name in _files(root) if ".tmp-" in name]
        # nothing of the batch is visible, and it can be written again
        assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, True)


@pytest.mark.asyncio
async def test_a_blob_found_already_linked_has_its_directory_flushed(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob another writer (or an attempt that failed before its flush) linked is
    reported as not written, but only once its directory entry is durable: the caller
    saves a checkpoint naming it next. Batch and single puts alike."""
    batch = _batch(4, seed=5)
    flushed: list[str] = []
    real_fsync_dir = blobs_module.fsync_dir

    def recording_fsync_dir(path: str) -> None:
        flushed.append(path)
        real_fsync_dir(path)

    async with FilesystemProvider(root) as provider:
        assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, True)
        monkeypatch.setattr(blobs_module, "fsync_dir", recording_fsync_dir)
        new = _batch(1, seed=6)
        again = await provider.put_blobs(RUN, {**batch, **new})
        assert again == {**dict.fromkeys(batch, False), **dict.fromkeys(new, True)}
        blob_dirs = {
            os.path.dirname(blobs_module._blob_path(provider._store, RUN, d)) for d in batch
        }
        assert blob_dirs <= set(flushed)
        flushed.clear()
        single = next(iter(batch))
        assert await provider.put_blob(RUN, batch[single]) == single
        assert flushed == [os.path.dirname(blobs_module._blob_path(provider._store, RUN, single))]


@pytest.mark.asyncio
async def test_big_blobs_of_a_batch_do_not_go_through_the_sync_pool(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blobs above INLINE_LIMIT are written one by one in their own threads, as put_blob
    writes them: a batch of several MB must not hold every sync-pool thread that the
    checkpoint appends of other executions wait for."""
    noise = random.Random(8)  # incompressible: stored above the limit after zstd too
    big = {blob_digest(d): d for d in (noise.randbytes(INLINE + 10) for _ in range(3))}
    small = _batch(3, seed=7)
    pooled: list[int] = []
    real_run_durable_all = blobs_module.run_durable_all

    async def recording(store: object, calls: list[tuple[object, tuple[object, ...]]]) -> object:
        pooled.extend(len(a[1]) for _, a in calls if len(a) == 2 and isinstance(a[1], bytes))
        return await real_run_durable_all(store, calls)  # type: ignore[arg-type]

    async with FilesystemProvider(root) as provider:
        await provider.put_blob(RUN, b"creates the execution")
        monkeypatch.setattr(blobs_module, "run_durable_all", recording)
        written = await provider.put_blobs(RUN, {**big, **small})
        assert written == dict.fromkeys({**big, **small}, True)
        for digest, data in {**big, **small}.items():
            assert await provider.get_blob(RUN, digest) == data
    assert pooled
    assert max(pooled) <= INLINE, pooled
