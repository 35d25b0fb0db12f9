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

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from dataclasses import dataclass

from durably.errors import CorruptObjectError, FencedError, fenced
from durably.storage import Lease, OwnerLock
from durably_filesystem import _format as fmt
from durably_filesystem._fsutil import O_CLOEXEC, read_file, write_atomic
from durably_filesystem._log import ExecState, wait_for_flock

__all__ = [
    "FlockOwnerLock",
    "LeaseRecord",
    "check_fence",
    "current_lease",
    "epoch_floor",
    "fenced_by",
    "raise_epoch_floor",
    "write_lease",
]

STORE_LOCK = "lock"
EPOCH_FLOOR = "epoch-floor"


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


def current_lease(state: ExecState) -> LeaseRecord | None:
    """The lease record, re-read only when the file changed (keyed by its stat)."""
    try:
        info = os.stat(state.lease_path)
    except FileNotFoundError:
        state.drop_lease()
        return None
    cached = state.lease
    if cached is not None and cached.key == (info.st_ino, info.st_mtime_ns, info.st_size):
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
    state.lease = LeaseCache(fd, (info.st_ino, info.st_mtime_ns, info.st_size), record)
    return record


def write_lease(state: ExecState, record: LeaseRecord) -> None:
    write_atomic(state.lease_path, [record.encode()], fsync=state.fsync)
    state.drop_lease()


def check_fence(state: ExecState, lease: Lease | None, action: str) -> None:
    if lease is None:
        return
    current = current_lease(state)
    if current is None or current.epoch != lease.epoch or current.owner != lease.owner:
        raise fenced_by(lease, current, action)


def fenced_by(lease: Lease, current: LeaseRecord | None, action: str) -> FencedError:
    return fenced(lease, action, current_epoch=None if current is None else current.epoch)
