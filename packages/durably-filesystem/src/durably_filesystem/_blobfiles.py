"""Blobs of a layout-1 store: one file per blob, ``E/blobs/ab/<64 hex digits>``.

A store created by durably-filesystem before blob packs (layout 1, see
:data:`~durably_filesystem._store.LAYOUT_VERSION`) keeps this layout, so that an older
release can still use it; :mod:`~durably_filesystem._blobs` calls these functions for
it, and reads blobs stored this way in every store.

A blob is created with ``O_EXCL`` (:func:`~durably_filesystem._fsutil.write_atomic`
with ``exclusive=True``), so it is written once and never touched again (C17); listing
walks the two-digit directories in order with a keyset cursor (the last digest, C25).
Payloads above :data:`~durably_filesystem._log.INLINE_LIMIT` are written and read in a
thread.

A batch (:func:`put_blobs`, C33: the new blobs of one checkpoint) shares its flushes:
the missing fan-out directories are created first, then every blob is written to a
temporary file next to its place and ``fsync``'d -- all at once, one pool thread each
(:func:`~durably_filesystem._syncpool.run_durable_all`), together with the ``fsync``
of each directory that gained a fan-out directory -- then linked into place (``link``:
absent-only) and the directory of every blob of the batch (and the fan-out level above)
is ``fsync``'d once, again all at once -- also for a blob found already there, which
another writer may have linked without flushing yet. Two rounds of concurrent flushes,
which the filesystem commits together, instead of three flushes one after the other per
blob. A reader never sees a half-written blob under its name: the name appears only once
the content is durable. The temporary files are removed whatever happens, cancellation
included. Blobs above ``INLINE_LIMIT`` are written one by one in their own threads, as
:func:`put_blob` writes them, so that a batch of big blobs never holds every thread of the
sync pool that checkpoint appends wait for.
"""

# Small filesystem calls run on the event loop on purpose (see _provider.py).
# ruff: noqa: ASYNC240

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from durably.errors import StoreError
from durably.storage import BlobInfo, Page
from durably_filesystem import _format as fmt
from durably_filesystem._fsutil import (
    O_CLOEXEC,
    fsync_dir,
    make_dirs,
    makedirs_durable,
    publish,
    remove_quietly,
    tmp_path,
    write_atomic,
    write_new,
)
from durably_filesystem._log import INLINE_LIMIT, blocking
from durably_filesystem._store import FileStore
from durably_filesystem._syncpool import run_durable, run_durable_all

__all__ = [
    "check_digest",
    "delete_blob",
    "get_blob",
    "has_blob",
    "list_blobs",
    "put_blob",
    "put_blobs",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX2 = re.compile(r"[0-9a-f]{2}")


def check_digest(digest: str) -> str:
    """The digest's 64 hex digits (ValueError if it is not ``sha256:<64 hex digits>``)."""
    scheme, _, hexdigest = digest.partition(":")
    if scheme != "sha256" or not _HEX64.fullmatch(hexdigest):
        raise ValueError(f"invalid blob digest {digest!r}")
    return hexdigest


def _blob_path(store: FileStore, execution_id: str, digest: str) -> str:
    hexdigest = check_digest(digest)
    blobs_dir = store.state(execution_id).blobs_dir
    return os.path.join(blobs_dir, hexdigest[:2], hexdigest)


def _put_blob_sync(store: FileStore, path: str, stored: bytes) -> bool:
    for _ in range(100):
        if os.path.exists(path):
            # Another writer (or an earlier attempt that failed before its directory
            # flush) linked it: flush the directory entry before the caller counts on it.
            if store.fsync:
                fsync_dir(os.path.dirname(path))
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


async def put_blobs(
    store: FileStore, execution_id: str, blobs: Mapping[str, bytes]
) -> dict[str, bool]:
    """Create the files of the blobs that are absent, sharing the flushes (C33); for each
    digest, whether this call created it."""
    # Big blobs go one by one in their own threads (as put_blob does): a batch of them
    # must not take every thread of the sync pool that checkpoint appends wait for.
    one_by_one = {d: s for d, s in blobs.items() if len(s) > INLINE_LIMIT}
    if not store.fsync or len(blobs) - len(one_by_one) < 2:
        return {d: await put_blob(store, execution_id, d, stored) for d, stored in blobs.items()}
    written = {d: await put_blob(store, execution_id, d, s) for d, s in one_by_one.items()}
    batch = {d: s for d, s in blobs.items() if d not in one_by_one}
    paths = {digest: _blob_path(store, execution_id, digest) for digest in batch}
    written.update(dict.fromkeys(batch, False))
    blobs_dir = store.state(execution_id).blobs_dir
    with store.errors(f"store {len(blobs)} blobs of execution {execution_id!r}", blobs_dir):
        for _ in range(100):
            store.prepare_root()  # on the event loop: not thread-safe
            try:
                await _put_batch(store, paths, batch, written)
                return written
            except FileNotFoundError:
                continue  # the execution was deleted meanwhile: start over
        raise StoreError(f"cannot create the blobs of {blobs_dir}: it keeps disappearing")


async def _put_batch(
    store: FileStore,
    paths: Mapping[str, str],
    blobs: Mapping[str, bytes],
    written: dict[str, bool],
) -> None:
    """One attempt of :func:`put_blobs`: sets ``written[digest]`` for each blob it links,
    then flushes the directory of every blob of the batch -- also of one found already
    there: another writer, or an attempt that failed before its flush, may have linked
    it without flushing yet, and the caller is about to save a checkpoint naming it."""
    todo = {digest: path for digest, path in paths.items() if not os.path.exists(path)}
    if todo:
        await _link_new(store, todo, blobs, written)
    directories = {os.path.dirname(path) for path in paths.values()}
    directories |= {os.path.dirname(directory) for directory in directories}  # fan-out entries
    flushed = await run_durable_all(
        store, [(fsync_dir, (directory,)) for directory in sorted(directories)]
    )
    errors = [error for error in flushed if isinstance(error, BaseException)]
    if errors:
        raise errors[0]


async def _link_new(
    store: FileStore,
    todo: Mapping[str, str],
    blobs: Mapping[str, bytes],
    written: dict[str, bool],
) -> None:
    """Write the blobs of ``todo`` (digest: path) to flushed temporary files, all at once,
    with the new fan-out directories made durable alongside; then link each into place."""
    gained = make_dirs({os.path.dirname(path) for path in todo.values()})
    # The temporary names are chosen here, so that whatever happens -- a failed write,
    # or the caller cancelled while the threads write -- every one is removed.
    tmps = [tmp_path(os.path.dirname(path), os.path.basename(path)) for path in todo.values()]
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (_write_tmp_sync, (tmp, blobs[digest])) for digest, tmp in zip(todo, tmps, strict=True)
    ]
    calls += [(fsync_dir, (directory,)) for directory in gained]
    try:
        outcomes = await run_durable_all(store, calls)
        errors = [error for error in outcomes if isinstance(error, BaseException)]
        if errors:
            raise errors[0]
    except BaseException:
        for tmp in tmps:
            remove_quietly(tmp)
        raise
    try:
        for (digest, path), tmp in zip(todo.items(), tmps, strict=True):
            if publish(tmp, path, exclusive=True):
                written[digest] = True
    finally:
        for tmp in tmps:
            remove_quietly(tmp)  # left only if publishing stopped early


def _write_tmp_sync(tmp: str, stored: bytes) -> None:
    write_new(tmp, [stored], fsync=True)


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
