"""Owner locks (C30): session-level advisory locks, all on one session per engine.

An owner lock says "the process that holds this execution's lease is alive": the server
drops a session's advisory locks when the session ends -- when the process dies or its
connection is cut. One session can hold any number of them, so the executions a process
runs on one store share one connection (:class:`OwnerLockSession`), where a connection
per execution would exhaust the server's ``max_connections`` at about 100 executions.

Advisory locks are re-entrant within a session, so the session remembers which keys it
holds: a second ``lock_owner`` of the same execution in this process gets None, as it
would from another process. If the session's connection breaks, its locks are gone on
the server (as a separate connection's would be): the next lock opens a new session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import psycopg

from durably.storage import OwnerLock

if TYPE_CHECKING:
    from durably_postgres._client import AsyncConn

__all__ = ["OwnerLockSession"]


class _Session:
    """One connection and the advisory-lock keys this process holds on it."""

    def __init__(self, conn: AsyncConn) -> None:
        self.conn = conn
        self.held: set[int] = set()

    @property
    def usable(self) -> bool:
        return not self.conn.closed and not self.conn.broken


class _HeldLock(OwnerLock):
    """One execution's owner lock, held on the shared session."""

    def __init__(self, owner: OwnerLockSession, session: _Session, key: int) -> None:
        self._owner: OwnerLockSession | None = owner
        self._session = session
        self._key = key

    async def release(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None:
            await owner.unlock(self._session, self._key)


class OwnerLockSession:
    """The session holding the owner locks of one engine's executions.

    Args:
        connect: Opens a new autocommit connection (with the provider's retries).
    """

    def __init__(self, connect: Callable[[], Awaitable[AsyncConn]]) -> None:
        self._connect = connect
        self._session: _Session | None = None
        self._mutex = asyncio.Lock()
        self._closing = False

    @property
    def connection(self) -> AsyncConn | None:
        """The session's connection, if one is open (for tests)."""
        return self._session.conn if self._session is not None else None

    async def try_lock(self, key: int) -> OwnerLock | None:
        """Take the advisory lock ``key`` without waiting; None if anyone holds it."""
        async with self._mutex:
            for attempt in (1, 2):
                session = self._session
                if session is None or not session.usable:
                    session = self._session = _Session(await self._connect())
                if key in session.held:
                    return None  # held by another execution object of this process
                try:
                    cur = await session.conn.execute(
                        "SELECT pg_try_advisory_lock(%s::int8)", (key,)
                    )
                    row = await cur.fetchone()
                except psycopg.OperationalError:
                    if attempt == 2 or session.usable:
                        raise
                    continue  # the session was cut while idle: its locks are gone anyway
                if not row or not row[0]:
                    return None
                session.held.add(key)
                return _HeldLock(self, session, key)
        raise AssertionError("unreachable")  # pragma: no cover

    async def unlock(self, session: _Session, key: int) -> None:
        """Release ``key`` (unlocked first: a probe right after must find it free)."""
        async with self._mutex:
            if key in session.held:
                session.held.discard(key)
                if session.usable:
                    with contextlib.suppress(Exception):
                        await session.conn.execute("SELECT pg_advisory_unlock(%s::int8)", (key,))
            await self._close_if_unused()

    async def close_when_unused(self) -> None:
        """The engine closed: close the session now, or once its last lock is released."""
        async with self._mutex:
            self._closing = True
            await self._close_if_unused()

    async def _close_if_unused(self) -> None:
        session = self._session
        if self._closing and session is not None and not session.held:
            self._session = None
            with contextlib.suppress(Exception):
                await session.conn.close()
