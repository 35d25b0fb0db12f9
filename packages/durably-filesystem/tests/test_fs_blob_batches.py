"""The filesystem provider's batched blob write (C33): the flushes of a batch are
issued together, a failure leaves neither a half-written blob nor a temporary file, and
a batch racing the deletion of its execution still stores every blob."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from pathlib import Path

import pytest

from durably.errors import StoreError
from durably.storage import blob_digest
from durably_filesystem import FilesystemProvider
from durably_filesystem import _blobs as blobs_module
from durably_filesystem import _fsutil as fsutil_module

RUN = "run-batch"
FLUSH = 0.05
"""Seconds one (simulated) flush takes in the timing test."""


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
    real_write_tmp = fsutil_module.write_tmp

    def failing_write_tmp(path: str, parts: list[bytes], *, fsync: bool) -> str:
        if os.path.basename(path) == doomed:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_write_tmp(path, parts, fsync=fsync)

    async with FilesystemProvider(root) as provider:
        await provider.put_blob(RUN, b"already there")
        before = _files(root)
        monkeypatch.setattr(blobs_module, "write_tmp", failing_write_tmp)
        with pytest.raises(StoreError, match="No space left"):
            await provider.put_blobs(RUN, batch)
        # no blob of the batch is visible, no temporary file is left behind (the new
        # fan-out directories may stay: they are empty, as after a put_blob that failed)
        assert _files(root) == before
        assert [info.digest for info in (await provider.list_blobs(RUN)).items] == [
            blob_digest(b"already there")
        ]
        monkeypatch.setattr(blobs_module, "write_tmp", real_write_tmp)
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
