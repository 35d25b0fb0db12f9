"""Executions in PostgreSQL: the ``executions`` table, listed in ``COLLATE "C"`` order
with the last id as the cursor (C13), deleted with everything that hangs off it (C24)."""

from __future__ import annotations

from psycopg import errors as pg_errors

from durably.errors import StoreError
from durably.storage import ExecutionInfo, Page
from durably_postgres._checkpoints import MAX_PAGE
from durably_postgres._client import STATEMENT_RETRIES, PostgresClient

__all__ = ["delete_execution", "list_executions"]


async def list_executions(
    db: PostgresClient, cursor: str | None, limit: int
) -> Page[ExecutionInfo]:
    """A page of executions with their last update, ascending by id."""
    limit = min(limit, MAX_PAGE)
    rows = await db.run(
        "listing executions",
        "list_executions",
        {"cursor": cursor or "", "limit": limit + 1},
        idempotent=True,
    )
    items = tuple(ExecutionInfo(str(row[0]), float(row[1])) for row in rows[:limit])
    return Page(items, items[-1].execution_id if len(rows) > limit else None)


async def delete_execution(db: PostgresClient, execution_id: str) -> bool:
    """One statement deleting the execution's rows; whether it existed."""
    what = f"deleting execution {execution_id!r}"
    for attempt in range(STATEMENT_RETRIES + 1):
        try:
            rows = await db.run(what, "delete_execution", {"id": execution_id}, idempotent=True)
            return bool(rows[0][0])
        except StoreError as exc:
            # A checkpoint committed by a concurrent save after this statement's
            # snapshot makes the foreign key fail: delete again, with a new snapshot.
            if (
                not isinstance(exc.__cause__, pg_errors.ForeignKeyViolation)
                or attempt == STATEMENT_RETRIES
            ):
                raise
    raise AssertionError("unreachable")  # pragma: no cover
