"""`durably gc` frees space on a full disk, reports the bytes it freed, and asks first.

The full-disk test mounts a small tmpfs (it needs root; skipped otherwise); the simulated
one makes every new file fail with ENOSPC, which any user can run.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durably.cli import main
from durably.storage import META_STATUS

from conftest import durably


async def _fill(
    store: str, *, completed: int, running_checkpoints: int = 0, size: int = 20_000
) -> None:
    """Completed executions (leased: deleting them raises the epoch floor), and one
    running execution with many checkpoints."""
    from durably import open_store
    from durably.config import load_config

    config = load_config(overrides={"store": store}, use_env=False)
    async with open_store(config=config) as provider:
        for n in range(completed):
            execution_id = f"done-{n:03d}"
            lease = await provider.claim(execution_id, "filler", ttl=60)
            await provider.save_checkpoint(
                execution_id, 0, os.urandom(size), lease=lease, metadata={META_STATUS: "completed"}
            )
            await provider.release(lease)
        for seq in range(running_checkpoints):
            await provider.save_checkpoint(
                "busy", seq, os.urandom(size), metadata={META_STATUS: "running"}
            )


def _exists(path: Any, dir_fd: int | None) -> bool:
    try:
        os.stat(path, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def _fill_disk(directory: Path) -> None:
    """Write a filler file until the file system is full."""
    # Unbuffered: a buffered file would raise ENOSPC again when it is closed.
    with open(directory / "filler", "wb", buffering=0) as out:
        chunk = b"\0" * 4096
        while True:
            try:
                out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    # the last page of tmpfs may still take a few bytes: fill it byte by byte
    with open(directory / "filler2", "wb", buffering=0) as out:
        for _ in range(8192):
            try:
                out.write(b"\0")
            except OSError:
                break


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_gc_frees_space_on_a_full_disk(small_tmpfs: Path) -> None:
    store = f"file://{small_tmpfs}/store"
    asyncio.run(_fill(store, completed=40, running_checkpoints=20))
    _fill_disk(small_tmpfs)
    assert shutil.disk_usage(small_tmpfs).free < 4096
    # On a full disk, nothing else can be written...
    with pytest.raises(OSError, match="No space left"):
        (small_tmpfs / "more").write_bytes(b"x" * 8192)

    done = durably("gc", "--completed-older-than", "0s", "--store", store)
    assert done.code == 0, done.err
    assert "deleted 40 execution(s) and 0 checkpoint(s); freed" in done.out, done.out
    freed = int(done.out.split("freed ")[1].split(" bytes")[0].replace(",", ""))
    assert freed >= 40 * 20_000
    assert shutil.disk_usage(small_tmpfs).free >= 40 * 20_000 * 0.9
    listed = durably("ls", "--store", store)
    assert "done-" not in listed.out
    assert "busy" in listed.out

    # Pruning returns its bytes too (the log is compacted), and says how many.
    before = os.path.getsize(small_tmpfs / "store" / "executions" / "busy" / "log")
    pruned = durably("gc", "--keep-last", "1", "--store", store)
    assert pruned.code == 0, pruned.err
    assert "deleted 0 execution(s) and 19 checkpoint(s); freed" in pruned.out, pruned.out
    after = os.path.getsize(small_tmpfs / "store" / "executions" / "busy" / "log")
    assert after < before / 10, (before, after)


def test_gc_deletes_when_every_new_file_fails_with_enospc(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No temporary file before space is freed: on a disk where every file creation
    fails until some bytes are returned (a full disk), gc still deletes completed
    executions and frees their bytes (the provider frees an execution's bytes first, and
    only then writes the small epoch-floor file in the room that made)."""
    store = f"file://{tmp_path}/store"
    asyncio.run(_fill(store, completed=5))
    real_open = os.open
    real_unlink = os.unlink
    freed: list[int] = []
    refused: list[str] = []

    def full_disk_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT and not freed and not _exists(path, kwargs.get("dir_fd")):
            refused.append(str(path))
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_open(path, flags, *args, **kwargs)

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        with contextlib.suppress(OSError):
            size = os.stat(path, dir_fd=kwargs.get("dir_fd"), follow_symlinks=False).st_size
            if size:
                freed.append(size)
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "open", full_disk_open)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    assert main(["gc", "--completed-older-than", "0s", "--store", store]) == 0
    out = capsys.readouterr().out
    assert "deleted 5 execution(s)" in out, out
    assert refused, "the disk was never full: the test checks nothing"
    monkeypatch.undo()
    assert not any((tmp_path / "store" / "executions").iterdir())
    # the epoch floor was raised: a new claim of a deleted id gets a higher epoch
    from durably_filesystem import FilesystemProvider

    async def claim_again() -> int:
        async with FilesystemProvider(str(tmp_path / "store")) as provider:
            return (await provider.claim("done-000", "new", ttl=5)).epoch

    assert asyncio.run(claim_again()) > 1


def test_gc_dry_run_and_confirmation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"file://{tmp_path}/store"
    asyncio.run(_fill(store, completed=3, running_checkpoints=4, size=1000))
    assert (
        main(
            [
                "gc",
                "--completed-older-than",
                "0s",
                "--keep-last",
                "1",
                "--dry-run",
                "--store",
                store,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "would delete execution done-000" in out
    assert "would delete 3 execution(s) and 3 checkpoint(s); would free" in out, out
    assert len(list((tmp_path / "store" / "executions").iterdir())) == 4  # nothing deleted

    # On a terminal, gc asks before deleting executions; "n" deletes nothing.
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["gc", "--completed-older-than", "0s", "--store", store]) == 1
    assert len(list((tmp_path / "store" / "executions").iterdir())) == 4
    asked: list[str] = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "y")
    assert main(["gc", "--completed-older-than", "0s", "--store", store]) == 0
    assert asked
    assert "delete 3 completed execution(s)" in asked[0]
    assert [p.name for p in (tmp_path / "store" / "executions").iterdir()] == ["busy"]
    # --yes does not ask
    asyncio.run(_fill(store, completed=1, size=1000))
    monkeypatch.setattr("builtins.input", lambda prompt: pytest.fail("asked"))
    assert main(["gc", "--completed-older-than", "0s", "--yes", "--store", store]) == 0
    capsys.readouterr()
    # gc with nothing to do is a usage error
    assert main(["gc", "--store", store]) == 2


def test_a_damaged_execution_never_stops_gc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A corrupt execution (listed first) does not stop gc: it still prunes and deletes
    every execution after it (before, one damaged checkpoint aborted `gc --keep-last`)."""
    from durably_filesystem.testing import FilesystemBackdoor

    store = f"file://{tmp_path}/store"
    asyncio.run(_fill(store, completed=3, running_checkpoints=6, size=1000))

    async def broken() -> None:
        from durably import open_store
        from durably.config import load_config

        config = load_config(overrides={"store": store}, use_env=False)
        async with open_store(config=config) as provider:
            for seq in range(4):
                await provider.save_checkpoint(
                    "a-broken", seq, os.urandom(1000), metadata={META_STATUS: "running"}
                )
        door = FilesystemBackdoor(tmp_path / "store")
        await door.corrupt_checkpoint("a-broken", 3)
        await door.corrupt_checkpoint("a-broken", 1)

    asyncio.run(broken())
    code = main(
        ["gc", "--completed-older-than", "0s", "--keep-last", "1", "--yes", "--store", store]
    )
    out, err = capsys.readouterr()
    # gc reads metadata only: the damage is not even in its way.
    assert code == 0, err
    assert "deleted 3 execution(s) and 8 checkpoint(s)" in out, out  # a-broken 4->1, busy 6->1
    names = sorted(p.name for p in (tmp_path / "store" / "executions").iterdir())
    assert names == ["a-broken", "busy"], names
    listed = {line.split()[0]: line.split()[1] for line in _ls_lines(store)}
    assert listed == {"a-broken": "damaged", "busy": "stopped"}, listed


def _ls_lines(store: str) -> list[str]:
    done = durably("ls", "--store", store)
    assert done.code == 0, done.err
    return done.out.splitlines()[1:]
