"""Blobs in PostgreSQL: one row per blob in ``blobs``, created with ``INSERT ... ON
CONFLICT DO NOTHING`` (C17) and listed by digest with a keyset cursor (C25)."""

from __future__ import annotations

from durably.storage import BlobInfo, Page
from durably_postgres._checkpoints import MAX_PAGE
from durably_postgres._client import PostgresClient

__all__ = ["BLOB_PRECHECK_SIZE", "delete_blob", "get_blob", "has_blob", "list_blobs", "put_blob"]

BLOB_PRECHECK_SIZE = 1024 * 1024
"""put_blob first asks whether a blob this large is already stored, to avoid sending it."""


async def put_blob(db: PostgresClient, execution_id: str, digest: str, stored: bytes) -> bool:
    """Insert the blob if absent; whether this call inserted it."""
    what = f"storing blob {digest} of execution {execution_id!r}"
    if len(stored) >= BLOB_PRECHECK_SIZE and await has_blob(db, execution_id, digest):
        return False
    rows = await db.run(
        what,
        "put_blob",
        {"id": execution_id, "digest": digest, "data": stored, "size": len(stored)},
        idempotent=True,
    )
    return bool(rows[0][0])


async def get_blob(db: PostgresClient, execution_id: str, digest: str) -> bytes | None:
    rows = await db.run(
        f"reading blob {digest} of execution {execution_id!r}",
        "get_blob",
        {"id": execution_id, "digest": digest},
        idempotent=True,
    )
    return bytes(rows[0][0]) if rows else None


async def has_blob(db: PostgresClient, execution_id: str, digest: str) -> bool:
    rows = await db.run(
        f"looking up blob {digest} of execution {execution_id!r}",
        "has_blob",
        {"id": execution_id, "digest": digest},
        idempotent=True,
    )
    return bool(rows[0][0])


async def list_blobs(
    db: PostgresClient, execution_id: str, cursor: str | None, limit: int
) -> Page[BlobInfo]:
    if limit < 1:
        raise ValueError("limit must be at least 1")
    limit = min(limit, MAX_PAGE)
    rows = await db.run(
        f"listing blobs of execution {execution_id!r}",
        "list_blobs",
        {"id": execution_id, "cursor": cursor or "", "limit": limit + 1},
        idempotent=True,
    )
    items = tuple(BlobInfo(str(d), int(size), float(at)) for d, size, at in rows[:limit])
    return Page(items, items[-1].digest if len(rows) > limit else None)


async def delete_blob(db: PostgresClient, execution_id: str, digest: str) -> bool:
    rows = await db.run(
        f"deleting blob {digest} of execution {execution_id!r}",
        "delete_blob",
        {"id": execution_id, "digest": digest},
        idempotent=True,
    )
    return bool(rows)
