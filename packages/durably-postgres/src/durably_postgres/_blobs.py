"""Blobs in PostgreSQL: one row per blob in ``blobs``, created with ``INSERT ... ON
CONFLICT DO NOTHING`` (C17) and listed by digest with a keyset cursor (C25). A batch
(:func:`put_blobs`, C33) is one multi-row ``INSERT ... ON CONFLICT DO NOTHING`` (the
rows ``unnest`` from two array parameters): one round trip, one transaction, for up to
:data:`BATCH_BYTES` of blobs."""

from __future__ import annotations

from collections.abc import Mapping

from durably._providerkit import put_in_batches
from durably.storage import BlobInfo, Page
from durably_postgres._checkpoints import MAX_PAGE
from durably_postgres._client import PostgresClient

__all__ = [
    "BATCH_BYTES",
    "BLOB_PRECHECK_SIZE",
    "delete_blob",
    "get_blob",
    "has_blob",
    "list_blobs",
    "put_blob",
    "put_blobs",
]

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


BATCH_BYTES = 16 * 1024 * 1024
"""put_blobs sends at most about this many bytes of blobs per statement."""


async def put_blobs(
    db: PostgresClient, execution_id: str, blobs: Mapping[str, bytes]
) -> dict[str, bool]:
    """Insert the blobs that are absent, in as few statements as :data:`BATCH_BYTES`
    allows (each one a transaction); for each digest, whether this call inserted it.

    Blobs of :data:`BLOB_PRECHECK_SIZE` or more go one by one through :func:`put_blob`,
    which asks first whether they are stored, to avoid sending them.
    """
    return await put_in_batches(
        blobs,
        batch_bytes=BATCH_BYTES,
        alone_from=BLOB_PRECHECK_SIZE,
        put_one=lambda digest, stored: put_blob(db, execution_id, digest, stored),
        put_batch=lambda batch: _insert(db, execution_id, batch),
    )


async def _insert(
    db: PostgresClient, execution_id: str, batch: dict[str, bytes]
) -> dict[str, bool]:
    rows = await db.run(
        f"storing {len(batch)} blobs of execution {execution_id!r}",
        "put_blobs",
        {"id": execution_id, "digests": list(batch), "datas": list(batch.values())},
        idempotent=True,
    )
    inserted = {str(row[0]) for row in rows}
    return {digest: digest in inserted for digest in batch}


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
