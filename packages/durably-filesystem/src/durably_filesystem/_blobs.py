"""Blobs of the filesystem store: one file per blob, ``E/blobs/ab/<64 hex digits>``.

A blob is created with ``O_EXCL`` (:func:`~durably_filesystem._fsutil.write_atomic`
with ``exclusive=True``), so it is written once and never touched again (C17); listing
walks the two-digit directories in order with a keyset cursor (the last digest, C25).
Payloads above :data:`~durably_filesystem._log.INLINE_LIMIT` are written and read in a
thread.
"""

# Small filesystem calls run on the event loop on purpose (see _provider.py).
# ruff: noqa: ASYNC240

from __future__ import annotations

import os
import re

from durably.errors import StoreError
from durably.storage import BlobInfo, Page
from durably_filesystem import _format as fmt
from durably_filesystem._fsutil import O_CLOEXEC, fsync_dir, makedirs_durable, write_atomic
from durably_filesystem._log import INLINE_LIMIT, blocking
from durably_filesystem._store import FileStore
from durably_filesystem._syncpool import run_durable

__all__ = ["delete_blob", "get_blob", "has_blob", "list_blobs", "put_blob"]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX2 = re.compile(r"[0-9a-f]{2}")


def _blob_path(store: FileStore, execution_id: str, digest: str) -> str:
    hexdigest = digest.partition(":")[2]
    blobs_dir = store.state(execution_id).blobs_dir
    if not _HEX64.fullmatch(hexdigest):
        raise ValueError(f"invalid blob digest {digest!r}")
    return os.path.join(blobs_dir, hexdigest[:2], hexdigest)


def _put_blob_sync(store: FileStore, path: str, stored: bytes) -> bool:
    for _ in range(100):
        if os.path.exists(path):
            return False
        try:
            store.prepare_root()
            makedirs_durable(os.path.dirname(path), fsync=store.fsync)
            return write_atomic(path, [stored], fsync=store.fsync, exclusive=True)
        except FileNotFoundError:
            continue  # the execution was deleted meanwhile: start over
    raise StoreError(f"cannot create {path}: its directory keeps disappearing")


async def put_blob(store: FileStore, execution_id: str, digest: str, stored: bytes) -> bool:
    """Create the blob's file if absent; whether this call created it (C17)."""
    path = _blob_path(store, execution_id, digest)
    with store.errors(f"store blob {digest} of execution {execution_id!r}", path):
        if len(stored) > INLINE_LIMIT:
            return await blocking(_put_blob_sync, store, path, stored)
        store.prepare_root()  # on the event loop: not thread-safe
        return await run_durable(store, _put_blob_sync, store, path, stored)


async def get_blob(store: FileStore, execution_id: str, digest: str) -> bytes | None:
    """The blob's stored bytes, or None."""
    store.check_store()
    path = _blob_path(store, execution_id, digest)
    with store.errors(f"read blob {digest} of execution {execution_id!r}", path):
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


async def has_blob(store: FileStore, execution_id: str, digest: str) -> bool:
    """Whether the blob's file exists."""
    path = _blob_path(store, execution_id, digest)
    with store.errors(f"look up blob {digest} of execution {execution_id!r}", path):
        return os.path.isfile(path)


async def list_blobs(
    store: FileStore, execution_id: str, cursor: str | None, limit: int
) -> Page[BlobInfo]:
    """A page of the execution's blobs, ascending by digest, after ``cursor`` (C25)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    blobs_dir = store.state(execution_id).blobs_dir
    with store.errors(f"list the blobs of execution {execution_id!r}", blobs_dir):
        try:
            subdirs = sorted(s for s in os.listdir(blobs_dir) if _HEX2.fullmatch(s))
        except (FileNotFoundError, NotADirectoryError):
            return Page(())
        items: list[BlobInfo] = []
        for sub in subdirs:
            if cursor is not None and f"sha256:{sub}" < cursor[:9]:
                continue
            directory = os.path.join(blobs_dir, sub)
            try:
                names = sorted(
                    n for n in os.listdir(directory) if _HEX64.fullmatch(n) and n.startswith(sub)
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


async def delete_blob(store: FileStore, execution_id: str, digest: str) -> bool:
    """Remove the blob's file; whether it existed."""
    path = _blob_path(store, execution_id, digest)
    with store.errors(f"delete blob {digest} of execution {execution_id!r}", path):
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if store.fsync:
            fsync_dir(os.path.dirname(path))
        return True
