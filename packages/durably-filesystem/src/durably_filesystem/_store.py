"""The store's directory: its marker, its executions' states, and their exclusive use.

:class:`FileStore` is what every other module of the filesystem provider works on: the
root and its marker (``durably-store.json``: the layout and its version), the trash of
interrupted deletions, the index of open executions, and the :class:`ExecState` of each
execution (open files, in-memory index), kept for at most :data:`MAX_OPEN_EXECUTIONS`
executions (least recently used first out) and handed out one task at a time by
:meth:`FileStore.using`.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
from collections import OrderedDict
from typing import Any

from durably.errors import (
    ConfigError,
    CorruptObjectError,
    InvalidExecutionIdError,
    StoreError,
    UnsupportedFormatError,
)
from durably.storage import validate_execution_id
from durably_filesystem._fsutil import (
    TMP_PREFIX,
    makedirs_durable,
    read_file,
    wrap_os_error,
    write_atomic,
)
from durably_filesystem._leases import EPOCH_FLOOR, STORE_LOCK
from durably_filesystem._log import ExecState
from durably_filesystem._open import OPEN, OpenIndex
from durably_filesystem._syncpool import lease_released

__all__ = ["MAX_OPEN_EXECUTIONS", "FileStore", "OSErrors", "Using", "is_execution_id"]

MARKER = "durably-store.json"
LAYOUT = "durably-filesystem"
LAYOUT_VERSION = 2
"""The layout a new store gets. 1: one file per blob (``blobs/ab/<hex>``); 2: blobs in
packs (``blobs/<32 hex>.pack``, :mod:`~durably_filesystem._packs`). A store keeps the version it
was created with: a version-1 store is read and written as version 1 (an older
durably-filesystem can still use it); both layouts are read."""
EXECUTIONS = "executions"
TRASH = ".trash"

MAX_OPEN_EXECUTIONS = 128
"""Executions whose open files and index a provider instance keeps (LRU)."""


class FileStore:
    """One store directory as a provider instance sees it.

    Args:
        root: The store's directory (absolute).
        fsync: Flush writes to stable storage (the provider's ``fsync`` option).
        compact_threshold: Dead bytes a log may hold before it is compacted.
    """

    def __init__(self, root: str, *, fsync: bool, compact_threshold: int) -> None:
        self.root = root
        self.executions = os.path.join(root, EXECUTIONS)
        self.trash = os.path.join(root, TRASH)
        self.open_index = OpenIndex(root, fsync=fsync)
        self.fsync = fsync
        self.compact_threshold = compact_threshold
        self._states: OrderedDict[str, ExecState] = OrderedDict()
        self.pending: set[asyncio.Future[Any]] = set()
        """Durable writes of this store running in the sync pool (see :mod:`._syncpool`)."""
        self.leased: set[str] = set()
        """Executions this instance claimed and has not released (see :mod:`._syncpool`)."""
        self._root_ready = False
        self._marker_checked = False
        self._layout = LAYOUT_VERSION
        self._closed = False

    def describe(self) -> str:
        return f"file://{self.root}"

    async def aclose(self) -> None:
        """Wait for the writes in flight in the sync pool, then :meth:`close`."""
        self._closed = True
        for execution_id in self.leased:
            lease_released(self.root, execution_id)
        self.leased.clear()
        while self.pending:
            await asyncio.wait(set(self.pending))
        self.close()

    def close(self) -> None:
        """Close every open file; later operations raise StoreError."""
        self._closed = True
        states = list(self._states.values())
        self._states.clear()
        for state in states:
            state.reset()

    def check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the store {self.describe()} is closed")

    # ------------------------------------------------------------- executions

    def exec_dir(self, execution_id: str) -> str:
        """The execution's directory (refusing an id that would leave ``executions/``)."""
        validate_execution_id(execution_id)
        path = os.path.normpath(os.path.join(self.executions, execution_id))
        if os.path.dirname(path) != self.executions:
            raise InvalidExecutionIdError(f"execution id {execution_id!r} escapes the store")
        return path

    def state(self, execution_id: str) -> ExecState:
        """The execution's state (not exclusively: see :meth:`using`)."""
        self.check_open()
        state = self._states.get(execution_id)
        if state is not None:
            self._states.move_to_end(execution_id)
            return state
        directory = self.exec_dir(execution_id)
        real_parent = os.path.realpath(self.executions)
        if os.path.dirname(os.path.realpath(directory)) != real_parent:
            raise StoreError(
                f"{directory} resolves outside the store's {real_parent}; refusing to use it"
            )
        state = self._states[execution_id] = ExecState(
            execution_id,
            directory,
            fsync=self.fsync,
            prepare_root=self.prepare_root,
            pending=self.pending,
        )
        if len(self._states) > MAX_OPEN_EXECUTIONS:
            for key, old in list(self._states.items()):
                if len(self._states) <= MAX_OPEN_EXECUTIONS:
                    break
                if old.users == 0 and old is not state:
                    del self._states[key]
                    old.reset()
        return state

    def using(self, execution_id: str) -> Using:
        """``async with store.using(execution_id) as state``: the execution's state,
        exclusively (other tasks of this instance wait)."""
        return Using(self, execution_id)

    def discard(self, state: ExecState) -> None:
        """Take a (locked) execution's directory away at once: one rename into the trash,
        then remove it. Waiting writers notice that their lock file moved."""
        trash = os.path.join(self.trash, f"{state.execution_id}.{secrets.token_hex(6)}")
        os.rename(state.dir, trash)
        state.reset()
        shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def errors(action: str, path: str) -> OSErrors:
        """``with store.errors(action, path)``: an OSError becomes the matching StoreError
        (naming ``action`` and ``path``)."""
        return OSErrors(action, path)

    # ----------------------------------------------------------------- marker

    def _check_marker(self, raw: bytes, path: str) -> None:
        try:
            data = json.loads(raw.decode("utf-8"))
            layout, version = data["layout"], data["version"]
        except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            raise CorruptObjectError(f"the store marker {path} is damaged: {exc}") from exc
        if layout != LAYOUT:
            raise ConfigError(
                f"{self.root} holds a {layout!r} store, not a {LAYOUT!r} one",
                key="durability.store",
            )
        if type(version) is not int or not 1 <= version <= LAYOUT_VERSION:
            raise UnsupportedFormatError(
                f"the store {self.root} has layout version {version}; this "
                f"durably-filesystem knows version {LAYOUT_VERSION}. Upgrade it."
            )
        self._layout = version
        self._marker_checked = True

    @property
    def packs(self) -> bool:
        """Whether new blobs go into packs (a layout-2 store; see :data:`LAYOUT_VERSION`).
        Known once the marker was read: after :meth:`prepare_root`."""
        return self._layout >= 2

    def check_store(self) -> None:
        """Before reading: refuse a store of a newer layout (an absent store is empty)."""
        if self._marker_checked:
            return
        path = os.path.join(self.root, MARKER)
        with self.errors("read the store marker", path):
            raw = read_file(path)
        if raw is not None:
            self._check_marker(raw, path)

    def prepare_root(self) -> None:
        """Before writing: create the root and its marker, or check they are ours."""
        if self._root_ready:
            return
        makedirs_durable(self.root, fsync=self.fsync)
        path = os.path.join(self.root, MARKER)
        raw = read_file(path)
        if raw is None:
            foreign = sorted(
                name
                for name in os.listdir(self.root)
                if name not in (MARKER, EXECUTIONS, TRASH, STORE_LOCK, EPOCH_FLOOR, OPEN)
                and not name.startswith(TMP_PREFIX)
            )
            if foreign:
                raise ConfigError(
                    f"{self.root} is not empty and is not a durably store (it has no "
                    f"{MARKER}; it has {', '.join(foreign[:3])}"
                    f"{', ...' if len(foreign) > 3 else ''})",
                    key="durability.store",
                    fix="Point the store at a new or empty directory, e.g. file://.durably",
                )
            marker = json.dumps({"layout": LAYOUT, "version": LAYOUT_VERSION}).encode()
            # exclusive: another process may be initialising the store right now
            if write_atomic(path, [marker], fsync=self.fsync, exclusive=True):
                self.open_index.mark_ready()  # a new store: its index is complete
            raw = read_file(path) or b""
        self._check_marker(raw, path)
        makedirs_durable(self.executions, fsync=self.fsync)
        makedirs_durable(self.trash, fsync=self.fsync)
        self._empty_trash()
        self._root_ready = True

    def _empty_trash(self) -> None:
        """Finish deletions that a crash interrupted."""
        try:
            names = os.listdir(self.trash)
        except FileNotFoundError:
            return
        for name in names:
            shutil.rmtree(os.path.join(self.trash, name), ignore_errors=True)


class Using:
    """An execution's state for an ``async with`` block, exclusively (see
    :meth:`FileStore.using`): counted as in use from the start, so that it is not
    evicted while the block waits for the state's mutex."""

    __slots__ = ("_execution_id", "_state", "_store")

    def __init__(self, store: FileStore, execution_id: str) -> None:
        self._store = store
        self._execution_id = execution_id
        self._state: ExecState | None = None

    async def __aenter__(self) -> ExecState:
        state = self._store.state(self._execution_id)
        state.users += 1
        try:
            await state.mutex.acquire()
        except BaseException:
            state.users -= 1
            raise
        self._state = state
        try:
            self._store.check_open()
        except BaseException:
            await self.__aexit__()
            raise
        return state

    async def __aexit__(self, *exc_info: object) -> None:
        state, self._state = self._state, None
        if state is not None:
            state.mutex.release()
            state.users -= 1


class OSErrors:
    """A ``with`` block whose OSError becomes the matching StoreError (see
    :meth:`FileStore.errors`)."""

    __slots__ = ("action", "path")

    def __init__(self, action: str, path: str) -> None:
        self.action = action
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if isinstance(exc, OSError):
            raise wrap_os_error(exc, self.action, self.path) from exc


def is_execution_id(name: str) -> bool:
    """Whether a directory entry's name is a valid execution id."""
    try:
        validate_execution_id(name)
    except InvalidExecutionIdError:
        return False
    return True
