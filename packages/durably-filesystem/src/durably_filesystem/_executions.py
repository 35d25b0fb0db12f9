"""Executions of the filesystem store: listing, deleting, and the open-executions index.

An execution exists while its directory holds a complete first log record, a lease
file or a blob (:func:`execution_info`). Deleting one takes its whole directory away
with one ``rename`` into ``.trash`` (under its lock), after raising the store's epoch
floor to its lease's epoch so that its next claim gets a higher one [C24]. The open
index (``root/open/``, :mod:`durably_filesystem._open`) is built once for a store that
predates it, and its stale entries are dropped by :func:`reindex`.
"""

# Small filesystem calls run on the event loop on purpose (see _provider.py).
# ruff: noqa: ASYNC240

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil

from durably.storage import ExecutionInfo, Page
from durably_filesystem._fsutil import fsync_dir
from durably_filesystem._leases import current_lease, raise_epoch_floor
from durably_filesystem._log import (
    BLOBS,
    LEASE,
    LOG,
    ExecState,
    first_record_complete,
    hold_lock,
    writable_index,
)
from durably_filesystem._open import is_open
from durably_filesystem._packs import is_pack_name
from durably_filesystem._store import FileStore, is_execution_id

__all__ = ["delete_execution", "execution_info", "list_executions", "list_open", "reindex"]

_HEX64 = re.compile(r"[0-9a-f]{64}")


def execution_info(store: FileStore, execution_id: str) -> ExecutionInfo | None:
    """The execution as listed, or None if it has no checkpoint, blob or lease.

    Cheap, from the files: a log "has checkpoints" when its first record is complete
    (deleting the last checkpoint leaves an empty log; an append torn by a crash
    does not count).
    """
    directory = os.path.join(store.executions, execution_id)
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
    if not exists and _has_any_blob(os.path.join(directory, BLOBS)):
        exists = True
    return ExecutionInfo(execution_id, updated) if exists else None


def _has_any_blob(blobs_dir: str) -> bool:
    """Whether the execution holds a blob: a blob file (layout 1) or a pack (layout 2)."""
    try:
        subdirs = os.listdir(blobs_dir)
    except (FileNotFoundError, NotADirectoryError):
        return False
    if any(is_pack_name(name) for name in subdirs):
        return True
    for sub in subdirs:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if any(_HEX64.fullmatch(name) for name in os.listdir(os.path.join(blobs_dir, sub))):
                return True
    return False


async def list_executions(store: FileStore, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
    """A page of the executions, ascending by id, after ``cursor`` (C13)."""
    store.check_open()
    store.check_store()
    with store.errors("list executions", store.executions):
        try:
            names = os.listdir(store.executions)
        except FileNotFoundError:
            return Page(())
        candidates = sorted(
            name for name in names if (cursor is None or name > cursor) and is_execution_id(name)
        )
        items: list[ExecutionInfo] = []
        for name in candidates:
            info = execution_info(store, name)
            if info is None:
                continue
            if len(items) == limit:
                return Page(tuple(items), items[-1].execution_id)
            items.append(info)
        return Page(tuple(items))


async def delete_execution(store: FileStore, execution_id: str) -> bool:
    """Remove the execution's directory, keeping its epochs in the floor (C24)."""
    async with store.using(execution_id) as state:
        with store.errors(f"delete execution {execution_id!r}", state.dir):
            if not os.path.isdir(state.dir):
                return False
            async with hold_lock(state, create=False) as locked:
                if not locked:
                    return False
                existed = execution_info(store, execution_id) is not None
                store.prepare_root()
                lease = current_lease(state)
                if lease is not None:
                    # so that the id's next claim gets a higher epoch than any it had
                    try:
                        await raise_epoch_floor(store.root, lease.epoch, fsync=store.fsync)
                    except OSError as exc:
                        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                            raise
                        # The disk is full and raising the floor writes a small file:
                        # free this execution's bytes first (it is being deleted; the
                        # lease file, which keeps its epoch, stays until the floor is
                        # raised), then raise the floor in the room that made.
                        _free_space_sync(state)
                        await raise_epoch_floor(store.root, lease.epoch, fsync=store.fsync)
                trash = os.path.join(store.trash, f"{execution_id}.{secrets.token_hex(6)}")
                # one atomic rename takes the whole execution away; waiting writers
                # notice that their lock file moved and start over
                os.rename(state.dir, trash)
                if store.fsync:
                    fsync_dir(store.executions)
                store.open_index.remove(execution_id)  # after: a crash leaves it stale
            state.reset()
            shutil.rmtree(trash, ignore_errors=True)
            return existed


def _free_space_sync(state: ExecState) -> None:
    """Delete an execution's log and blobs in place, writing nothing (under its lock,
    while deleting it on a full disk). A crash right after leaves the execution with
    its lease only: it has no checkpoint, and deleting it again finishes the job."""
    state.drop_log()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(state.log_path)
    shutil.rmtree(state.blobs_dir, ignore_errors=True)


async def list_open(store: FileStore, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
    """A page of the open executions, from the index (built first if need be) (C31)."""
    store.check_open()
    store.check_store()
    with store.errors("list open executions", store.open_index.dir):
        if not store.open_index.is_ready():
            await _build_open_index(store)
        names = [n for n in store.open_index.names(cursor) if is_execution_id(n)]
    items = tuple(ExecutionInfo(name) for name in names[:limit])
    return Page(items, items[-1].execution_id if len(names) > limit else None)


async def _build_open_index(store: FileStore) -> None:
    """Index every open execution of a store written before the index existed (once
    per store: then ``open/.ready`` says the index is complete)."""
    try:
        names = os.listdir(store.executions)
    except FileNotFoundError:
        return  # an empty store: its first writes maintain the index
    for name in sorted(names):
        if is_execution_id(name):
            await reindex(store, name, add=True)
    store.open_index.mark_ready()


async def reindex(store: FileStore, execution_id: str, *, add: bool) -> bool:
    """Under the execution's lock, drop its entry if it is not open (and with ``add``,
    create it if it is); return whether an entry was dropped."""
    async with store.using(execution_id) as state:
        if not add and not store.open_index.has(execution_id):
            return False
        with store.errors(f"index execution {execution_id!r}", state.dir):
            async with hold_lock(state, create=not add) as locked:
                index = await writable_index(state) if locked else None
                if is_open(index):
                    if add:
                        store.open_index.add(execution_id)
                    return False
                dropped = store.open_index.remove(execution_id)
                if locked and execution_info(store, execution_id) is None:
                    # we made the directory to lock it: take it away as a delete does
                    store.discard(state)
                return dropped
