"""Leases of the filesystem store: lease files, the epoch floor, fencing, owner locks.

``executions/E/lease`` holds the current lease as JSON, replaced atomically under the
execution's ``flock`` (see :mod:`durably_filesystem._log`); :func:`current_lease` reads
it again only when its ``stat`` changed. Epochs must never repeat for an execution id,
even after ``delete_execution`` removed the lease file: the store-wide
``root/epoch-floor`` (raised under ``root/lock``) is where a new lease file starts
counting from. ``executions/E/owner`` is the owner lock: an ``flock`` the kernel drops
when its holder dies.
"""

# Small filesystem calls run on the event loop on purpose (a stat, a short read).
# ruff: noqa: ASYNC240

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from durably.errors import CorruptObjectError, FencedError, StoreError, fenced, lease_held
from durably.storage import Lease, OwnerLock
from durably_filesystem import _format as fmt
from durably_filesystem._fsutil import O_CLOEXEC, makedirs_durable, read_file, write_atomic
from durably_filesystem._log import ExecState, hold_lock, wait_for_flock
from durably_filesystem._syncpool import lease_claimed, lease_released, run_durable

if TYPE_CHECKING:
    from durably_filesystem._store import FileStore

__all__ = [
    "Fence",
    "FlockOwnerLock",
    "LeaseRecord",
    "check_fence",
    "claim",
    "current_lease",
    "epoch_floor",
    "fenced_by",
    "get_lease",
    "lock_owner",
    "owner_lock_free",
    "raise_epoch_floor",
    "release",
    "renew",
    "write_lease",
]

STORE_LOCK = "lock"
EPOCH_FLOOR = "epoch-floor"
OWNER = "owner"


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The content of a lease file."""

    owner: str
    epoch: int
    expires_at: float
    released: bool

    def encode(self) -> bytes:
        return json.dumps(
            {
                "v": 1,
                "owner": self.owner,
                "epoch": self.epoch,
                "expires_at": self.expires_at,
                "released": self.released,
            },
            separators=(",", ":"),
        ).encode("utf-8")

    def live(self, now: float) -> bool:
        return not self.released and now < self.expires_at


@dataclass(slots=True)
class LeaseCache:
    fd: int
    """Kept open so that the inode cannot be reused while it is the cache key."""
    key: tuple[int, int, int]
    record: LeaseRecord
    locked: bool = False
    """The file was at the lease path while the execution's lock file, still open, was
    at its path: the lock was the execution's (see :meth:`Fence.proves_lock`). Closing
    the lock file closes this one too (:meth:`ExecState.drop_lock`)."""


def parse_lease(raw: bytes, path: str) -> LeaseRecord:
    try:
        data = json.loads(raw.decode("utf-8"))
        record = LeaseRecord(
            data["owner"], data["epoch"], float(data["expires_at"]), data["released"]
        )
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CorruptObjectError(f"lease file {path} is damaged: {exc}") from exc
    if (
        not isinstance(record.owner, str)
        or not isinstance(record.epoch, int)
        or not isinstance(record.released, bool)
    ):
        raise CorruptObjectError(f"lease file {path} is damaged: wrong field types")
    return record


class FlockOwnerLock(OwnerLock):
    """An exclusive ``flock`` on ``executions/E/owner``: the kernel drops it when the
    holding process dies, however it dies."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def epoch_floor(root: str) -> int:
    """The highest epoch any deleted execution had (0 if none was deleted).

    Epochs must never repeat for an execution id, even after ``delete_execution``
    removed its lease file (a zombie holder of a pre-deletion lease must stay
    fenced). One store-wide floor, raised when an execution with a lease is deleted,
    is where a new lease file starts counting from.
    """
    raw = read_file(os.path.join(root, EPOCH_FLOOR))
    if raw is None:
        return 0
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptObjectError(
            f"{os.path.join(root, EPOCH_FLOOR)} is damaged: {raw[:40]!r}"
        ) from exc


async def raise_epoch_floor(root: str, epoch: int, *, fsync: bool) -> None:
    """Raise the store-wide epoch floor to ``epoch`` (under the store's lock)."""
    fd = os.open(os.path.join(root, STORE_LOCK), os.O_RDWR | os.O_CREAT | O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            await wait_for_flock(fd)
        if epoch > epoch_floor(root):
            write_atomic(os.path.join(root, EPOCH_FLOOR), [str(epoch).encode()], fsync=fsync)
    finally:
        os.close(fd)


def _stat_key(info: os.stat_result) -> tuple[int, int, int]:
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def current_lease(state: ExecState, *, locked: bool = False) -> LeaseRecord | None:
    """The lease record, re-read only when the file changed (keyed by its stat).

    ``locked``: the caller holds the execution's lock, checked to be the one at the
    lock path (the cache then vouches for the lock, see :meth:`Fence.proves_lock`).
    """
    try:
        info = os.stat(state.lease_path)
    except FileNotFoundError:
        state.drop_lease()
        return None
    cached = state.lease
    if cached is not None and cached.key == _stat_key(info):
        cached.locked = cached.locked or locked
        return cached.record
    state.drop_lease()
    try:
        fd = os.open(state.lease_path, os.O_RDONLY | O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        info = os.fstat(fd)
        record = parse_lease(fmt.pread_exact(fd, info.st_size, 0), state.lease_path)
    except BaseException:
        os.close(fd)
        raise
    state.lease = LeaseCache(fd, _stat_key(info), record, locked)
    return record


async def write_lease(state: ExecState, record: LeaseRecord, *, flush_dir: bool = True) -> None:
    """Replace the lease file (its content flushed before it is moved into place, so a
    lease file is never torn; the directory flushed too, unless ``flush_dir`` is False)."""
    await run_durable(
        state,
        write_atomic,
        state.lease_path,
        [record.encode()],
        fsync=state.fsync,
        flush_dir=flush_dir,
    )
    state.drop_lease()


def check_fence(state: ExecState, lease: Lease | None, action: str) -> None:
    """Under the execution's lock: FencedError unless ``lease`` is the current lease."""
    if lease is None:
        return
    current = current_lease(state, locked=True)
    if current is None or not _holds(current, lease):
        raise fenced_by(lease, current, action)


def _holds(record: LeaseRecord, lease: Lease) -> bool:
    return record.epoch == lease.epoch and record.owner == lease.owner


class Fence:
    """A write's lease check, made under the execution's lock with one ``stat``.

    ``async with hold_lock(state, create=..., proof=fence.proves_lock)``, then
    :meth:`check` before touching the log: a fenced write changes nothing.

    Args:
        state: The execution.
        lease: The writer's lease (None: an unfenced write, nothing to check).
        action: What is fenced, for the FencedError (``"saving checkpoint 3"``).
    """

    __slots__ = ("_proven", "action", "lease", "state")

    def __init__(self, state: ExecState, lease: Lease | None, action: str) -> None:
        self.state = state
        self.lease = lease
        self.action = action
        self._proven = False

    def proves_lock(self) -> bool:
        """Once the ``flock`` is granted: whether the lease is current *and* the lock is
        the execution's, from one ``stat`` of the lease file (False: no conclusion).

        True when the lease file at the path is still the one cached while the lock
        file -- still open, so still this one -- was checked to be at the lock path
        (:attr:`LeaseCache.locked`), and that record is ``lease``. The cached file is
        held open, so its inode number cannot be reused; lease files are written whole
        under a new name and renamed into place in their own execution's directory,
        never changed in place nor linked elsewhere. So finding that inode at the lease
        path means the directory at the execution's path is still the one that holds
        our lock file (a deletion moves the whole directory away), and the lease is
        unchanged (a claim, renewal or release replaces the file: a new inode). The
        lock's own ``stat`` is then redundant.
        """
        cached = self.state.lease
        if self.lease is None or cached is None or not cached.locked:
            return False
        try:
            info = os.stat(self.state.lease_path)
        except FileNotFoundError:
            return False
        self._proven = cached.key == _stat_key(info) and _holds(cached.record, self.lease)
        return self._proven

    def check(self) -> None:
        """Under the lock: FencedError unless the lease is current (no-op once proven)."""
        if not self._proven:
            check_fence(self.state, self.lease, self.action)


def fenced_by(lease: Lease, current: LeaseRecord | None, action: str) -> FencedError:
    return fenced(lease, action, current_epoch=None if current is None else current.epoch)


# ------------------------------------------------------------ the lease operations


async def claim(
    store: FileStore, execution_id: str, owner: str, ttl: float, dead: Lease | None
) -> Lease:
    """Claim (C15); with ``dead``, also while ``dead`` is the current (live) lease (C29)."""
    async with store.using(execution_id) as state:
        with store.errors(f"claim execution {execution_id!r}", state.lease_path):
            async with hold_lock(state, create=True):
                current = current_lease(state, locked=True)
                now = time.time()
                replaced = (
                    dead is not None
                    and current is not None
                    and (current.owner, current.epoch) == (dead.owner, dead.epoch)
                )
                if (
                    current is not None
                    and current.owner != owner
                    and current.live(now)
                    and not replaced
                ):
                    raise lease_held(execution_id, current.owner, current.expires_at)
                last = current.epoch if current else epoch_floor(store.root)
                record = LeaseRecord(owner, last + 1, now + ttl, False)
                # With no log yet, nothing was written under any epoch: the first save
                # creates the log and flushes this directory (``_log.create_sync``),
                # which makes the lease's move durable before anything is written
                # under it. A crash of the machine before that loses a claim nothing
                # depends on, and the next claim -- another owner -- counts from the
                # same place. So only a claim over an existing log flushes here.
                await write_lease(state, record, flush_dir=os.path.exists(state.log_path))
    store.leased.add(execution_id)
    lease_claimed(store.root, execution_id)  # its writes may now share flushes
    return Lease(execution_id, owner, record.epoch, record.expires_at)


async def renew(store: FileStore, lease: Lease, ttl: float) -> Lease:
    """Extend the lease if it is still the current one, else FencedError (C16)."""
    async with store.using(lease.execution_id) as state:
        with store.errors(f"renew the lease on execution {lease.execution_id!r}", state.lease_path):
            if not os.path.exists(state.lease_path):
                raise fenced_by(lease, None, "renewing the lease")
            async with hold_lock(state, create=False) as locked:
                current = current_lease(state, locked=True) if locked else None
                if current is None or not _holds(current, lease):
                    raise fenced_by(lease, current, "renewing the lease")
                record = replace(current, expires_at=time.time() + ttl, released=False)
                await write_lease(state, record)
    return Lease(lease.execution_id, lease.owner, lease.epoch, record.expires_at)


async def release(store: FileStore, lease: Lease) -> None:
    """Mark the lease released if it is still the current one; else nothing (C23)."""
    store.leased.discard(lease.execution_id)
    lease_released(store.root, lease.execution_id)
    async with store.using(lease.execution_id) as state:
        with store.errors(
            f"release the lease on execution {lease.execution_id!r}", state.lease_path
        ):
            if not os.path.exists(state.lease_path):
                return
            async with hold_lock(state, create=False) as locked:
                current = current_lease(state, locked=True) if locked else None
                if current is None or not _holds(current, lease) or current.released:
                    return
                # The directory is not flushed: if a crash of the machine undoes the
                # release, the lease is back as it was, held by an owner that died with
                # the machine -- what resume recognises (another boot, a free owner lock)
                # and takes over at once (C29, C30), and the lease expires anyway.
                await write_lease(
                    state,
                    replace(
                        current, released=True, expires_at=min(current.expires_at, time.time())
                    ),
                    flush_dir=False,
                )


async def get_lease(store: FileStore, execution_id: str) -> Lease | None:
    """The lease record -- live, expired or released -- or None (C23)."""
    store.check_store()
    async with store.using(execution_id) as state:
        with store.errors(f"read the lease on execution {execution_id!r}", state.lease_path):
            current = current_lease(state)
    if current is None:
        return None
    return Lease(
        execution_id, current.owner, current.epoch, current.expires_at, released=current.released
    )


async def lock_owner(store: FileStore, execution_id: str) -> OwnerLock | None:
    """Take the owner lock (an exclusive ``flock`` of ``E/owner``) if it is free (C30)."""
    path = os.path.join(store.exec_dir(execution_id), OWNER)
    with store.errors(f"lock the owner of execution {execution_id!r}", path):
        for _ in range(100):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | O_CLOEXEC, 0o644)
                break
            except FileNotFoundError:
                store.prepare_root()
                await run_durable(store, makedirs_durable, os.path.dirname(path), fsync=store.fsync)
        else:
            raise StoreError(f"cannot create {path}: its directory keeps disappearing")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
    return FlockOwnerLock(fd)


async def owner_lock_free(store: FileStore, execution_id: str) -> bool:
    """Whether nobody holds the owner lock (probed with a shared ``flock``) (C30)."""
    path = os.path.join(store.exec_dir(execution_id), OWNER)
    with store.errors(f"probe the owner lock of execution {execution_id!r}", path):
        try:
            fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            os.close(fd)  # also drops the shared lock just taken
    return True
