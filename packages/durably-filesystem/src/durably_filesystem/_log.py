r"""The checkpoint log of one execution: locking, indexing, appending, compaction.

An execution's directory holds an append-only log of checksummed records (the format
is in :mod:`durably_filesystem._format`) and a ``lock`` file. Everything here works on
an :class:`ExecState` -- the execution's open files and in-memory index -- which the
provider hands out exclusively (one task of an instance at a time, see
``FilesystemProvider._using``); between processes, :func:`hold_lock` takes the ``flock``
that serialises writers.

* :func:`refresh` brings the index up to date with the file (one ``stat`` when nothing
  changed; other processes' appends are read incrementally; a new inode -- after a
  compaction or a deletion -- means a full re-index).
* :func:`writable_index` is the index under the lock, with a torn tail (an append
  whose writer crashed) truncated away; :func:`append_sync` appends whole records and
  ``fdatasync``\ s them before the index changes; :func:`create_sync` makes a new log
  with its first record in it.
* :func:`compact_sync` rewrites the log with its live records and renames it into
  place; :func:`maybe_compact` does so when dead records dominate.
* :func:`read_current` reads and verifies a record, re-indexing under the lock before
  it reports damage.

Blocking I/O: small reads run on the event loop; small durable writes (an append and
its ``fdatasync``, creating the log) inline or in the sync pool
(:func:`durably_filesystem._syncpool.run_durable`); payloads above
:data:`INLINE_LIMIT` and compactions run in threads (:func:`blocking`), and a contended
``flock`` is waited for in a dedicated thread (:func:`wait_for_flock`).
"""

# Small filesystem calls run on the event loop on purpose (see the module docstring).

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from durably.errors import CorruptObjectError, DurablyError, StoreError
from durably.storage import CheckpointInfo
from durably_filesystem import _format as fmt
from durably_filesystem._fsutil import (
    O_CLOEXEC,
    TMP_PREFIX,
    fdatasync,
    fsync_dir,
    makedirs_durable,
    publish,
    remove_quietly,
    tmp_path,
    wrap_os_error,
    write_all,
    write_tmp,
)
from durably_filesystem._syncpool import outlast_cancel

if TYPE_CHECKING:
    from durably_filesystem._leases import LeaseCache
    from durably_filesystem._packs import PackIndex

__all__ = [
    "INLINE_LIMIT",
    "ExecState",
    "HeldLock",
    "OpenLog",
    "append_sync",
    "blocking",
    "compact_sync",
    "create_sync",
    "first_record_complete",
    "hold_lock",
    "info",
    "maybe_compact",
    "read_current",
    "refresh",
    "wait_for_flock",
    "writable_index",
]

log = logging.getLogger("durably.filesystem")

P = ParamSpec("P")
R = TypeVar("R")

LOG = "log"
LOCK = "lock"
LEASE = "lease"
BLOBS = "blobs"
INLINE_LIMIT = 1 << 20
"""Reads and writes larger than this run in a worker thread, not on the event loop."""


async def blocking(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run ``fn`` in a worker thread; if the caller is cancelled, wait for it anyway.

    The thread cannot be stopped, and it works on state guarded by the caller's locks:
    returning early would release them while it still runs.
    """
    return await outlast_cancel(asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs)))


async def wait_for_flock(fd: int) -> None:
    """Take ``flock(fd, LOCK_EX)``, blocking in a dedicated thread, not the event loop.

    A dedicated thread (not the default executor) so that waiters can never starve
    the executor that lock holders need for big writes. The thread works on a
    duplicate of ``fd`` (same open file description, so the same lock). If the caller
    is cancelled, the lock -- once the kernel grants it -- is handed back at once.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    dup = os.dup(fd)

    def deliver(error: BaseException | None) -> None:
        if future.cancelled():
            if error is None:
                fcntl.flock(dup, fcntl.LOCK_UN)
            os.close(dup)
            return
        os.close(dup)
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def wait() -> None:
        error: BaseException | None = None
        try:
            fcntl.flock(dup, fcntl.LOCK_EX)
        except BaseException as exc:
            error = exc
        try:
            loop.call_soon_threadsafe(deliver, error)
        except RuntimeError:  # the loop is closed: nobody waits any more
            if error is None:
                fcntl.flock(dup, fcntl.LOCK_UN)
            os.close(dup)

    threading.Thread(target=wait, name="durably-flock-wait", daemon=True).start()
    try:
        await future
    except asyncio.CancelledError:
        # cancelled after the lock was granted but before this task resumed
        if future.done() and not future.cancelled() and future.exception() is None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        raise


@dataclass(slots=True)
class OpenLog:
    fd: int
    ino: int
    index: fmt.LogIndex
    writable: bool
    listed_end: int = -1
    """:attr:`fmt.LogIndex.valid_end` right after this instance appended a record that
    left the execution open, its open-index entry made sure of first (-1: none). While
    ``valid_end`` is still there, nobody appended since and the file was not replaced,
    so the entry is still present: only a write that changes the log removes one (see
    :mod:`durably_filesystem._open`)."""


class ExecState:
    """One execution's open files and index, guarded by ``mutex`` within this instance."""

    def __init__(
        self,
        execution_id: str,
        directory: str,
        *,
        fsync: bool,
        prepare_root: Callable[[], None],
        pending: set[asyncio.Future[Any]] | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.dir = directory
        self.fsync = fsync
        """Flush writes to stable storage (the store's ``fsync`` option)."""
        self.prepare_root = prepare_root
        """Create the store's root and marker (before the first file of an execution)."""
        self.pending: set[asyncio.Future[Any]] = set() if pending is None else pending
        """The store's durable writes in flight in the sync pool (:mod:`._syncpool`)."""
        self.log_path = os.path.join(directory, LOG)
        self.lock_path = os.path.join(directory, LOCK)
        self.lease_path = os.path.join(directory, LEASE)
        self.blobs_dir = os.path.join(directory, BLOBS)
        self.mutex = asyncio.Lock()
        self.users = 0
        self.lock_fd: int | None = None
        self.lock_ino = 0
        """The inode of ``lock_fd`` (an open descriptor's inode never changes)."""
        self.log: OpenLog | None = None
        self.lease: LeaseCache | None = None
        self.packs: PackIndex | None = None
        """The blobs of the execution's packs (see :mod:`~durably_filesystem._blobs`)."""

    def drop_log(self) -> None:
        if self.log is not None:
            fd, self.log = self.log.fd, None
            os.close(fd)

    def drop_lease(self) -> None:
        if self.lease is not None:
            fd, self.lease = self.lease.fd, None
            os.close(fd)

    def drop_lock(self) -> None:
        """Close the lock file, and the lease file whose identity vouched for it (see
        :attr:`durably_filesystem._leases.LeaseCache.locked`)."""
        self.drop_lease()
        if self.lock_fd is not None:
            fd, self.lock_fd = self.lock_fd, None
            os.close(fd)

    def reset(self) -> None:
        """Close every file and forget the indexes; the state reopens them lazily."""
        self.drop_log()
        self.drop_lock()
        self.packs = None


def open_lock(state: ExecState, create: bool) -> int | None:
    for _ in range(100):
        try:
            return os.open(state.lock_path, os.O_RDWR | os.O_CREAT | O_CLOEXEC, 0o644)
        except FileNotFoundError:
            if not create:
                return None
            state.prepare_root()
            makedirs_durable(state.dir, fsync=state.fsync)
    raise StoreError(f"cannot create {state.lock_path}: its directory keeps disappearing")


async def acquire(state: ExecState, create: bool, proof: Callable[[], bool] | None = None) -> bool:
    """Take the execution's cross-process lock (False: no such execution, not created).

    ``flock`` is tried without blocking first; if another process holds the lock,
    a short-lived thread waits for it in the kernel (see :func:`wait_for_flock`),
    so the event loop never blocks and the waiter wakes as soon as it is free.

    The lock is the execution's only while its file is still the one at ``lock`` (a
    deletion moves the directory away): one ``stat`` checks that, unless ``proof``
    (called once the ``flock`` is granted) returns True -- it shows the same from a
    file it has to look at anyway (see :meth:`durably_filesystem._leases.Fence.proves_lock`).
    """
    while True:
        if state.lock_fd is None:
            fd = open_lock(state, create)
            if fd is None:
                return False
            state.lock_fd, state.lock_ino = fd, os.fstat(fd).st_ino
        fd = state.lock_fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            await wait_for_flock(fd)
        try:
            if proof is not None and proof():
                return True
            try:
                current: int | None = os.stat(state.lock_path).st_ino
            except FileNotFoundError:
                current = None
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            raise
        if current == state.lock_ino:
            return True
        # the execution was deleted (its directory moved away) while we waited
        fcntl.flock(fd, fcntl.LOCK_UN)
        state.drop_lock()


class HeldLock:
    """The execution's ``flock`` around an ``async with`` block (see :func:`hold_lock`)."""

    __slots__ = ("_create", "_proof", "_state", "acquired")

    def __init__(self, state: ExecState, create: bool, proof: Callable[[], bool] | None) -> None:
        self._state = state
        self._create = create
        self._proof = proof
        self.acquired = False

    async def __aenter__(self) -> bool:
        self.acquired = await acquire(self._state, self._create, self._proof)
        return self.acquired

    async def __aexit__(self, *exc_info: object) -> None:
        if self.acquired and self._state.lock_fd is not None:
            fcntl.flock(self._state.lock_fd, fcntl.LOCK_UN)


def hold_lock(
    state: ExecState, *, create: bool, proof: Callable[[], bool] | None = None
) -> HeldLock:
    """``async with hold_lock(state, create=...) as locked``: the lock for the block.

    ``locked`` is False when the execution has no directory and ``create`` is False.
    ``proof``: see :func:`acquire`.
    """
    return HeldLock(state, create, proof)


def reopen(state: ExecState) -> fmt.LogIndex | None:
    """Open the log at its path and index it from scratch."""
    state.drop_log()
    writable = True
    try:
        fd = os.open(state.log_path, os.O_RDWR | os.O_APPEND | O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        fd = os.open(state.log_path, os.O_RDONLY | O_CLOEXEC)
        writable = False
    try:
        info = os.fstat(fd)
        fmt.read_log_header(fd, state.log_path)
        index = fmt.LogIndex()
        fmt.scan(fd, index, fmt.LOG_HEADER_SIZE, info.st_size)
    except BaseException:
        os.close(fd)
        raise
    state.log = OpenLog(fd, info.st_ino, index, writable)
    return index


def refresh_sync(state: ExecState) -> fmt.LogIndex | None:
    try:
        info = os.stat(state.log_path)
    except FileNotFoundError:
        state.drop_log()
        return None
    current = state.log
    if current is not None and info.st_ino == current.ino:
        index = current.index
        if info.st_size == index.scanned_size and index.tail is None:
            return index
        if info.st_size >= index.valid_end:
            fmt.scan(current.fd, index, index.valid_end, info.st_size)
            return index
    return reopen(state)


async def refresh(state: ExecState) -> fmt.LogIndex | None:
    """Bring the index up to date with the file (other processes may have written).

    One ``stat`` when nothing changed; new records are read incrementally; a new
    inode (compaction, deletion) means a full re-index. The log's descriptor stays
    open, so its inode number cannot be reused while it identifies the index.
    """
    try:
        info = os.stat(state.log_path)
    except FileNotFoundError:
        state.drop_log()
        return None
    current = state.log
    if current is not None and info.st_ino == current.ino:
        if info.st_size == current.index.scanned_size and current.index.tail is None:
            return current.index
        todo = info.st_size - current.index.valid_end
    else:
        todo = info.st_size
    if todo > INLINE_LIMIT:
        return await blocking(refresh_sync, state)
    return refresh_sync(state)


async def rescan(state: ExecState) -> fmt.LogIndex | None:
    try:
        size = os.stat(state.log_path).st_size
    except FileNotFoundError:
        state.drop_log()
        return None
    if size > INLINE_LIMIT:
        return await blocking(reopen, state)
    return reopen(state)


async def writable_index(state: ExecState) -> fmt.LogIndex | None:
    """Under the lock: the up-to-date index, with any torn tail truncated away (None: no
    log yet; the first save makes it, see :func:`create_sync`)."""
    index = await refresh(state)
    if index is None:
        return None
    current = state.log
    assert current is not None
    if not current.writable:
        raise wrap_os_error(OSError(errno.EACCES, "the log is read-only"), "write", state.log_path)
    tail = index.tail
    if tail is not None:
        log.warning(
            "%s: discarding %d bytes at offset %d, an append that never "
            "completed (checkpoint %s; its writer crashed)",
            state.log_path,
            index.scanned_size - tail.offset,
            tail.offset,
            "unknown" if tail.seq is None else tail.seq,
        )
        os.ftruncate(current.fd, index.valid_end)
        index.scanned_size = index.valid_end
        index.tail = None
    return index


def append_sync(
    state: ExecState,
    parts: list[bytes | memoryview],
    apply: Callable[[fmt.LogIndex, int], None],
) -> None:
    """Append one or more whole records, make them durable, then update the index."""
    current = state.log
    assert current is not None
    index = current.index
    offset = index.valid_end
    try:
        write_all(current.fd, parts)
        if state.fsync:
            fdatasync(current.fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(current.fd, offset)
        state.drop_log()
        raise
    index.valid_end = index.scanned_size = offset + sum(map(len, parts))
    apply(index, offset)


def create_sync(
    state: ExecState,
    parts: list[bytes | memoryview],
    apply: Callable[[fmt.LogIndex, int], None],
) -> None:
    """Under the lock, with no log yet: create the log holding its header and ``parts``
    (whole records), then index them.

    The first record rides in the new file (written, flushed, linked into place, the
    directory flushed) instead of being appended to an empty log and flushed again:
    two flushes where three were, and a log at its path still always has its header.
    The directory's flush also makes durable any earlier entry of the directory that
    was not flushed on its own (a claim's lease file, see ``_leases.claim``). If
    anything fails, the log is removed again: as with :func:`append_sync`, a save that
    raised wrote nothing.
    """
    state.drop_log()
    tmp = write_tmp(state.log_path, [fmt.LOG_HEADER, *parts], fsync=state.fsync)
    if not publish(tmp, state.log_path, exclusive=True):
        raise StoreError(f"{state.log_path} appeared while its execution's lock was held")
    index = fmt.LogIndex()
    index.valid_end = index.scanned_size = fmt.LOG_HEADER_SIZE + sum(map(len, parts))
    fd = -1
    try:
        if state.fsync:
            fsync_dir(state.dir)
        fd = os.open(state.log_path, os.O_RDWR | os.O_APPEND | O_CLOEXEC)
        info = os.fstat(fd)
        if info.st_size != index.valid_end:
            raise StoreError(f"{state.log_path} changed while its execution's lock was held")
    except BaseException:
        if fd >= 0:
            os.close(fd)
        remove_quietly(state.log_path)
        raise
    state.log = OpenLog(fd, info.st_ino, index, True)
    apply(index, fmt.LOG_HEADER_SIZE)


def compact_sync(state: ExecState, drop: frozenset[int] = frozenset()) -> None:
    """Rewrite the log with only its live records (minus ``drop``), then swap it in.

    Under the execution's lock: write a new file, fsync it, rename it over the log,
    fsync the directory. Other processes notice the new inode and re-index; their
    descriptors of the old file stay readable until they do.
    """
    current = state.log
    assert current is not None
    index = current.index
    keep = sorted((e for e in index.entries.values() if e.seq not in drop), key=lambda e: e.offset)
    if index.corrupt_regions:
        log.error(
            "%s: compaction discards %d unreadable byte range(s) at %s",
            state.log_path,
            len(index.corrupt_regions),
            index.corrupt_regions,
        )
    tmp = tmp_path(state.dir, LOG)
    fd = os.open(tmp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | O_CLOEXEC, 0o644)
    try:
        new = fmt.LogIndex()
        write_all(fd, [fmt.LOG_HEADER])
        position = fmt.LOG_HEADER_SIZE
        for entry in keep:
            # damaged records are copied as they are: still reported, never "repaired"
            ok = copy_record(current.fd, entry, fd)
            new.put(entry.moved(position, corrupt=not ok))
            position += entry.length
        new.valid_end = new.scanned_size = position
        if state.fsync:
            os.fsync(fd)
        os.rename(tmp, state.log_path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    state.log = OpenLog(fd, os.fstat(fd).st_ino, new, True)
    os.close(current.fd)
    if state.fsync:
        fsync_dir(state.dir)
    # temporary files in the execution's directory are only made under its lock,
    # which we hold: any left are from a crashed writer
    for name in os.listdir(state.dir):
        if name.startswith(TMP_PREFIX):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(state.dir, name))


def needs_compaction(index: fmt.LogIndex, threshold: int) -> bool:
    dead = index.dead_bytes
    return dead > 0 and dead >= threshold and dead >= index.live_bytes


async def maybe_compact(state: ExecState, threshold: int) -> None:
    """Compact if due. The write that made it due has succeeded already: a failed
    compaction is logged, not raised (the old log stays in place, intact)."""
    if state.log is None or not needs_compaction(state.log.index, threshold):
        return
    try:
        await blocking(compact_sync, state)
    except (OSError, DurablyError) as exc:
        log.warning("%s: compaction failed, the log stays as it is: %s", state.log_path, exc)


def info(execution_id: str, entry: fmt.Entry) -> CheckpointInfo:
    return CheckpointInfo(
        execution_id,
        entry.seq,
        entry.version,
        entry.data_len,
        entry.created_ns / 1e9,
        dict(entry.metadata),
    )


async def pread(state: ExecState, entry: fmt.Entry) -> bytes:
    assert state.log is not None
    if entry.length > INLINE_LIMIT:
        return await blocking(fmt.pread_exact, state.log.fd, entry.length, entry.offset)
    return fmt.pread_exact(state.log.fd, entry.length, entry.offset)


async def read_current(
    state: ExecState,
    seq: int | None,
) -> tuple[CheckpointInfo, bytes] | None:
    """Read and verify checkpoint ``seq`` (None: the latest) under the mutex.

    Before reporting damage, the log is indexed afresh under the execution's lock:
    the index may be stale (the file was rewritten under it), and no append can be
    in progress then.
    """
    index = await refresh(state)
    confirmed = False
    while True:
        if index is None:
            return None
        if seq is None:
            entry = index.entries[index.seqs[-1]] if index.seqs else None
        else:
            entry = index.entries.get(seq)
        if entry is None:
            if seq is None or not index.corrupt_regions:
                return None
            if confirmed:
                raise CorruptObjectError(
                    f"checkpoint {seq} of execution {state.execution_id!r} was not "
                    f"found, and {state.log_path} has unreadable byte ranges "
                    f"{index.corrupt_regions} that may have held it"
                )
        else:
            if not entry.corrupt:
                raw = await pread(state, entry)
                if fmt.check_record(raw, entry):
                    entry.verified = True
                    start = fmt.HEAD_SIZE + entry.meta_len
                    return (info(state.execution_id, entry), raw[start : start + entry.data_len])
                if confirmed:
                    entry.corrupt = True
            if confirmed:
                raise CorruptObjectError(
                    f"checkpoint {entry.seq} of execution {state.execution_id!r} is "
                    f"damaged: its record at offset {entry.offset} of {state.log_path} "
                    "fails its checksum"
                )
        try:
            async with hold_lock(state, create=False):
                index = await rescan(state)
        except OSError as exc:  # a read-only store: look again without the lock
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            index = await rescan(state)
        confirmed = True


def first_record_complete(path: str, size: int) -> bool:
    if size <= fmt.LOG_HEADER_SIZE:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        raw = os.pread(fd, fmt.HEAD_SIZE, fmt.LOG_HEADER_SIZE)
    finally:
        os.close(fd)
    if len(raw) < fmt.HEAD_SIZE:
        return False  # the beginning of a first append that never completed
    head = fmt.decode_head(raw)
    # a damaged first header still means there is something to look at: list it
    return head is None or fmt.LOG_HEADER_SIZE + head.length <= size


def copy_record(src: int, entry: fmt.Entry, dst: int) -> bool:
    """Append a record verbatim from ``src`` to ``dst``; return whether it verified."""
    digest = hashlib.blake2b(digest_size=fmt.SUM_SIZE)
    position = entry.offset
    body_end = entry.offset + entry.length - fmt.SUM_SIZE
    while position < body_end:
        chunk = os.pread(src, min(8 << 20, body_end - position), position)
        if not chunk:
            raise CorruptObjectError(f"the log ended inside the record of checkpoint {entry.seq}")
        digest.update(chunk)
        write_all(dst, [chunk])
        position += len(chunk)
    stored_sum = os.pread(src, fmt.SUM_SIZE, body_end)
    if len(stored_sum) != fmt.SUM_SIZE:
        raise CorruptObjectError(f"the log ended inside the record of checkpoint {entry.seq}")
    write_all(dst, [stored_sum])
    return stored_sum == digest.digest()
