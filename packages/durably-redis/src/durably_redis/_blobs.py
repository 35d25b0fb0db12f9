"""Blobs in Redis: one hash per blob (``d`` the stored bytes, ``t`` created_at) and a
sorted set of the execution's digests for listing (C17, C25). A batch (:func:`put_blobs`,
C33) is one ``put_blobs`` script call -- one round trip, atomic, followed by one
WAIT/WAITAOF -- for up to :data:`BATCH_BYTES` of blobs."""

from __future__ import annotations

from collections.abc import Mapping

from durably._providerkit import put_in_batches
from durably.errors import CorruptObjectError
from durably.storage import DIGEST_RE, BlobInfo, Page
from durably_redis._client import RedisClient, decode
from durably_redis._keys import MAX_PAGE

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


async def put_blob(db: RedisClient, execution_id: str, digest: str, stored: bytes) -> bool:
    """The ``put_blob`` script (create if absent); whether this call created it."""
    what = f"storing blob {digest} of execution {execution_id!r}"
    if len(stored) >= BLOB_PRECHECK_SIZE and await has_blob(db, execution_id, digest):
        return False
    keys = db.keys
    reply = await db.script(
        "put_blob",
        [keys.blob(execution_id, digest), keys.blobs(execution_id), keys.executions],
        [stored, digest, execution_id],
        what=what,
        write=True,
        idempotent=True,
    )
    return bool(reply)


BATCH_BYTES = 16 * 1024 * 1024
"""put_blobs sends at most about this many bytes of blobs per script call."""


async def put_blobs(
    db: RedisClient, execution_id: str, blobs: Mapping[str, bytes]
) -> dict[str, bool]:
    """Create the blobs that are absent, in as few script calls as :data:`BATCH_BYTES`
    allows; for each digest, whether this call created it. Blobs of
    :data:`BLOB_PRECHECK_SIZE` or more go one by one through :func:`put_blob`."""
    return await put_in_batches(
        blobs,
        batch_bytes=BATCH_BYTES,
        alone_from=BLOB_PRECHECK_SIZE,
        put_one=lambda digest, stored: put_blob(db, execution_id, digest, stored),
        put_batch=lambda batch: _put_batch(db, execution_id, batch),
    )


async def _put_batch(
    db: RedisClient, execution_id: str, batch: dict[str, bytes]
) -> dict[str, bool]:
    keys = db.keys
    args: list[str | bytes] = [execution_id]
    for digest, stored in batch.items():
        args += [digest, stored]
    reply = await db.script(
        "put_blobs",
        [keys.blobs(execution_id), keys.executions]
        + [keys.blob(execution_id, digest) for digest in batch],
        args,
        what=f"storing {len(batch)} blobs of execution {execution_id!r}",
        write=True,
        idempotent=True,
    )
    inserted = {decode(digest) for digest in reply}
    return {digest: digest in inserted for digest in batch}


async def get_blob(db: RedisClient, execution_id: str, digest: str) -> bytes | None:
    data = await db.call(
        f"reading blob {digest} of execution {execution_id!r}",
        "HGET",
        db.keys.blob(execution_id, digest),
        "d",
        idempotent=True,
    )
    return None if data is None else bytes(data)


async def has_blob(db: RedisClient, execution_id: str, digest: str) -> bool:
    found = await db.call(
        f"looking up blob {digest} of execution {execution_id!r}",
        "EXISTS",
        db.keys.blob(execution_id, digest),
        idempotent=True,
    )
    return bool(found)


async def list_blobs(
    db: RedisClient, execution_id: str, cursor: str | None, limit: int
) -> Page[BlobInfo]:
    """The ``list_blobs`` script: a page of digests with size and created_at."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if cursor is not None and not (isinstance(cursor, str) and DIGEST_RE.fullmatch(cursor)):
        raise ValueError(f"invalid cursor {cursor!r}")
    limit = min(limit, MAX_PAGE)
    start = "-" if cursor is None else "(" + cursor
    flat = await db.script(
        "list_blobs",
        [db.keys.blobs(execution_id)],
        [start, limit + 1, db.keys.base(execution_id) + "b:"],
        what=f"listing blobs of execution {execution_id!r}",
        write=False,
        idempotent=True,
    )
    items: list[BlobInfo] = []
    for i in range(0, len(flat), 3):
        digest, created, size = flat[i : i + 3]
        if created is None:
            raise CorruptObjectError(
                f"blob {decode(digest)} of execution {execution_id!r} is listed but missing"
            )
        items.append(BlobInfo(decode(digest), int(size), float(created)))
    more = len(items) > limit
    items = items[:limit]
    return Page(tuple(items), items[-1].digest if more else None)


async def delete_blob(db: RedisClient, execution_id: str, digest: str) -> bool:
    """The ``delete_blob`` script (it also drops an execution left with nothing)."""
    keys = db.keys
    reply = await db.script(
        "delete_blob",
        [
            keys.blob(execution_id, digest),
            keys.blobs(execution_id),
            keys.seqs(execution_id),
            keys.lease(execution_id),
            keys.executions,
        ],
        [digest, execution_id],
        what=f"deleting blob {digest} of execution {execution_id!r}",
        write=True,
        idempotent=False,
    )
    return bool(reply)
