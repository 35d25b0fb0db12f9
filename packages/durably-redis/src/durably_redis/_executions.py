"""Executions in Redis: the executions index, deletion, and the open-executions index.

``<prefix>:executions`` and ``<prefix>:open`` are sorted sets with all scores 0, so
``ZRANGEBYLEX`` lists them in code-point order with the last id as the cursor (C13,
C31). Deleting an execution runs the ``delete_execution`` script in batches of
:data:`~durably_redis._keys.DELETE_BATCH` keys until nothing is left (C24).
"""

from __future__ import annotations

from durably.storage import EXECUTION_ID_RE, ExecutionInfo, Page
from durably_redis._client import RedisClient, decode
from durably_redis._keys import DELETE_BATCH, MAX_PAGE

__all__ = ["delete_execution", "list_executions", "list_open", "reindex"]


async def _page_of_ids(
    db: RedisClient, what: str, key: str, cursor: str | None, limit: int
) -> Page[ExecutionInfo]:
    """A page of the execution ids of a lexically ordered sorted set, after ``cursor``."""
    if cursor is not None and not (isinstance(cursor, str) and EXECUTION_ID_RE.fullmatch(cursor)):
        raise ValueError(f"invalid cursor {cursor!r}")
    limit = min(limit, MAX_PAGE)
    start = "-" if cursor is None else "(" + cursor
    members = await db.call(
        what, "ZRANGEBYLEX", key, start, "+", "LIMIT", 0, limit + 1, idempotent=True
    )
    ids = [decode(member) for member in members]
    items = tuple(ExecutionInfo(execution_id) for execution_id in ids[:limit])
    return Page(items, items[-1].execution_id if len(ids) > limit else None)


async def list_executions(db: RedisClient, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
    """A page of ``<prefix>:executions`` (C13)."""
    return await _page_of_ids(db, "listing executions", db.keys.executions, cursor, limit)


async def delete_execution(db: RedisClient, execution_id: str) -> bool:
    """The ``delete_execution`` script, batch after batch; whether anything existed (C24)."""
    keys = db.keys
    what = f"deleting execution {execution_id!r}"
    existed: bool | None = None
    while True:
        existed_now, more = await db.script(
            "delete_execution",
            [
                keys.seqs(execution_id),
                keys.blobs(execution_id),
                keys.lease(execution_id),
                keys.executions,
                keys.open,
            ],
            [keys.base(execution_id), execution_id, DELETE_BATCH],
            what=what,
            write=True,
            idempotent=True,
        )
        if existed is None:
            existed = bool(existed_now)
        if not more:
            return existed


async def list_open(db: RedisClient, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
    """A page of ``<prefix>:open``, built first for a store from before it (C31)."""
    if cursor is not None and not (isinstance(cursor, str) and EXECUTION_ID_RE.fullmatch(cursor)):
        raise ValueError(f"invalid cursor {cursor!r}")
    if not db.open_ready:
        await _build_open_index(db)
    return await _page_of_ids(db, "listing open executions", db.keys.open, cursor, limit)


async def _build_open_index(db: RedisClient) -> None:
    """Index the open executions of a store written before the index existed (once
    per store: then ``<prefix>:open-ready`` says the index is complete)."""
    if await db.call(
        "reading the open index's state", "EXISTS", db.keys.open_ready, idempotent=True
    ):
        db.open_ready = True
        return
    cursor: str | None = None
    while True:
        page = await list_executions(db, cursor, MAX_PAGE)
        for execution in page.items:
            await reindex(db, execution.execution_id)
        cursor = page.next_cursor
        if cursor is None:
            break
    await db.call(
        "marking the open index complete", "SET", db.keys.open_ready, "1", idempotent=True
    )
    db.open_ready = True


async def reindex(db: RedisClient, execution_id: str) -> tuple[bool, bool]:
    """One atomic script: list the execution if it is open, else unlist it; return
    (was listed, is listed)."""
    was, now = await db.script(
        "reindex",
        [db.keys.seqs(execution_id), db.keys.open],
        [db.keys.base(execution_id) + "c:", execution_id],
        what=f"indexing execution {execution_id!r}",
        write=True,
        idempotent=True,
    )
    return bool(was), bool(now)
