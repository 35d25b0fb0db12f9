"""Checkpoints of the filesystem store: save, read, list, delete, compact.

Each function takes the execution's state exclusively (:meth:`FileStore.using`), then,
for a write, its ``flock`` (:func:`~durably_filesystem._log.hold_lock`): check the lease
(:class:`~durably_filesystem._leases.Fence`, before the log is touched), catch up with
what other processes appended, check the write mode, append the records with one
``write``, ``fdatasync``, unlock. The append and its ``fdatasync`` run in the
process-wide sync pool when other executions are busy (group commit, see
:mod:`durably_filesystem._syncpool`), inline otherwise. The open-executions index is
updated around the append (an entry is added *before* the record that opens an
execution and removed *after* the one that finishes it, see
:mod:`durably_filesystem._open`; an entry is not looked at again while nothing was
appended since this instance made sure of it, see
:attr:`~durably_filesystem._log.OpenLog.listed_end`).
"""

# Small filesystem calls run on the event loop on purpose (see _provider.py).
# ruff: noqa: ASYNC240

from __future__ import annotations

import os
import time
from bisect import bisect_right

from durably.errors import already_exists, precondition_failed
from durably.storage import (
    CheckpointInfo,
    ExpectedVersion,
    Lease,
    Page,
    WriteMode,
    decode_int_cursor,
    encode_int_cursor,
)
from durably_filesystem import _format as fmt
from durably_filesystem._leases import Fence, fenced_by
from durably_filesystem._log import (
    INLINE_LIMIT,
    ExecState,
    append_sync,
    blocking,
    compact_sync,
    create_sync,
    hold_lock,
    info,
    maybe_compact,
    read_current,
    refresh,
    writable_index,
)
from durably_filesystem._open import open_after_delete, open_after_save
from durably_filesystem._store import FileStore
from durably_filesystem._syncpool import run_durable

__all__ = ["compact", "delete", "list_page", "load", "load_many", "save"]

READ_GAP = 64 << 10
"""A bulk read reads through gaps of up to this many bytes between wanted records
(records of other checkpoints) rather than issue another ``pread``."""
READ_RUN = 8 << 20
"""A bulk read starts another ``pread`` once a run of records exceeds this many bytes."""


async def save(
    store: FileStore,
    execution_id: str,
    seq: int,
    stored: bytes,
    metadata: dict[str, str],
    mode: WriteMode,
    lease: Lease | None,
) -> CheckpointInfo:
    """Append a checkpoint record, if the mode and the lease allow it (C2, C5-C9)."""
    meta = fmt.encode_meta(metadata)
    write_id = int.from_bytes(os.urandom(8), "little")
    created_ns = time.time_ns()
    parts = fmt.encode_record(fmt.T_CHECKPOINT, seq, write_id, created_ns, meta, stored)
    length = sum(map(len, parts))
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

    async with store.using(execution_id) as state:
        with store.errors(f"save checkpoint {seq} of execution {execution_id!r}", state.log_path):
            fence = Fence(state, lease, f"saving checkpoint {seq}")
            # a lease was claimed in the execution's directory: without it, a fenced
            # write has nothing to create (the directory was deleted: fenced)
            async with hold_lock(state, create=lease is None, proof=fence.proves_lock) as locked:
                if not locked:
                    assert lease is not None
                    raise fenced_by(lease, None, fence.action)
                fence.check()  # before the log is created or its torn tail truncated
                index = await writable_index(state)
                new_log = index is None  # created below, with this record in it
                if index is None:
                    index = fmt.LogIndex()
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
                listed_end = -1 if state.log is None else state.log.listed_end  # None: new
                if opens and listed_end != index.valid_end:
                    # before: a crash keeps the entry (skipped while nothing was appended
                    # since our last save made sure of it, see OpenLog.listed_end)
                    await run_durable(store, store.open_index.add, execution_id)
                write = create_sync if new_log else append_sync
                if length > INLINE_LIMIT:
                    await blocking(write, state, parts, apply)
                else:
                    # inline, or in the sync pool when other executions could use the
                    # wait (their flushes then share journal commits); returns only
                    # once the record is durable and the index updated
                    await run_durable(store, write, state, parts, apply)
                log = state.log
                assert log is not None
                if opens:
                    log.listed_end = log.index.valid_end
                elif opens is False:
                    store.open_index.remove(execution_id)
                if current is not None:
                    await maybe_compact(state, store.compact_threshold)
    return info(execution_id, entry)


async def load(
    store: FileStore, execution_id: str, seq: int | None
) -> tuple[CheckpointInfo, bytes] | None:
    """Checkpoint ``seq`` (None: the latest) and its stored bytes, or None (C1, C3)."""
    store.check_store()
    what = "the latest checkpoint" if seq is None else f"checkpoint {seq}"
    async with store.using(execution_id) as state:
        with store.errors(f"read {what} of execution {execution_id!r}", state.log_path):
            return await read_current(state, seq)


async def load_many(
    store: FileStore, execution_id: str, seqs: list[int]
) -> list[tuple[CheckpointInfo, bytes] | None]:
    """Checkpoints ``seqs`` and their stored bytes, None for each absent one (C1).

    One mutex, one index refresh and one ``pread`` per run of nearby records; each record
    is checked as :func:`~durably_filesystem._log.read_current` checks it. A checkpoint
    that is not in the index while the log has unreadable regions, one flagged corrupt
    and one that fails its check are read again by ``read_current``, which confirms the
    damage under the execution's lock (and raises) exactly as a single load does.
    """
    store.check_store()
    async with store.using(execution_id) as state:
        with store.errors(f"read checkpoints of execution {execution_id!r}", state.log_path):
            index = await refresh(state)
            if index is None:
                return [None] * len(seqs)
            found: list[tuple[CheckpointInfo, bytes] | None] = [None] * len(seqs)
            again: list[int] = []
            wanted: list[tuple[int, fmt.Entry]] = []
            for position, seq in enumerate(seqs):
                entry = index.entries.get(seq)
                if entry is None:
                    if index.corrupt_regions:
                        again.append(position)
                elif entry.corrupt:
                    again.append(position)
                else:
                    wanted.append((position, entry))
            again.extend(await _read_runs(state, wanted, found))
            for position in sorted(again):
                found[position] = await read_current(state, seqs[position])
            return found


async def _read_runs(
    state: ExecState,
    wanted: list[tuple[int, fmt.Entry]],
    found: list[tuple[CheckpointInfo, bytes] | None],
) -> list[int]:
    """Read ``wanted`` records in runs, fill ``found``; return the positions that failed."""
    assert state.log is not None or not wanted
    failed: list[int] = []
    wanted.sort(key=lambda item: item[1].offset)
    start = 0
    while start < len(wanted):
        first = wanted[start][1].offset
        end = first + wanted[start][1].length
        stop = start + 1
        while stop < len(wanted):
            entry = wanted[stop][1]
            if entry.offset - end > READ_GAP or entry.offset + entry.length - first > READ_RUN:
                break
            end = max(end, entry.offset + entry.length)
            stop += 1
        assert state.log is not None
        if end - first > INLINE_LIMIT:
            raw = await blocking(fmt.pread_exact, state.log.fd, end - first, first)
        else:
            raw = fmt.pread_exact(state.log.fd, end - first, first)
        view = memoryview(raw)
        for position, entry in wanted[start:stop]:
            record = view[entry.offset - first : entry.offset - first + entry.length]
            if not fmt.check_record(record, entry):
                failed.append(position)
                continue
            entry.verified = True
            data = entry.offset - first + fmt.HEAD_SIZE + entry.meta_len
            found[position] = (info(state.execution_id, entry), raw[data : data + entry.data_len])
        start = stop
    return failed


async def list_page(
    store: FileStore,
    execution_id: str,
    cursor: str | None,
    limit: int,
    after: int | None,
) -> Page[CheckpointInfo]:
    """A page of the execution's checkpoints from the in-memory index (C4, C11)."""
    store.check_store()
    start = -1 if after is None else after
    resume = decode_int_cursor(cursor)
    if resume is not None:
        start = max(start, resume)
    async with store.using(execution_id) as state:
        with store.errors(f"list the checkpoints of execution {execution_id!r}", state.log_path):
            index = await refresh(state)
        if index is None:
            return Page(())
        first = bisect_right(index.seqs, start)
        seqs = index.seqs[first : first + limit]
        items = tuple(info(execution_id, index.entries[s]) for s in seqs)
        more = first + limit < len(index.seqs)
        return Page(items, encode_int_cursor(seqs[-1]) if more and seqs else None)


async def delete(
    store: FileStore, execution_id: str, seqs: list[int], lease: Lease | None
) -> list[int]:
    """Append tombstones of the ``seqs`` that exist, fenced once (C9, C10); return them."""
    async with store.using(execution_id) as state:
        with store.errors(f"delete checkpoints of execution {execution_id!r}", state.log_path):
            fence = Fence(state, lease, "deleting checkpoints")
            async with hold_lock(state, create=False, proof=fence.proves_lock) as locked:
                if not locked:
                    if lease is not None:
                        raise fenced_by(lease, None, fence.action)
                    return []
                fence.check()
                index = await writable_index(state)
                if index is None:
                    return []
                doomed = sorted({seq for seq in seqs if seq in index.entries})
                if not doomed:
                    return []
                opens = open_after_delete(index, doomed)
                if opens:
                    store.open_index.add(execution_id)  # before: a crash keeps the entry
                if len(doomed) == len(index.entries):
                    # nothing left: an empty log says so at once (and costs no space)
                    await blocking(compact_sync, state, frozenset(doomed))
                    store.open_index.remove(execution_id)
                    return doomed
                created_ns = time.time_ns()
                parts: list[bytes | memoryview] = []
                for seq in doomed:
                    parts.extend(fmt.encode_record(fmt.T_TOMBSTONE, seq, 0, created_ns, b"", b""))

                def apply(index: fmt.LogIndex, offset: int) -> None:
                    for seq in doomed:
                        index.remove(seq, fmt.OVERHEAD)

                await run_durable(store, append_sync, state, [b"".join(parts)], apply)
                if opens is False:
                    store.open_index.remove(execution_id)
                await maybe_compact(state, store.compact_threshold)
                return doomed


async def compact(store: FileStore, execution_id: str) -> bool:
    """Rewrite the execution's log without dead records now; whether it was rewritten."""
    async with store.using(execution_id) as state:
        with store.errors(f"compact execution {execution_id!r}", state.log_path):
            if not os.path.isdir(state.dir):
                return False
            async with hold_lock(state, create=False) as locked:
                if not locked:
                    return False
                index = await writable_index(state)
                if index is None or (index.dead_bytes == 0 and not index.corrupt_regions):
                    return False
                await blocking(compact_sync, state)
                return True
