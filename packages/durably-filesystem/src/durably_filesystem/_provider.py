"""The filesystem provider: an append-only, checksummed log per execution.

See ``docs/providers/filesystem.md`` for the layout, the record format and the
guarantees. In short, for one execution ``E`` under the store's root::

    root/durably-store.json            marker: the layout version
    root/executions/E/log              the checkpoint log (append-only, checksummed)
    root/executions/E/lock             flock(2) target serialising writers of E
    root/executions/E/lease            the current lease (JSON, replaced atomically)
    root/executions/E/owner            flock(2) held by the running owner (owner lock)
    root/executions/E/blobs/ab/<hex>   one file per blob (envelope bytes)
    root/.trash/                       executions being deleted
    root/lock, root/epoch-floor        the lease-epoch floor and its lock
    root/open/E                        E is open: the index of OPEN_INDEX (see _open.py)

A save is: take E's lock, catch up with what other processes appended (a ``stat``),
check the write mode and the lease, append the record with one ``write``,
``fdatasync``, unlock. The store-wide ``root/lock`` and ``root/epoch-floor`` keep lease
epochs growing across ``delete_execution``.

Blocking I/O: small operations (a ``stat``, an append of a few kilobytes and its
``fdatasync``, reading a record) run directly on the event loop -- a thread hop would
cost about as much as the write. Payloads above :data:`INLINE_LIMIT`, large re-indexing
and every compaction run in ``asyncio.to_thread``; a contended ``flock`` is waited for
in a dedicated thread.
"""

# Small filesystem calls (stat, exists, a short read or append) run on the event loop
# on purpose; big payloads and compactions go to threads (see the module docstring).
# ruff: noqa: ASYNC240

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import time
import warnings
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any, ClassVar, ParamSpec, Self, TypeVar

from durably.config import parse_size
from durably.errors import (
    ConfigError,
    CorruptObjectError,
    DurablyWarning,
    InvalidExecutionIdError,
    LeaseHeldError,
    StoreError,
    UnsupportedFormatError,
    already_exists,
    precondition_failed,
)
from durably.options import bool_option, option_items
from durably.storage import (
    BlobInfo,
    Capability,
    CheckpointInfo,
    CheckpointProvider,
    ExecutionInfo,
    ExpectedVersion,
    Lease,
    OwnerLock,
    Page,
    WriteMode,
    decode_int_cursor,
    encode_int_cursor,
    validate_execution_id,
)
from durably_filesystem import _format as fmt
from durably_filesystem._fsutil import (
    O_CLOEXEC,
    TMP_PREFIX,
    fsync_dir,
    makedirs_durable,
    read_file,
    wrap_os_error,
    write_atomic,
)
from durably_filesystem._leases import (
    FlockOwnerLock,
    LeaseRecord,
    check_fence,
    current_lease,
    epoch_floor,
    fenced_by,
    raise_epoch_floor,
    write_lease,
)
from durably_filesystem._log import (
    INLINE_LIMIT,
    ExecState,
    append_sync,
    blocking,
    compact_sync,
    first_record_complete,
    hold_lock,
    info,
    maybe_compact,
    read_current,
    refresh,
    writable_index,
)
from durably_filesystem._open import (
    OPEN,
    OpenIndex,
    is_open,
    open_after_delete,
    open_after_save,
)

__all__ = ["FilesystemProvider"]

log = logging.getLogger("durably.filesystem")

P = ParamSpec("P")
R = TypeVar("R")

MARKER = "durably-store.json"
LAYOUT = "durably-filesystem"
LAYOUT_VERSION = 1
EXECUTIONS = "executions"
TRASH = ".trash"
STORE_LOCK = "lock"
EPOCH_FLOOR = "epoch-floor"
LOG = "log"
LOCK = "lock"
LEASE = "lease"
OWNER = "owner"
BLOBS = "blobs"

DEFAULT_COMPACT_THRESHOLD = 1 << 20
"""Compact a log once it holds at least this many bytes of dead records (and at least
as many dead bytes as live ones)."""
MAX_OPEN_EXECUTIONS = 128
"""Executions whose open files and index a provider instance keeps (LRU)."""
OPTIONS = ("compact_threshold", "fsync")

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX2 = re.compile(r"[0-9a-f]{2}")


class FilesystemProvider(CheckpointProvider):
    """Stores executions in a local directory: the zero-config default store.

    Each execution has an append-only log of checksummed records. A save appends one
    record and ``fdatasync``\\ s it -- about the cost of the ``fdatasync`` itself -- under
    a short ``flock`` that makes conditional writes and leases hold between processes.
    Deletes append tombstones; the log is compacted (rewritten, then atomically renamed)
    when dead records dominate.

    Args:
        root: The store's directory; created on the first write. Relative paths are
            resolved against the current directory when the provider is created.
        fsync: Flush every write to stable storage before returning (``fdatasync`` of
            the log; ``fsync`` of new files and their directory). With False, a write
            survives a crash of the process but not of the machine.
        compact_threshold: Compact a log once it holds at least this many bytes of
            deleted or overwritten records, and at least as many as live ones.

    Raises:
        ValueError: ``root`` is empty or contains NUL; ``compact_threshold`` < 0.
    """

    scheme: ClassVar[str] = "file"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.PERSISTENT,
            Capability.SHARED,
            Capability.LARGE_OBJECTS,
            Capability.TAKEOVER,
            Capability.OWNER_LOCK,
            Capability.OPEN_INDEX,
        }
    )

    def __init__(
        self,
        root: str | os.PathLike[str] = ".durably",
        *,
        fsync: bool = True,
        compact_threshold: int = DEFAULT_COMPACT_THRESHOLD,
    ) -> None:
        super().__init__()
        path = os.fspath(root)
        if not isinstance(path, str) or not path or "\x00" in path:
            raise ValueError(f"invalid store directory {root!r}")
        if not isinstance(fsync, bool):
            raise TypeError(f"fsync must be a bool, not {type(fsync).__name__}")
        if (
            not isinstance(compact_threshold, int)
            or isinstance(compact_threshold, bool)
            or compact_threshold < 0
        ):
            raise ValueError(
                f"compact_threshold must be a size in bytes, not {compact_threshold!r}"
            )
        self._root = os.path.abspath(path)
        self._executions = os.path.join(self._root, EXECUTIONS)
        self._trash = os.path.join(self._root, TRASH)
        self._open_index = OpenIndex(self._root, fsync=fsync)
        self._fsync = fsync
        self._compact_threshold = compact_threshold
        self._states: OrderedDict[str, ExecState] = OrderedDict()
        self._root_ready = False
        self._marker_checked = False
        self._closed = False
        if not fsync:
            warnings.warn(
                f"the file store {self._root} has fsync disabled: a checkpoint survives a "
                "crash of the process, but not of the machine",
                DurablyWarning,
                stacklevel=2,
            )

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> Self:
        """Create a provider from ``file://PATH`` and the ``[durability.file]`` options.

        Everything after ``file://`` is the path, verbatim (no percent-decoding):
        ``file://.durably`` and ``file://runs/store`` are relative to the current
        directory, ``file:///var/lib/app`` is absolute and ``file://~/store`` is in the
        home directory. Options: ``fsync`` (bool) and ``compact_threshold`` (bytes, or a
        size such as ``"4MiB"``). No I/O happens here.

        Raises:
            ConfigError: Not a ``file://`` URL, no path, a query or fragment, or an
                unknown or invalid option (the message names the key).
        """
        if not isinstance(url, str) or url[:7].lower() != "file://":
            raise ConfigError(
                f"{url!r} is not a file:// URL",
                key="durability.store",
                fix="Use e.g. file://.durably or file:///var/lib/durably",
            )
        path = url[7:]
        if not path:
            raise ConfigError(
                f"the store URL {url!r} names no directory",
                key="durability.store",
                fix="Use e.g. file://.durably or file:///var/lib/durably",
            )
        if "\x00" in path:
            raise ConfigError("the store path contains a NUL character", key="durability.store")
        if "?" in path or "#" in path:
            raise ConfigError(
                f"the store URL {url!r} has a query or fragment",
                key="durability.store",
                fix="Put options in the [durability.file] table (fsync, compact_threshold)",
            )
        if path.startswith("~"):
            path = os.path.expanduser(path)
        kwargs: dict[str, Any] = {}
        for key, dotted, value in option_items(options, "durability.file", OPTIONS):
            if key == "fsync":
                kwargs["fsync"] = bool_option(dotted, value)
            else:
                if isinstance(value, bool) or not isinstance(value, (int, str)):
                    raise ConfigError(
                        f"expected a size, got {value!r}",
                        key=dotted,
                        fix="Use a number of bytes or e.g. '4MiB'",
                    )
                kwargs["compact_threshold"] = parse_size(value, key=dotted)
        return cls(path, **kwargs)

    @property
    def root(self) -> str:
        """The store's directory (absolute)."""
        return self._root

    @property
    def fsync(self) -> bool:
        """Whether writes are flushed to stable storage before they return."""
        return self._fsync

    @property
    def compact_threshold(self) -> int:
        """Dead bytes a log may hold before it is compacted."""
        return self._compact_threshold

    def describe(self) -> str:
        """``file://`` and the store's absolute path."""
        return f"file://{self._root}"

    async def _close(self) -> None:
        self._closed = True
        states = list(self._states.values())
        self._states.clear()
        for state in states:
            state.reset()

    # --------------------------------------------------------------- the layout

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.describe()} is closed")

    def _exec_dir(self, execution_id: str) -> str:
        validate_execution_id(execution_id)
        path = os.path.normpath(os.path.join(self._executions, execution_id))
        if os.path.dirname(path) != self._executions:
            raise InvalidExecutionIdError(f"execution id {execution_id!r} escapes the store")
        return path

    def _state(self, execution_id: str) -> ExecState:
        self._check_open()
        state = self._states.get(execution_id)
        if state is not None:
            self._states.move_to_end(execution_id)
            return state
        directory = self._exec_dir(execution_id)
        real_parent = os.path.realpath(self._executions)
        if os.path.dirname(os.path.realpath(directory)) != real_parent:
            raise StoreError(
                f"{directory} resolves outside the store's {real_parent}; refusing to use it"
            )
        state = self._states[execution_id] = ExecState(
            execution_id, directory, fsync=self._fsync, prepare_root=self._prepare_root
        )
        if len(self._states) > MAX_OPEN_EXECUTIONS:
            for key, old in list(self._states.items()):
                if len(self._states) <= MAX_OPEN_EXECUTIONS:
                    break
                if old.users == 0 and old is not state:
                    del self._states[key]
                    old.reset()
        return state

    @contextlib.asynccontextmanager
    async def _using(self, execution_id: str) -> AsyncIterator[ExecState]:
        """The execution's state, exclusively (other tasks of this instance wait)."""
        state = self._state(execution_id)
        state.users += 1
        try:
            async with state.mutex:
                self._check_open()
                yield state
        finally:
            state.users -= 1

    @contextlib.contextmanager
    def _errors(self, action: str, path: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise wrap_os_error(exc, action, path) from exc

    def _check_marker(self, raw: bytes, path: str) -> None:
        try:
            data = json.loads(raw.decode("utf-8"))
            layout, version = data["layout"], data["version"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise CorruptObjectError(f"the store marker {path} is damaged: {exc}") from exc
        if layout != LAYOUT:
            raise ConfigError(
                f"{self._root} holds a {layout!r} store, not a {LAYOUT!r} one",
                key="durability.store",
            )
        if not isinstance(version, int) or version > LAYOUT_VERSION:
            raise UnsupportedFormatError(
                f"the store {self._root} has layout version {version}; this "
                f"durably-filesystem knows version {LAYOUT_VERSION}. Upgrade it."
            )
        self._marker_checked = True

    def _check_store(self) -> None:
        """Before reading: refuse a store of a newer layout (an absent store is empty)."""
        if self._marker_checked:
            return
        path = os.path.join(self._root, MARKER)
        with self._errors("read the store marker", path):
            raw = read_file(path)
        if raw is not None:
            self._check_marker(raw, path)

    def _prepare_root(self) -> None:
        """Before writing: create the root and its marker, or check they are ours."""
        if self._root_ready:
            return
        makedirs_durable(self._root, fsync=self._fsync)
        path = os.path.join(self._root, MARKER)
        raw = read_file(path)
        if raw is None:
            foreign = sorted(
                name
                for name in os.listdir(self._root)
                if name not in (MARKER, EXECUTIONS, TRASH, STORE_LOCK, EPOCH_FLOOR, OPEN)
                and not name.startswith(TMP_PREFIX)
            )
            if foreign:
                raise ConfigError(
                    f"{self._root} is not empty and is not a durably store (it has no "
                    f"{MARKER}; it has {', '.join(foreign[:3])}"
                    f"{', ...' if len(foreign) > 3 else ''})",
                    key="durability.store",
                    fix="Point the store at a new or empty directory, e.g. file://.durably",
                )
            marker = json.dumps({"layout": LAYOUT, "version": LAYOUT_VERSION}).encode()
            # exclusive: another process may be initialising the store right now
            if write_atomic(path, [marker], fsync=self._fsync, exclusive=True):
                self._open_index.mark_ready()  # a new store: its index is complete
            raw = read_file(path) or b""
        self._check_marker(raw, path)
        makedirs_durable(self._executions, fsync=self._fsync)
        makedirs_durable(self._trash, fsync=self._fsync)
        self._empty_trash()
        self._root_ready = True

    def _empty_trash(self) -> None:
        """Finish deletions that a crash interrupted."""
        try:
            names = os.listdir(self._trash)
        except FileNotFoundError:
            return
        for name in names:
            shutil.rmtree(os.path.join(self._trash, name), ignore_errors=True)

    # --------------------------------------------------------------- checkpoints

    async def _save(
        self,
        execution_id: str,
        seq: int,
        stored: bytes,
        metadata: dict[str, str],
        mode: WriteMode,
        lease: Lease | None,
    ) -> CheckpointInfo:
        meta = fmt.encode_meta(metadata)
        write_id = int.from_bytes(os.urandom(8), "little")
        created_ns = time.time_ns()
        parts = fmt.encode_record(fmt.T_CHECKPOINT, seq, write_id, created_ns, meta, stored)
        length = sum(len(part) for part in parts)
        entry = fmt.Entry(
            seq,
            0,
            length,
            write_id,
            created_ns,
            len(meta),
            len(stored),
            dict(metadata),
            verified=True,
        )

        def apply(index: fmt.LogIndex, offset: int) -> None:
            entry.offset = offset
            index.put(entry)

        async with self._using(execution_id) as state:
            with self._errors(
                f"save checkpoint {seq} of execution {execution_id!r}", state.log_path
            ):
                action = f"saving checkpoint {seq}"
                if lease is not None and not os.path.exists(state.lease_path):
                    raise fenced_by(lease, None, action)
                async with hold_lock(state, create=True):
                    index = await writable_index(state, create=True)
                    assert index is not None
                    check_fence(state, lease, action)
                    current = index.entries.get(seq)
                    if mode == "create":
                        if current is not None:
                            raise already_exists(execution_id, seq, version=current.version)
                    elif isinstance(mode, ExpectedVersion) and (
                        current is None or current.version != mode.version
                    ):
                        raise precondition_failed(
                            execution_id,
                            seq,
                            mode.version,
                            actual=None if current is None else current.version,
                            missing=current is None,
                        )
                    opens = open_after_save(index, seq, metadata)
                    if opens:
                        self._open_index.add(execution_id)  # before: a crash keeps the entry
                    if length > INLINE_LIMIT:
                        await blocking(append_sync, state, parts, apply)
                    else:
                        append_sync(state, parts, apply)
                    if opens is False:
                        self._open_index.remove(execution_id)
                    if current is not None:
                        await maybe_compact(state, self._compact_threshold)
        return info(execution_id, entry)

    async def _load(self, execution_id: str, seq: int) -> tuple[CheckpointInfo, bytes] | None:
        self._check_store()
        async with self._using(execution_id) as state:
            with self._errors(
                f"read checkpoint {seq} of execution {execution_id!r}", state.log_path
            ):
                return await read_current(state, seq)

    async def _load_latest(self, execution_id: str) -> tuple[CheckpointInfo, bytes] | None:
        self._check_store()
        async with self._using(execution_id) as state:
            with self._errors(
                f"read the latest checkpoint of execution {execution_id!r}", state.log_path
            ):
                return await read_current(state, None)

    async def _list(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
        after: int | None,
    ) -> Page[CheckpointInfo]:
        self._check_store()
        start = -1 if after is None else after
        resume = decode_int_cursor(cursor)
        if resume is not None:
            start = max(start, resume)
        async with self._using(execution_id) as state:
            with self._errors(
                f"list the checkpoints of execution {execution_id!r}", state.log_path
            ):
                index = await refresh(state)
            if index is None:
                return Page(())
            first = bisect_right(index.seqs, start)
            seqs = index.seqs[first : first + limit]
            items = tuple(info(execution_id, index.entries[s]) for s in seqs)
            more = first + limit < len(index.seqs)
            return Page(items, encode_int_cursor(seqs[-1]) if more and seqs else None)

    async def _delete(self, execution_id: str, seq: int, lease: Lease | None) -> bool:
        return bool(await self._delete_seqs(execution_id, [seq], lease))

    async def _delete_many(
        self,
        execution_id: str,
        seqs: Iterable[int],
        lease: Lease | None,
    ) -> list[int]:
        return await self._delete_seqs(execution_id, list(seqs), lease)

    async def _delete_seqs(
        self,
        execution_id: str,
        seqs: list[int],
        lease: Lease | None,
    ) -> list[int]:
        async with self._using(execution_id) as state:
            with self._errors(f"delete checkpoints of execution {execution_id!r}", state.log_path):
                action = "deleting checkpoints"
                if lease is not None and not os.path.exists(state.lease_path):
                    raise fenced_by(lease, None, action)
                if not os.path.isdir(state.dir):
                    return []
                async with hold_lock(state, create=False) as locked:
                    if not locked:
                        if lease is not None:
                            raise fenced_by(lease, None, action)
                        return []
                    index = await writable_index(state, create=False)
                    check_fence(state, lease, action)
                    if index is None:
                        return []
                    doomed = sorted({seq for seq in seqs if seq in index.entries})
                    if not doomed:
                        return []
                    opens = open_after_delete(index, doomed)
                    if opens:
                        self._open_index.add(execution_id)  # before: a crash keeps the entry
                    if len(doomed) == len(index.entries):
                        # nothing left: an empty log says so at once (and costs no space)
                        await blocking(compact_sync, state, frozenset(doomed))
                        self._open_index.remove(execution_id)
                        return doomed
                    created_ns = time.time_ns()
                    parts: list[bytes | memoryview] = []
                    for seq in doomed:
                        parts.extend(
                            fmt.encode_record(fmt.T_TOMBSTONE, seq, 0, created_ns, b"", b"")
                        )

                    def apply(index: fmt.LogIndex, offset: int) -> None:
                        for seq in doomed:
                            index.remove(seq, fmt.OVERHEAD)

                    append_sync(state, [b"".join(parts)], apply)
                    if opens is False:
                        self._open_index.remove(execution_id)
                    await maybe_compact(state, self._compact_threshold)
                    return doomed

    async def compact(self, execution_id: str) -> bool:
        """Rewrite an execution's log without its deleted and overwritten records now.

        Compaction also happens on its own (see ``compact_threshold``); call this for
        maintenance. Returns whether the log was rewritten (False: nothing to reclaim).
        """
        validate_execution_id(execution_id)
        async with self._using(execution_id) as state:
            with self._errors(f"compact execution {execution_id!r}", state.log_path):
                if not os.path.isdir(state.dir):
                    return False
                async with hold_lock(state, create=False) as locked:
                    if not locked:
                        return False
                    index = await writable_index(state, create=False)
                    if index is None or (index.dead_bytes == 0 and not index.corrupt_regions):
                        return False
                    await blocking(compact_sync, state)
                    return True

    # ---------------------------------------------------------------- executions

    def _execution_info(self, execution_id: str) -> ExecutionInfo | None:
        """The execution as listed, or None if it has no checkpoint, blob or lease.

        Cheap, from the files: a log "has checkpoints" when its first record is complete
        (deleting the last checkpoint leaves an empty log; an append torn by a crash
        does not count).
        """
        directory = os.path.join(self._executions, execution_id)
        exists = False
        updated: float | None = None
        for name in (LOG, LEASE):
            path = os.path.join(directory, name)
            try:
                info = os.stat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if name == LOG and not first_record_complete(path, info.st_size):
                continue
            exists = True
            updated = info.st_mtime if updated is None else max(updated, info.st_mtime)
        if not exists and self._has_any_blob(os.path.join(directory, BLOBS)):
            exists = True
        return ExecutionInfo(execution_id, updated) if exists else None

    @staticmethod
    def _has_any_blob(blobs_dir: str) -> bool:
        try:
            subdirs = os.listdir(blobs_dir)
        except (FileNotFoundError, NotADirectoryError):
            return False
        for sub in subdirs:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                if any(_HEX64.fullmatch(name) for name in os.listdir(os.path.join(blobs_dir, sub))):
                    return True
        return False

    async def _list_executions(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        self._check_open()
        self._check_store()
        with self._errors("list executions", self._executions):
            try:
                names = os.listdir(self._executions)
            except FileNotFoundError:
                return Page(())
            candidates = sorted(
                name
                for name in names
                if (cursor is None or name > cursor) and _is_execution_id(name)
            )
            items: list[ExecutionInfo] = []
            for name in candidates:
                info = self._execution_info(name)
                if info is None:
                    continue
                if len(items) == limit:
                    return Page(tuple(items), items[-1].execution_id)
                items.append(info)
            return Page(tuple(items))

    async def _delete_execution(self, execution_id: str) -> bool:
        async with self._using(execution_id) as state:
            with self._errors(f"delete execution {execution_id!r}", state.dir):
                if not os.path.isdir(state.dir):
                    return False
                async with hold_lock(state, create=False) as locked:
                    if not locked:
                        return False
                    existed = self._execution_info(execution_id) is not None
                    self._prepare_root()
                    lease = current_lease(state)
                    if lease is not None:
                        # so that the id's next claim gets a higher epoch than any it had
                        try:
                            await raise_epoch_floor(self._root, lease.epoch, fsync=self._fsync)
                        except OSError as exc:
                            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                                raise
                            # The disk is full and raising the floor writes a small file:
                            # free this execution's bytes first (it is being deleted; the
                            # lease file, which keeps its epoch, stays until the floor is
                            # raised), then raise the floor in the room that made.
                            self._free_space_sync(state)
                            await raise_epoch_floor(self._root, lease.epoch, fsync=self._fsync)
                    trash = os.path.join(self._trash, f"{execution_id}.{secrets.token_hex(6)}")
                    # one atomic rename takes the whole execution away; waiting writers
                    # notice that their lock file moved and start over
                    os.rename(state.dir, trash)
                    if self._fsync:
                        fsync_dir(self._executions)
                    self._open_index.remove(execution_id)  # after: a crash leaves it stale
                state.reset()
                shutil.rmtree(trash, ignore_errors=True)
                return existed

    def _free_space_sync(self, state: ExecState) -> None:
        """Delete an execution's log and blobs in place, writing nothing (under its lock,
        while deleting it on a full disk). A crash right after leaves the execution with
        its lease only: it has no checkpoint, and deleting it again finishes the job."""
        state.drop_log()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(state.log_path)
        shutil.rmtree(state.blobs_dir, ignore_errors=True)

    async def _list_open(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        self._check_open()
        self._check_store()
        with self._errors("list open executions", self._open_index.dir):
            if not self._open_index.is_ready():
                await self._build_open_index()
            names = [n for n in self._open_index.names(cursor) if _is_execution_id(n)]
        items = tuple(ExecutionInfo(name) for name in names[:limit])
        return Page(items, items[-1].execution_id if len(names) > limit else None)

    async def _build_open_index(self) -> None:
        """Index every open execution of a store written before the index existed (once
        per store: then ``open/.ready`` says the index is complete)."""
        try:
            names = os.listdir(self._executions)
        except FileNotFoundError:
            return  # an empty store: its first writes maintain the index
        for name in sorted(names):
            if _is_execution_id(name):
                await self._reindex(name, add=True)
        self._open_index.mark_ready()

    async def _reindex(self, execution_id: str, *, add: bool) -> bool:
        """Under the execution's lock, drop its entry if it is not open (and with
        ``add``, create it if it is); return whether an entry was dropped."""
        async with self._using(execution_id) as state:
            if not add and not self._open_index.has(execution_id):
                return False
            with self._errors(f"index execution {execution_id!r}", state.dir):
                async with hold_lock(state, create=not add) as locked:
                    index = await writable_index(state, create=False) if locked else None
                    if is_open(index):
                        if add:
                            self._open_index.add(execution_id)
                        return False
                    dropped = self._open_index.remove(execution_id)
                    if locked and self._execution_info(execution_id) is None:
                        # we made the directory to lock it: take it away as a delete does
                        trash = os.path.join(self._trash, f"{execution_id}.{secrets.token_hex(6)}")
                        os.rename(state.dir, trash)
                        state.reset()
                        shutil.rmtree(trash, ignore_errors=True)
                    return dropped

    async def _forget_if_finished(self, execution_id: str) -> bool:
        self._check_store()
        return await self._reindex(execution_id, add=False)

    # -------------------------------------------------------------------- leases

    async def _claim(self, execution_id: str, owner: str, ttl: float) -> Lease:
        return await self._claim_if(execution_id, owner, ttl, None)

    async def _take_over(self, lease: Lease, owner: str, ttl: float) -> Lease:
        return await self._claim_if(lease.execution_id, owner, ttl, lease)

    async def _claim_if(
        self, execution_id: str, owner: str, ttl: float, dead: Lease | None
    ) -> Lease:
        """Claim; with ``dead``, also while ``dead`` is the current (live) lease."""
        async with self._using(execution_id) as state:
            with self._errors(f"claim execution {execution_id!r}", state.lease_path):
                async with hold_lock(state, create=True):
                    current = current_lease(state)
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
                        raise LeaseHeldError(
                            f"execution {execution_id!r} is claimed by {current.owner!r} "
                            f"for {current.expires_at - now:.1f} more seconds",
                            owner=current.owner,
                            expires_at=current.expires_at,
                        )
                    last = current.epoch if current else epoch_floor(self._root)
                    record = LeaseRecord(owner, last + 1, now + ttl, False)
                    write_lease(state, record)
        return Lease(execution_id, owner, record.epoch, record.expires_at)

    async def _lock_owner(self, execution_id: str) -> OwnerLock | None:
        path = os.path.join(self._exec_dir(execution_id), OWNER)
        with self._errors(f"lock the owner of execution {execution_id!r}", path):
            for _ in range(100):
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CREAT | O_CLOEXEC, 0o644)
                    break
                except FileNotFoundError:
                    self._prepare_root()
                    makedirs_durable(os.path.dirname(path), fsync=self._fsync)
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

    async def _owner_lock_free(self, execution_id: str) -> bool:
        path = os.path.join(self._exec_dir(execution_id), OWNER)
        with self._errors(f"probe the owner lock of execution {execution_id!r}", path):
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

    async def _renew(self, lease: Lease, ttl: float) -> Lease:
        async with self._using(lease.execution_id) as state:
            with self._errors(
                f"renew the lease on execution {lease.execution_id!r}", state.lease_path
            ):
                if not os.path.exists(state.lease_path):
                    raise fenced_by(lease, None, "renewing the lease")
                async with hold_lock(state, create=False) as locked:
                    current = current_lease(state) if locked else None
                    if (
                        current is None
                        or current.epoch != lease.epoch
                        or current.owner != lease.owner
                    ):
                        raise fenced_by(lease, current, "renewing the lease")
                    record = replace(current, expires_at=time.time() + ttl, released=False)
                    write_lease(state, record)
        return Lease(lease.execution_id, lease.owner, lease.epoch, record.expires_at)

    async def _release(self, lease: Lease) -> None:
        async with self._using(lease.execution_id) as state:
            with self._errors(
                f"release the lease on execution {lease.execution_id!r}", state.lease_path
            ):
                if not os.path.exists(state.lease_path):
                    return
                async with hold_lock(state, create=False) as locked:
                    current = current_lease(state) if locked else None
                    if (
                        current is None
                        or current.epoch != lease.epoch
                        or current.owner != lease.owner
                        or current.released
                    ):
                        return
                    write_lease(
                        state,
                        replace(
                            current, released=True, expires_at=min(current.expires_at, time.time())
                        ),
                    )

    async def _get_lease(self, execution_id: str) -> Lease | None:
        self._check_store()
        async with self._using(execution_id) as state:
            with self._errors(f"read the lease on execution {execution_id!r}", state.lease_path):
                current = current_lease(state)
        if current is None:
            return None
        return Lease(
            execution_id,
            current.owner,
            current.epoch,
            current.expires_at,
            released=current.released,
        )

    # --------------------------------------------------------------------- blobs

    def _blob_path(self, state: ExecState, digest: str) -> str:
        hexdigest = digest.partition(":")[2]
        if not _HEX64.fullmatch(hexdigest):
            raise ValueError(f"invalid blob digest {digest!r}")
        return os.path.join(state.blobs_dir, hexdigest[:2], hexdigest)

    def _put_blob_sync(self, path: str, stored: bytes) -> bool:
        for _ in range(100):
            if os.path.exists(path):
                return False
            try:
                self._prepare_root()
                makedirs_durable(os.path.dirname(path), fsync=self._fsync)
                return write_atomic(path, [stored], fsync=self._fsync, exclusive=True)
            except FileNotFoundError:
                continue  # the execution was deleted meanwhile: start over
        raise StoreError(f"cannot create {path}: its directory keeps disappearing")

    async def _put_blob(self, execution_id: str, digest: str, stored: bytes) -> bool:
        path = self._blob_path(self._state(execution_id), digest)
        with self._errors(f"store blob {digest} of execution {execution_id!r}", path):
            if len(stored) > INLINE_LIMIT:
                return await blocking(self._put_blob_sync, path, stored)
            return self._put_blob_sync(path, stored)

    async def _get_blob(self, execution_id: str, digest: str) -> bytes | None:
        self._check_store()
        path = self._blob_path(self._state(execution_id), digest)
        with self._errors(f"read blob {digest} of execution {execution_id!r}", path):
            try:
                fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                return None
            try:
                size = os.fstat(fd).st_size
                if size > INLINE_LIMIT:
                    return await blocking(fmt.pread_exact, fd, size, 0)
                return fmt.pread_exact(fd, size, 0)
            finally:
                os.close(fd)

    async def _has_blob(self, execution_id: str, digest: str) -> bool:
        path = self._blob_path(self._state(execution_id), digest)
        with self._errors(f"look up blob {digest} of execution {execution_id!r}", path):
            return os.path.isfile(path)

    async def _list_blobs(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
    ) -> Page[BlobInfo]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        state = self._state(execution_id)
        with self._errors(f"list the blobs of execution {execution_id!r}", state.blobs_dir):
            try:
                subdirs = sorted(s for s in os.listdir(state.blobs_dir) if _HEX2.fullmatch(s))
            except (FileNotFoundError, NotADirectoryError):
                return Page(())
            items: list[BlobInfo] = []
            for sub in subdirs:
                if cursor is not None and f"sha256:{sub}" < cursor[:9]:
                    continue
                directory = os.path.join(state.blobs_dir, sub)
                try:
                    names = sorted(
                        n
                        for n in os.listdir(directory)
                        if _HEX64.fullmatch(n) and n.startswith(sub)
                    )
                except (FileNotFoundError, NotADirectoryError):
                    continue
                for name in names:
                    digest = f"sha256:{name}"
                    if cursor is not None and digest <= cursor:
                        continue
                    try:
                        info = os.stat(os.path.join(directory, name))
                    except FileNotFoundError:
                        continue
                    if len(items) == limit:
                        return Page(tuple(items), items[-1].digest)
                    items.append(BlobInfo(digest, info.st_size, info.st_mtime))
            return Page(tuple(items))

    async def _delete_blob(self, execution_id: str, digest: str) -> bool:
        path = self._blob_path(self._state(execution_id), digest)
        with self._errors(f"delete blob {digest} of execution {execution_id!r}", path):
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError):
                return False
            if self._fsync:
                fsync_dir(os.path.dirname(path))
            return True


def _is_execution_id(name: str) -> bool:
    try:
        validate_execution_id(name)
    except InvalidExecutionIdError:
        return False
    return True
