"""The provider's layout, its errors, its guards, and its use of files and threads."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from durably.errors import (
    ConfigError,
    CorruptObjectError,
    FencedError,
    InvalidExecutionIdError,
    StoreError,
    StoreUnavailableError,
    UnsupportedFormatError,
)
from durably.storage import blob_digest
from durably_filesystem import FilesystemBackdoor, FilesystemProvider
from durably_filesystem import _blobfiles as blobfiles_module
from durably_filesystem import _checkpoints as checkpoints_module
from durably_filesystem import _executions as executions_module
from durably_filesystem import _format as format_module
from durably_filesystem import _fsutil as fsutil_module
from durably_filesystem import _leases as leases_module
from durably_filesystem import _log as log_module
from durably_filesystem import _packs as packs_module
from durably_filesystem import _store as store_module

RUN = "run-1"


@pytest.mark.asyncio
async def test_layout(root: Path) -> None:
    async with FilesystemProvider(root) as provider:
        assert not root.exists(), "nothing is created before the first write"
        assert await provider.load_latest_checkpoint(RUN) is None
        assert (await provider.list_executions()).items == ()
        assert not root.exists(), "reads create nothing"

        await provider.save_checkpoint(RUN, 0, b"x")
        await provider.claim(RUN, "me", ttl=60)
        digest = await provider.put_blob(RUN, b"blob bytes")
    marker = json.loads((root / "durably-store.json").read_text())
    assert marker == {"layout": "durably-filesystem", "version": 2}
    [pack] = FilesystemBackdoor(root).pack_names(RUN)
    assert await FilesystemBackdoor(root).locations() == sorted(
        [
            f"executions/{RUN}/blobs/{pack}/{digest}",
            f"executions/{RUN}/lease",
            f"executions/{RUN}/lock",
            f"executions/{RUN}/log",
            f"open/{RUN}",
        ]
    )
    lease = json.loads((root / "executions" / RUN / "lease").read_text())
    assert (lease["owner"], lease["epoch"], lease["released"]) == ("me", 1, False)


@pytest.mark.asyncio
async def test_a_blob_is_never_rewritten(root: Path) -> None:
    async with FilesystemProvider(root) as provider:
        digest = await provider.put_blob(RUN, b"once")
        path = Path(FilesystemBackdoor(root).find_blob(RUN, digest)[0])
        before = path.stat()
        assert not await provider._put_blob(RUN, digest, provider.envelope.wrap(b"once"))
        after = path.stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        assert await provider.get_blob(RUN, digest) == b"once"
        assert [b.digest for b in (await provider.list_blobs(RUN)).items] == [digest]
        assert FilesystemBackdoor(root).pack_names(RUN) == [path.name]
        assert digest == blob_digest(b"once")


@pytest.mark.asyncio
async def test_a_symlink_out_of_the_store_is_refused(root: Path, tmp_path: Path) -> None:
    """Defence in depth: an execution directory that resolves outside the store."""
    async with FilesystemProvider(root) as provider:
        await provider.save_checkpoint("inside", 0, b"x")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "executions" / "evil").symlink_to(outside)
    async with FilesystemProvider(root) as provider:
        with pytest.raises(StoreError, match="outside"):
            await provider.save_checkpoint("evil", 0, b"x")
        with pytest.raises(StoreError, match="outside"):
            await provider.put_blob("evil", b"x")
    assert list(outside.iterdir()) == []


@pytest.mark.asyncio
async def test_hostile_ids_never_reach_the_filesystem(root: Path) -> None:
    async with FilesystemProvider(root) as provider:
        for bad in ("..", "../x", "a/b", ".hidden"):
            with pytest.raises(InvalidExecutionIdError):
                await provider.save_checkpoint(bad, 0, b"x")
            with pytest.raises(InvalidExecutionIdError):
                provider._store.exec_dir(bad)
    assert not root.exists()


@pytest.mark.asyncio
async def test_a_root_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    async with FilesystemProvider(blocker / "store") as provider:
        with pytest.raises(StoreUnavailableError) as caught:
            await provider.save_checkpoint(RUN, 0, b"x")
        assert str(blocker) in str(caught.value)
        assert isinstance(caught.value.__cause__, OSError)
        with pytest.raises(StoreUnavailableError, match="Not a directory"):
            await provider.load_latest_checkpoint(RUN)
    # whereas a store that does not exist yet is simply empty
    async with FilesystemProvider(tmp_path / "not-yet" / "store") as provider:
        assert await provider.load_latest_checkpoint(RUN) is None


class _ReadOnlyOs:
    """The ``os`` module as seen on a read-only filesystem (EROFS for every write)."""

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    @staticmethod
    def open(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", path)
        return os.open(path, flags, mode)

    @staticmethod
    def mkdir(path: str, mode: int = 0o777) -> None:
        raise OSError(errno.EROFS, "Read-only file system", path)


@pytest.mark.asyncio
async def test_a_read_only_store(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads work (even the damage check, which wants the lock); writes raise
    StoreUnavailableError naming the path."""
    async with FilesystemProvider(root) as provider:
        for seq in range(3):
            await provider.save_checkpoint(RUN, seq, f"kept {seq}".encode())
    backdoor = FilesystemBackdoor(root)
    await backdoor.corrupt_checkpoint(RUN, 1)
    for module in (
        store_module,
        checkpoints_module,
        executions_module,
        blobfiles_module,
        packs_module,
        log_module,
        leases_module,
        fsutil_module,
    ):
        monkeypatch.setattr(module, "os", _ReadOnlyOs())
    async with FilesystemProvider(root) as provider:
        assert (await provider.load_checkpoint(RUN, 0)).data == b"kept 0"
        with pytest.raises(CorruptObjectError):
            await provider.load_checkpoint(RUN, 1)
        with pytest.raises(StoreUnavailableError, match="Read-only file system") as caught:
            await provider.save_checkpoint(RUN, 3, b"x")
        assert str(root) in str(caught.value)
        assert isinstance(caught.value.__cause__, OSError)
        with pytest.raises(StoreUnavailableError):
            await provider.put_blob("run-2", b"x")
        with pytest.raises(StoreUnavailableError):
            await provider.claim(RUN, "me", ttl=5)


def test_os_errors_map_to_store_errors(root: Path) -> None:
    error = fsutil_module.wrap_os_error(
        PermissionError(errno.EACCES, "Permission denied", str(root)), "write", None
    )
    assert isinstance(error, StoreUnavailableError)
    assert str(root) in str(error)
    error = fsutil_module.wrap_os_error(
        OSError(errno.ENOSPC, "No space left on device"), "write", str(root)
    )
    assert type(error) is StoreError
    assert str(error) == f"cannot write: {root}: No space left on device"


@pytest.mark.asyncio
async def test_a_directory_that_is_not_a_store_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print('hi')\n")
    async with FilesystemProvider(tmp_path / "src") as provider:
        with pytest.raises(ConfigError, match="not a durably store"):
            await provider.save_checkpoint(RUN, 0, b"x")
    assert sorted(p.name for p in (tmp_path / "src").iterdir()) == ["main.py"]


@pytest.mark.asyncio
async def test_a_store_of_a_newer_layout_is_refused(root: Path) -> None:
    root.mkdir()
    (root / "durably-store.json").write_text(
        json.dumps({"layout": "durably-filesystem", "version": 3})
    )
    async with FilesystemProvider(root) as provider:
        with pytest.raises(UnsupportedFormatError, match="layout version 3"):
            await provider.load_latest_checkpoint(RUN)
        with pytest.raises(UnsupportedFormatError):
            await provider.save_checkpoint(RUN, 0, b"x")


@pytest.mark.asyncio
async def test_a_closed_provider_refuses_work(root: Path) -> None:
    provider = FilesystemProvider(root)
    await provider.save_checkpoint(RUN, 0, b"x")
    await provider.close()
    await provider.close()
    with pytest.raises(StoreError, match="closed"):
        await provider.load_checkpoint(RUN, 0)
    with pytest.raises(StoreError, match="closed"):
        await provider.list_executions()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.asyncio
async def test_open_files_stay_bounded(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MAX_OPEN_EXECUTIONS", 8)
    async with FilesystemProvider(root) as provider:
        before = _open_fds()
        for number in range(40):
            await provider.save_checkpoint(f"run-{number}", 0, b"x")
            await provider.claim(f"run-{number}", "me", ttl=60)
            await provider.save_checkpoint(f"run-{number}", 1, b"y")
        assert _open_fds() - before <= 8 * 3
        for number in range(40):
            assert (await provider.load_checkpoint(f"run-{number}", 1)).data == b"y"
    assert _open_fds() <= before


@pytest.mark.asyncio
async def test_big_payloads_are_written_and_read_off_the_event_loop(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Writes and reads above INLINE_LIMIT run in a worker thread; small ones do not."""
    threads: list[str] = []
    write_all, pread_exact = fsutil_module.write_all, format_module.pread_exact

    def spy_write(fd: int, parts: list[bytes | memoryview]) -> None:
        threads.append(threading.current_thread().name)
        write_all(fd, parts)

    def spy_read(fd: int, size: int, offset: int) -> bytes:
        threads.append(threading.current_thread().name)
        return pread_exact(fd, size, offset)

    monkeypatch.setattr(log_module, "write_all", spy_write)
    monkeypatch.setattr(format_module, "pread_exact", spy_read)
    big = os.urandom(3 * 1024 * 1024)
    async with FilesystemProvider(root) as provider:
        await provider.save_checkpoint(RUN, 0, b"small")
        await provider.load_checkpoint(RUN, 0)
        main = threading.current_thread().name
        assert set(threads) == {main}
        threads.clear()
        await provider.save_checkpoint(RUN, 1, big)
        assert (await provider.load_checkpoint(RUN, 1)).data == big
        assert threads
        assert main not in threads


@pytest.mark.asyncio
async def test_one_instance_used_by_many_tasks(root: Path) -> None:
    async with FilesystemProvider(root) as provider:

        async def work(execution: int) -> None:
            for seq in range(20):
                await provider.save_checkpoint(
                    f"run-{execution}", seq, f"{execution}/{seq}".encode()
                )
                if seq % 4 == 3:
                    await provider.delete_checkpoint(f"run-{execution}", seq - 1)

        await asyncio.gather(*(work(n) for n in range(12)))
        for execution in range(12):
            listed = [i.seq async for i in provider.iter_checkpoints(f"run-{execution}")]
            assert listed == [s for s in range(20) if s % 4 != 2]
            for seq in listed:
                found = await provider.load_checkpoint(f"run-{execution}", seq)
                assert found.data == f"{execution}/{seq}".encode()


@pytest.mark.asyncio
async def test_lease_changes_by_another_instance_are_seen_at_once(root: Path) -> None:
    """The fencing check caches the lease by the file's stat; a new claim replaces the
    file (new inode), even when it has the same size and mtime granularity."""
    async with FilesystemProvider(root) as a, FilesystemProvider(root) as b:
        for round_ in range(30):
            lease = await a.claim(RUN, "worker", ttl=60)
            await b.save_checkpoint(RUN, 2 * round_, b"x", lease=lease)  # b caches it
            newer = await a.claim(RUN, "worker", ttl=60)
            with pytest.raises(StoreError, match="superseded"):
                await b.save_checkpoint(RUN, 2 * round_ + 1, b"x", lease=lease)
            await b.save_checkpoint(RUN, 2 * round_ + 1, b"y", lease=newer)


@pytest.mark.asyncio
async def test_a_fenced_save_looks_at_the_lease_file_and_the_log_only(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once warm, a save under a lease costs one ``stat`` of the lease file (which also
    shows that the lock taken is still the execution's) and one of the log (appends by
    other processes): not the lock file's, the open-index entry's, nor an ``fstat``."""
    async with FilesystemProvider(root) as provider:
        lease = await provider.claim(RUN, "me", ttl=60)
        for seq in range(2):
            await provider.save_checkpoint(RUN, seq, b"x", lease=lease)
        looked_at: list[str] = []
        real_stat, real_fstat = os.stat, os.fstat

        def stat(path: str, *args: Any, **kwargs: Any) -> os.stat_result:
            looked_at.append(os.path.basename(path))
            return real_stat(path, *args, **kwargs)

        def fstat(fd: int) -> os.stat_result:
            looked_at.append("fstat")
            return real_fstat(fd)

        monkeypatch.setattr(os, "stat", stat)
        monkeypatch.setattr(os, "fstat", fstat)
        await provider.save_checkpoint(RUN, 2, b"x", lease=lease)
        monkeypatch.undo()
        assert sorted(looked_at) == ["lease", "log"]
        assert (await provider.load_checkpoint(RUN, 2)).data == b"x"


@pytest.mark.asyncio
async def test_a_fenced_save_creates_nothing(root: Path) -> None:
    """C9: a superseded lease changes nothing, not even the log of an execution that
    has none yet (the fence is checked before the log is created or truncated)."""
    async with FilesystemProvider(root) as provider:
        zombie = await provider.claim(RUN, "me", ttl=60)
        await provider.claim(RUN, "me", ttl=60)
        before = await FilesystemBackdoor(root).locations()
        with pytest.raises(FencedError):
            await provider.save_checkpoint(RUN, 0, b"x", lease=zombie)
        assert await FilesystemBackdoor(root).locations() == before
        assert not (root / "executions" / RUN / "log").exists()


@pytest.mark.asyncio
async def test_a_lease_cached_before_a_deletion_vouches_for_nothing(root: Path) -> None:
    """A writer whose cached lease file vouched for its lock is fenced once another
    instance deleted the execution, created it again and claimed it: its lock file is
    no longer the execution's, and it writes nothing through it."""
    async with FilesystemProvider(root) as a, FilesystemProvider(root) as b:
        old = await a.claim(RUN, "me", ttl=60)
        for seq in range(2):
            await b.save_checkpoint(RUN, seq, b"old", lease=old)  # b's cache is warm
        assert await a.delete_execution(RUN)
        new = await a.claim(RUN, "me", ttl=60)
        await a.save_checkpoint(RUN, 0, b"new", lease=new)
        with pytest.raises(FencedError):
            await b.save_checkpoint(RUN, 1, b"zombie", lease=old)
        await b.save_checkpoint(RUN, 1, b"new", lease=new)  # through the new lock file
        assert [(await a.load_checkpoint(RUN, seq)).data for seq in (0, 1)] == [b"new"] * 2
        assert [i.seq async for i in b.iter_checkpoints(RUN)] == [0, 1]


@pytest.mark.asyncio
async def test_deleting_an_execution_while_another_instance_writes_to_it(root: Path) -> None:
    async with FilesystemProvider(root) as a, FilesystemProvider(root) as b:
        await a.save_checkpoint(RUN, 0, b"old")
        await b.save_checkpoint(RUN, 1, b"old")  # b has the files open
        assert await a.delete_execution(RUN)
        assert not (root / "executions" / RUN).exists()
        assert await b.load_latest_checkpoint(RUN) is None
        await b.save_checkpoint(RUN, 0, b"new life")
        assert [i.seq async for i in a.iter_checkpoints(RUN)] == [0]
        assert (await a.load_checkpoint(RUN, 0)).data == b"new life"
        assert os.listdir(root / ".trash") == []


@pytest.mark.asyncio
async def test_epochs_keep_growing_after_an_execution_is_deleted(root: Path) -> None:
    """A zombie holding a lease from before delete_execution stays fenced: the id's next
    claims start above every epoch it ever had (a store-wide floor survives deletion)."""
    async with FilesystemProvider(root) as provider:
        for _ in range(3):
            zombie = await provider.claim(RUN, "worker", ttl=60)
        await provider.claim("other", "worker", ttl=60)
        assert await provider.delete_execution(RUN)
        assert await FilesystemBackdoor(root).locations() == [
            "executions/other/lease",
            "executions/other/lock",
        ]
    async with FilesystemProvider(root) as provider:
        fresh = await provider.claim(RUN, "worker", ttl=60)
        assert fresh.epoch > zombie.epoch
        with pytest.raises(StoreError, match="superseded"):
            await provider.save_checkpoint(RUN, 0, b"zombie", lease=zombie)
        await provider.save_checkpoint(RUN, 0, b"fresh", lease=fresh)
        # deleting an execution that has a lower epoch does not lower the floor
        assert await provider.delete_execution("other")
        assert await provider.delete_execution(RUN)
        assert (await provider.claim(RUN, "worker", ttl=60)).epoch > fresh.epoch
