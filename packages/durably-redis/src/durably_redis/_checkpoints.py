"""Checkpoints in Redis: one hash per checkpoint, a sorted set of seqs per execution.

Every write is one script (:mod:`durably_redis._scripts`): ``save`` checks the lease
epoch and the write mode and writes the hash, the seqs index, the executions index and
the open index in one atomic step; ``delete`` does the same for a batch of seqs. Reads
are one ``HMGET`` (a pipeline of them for many checkpoints) or one read-only script
(the latest checkpoint, a page of infos).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from durably._providerkit import deleting_what
from durably.errors import CorruptObjectError, StoreError, already_exists, precondition_failed
from durably.storage import (
    CheckpointInfo,
    ExpectedVersion,
    Lease,
    Page,
    WriteMode,
    decode_int_cursor,
    decode_metadata,
    encode_int_cursor,
    encode_metadata,
)
from durably_redis._client import RedisClient, decode, fence_args, fenced_error, status
from durably_redis._keys import MAX_PAGE, MAX_SEQ, seq_member

__all__ = ["delete", "list_page", "load", "load_latest", "load_many", "save", "seq_from_member"]


def _encode_metadata(metadata: Mapping[str, str]) -> bytes:
    # ascii_only: NUL, control characters and non-ASCII characters are escaped; the
    # stored text is plain ASCII JSON and every str survives the round trip.
    return encode_metadata(metadata, ascii_only=True).encode()


def seq_from_member(member: bytes, what: str) -> int:
    """The seq of a member of the seqs index (CorruptObjectError if it is not one)."""
    text = member.decode("ascii", "replace")
    if not text.isdigit():
        raise CorruptObjectError(f"{what}: the index holds {text!r}, not a sequence number")
    return int(text)


def _checkpoint(execution_id: str, seq: int, fields: Sequence[Any]) -> tuple[CheckpointInfo, bytes]:
    data, version, created, meta = fields
    what = f"checkpoint {seq} of execution {execution_id!r}"
    if data is None or version is None or created is None:
        raise CorruptObjectError(f"{what} is incomplete in Redis (a field is missing)")
    info = CheckpointInfo(
        execution_id, seq, decode(version), len(data), float(created), decode_metadata(meta, what)
    )
    return info, bytes(data)


async def save(
    db: RedisClient,
    execution_id: str,
    seq: int,
    stored: bytes,
    metadata: dict[str, str],
    mode: WriteMode,
    lease: Lease | None,
) -> CheckpointInfo:
    """The ``save`` script: fence, mode check and write in one atomic step (C2, C5-C9)."""
    keys = db.keys
    what = f"saving checkpoint {seq} of execution {execution_id!r}"
    if isinstance(mode, ExpectedVersion):
        mode_arg, expected = "expect", mode.version
    else:
        mode_arg, expected = mode, ""
    reply = await db.script(
        "save",
        [
            keys.checkpoint(execution_id, seq),
            keys.seqs(execution_id),
            keys.lease(execution_id),
            keys.executions,
            keys.counter,
            keys.open,
        ],
        [
            mode_arg,
            expected,
            *fence_args(lease),
            stored,
            _encode_metadata(metadata),
            seq_member(seq),
            execution_id,
            keys.base(execution_id) + "c:",
        ],
        what=what,
        write=True,
        idempotent=False,
    )
    state = status(reply)
    if state == b"fenced":
        assert lease is not None
        raise fenced_error(f"saving checkpoint {seq}", lease, reply)
    if state == b"exists":
        raise already_exists(execution_id, seq, version=decode(reply[1]))
    if state == b"mismatch":
        current = decode(reply[1])
        raise precondition_failed(
            execution_id, seq, expected, actual=current or None, missing=not current
        )
    if state != b"ok":
        raise StoreError(f"{what}: unexpected reply from the save script: {reply!r}")
    return CheckpointInfo(
        execution_id, seq, decode(reply[1]), len(stored), float(reply[2]), dict(metadata)
    )


async def load(db: RedisClient, execution_id: str, seq: int) -> tuple[CheckpointInfo, bytes] | None:
    """One ``HMGET`` of the checkpoint's hash (C1)."""
    fields = await db.call(
        f"loading checkpoint {seq} of execution {execution_id!r}",
        "HMGET",
        db.keys.checkpoint(execution_id, seq),
        "d",
        "v",
        "t",
        "m",
        idempotent=True,
    )
    if fields[0] is None and fields[1] is None:
        return None
    return _checkpoint(execution_id, seq, fields)


async def load_many(
    db: RedisClient, execution_id: str, seqs: Sequence[int]
) -> list[tuple[CheckpointInfo, bytes] | None]:
    """One pipeline of ``HMGET`` commands, one per checkpoint (C1): a single round trip."""
    if not seqs:
        return []
    replies = await db.call_many(
        f"loading {len(seqs)} checkpoints of execution {execution_id!r}",
        [("HMGET", db.keys.checkpoint(execution_id, seq), "d", "v", "t", "m") for seq in seqs],
        idempotent=True,
    )
    return [
        None if fields[0] is None and fields[1] is None else _checkpoint(execution_id, seq, fields)
        for seq, fields in zip(seqs, replies, strict=True)
    ]


async def load_latest(db: RedisClient, execution_id: str) -> tuple[CheckpointInfo, bytes] | None:
    """The ``latest`` script: the highest seq of the index and its hash (C3)."""
    what = f"loading the latest checkpoint of execution {execution_id!r}"
    reply = await db.script(
        "latest",
        [db.keys.seqs(execution_id)],
        [db.keys.base(execution_id) + "c:"],
        what=what,
        write=False,
        idempotent=True,
    )
    if reply is None:
        return None
    seq = seq_from_member(reply[0], what)
    return _checkpoint(execution_id, seq, reply[1:])


async def list_page(
    db: RedisClient, execution_id: str, cursor: str | None, limit: int, after: int | None
) -> Page[CheckpointInfo]:
    """The ``list`` script: a page of infos with metadata, by seq (C4, C11)."""
    limit = min(limit, MAX_PAGE)
    bounds = [b for b in (decode_int_cursor(cursor), after) if b is not None]
    lower = max(bounds) if bounds else None
    if lower is not None and lower >= MAX_SEQ:
        return Page(())
    start = "-" if lower is None or lower < 0 else "(" + seq_member(lower)
    what = f"listing checkpoints of execution {execution_id!r}"
    flat = await db.script(
        "list",
        [db.keys.seqs(execution_id)],
        [start, limit + 1, db.keys.base(execution_id) + "c:"],
        what=what,
        write=False,
        idempotent=True,
    )
    items: list[CheckpointInfo] = []
    for i in range(0, len(flat), 5):
        member, version, created, meta, size = flat[i : i + 5]
        seq = seq_from_member(member, what)
        if version is None or created is None:
            raise CorruptObjectError(
                f"checkpoint {seq} of execution {execution_id!r} is listed but missing"
            )
        items.append(
            CheckpointInfo(
                execution_id,
                seq,
                decode(version),
                int(size),
                float(created),
                decode_metadata(meta, f"checkpoint {seq} of execution {execution_id!r}"),
            )
        )
    more = len(items) > limit
    items = items[:limit]
    return Page(tuple(items), encode_int_cursor(items[-1].seq) if more else None)


async def delete(
    db: RedisClient, execution_id: str, seqs: list[int], lease: Lease | None
) -> list[int]:
    """The ``delete`` script for one batch of seqs, fenced (C9, C10); the seqs deleted."""
    keys = db.keys
    what = deleting_what(execution_id, seqs)
    reply = await db.script(
        "delete",
        [
            keys.seqs(execution_id),
            keys.lease(execution_id),
            keys.executions,
            keys.blobs(execution_id),
            keys.open,
            *(keys.checkpoint(execution_id, s) for s in seqs),
        ],
        [
            *fence_args(lease),
            execution_id,
            keys.base(execution_id) + "c:",
            *(seq_member(s) for s in seqs),
        ],
        what=what,
        write=True,
        idempotent=False,
    )
    if status(reply) == b"fenced":
        assert lease is not None
        raise fenced_error("deleting checkpoints", lease, reply)
    return [seq_from_member(member, what) for member in reply[1:]]
