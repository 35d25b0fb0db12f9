"""What a write flushes, and in which order: what a crash of the machine would keep.

A SIGKILL cannot show these (the page cache survives a killed process), so each test
records the flushes and moves into place the provider makes, and checks the order the
durability argument rests on (``docs/providers/filesystem.md``, "Flushes").
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from durably.errors import StoreError
from durably_filesystem import FilesystemBackdoor, FilesystemProvider, _fsutil, _log, _open

RUN = "run-1"
RUNNING = {"durably.kind": "snapshot", "durably.status": "running"}


Events = list[tuple[str, str]]
"""("flush dir" | "link" | "fdatasync", path) in the order they happened."""


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Events:
    seen: Events = []
    real_fsync_dir, real_publish, real_fdatasync = (
        _fsutil.fsync_dir,
        _log.publish,
        _log.fdatasync,
    )

    def fsync_dir(path: str) -> None:
        real_fsync_dir(path)
        seen.append(("flush dir", os.path.realpath(path)))

    def publish(tmp: str, path: str, *, exclusive: bool) -> bool:
        done = real_publish(tmp, path, exclusive=exclusive)
        seen.append(("link", os.path.realpath(path)))
        return done

    def fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        seen.append(("fdatasync", ""))

    for module in (_fsutil, _log, _open):
        monkeypatch.setattr(module, "fsync_dir", fsync_dir)
    monkeypatch.setattr(_log, "publish", publish)
    monkeypatch.setattr(_log, "fdatasync", fdatasync)
    return seen


@pytest.mark.asyncio
async def test_the_first_save_flushes_the_open_entry_then_links_the_log_with_its_record(
    root: Path, events: Events
) -> None:
    """The open-index entry is durable before the record that opens the execution can be;
    the record rides in the new log (no separate append and flush); the directory is
    flushed after the log is linked, which also covers the claim's lease file."""
    backdoor = FilesystemBackdoor(root)
    execution_dir = os.path.realpath(backdoor.execution_dir(RUN))
    log_path = os.path.realpath(backdoor.log_path(RUN))
    open_dir = os.path.realpath(os.path.join(root, _open.OPEN))
    async with FilesystemProvider(root) as provider:
        lease = await provider.claim(RUN, "w", ttl=60)
        assert ("flush dir", execution_dir) not in events  # no log yet: deferred
        start = len(events)
        await provider.save_checkpoint(RUN, 0, b"first", metadata=RUNNING, lease=lease)
        assert events[start:] == [
            ("flush dir", open_dir),
            ("link", log_path),
            ("flush dir", execution_dir),
        ]
        start = len(events)
        await provider.save_checkpoint(RUN, 1, b"second", metadata=RUNNING, lease=lease)
        assert events[start:] == [("fdatasync", "")]
        assert (await provider.load_checkpoint(RUN, 0)).data == b"first"
        assert [i.seq async for i in provider.iter_checkpoints(RUN)] == [0, 1]


@pytest.mark.asyncio
async def test_a_claim_over_an_existing_log_flushes_the_directory_and_a_release_does_not(
    root: Path, events: Events
) -> None:
    """Once anything was written, a new epoch must be durable before a write under it; a
    release undone by a crash of the machine leaves a lease whose holder died with it."""
    execution_dir = os.path.realpath(FilesystemBackdoor(root).execution_dir(RUN))
    async with FilesystemProvider(root) as provider:
        first = await provider.claim(RUN, "a", ttl=60)
        await provider.save_checkpoint(RUN, 0, b"x", metadata=RUNNING, lease=first)
        start = len(events)
        await provider.release(first)
        assert ("flush dir", execution_dir) not in events[start:]
        assert (await provider.get_lease(RUN)).released  # type: ignore[union-attr]
        start = len(events)
        second = await provider.claim(RUN, "b", ttl=60)
        assert events[start:] == [("flush dir", execution_dir)]
        assert second.epoch == first.epoch + 1


@pytest.mark.asyncio
async def test_a_failed_flush_of_a_new_log_writes_nothing(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If flushing the directory of a new log fails (EIO), the log is removed again: the
    save raised, so it wrote nothing, and it can be retried."""
    backdoor = FilesystemBackdoor(root)
    real_fsync_dir = _log.fsync_dir

    def failing(path: str) -> None:
        raise OSError(errno.EIO, "Input/output error")

    async with FilesystemProvider(root) as provider:
        monkeypatch.setattr(_log, "fsync_dir", failing)
        with pytest.raises(StoreError, match="Input/output error") as caught:
            await provider.save_checkpoint(RUN, 0, b"lost")
        assert isinstance(caught.value.__cause__, OSError)
        assert not os.path.exists(backdoor.log_path(RUN))
        assert [name for name in os.listdir(backdoor.execution_dir(RUN)) if "log" in name] == []
        monkeypatch.setattr(_log, "fsync_dir", real_fsync_dir)
        await provider.save_checkpoint(RUN, 0, b"second try")
        assert (await provider.load_checkpoint(RUN, 0)).data == b"second try"
        assert [i.seq async for i in provider.iter_checkpoints(RUN)] == [0]
