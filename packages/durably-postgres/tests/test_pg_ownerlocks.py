"""The owner-lock session ends a lost session on the server only if it is this process's:
the server backend behind it still holds this process's locks.

Through a connection pooler (PgBouncer), the server backend a lock session ran on is
handed to another client once this one disconnects; pid and ``backend_start`` then name
another process's session, which must not be terminated.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from test_pg_provider import MakeStore

from durably.storage import OwnerLock
from durably_postgres import PostgresProvider
from durably_postgres._ownerlocks import OwnerLockSession, _Conn


async def _locked(store: PostgresProvider) -> tuple[OwnerLock, OwnerLockSession, _Conn]:
    """Execution "a" locked: the lock, the lock session and its current connection."""
    held = await store.lock_owner("a")
    assert held is not None
    engine = store._db.engine
    assert engine is not None
    session = engine.owner_locks
    assert session is not None
    current = session._current
    assert current is not None
    return held, session, current


async def _identity(conn: psycopg.AsyncConnection[Any]) -> tuple[int, Any]:
    cur = await conn.execute(
        "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0]), row[1]


@pytest.mark.asyncio
async def test_a_lost_session_s_backend_serving_someone_else_is_not_terminated(
    make_store: MakeStore, pg_url: str
) -> None:
    """The lost session's backend (same pid and start) now serves another client, as
    through a pooler: it holds none of this process's locks and survives the reconnect."""
    store = make_store()
    held, session, current = await _locked(store)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as victim:
        # The pooler gave the backend to `victim`; this process's connection is gone.
        session._current = _Conn(current.conn, await _identity(victim))
        await current.conn.close()
        await held.ensure_held()  # a new session, the lock taken again
        assert session.connection is not current.conn
        cur = await asyncio.wait_for(victim.execute("SELECT 1"), timeout=10)
        assert await cur.fetchone() == (1,)  # not terminated
    assert not await store.owner_lock_free("a")
    await held.release()
    assert await store.owner_lock_free("a")


@pytest.mark.asyncio
async def test_a_lost_session_still_holding_the_locks_is_ended_and_they_are_taken_again(
    make_store: MakeStore, pg_url: str
) -> None:
    """Lost on this side only (the server still runs it, with the locks): it is ended on
    the server, and the locks are taken again on the new session."""
    store = make_store()
    held, session, current = await _locked(store)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as gone:
        # This side sees `gone` (closed); the server still runs the old backend.
        await gone.close()
        session._current = _Conn(gone, current.backend)
        await held.ensure_held()
    with pytest.raises(psycopg.OperationalError):
        await current.conn.execute("SELECT 1")  # the old backend was terminated
    await current.conn.close()
    assert session.connection is not current.conn
    assert not await store.owner_lock_free("a")
    await held.release()
    assert await store.owner_lock_free("a")
