"""Blobs of the filesystem store: in packs (layout 2), or one file per blob (layout 1).

A store of layout 2 -- every store created since blob packs -- writes the new blobs of
each call as packs, ``E/blobs/<32 hex>.pack`` (:mod:`~durably_filesystem._packs`):
a temporary file written and flushed, linked into place, then the directory flushed --
two flushes for a checkpoint's whole batch (C33), where a file per blob takes three per
blob. Blobs above :data:`~durably_filesystem._log.INLINE_LIMIT` get a pack each,
written in a thread; the others share packs of up to ``INLINE_LIMIT`` bytes, written in
the sync pool at once. Before writing, the execution's pack index is brought up to date
(one ``listdir``; a pack never changes, so only new ones are read), so that a blob any
writer stored already is not written again (C17); the packs directory is flushed before
a blob found there counts as stored. Deleting a blob rewrites its pack without it, under
the execution's lock. Once ``MERGE_AFTER`` small packs of one size tier accumulate, the
put that wrote the last one merges them (:func:`~durably_filesystem._packs.merge`), so
the packs stay about as many as the execution's blob bytes fill.

A store of layout 1 keeps one file per blob (:mod:`~durably_filesystem._blobfiles`).
Reads look in both places in every store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from durably.errors import DurablyError, StoreError
from durably.storage import BlobInfo, Page
from durably_filesystem import _blobfiles as files
from durably_filesystem._fsutil import fsync_dir, makedirs_durable
from durably_filesystem._log import INLINE_LIMIT, blocking, hold_lock, log
from durably_filesystem._packs import (
    MAX_ENTRIES,
    Packed,
    PackIndex,
    merge,
    read_blob,
    remove,
    write_pack,
)
from durably_filesystem._store import FileStore
from durably_filesystem._syncpool import run_durable, run_durable_all

__all__ = ["delete_blob", "get_blob", "has_blob", "list_blobs", "put_blob", "put_blobs"]

_Entry = tuple[str, bytes, None]
_ATTEMPTS = 10
"""Reads of a blob whose pack keeps being replaced before giving up (a StoreError)."""
MERGE_AFTER = 16
"""Small packs of one tier an execution may have before a put merges them. Each put that
has new blobs writes a pack: without merging, an execution's packs grow with its
snapshots, and so do the ``listdir`` before every put and the indexing of them all on
resume."""
MERGE_BELOW = INLINE_LIMIT // 2
"""A pack whose weight is below this is small (see :func:`_weight`). Small packs are
merged into packs of at most ``INLINE_LIMIT`` bytes (so a deletion still rewrites at
most that much) and ``MAX_ENTRIES`` blobs."""
_BLOB_WEIGHT = INLINE_LIMIT // MAX_ENTRIES
"""What one blob weighs at least (a full pack of tiny blobs is as heavy as a full one of
big blobs)."""


def _weight(size: int, blobs: int) -> int:
    """A pack's weight: its bytes, or its blobs times ``_BLOB_WEIGHT`` if more. Packs
    are merged by tier (weights within a factor of 4), ``MERGE_AFTER`` at a time, so a
    merged pack is about 16 times heavier than those it replaces: a blob is copied about
    ``log16(MERGE_BELOW / its weight)`` times (at most 3 from a blob of a few bytes to a
    pack no longer small), and an execution keeps at most ``MERGE_AFTER - 1`` small packs
    per tier (6 tiers, from 256 bytes to ``MERGE_BELOW``)."""
    return max(size, blobs * _BLOB_WEIGHT)


def _index(store: FileStore, execution_id: str) -> PackIndex:
    state = store.state(execution_id)
    if state.packs is None:
        state.packs = PackIndex(state.blobs_dir)
    return state.packs


async def put_blob(store: FileStore, execution_id: str, digest: str, stored: bytes) -> bool:
    """Store the blob if absent; whether this call wrote it (C17)."""
    return (await put_blobs(store, execution_id, {digest: stored}))[digest]


async def put_blobs(
    store: FileStore, execution_id: str, blobs: Mapping[str, bytes]
) -> dict[str, bool]:
    """Store the blobs that are absent, durable when this returns (C33); for each digest,
    whether this call wrote it."""
    if not blobs:
        return {}
    with store.errors(f"store the blobs of execution {execution_id!r}", store.root):
        store.prepare_root()  # on the event loop: not thread-safe; reads the layout
    if not store.packs:
        return await files.put_blobs(store, execution_id, blobs)  # one alone: put_blob
    for digest in blobs:
        files.check_digest(digest)
    index = _index(store, execution_id)
    with store.errors(f"store {len(blobs)} blob(s) of execution {execution_id!r}", index.dir):
        for _ in range(100):
            try:
                written = await _put_packs(store, index, blobs)
                break
            except FileNotFoundError:
                store.prepare_root()
                continue  # the execution was deleted meanwhile: start over
        else:
            raise StoreError(f"cannot create the blobs of {index.dir}: it keeps disappearing")
    if len(index.packs) >= MERGE_AFTER and any(written.values()) and _merge_plan(index):
        await _merge_small_packs(store, execution_id, index)  # planned again under the lock
    return written


def _merge_plan(index: PackIndex) -> list[list[tuple[str, dict[str, Packed]]]]:
    """Groups of small packs to merge: of each tier holding ``MERGE_AFTER`` small packs or
    more, its packs, smallest first, in groups of at most ``INLINE_LIMIT`` bytes and
    ``MAX_ENTRIES`` blobs (each group of 2 packs or more)."""
    tiers: dict[int, list[tuple[int, str]]] = {}
    for name, size in index.sizes.items():
        weight = _weight(size, len(index.packs[name]))
        if weight < MERGE_BELOW:
            tiers.setdefault(weight.bit_length() // 2, []).append((size, name))
    plan: list[list[tuple[str, dict[str, Packed]]]] = []
    for packs in tiers.values():
        if len(packs) < MERGE_AFTER:
            continue
        group: list[tuple[str, dict[str, Packed]]] = []
        size = count = 0
        for pack_size, name in sorted(packs):
            held = index.packs[name]
            if group and (size + pack_size > INLINE_LIMIT or count + len(held) > MAX_ENTRIES):
                plan.append(group)
                group, size, count = [], 0, 0
            group.append((name, held))
            size += pack_size
            count += len(held)
        plan.append(group)
    return [group for group in plan if len(group) > 1]


async def _merge_small_packs(store: FileStore, execution_id: str, index: PackIndex) -> None:
    """Merge the execution's small packs (see :func:`~durably_filesystem._packs.merge`),
    under its lock, so that its packs stay about as many as its blobs' bytes take in
    packs of ``INLINE_LIMIT``, plus the small ones of each tier. The put's blobs are
    durable before this starts: a merge that fails (a full disk, say) loses nothing and
    does not fail the put; it is logged, and the next put tries again. An execution that
    never had a lock file (blobs put before any lease or checkpoint) is not merged:
    putting blobs adds blobs and nothing else (C33)."""
    try:
        async with store.using(execution_id) as state:
            if not os.path.exists(state.lock_path):  # noqa: ASYNC240 (one stat)
                return
            with store.errors(f"merge the blob packs of execution {execution_id!r}", index.dir):
                async with hold_lock(state, create=False) as locked:
                    if not locked:  # the execution was deleted meanwhile
                        return
                    index.refresh()  # under the lock: what deletions left
                    plan = _merge_plan(index)
                    if plan:
                        planned = {name for group in plan for name, _held in group}
                        elsewhere = {
                            digest
                            for name, held in index.packs.items()
                            if name not in planned
                            for digest in held
                        }
                        # the files in a thread; readers meanwhile find a removed
                        # pack's blobs in the merged one
                        try:
                            await blocking(merge, index.dir, plan, elsewhere, store.fsync)
                        finally:
                            index.refresh()
    except DurablyError as exc:
        log.warning("could not merge the blob packs of execution %r: %s", execution_id, exc)


async def _put_packs(
    store: FileStore, index: PackIndex, blobs: Mapping[str, bytes]
) -> dict[str, bool]:
    index.refresh()
    new = {digest: stored for digest, stored in blobs.items() if digest not in index.blobs}
    if new:
        makedirs_durable(index.dir, fsync=store.fsync)
        small: list[list[_Entry]] = []
        for group in _groups(new):
            if sum(len(stored) for _, stored, _ in group) > INLINE_LIMIT:  # one big blob
                index.add(*await blocking(write_pack, index.dir, group, store.fsync))
            else:
                small.append(group)
        if len(small) == 1:  # inline, or in the pool when other flushes could share it
            index.add(*await run_durable(store, write_pack, index.dir, small[0], store.fsync))
            small = []
        outcomes = await run_durable_all(
            store, [(write_pack, (index.dir, group, store.fsync)) for group in small]
        )
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        for outcome in outcomes:
            if not isinstance(outcome, BaseException):
                index.add(*outcome)
        if errors:
            raise errors[0]
    if store.fsync:
        # Also when every blob was found: its writer may not have flushed the directory yet.
        await run_durable(store, fsync_dir, index.dir)
    return {digest: digest in new for digest in blobs}


def _groups(blobs: Mapping[str, bytes]) -> list[list[_Entry]]:
    """The blobs in packs of at most ``INLINE_LIMIT`` bytes and ``MAX_ENTRIES`` blobs (a
    bigger blob alone)."""
    groups: list[list[_Entry]] = []
    group: list[_Entry] = []
    size = 0
    for digest, stored in blobs.items():
        if group and (size + len(stored) > INLINE_LIMIT or len(group) == MAX_ENTRIES):
            groups.append(group)
            group, size = [], 0
        group.append((digest, stored, None))
        size += len(stored)
    if group:
        groups.append(group)
    return groups


async def get_blob(store: FileStore, execution_id: str, digest: str) -> bytes | None:
    """The blob's stored bytes, or None."""
    store.check_store()
    files.check_digest(digest)
    index = _index(store, execution_id)
    with store.errors(f"read blob {digest} of execution {execution_id!r}", index.dir):
        packed = index.blobs.get(digest)
        if packed is None:
            index.refresh()
            packed = index.blobs.get(digest)
        for _ in range(_ATTEMPTS):
            if packed is None:
                break
            try:
                if packed.length > INLINE_LIMIT:
                    return await blocking(read_blob, index.dir, digest, packed)
                return read_blob(index.dir, digest, packed)
            except FileNotFoundError:
                index.refresh()  # its pack was rewritten (a deletion) or removed
                packed = index.blobs.get(digest)
        else:
            raise StoreError(
                f"cannot read blob {digest} of execution {execution_id!r}: its pack was "
                f"replaced {_ATTEMPTS} times while it was read (deletions of other blobs)"
            )
    stored = await files.get_blob(store, execution_id, digest)
    if stored is None:
        index.missing(digest, execution_id)
    return stored


async def has_blob(store: FileStore, execution_id: str, digest: str) -> bool:
    """Whether the blob is stored."""
    store.check_store()
    files.check_digest(digest)
    index = _index(store, execution_id)
    with store.errors(f"look up blob {digest} of execution {execution_id!r}", index.dir):
        index.refresh()
    if digest in index.blobs or await files.has_blob(store, execution_id, digest):
        return True
    index.missing(digest, execution_id)
    return False


async def list_blobs(
    store: FileStore, execution_id: str, cursor: str | None, limit: int
) -> Page[BlobInfo]:
    """A page of the execution's blobs, ascending by digest, after ``cursor`` (C25)."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    store.check_store()
    index = _index(store, execution_id)
    with store.errors(f"list the blobs of execution {execution_id!r}", index.dir):
        index.refresh()
    for name, (cls, reason) in sorted(index.damaged.items()):
        raise cls(f"cannot list the blobs of execution {execution_id!r}: {name}: {reason}")
    in_files = await files.list_blobs(store, execution_id, cursor, limit)
    found = {info.digest: info for info in in_files.items}
    more = in_files.next_cursor is not None
    for digest, packed in index.blobs.items():
        if (cursor is None or digest > cursor) and digest not in found:
            found[digest] = BlobInfo(digest, packed.length, packed.created)
    items = [found[digest] for digest in sorted(found)]
    if len(items) > limit or more:
        return Page(tuple(items[:limit]), items[limit - 1].digest)
    return Page(tuple(items))


async def delete_blob(store: FileStore, execution_id: str, digest: str) -> bool:
    """Remove the blob; whether it existed."""
    store.check_store()
    files.check_digest(digest)
    existed = await files.delete_blob(store, execution_id, digest)
    async with store.using(execution_id) as state:
        index = _index(store, execution_id)
        with store.errors(f"delete blob {digest} of execution {execution_id!r}", index.dir):
            index.refresh()
            if digest not in index.blobs:
                if not existed:
                    index.missing(digest, execution_id)  # raises if a damaged pack may hold it
                return existed
            # On the event loop: a rewrite changes the index that readers use (rare:
            # deleting a blob is maintenance).
            async with hold_lock(state, create=False) as locked:
                if not locked:
                    return existed
                return remove(index, digest, store.fsync) or existed
