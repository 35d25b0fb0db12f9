"""Checkpoints in PostgreSQL: one row per checkpoint in ``checkpoints``.

A save or a delete is ONE statement (:mod:`durably_postgres._sql`): with a lease it
checks the execution's epoch under a row lock and writes in the same statement, so a
superseded owner never makes a write durable and a failure leaves nothing behind (C2,
C5-C10). Metadata is ``jsonb``; values with NUL, which ``jsonb`` cannot hold, are stored
split on NUL under :data:`NUL_KEY`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg.types.json import Jsonb

from durably._providerkit import deleting_what
from durably.errors import already_exists, fenced, precondition_failed
from durably.storage import (
    CheckpointInfo,
    ExpectedVersion,
    Lease,
    Page,
    WriteMode,
    decode_int_cursor,
    encode_int_cursor,
)
from durably_postgres._client import PostgresClient, Row
from durably_postgres._sql import SaveKind

__all__ = [
    "DELETE_BATCH",
    "MAX_PAGE",
    "delete",
    "lease_params",
    "list_page",
    "load",
    "save",
]

MAX_PAGE = 1000
"""Listings return at most this many items per page."""
DELETE_BATCH = 1000
"""Prune deletes this many checkpoints per statement (short row locks, no table lock)."""
NUL_KEY = "~nul"
"""Metadata values containing NUL (which jsonb cannot hold) are stored split on NUL under
this key; it can never be a metadata key (keys start with ``[a-z0-9]``)."""


def _encode_metadata(metadata: Mapping[str, str]) -> Jsonb:
    plain: dict[str, Any] = {}
    split: dict[str, list[str]] = {}
    for key, value in metadata.items():
        if "\x00" in value:
            split[key] = value.split("\x00")
        else:
            plain[key] = value
    if split:
        plain[NUL_KEY] = split
    return Jsonb(plain)


def _decode_metadata(raw: Any) -> dict[str, str]:
    if not raw:
        return {}
    meta = dict(raw)
    split = meta.pop(NUL_KEY, None)
    if split:
        for key, parts in split.items():
            meta[key] = "\x00".join(parts)
    return {str(k): str(v) for k, v in meta.items()}


def _info(execution_id: str, row: Row) -> CheckpointInfo:
    seq, version, size, created_at, metadata = row[:5]
    return CheckpointInfo(
        execution_id,
        int(seq),
        str(version),
        int(size),
        float(created_at),
        _decode_metadata(metadata),
    )


def lease_params(lease: Lease) -> dict[str, Any]:
    """The parameters of a fenced statement."""
    return {"epoch": lease.epoch, "owner": lease.owner}


async def save(
    db: PostgresClient,
    execution_id: str,
    seq: int,
    stored: bytes,
    metadata: dict[str, str],
    mode: WriteMode,
    lease: Lease | None,
) -> CheckpointInfo:
    """One statement: the fence, the mode's condition and the write (C2, C5-C9).

    The statement reports a failed fence or condition in its row instead of raising, so
    in a group commit (:mod:`durably_postgres._engine`) it fails only its own save.
    """
    kind: SaveKind
    params: dict[str, Any] = {
        "id": execution_id,
        "seq": seq,
        "data": stored,
        "size": len(stored),
        "meta": _encode_metadata(metadata),
        "status": metadata.get("durably.status"),
    }
    if isinstance(mode, ExpectedVersion):
        kind = "expected"
        expected = mode.version
        params["expected"] = (
            int(expected)
            if expected.isascii() and expected.isdigit() and len(expected) < 19
            else -1
        )
    else:
        kind = mode
    if lease is not None:
        params.update(lease_params(lease))
    what = f"saving checkpoint {seq} of execution {execution_id!r}"
    # through the group committer: alone when nothing else is in flight, else in one
    # transaction with the saves of other executions that queued meanwhile
    rows = await db.run_write(what, db.sql.save(kind, lease is not None), params)
    fence_ok, version, created_at = rows[0]
    if not fence_ok:
        assert lease is not None
        raise fenced(lease, f"saving checkpoint {seq}")
    if version is None:
        if kind == "create":
            raise already_exists(execution_id, seq)
        assert isinstance(mode, ExpectedVersion)
        raise precondition_failed(execution_id, seq, mode.version)
    return CheckpointInfo(execution_id, seq, str(version), len(stored), created_at, dict(metadata))


async def load(
    db: PostgresClient, execution_id: str, seq: int | None
) -> tuple[CheckpointInfo, bytes] | None:
    """Checkpoint ``seq`` (None: the latest) and its stored bytes, or None (C1, C3)."""
    if seq is None:
        rows = await db.run(
            f"loading the latest checkpoint of execution {execution_id!r}",
            "load_latest",
            {"id": execution_id},
            idempotent=True,
        )
    else:
        rows = await db.run(
            f"loading checkpoint {seq} of execution {execution_id!r}",
            "load",
            {"id": execution_id, "seq": seq},
            idempotent=True,
        )
    if not rows:
        return None
    return _info(execution_id, rows[0]), bytes(rows[0][5])


async def load_many(
    db: PostgresClient, execution_id: str, seqs: list[int]
) -> list[tuple[CheckpointInfo, bytes] | None]:
    """Checkpoints ``seqs`` in one statement (``seq = ANY(...)``), None where absent (C1)."""
    if not seqs:
        return []
    rows = await db.run(
        f"loading {len(seqs)} checkpoints of execution {execution_id!r}",
        "load_many",
        {"id": execution_id, "seqs": seqs},
        idempotent=True,
    )
    by_seq = {int(row[0]): row for row in rows}
    found: list[tuple[CheckpointInfo, bytes] | None] = []
    for seq in seqs:
        row = by_seq.get(seq)
        found.append(None if row is None else (_info(execution_id, row), bytes(row[5])))
    return found


async def list_page(
    db: PostgresClient, execution_id: str, cursor: str | None, limit: int, after: int | None
) -> Page[CheckpointInfo]:
    """A page of infos with metadata, by seq (C4, C11)."""
    start = decode_int_cursor(cursor)
    lower = max(-1 if start is None else start, -1 if after is None else after)
    limit = min(limit, MAX_PAGE)
    rows = await db.run(
        f"listing checkpoints of execution {execution_id!r}",
        "list",
        {"id": execution_id, "after": lower, "limit": limit + 1},
        idempotent=True,
    )
    items = tuple(_info(execution_id, row) for row in rows[:limit])
    more = len(rows) > limit
    return Page(items, encode_int_cursor(items[-1].seq) if more else None)


async def delete(
    db: PostgresClient, execution_id: str, seqs: list[int], lease: Lease | None
) -> list[int]:
    """One fenced statement deleting a batch of seqs (``seq = ANY(array)``) (C9, C10)."""
    params: dict[str, Any] = {"id": execution_id, "seqs": seqs}
    if lease is not None:
        params.update(lease_params(lease))
    what = deleting_what(execution_id, seqs)
    rows = await db.run(what, "", params, idempotent=False, sql=db.sql.delete(lease is not None))
    fence_ok, done = rows[0]
    if not fence_ok:
        assert lease is not None
        raise fenced(lease, "deleting checkpoints")
    return [int(seq) for seq in done]
