"""Owner locks (C30): session-level advisory locks, all on one session per engine.

An owner lock says "the process that holds this execution's lease is alive": the server
drops a session's advisory locks when the session ends -- when the process dies or its
connection is cut. One session can hold any number of them, so the executions a process
runs on one store share one connection (:class:`OwnerLockSession`), where a connection
per execution would exhaust the server's ``max_connections`` at about 100 executions.

Advisory locks are re-entrant within a session, so the session remembers which keys it
holds (and for which holder): a second ``try_lock`` of the same execution in this process
gets None, as it would from another process.

**When the session is lost.** The server then drops every lock on it at once, and all the
process's executions look dead to other processes (owner lock free). The session does not
wait for the next ``try_lock`` to notice: each execution's lease heartbeat calls
:meth:`OwnerLockSession.still_held` (through :meth:`durably.storage.OwnerLock.ensure_held`),
which finds a lost session without a round trip, opens a new one and takes every lock the
process held again, in one statement. A lock another process took in between -- it judged
this execution's owner dead and is taking it over -- is lost for good: ``still_held``
says so and the execution stops with :class:`~durably.errors.OwnerLockLostError` (the
runner reports it as a take-over). Others keep running. Correctness never depends on
this: a take-over bumps the epoch, and every write of the superseded owner is fenced.
Before taking the locks again, the old session is ended on the server if it is still
there holding some of them (``pg_terminate_backend``, waiting for it to exit), so that its
locks -- this process's own -- are not mistaken for another holder's. A backend with the
same pid and start holding none of them is never ended: through a pooler it may serve
another client now.

**Connecting** (with the provider's retries and backoff) happens outside the session's
mutex, once for all callers: while the server is unreachable, a release does not wait
for it (a lock on a lost session is gone already), and callers that need a session share
one attempt instead of each retrying in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import psycopg

from durably_postgres._idle import closed_by_server

if TYPE_CHECKING:
    from durably_postgres._client import AsyncConn

__all__ = ["OwnerLockSession"]

_END_OLD_SESSION = (
    "SELECT pg_terminate_backend(a.pid, 5000) FROM pg_stat_activity a"
    " WHERE a.pid = %s AND a.backend_start = %s AND EXISTS (SELECT 1 FROM pg_locks l"
    " WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND ((l.classid::int8 << 32) | l.objid::int8) = ANY(%s::int8[]))"
)
"""End the lost session if the server still runs it with some of this process's locks,
and wait (5 s at most) for it to exit. A backend holding none of them is left alone: it
is not ours to end, e.g. a pooler (PgBouncer) gave it to another client meanwhile."""

_RELOCK = "SELECT k FROM unnest(%s::int8[]) AS k WHERE NOT pg_try_advisory_lock(k)"
"""Take every key again on a new session; the keys someone else holds now."""


class _Conn:
    """The session's connection, and the server process behind it."""

    def __init__(self, conn: AsyncConn, backend: tuple[int, Any]) -> None:
        self.conn = conn
        self.backend = backend
        """(pid, backend_start): identifies the server's session, even after a pid reuse."""


class OwnerLockSession:
    """The session holding the owner locks of one engine's executions.

    Args:
        connect: Opens a new autocommit connection (with the provider's retries).
    """

    def __init__(self, connect: Callable[[], Awaitable[AsyncConn]]) -> None:
        self._connect = connect
        self._current: _Conn | None = None
        self._held: dict[int, object] = {}
        """Each key this process holds, and the token of its holder."""
        self._mutex = asyncio.Lock()
        """Held for statements on the session (never while connecting)."""
        self._reopening: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def connection(self) -> AsyncConn | None:
        """The session's connection, if one is open (for tests)."""
        return self._current.conn if self._current is not None else None

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncConn]:
        """The mutex, held with a live session: a new one first (outside the mutex, with
        every held lock taken again) if it was lost."""
        while True:
            async with self._mutex:
                current = self._current
                if current is not None and not closed_by_server(current.conn):
                    yield current.conn
                    return
            await self._reopen()

    async def _reopen(self) -> None:
        """Open a new session, or wait for the one being opened (one attempt for all)."""
        if self._closing:
            raise psycopg.OperationalError("the owner-lock session is closed")
        task = self._reopening
        if task is None:
            task = self._reopening = asyncio.get_running_loop().create_task(self._open())
            task.add_done_callback(self._opened)
        await asyncio.shield(task)

    def _opened(self, task: asyncio.Task[None]) -> None:
        self._reopening = None
        if not task.cancelled():
            task.exception()  # retrieved: the waiters (if any) got it

    async def _open(self) -> None:
        conn = await self._connect()
        try:
            cur = await conn.execute(
                "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
            )
            row = await cur.fetchone()
            assert row is not None
            fresh = _Conn(conn, (int(row[0]), row[1]))
            old = self._current  # replaced by this task only
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.conn.close()
                if self._held:  # its locks, if the server still runs it, are ours: end it
                    with contextlib.suppress(psycopg.Error):  # not allowed: they count as lost
                        await conn.execute(_END_OLD_SESSION, (*old.backend, list(self._held)))
            async with self._mutex:
                self._current = None
                if self._held:
                    cur = await conn.execute(_RELOCK, (list(self._held),))
                    for (key,) in await cur.fetchall():
                        del self._held[key]  # another process has it now: lost
                self._current = fresh
                await self._close_if_unused()
        except BaseException:
            await conn.close()
            raise

    async def try_lock(self, key: int) -> object | None:
        """Take the advisory lock ``key`` without waiting: its holder's token, or None if
        anyone holds it (another execution object of this process included)."""
        for attempt in (1, 2):
            async with self._session() as conn:
                if key in self._held:
                    return None
                try:
                    cur = await conn.execute("SELECT pg_try_advisory_lock(%s::int8)", (key,))
                    row = await cur.fetchone()
                except psycopg.OperationalError:
                    if attempt == 2 or not closed_by_server(conn):
                        raise
                    continue  # the session was cut while idle: open a new one
                if not row or not row[0]:
                    return None
                token = self._held[key] = object()
                return token
        raise AssertionError("unreachable")  # pragma: no cover

    async def still_held(self, key: int, token: object) -> bool:
        """Whether the holder of ``token`` still holds ``key``.

        If the session was lost, opens a new one and takes every held lock again first
        (see the module's docstring); False if another process took this one meanwhile.
        Raises what connecting raises if the server cannot be reached (the lock is gone
        with the session, but nobody else may have it: asking again later can tell).
        """
        if self._held.get(key) is not token:
            return False
        if self._closing:
            async with self._mutex:
                current = self._current
                return current is not None and not closed_by_server(current.conn)
        async with self._session():
            return self._held.get(key) is token

    async def unlock(self, key: int, token: object) -> None:
        """Release ``key`` (unlocked first: a probe right after must find it free).

        Never waits for a connection: a lock on a lost session is gone already.
        """
        async with self._mutex:
            if self._held.get(key) is token:
                del self._held[key]
                current = self._current
                if current is not None and not closed_by_server(current.conn):
                    with contextlib.suppress(Exception):
                        await current.conn.execute("SELECT pg_advisory_unlock(%s::int8)", (key,))
            await self._close_if_unused()

    async def close_when_unused(self) -> None:
        """The engine closed: close the session now, or once its last lock is released."""
        async with self._mutex:
            self._closing = True
            await self._close_if_unused()

    async def _close_if_unused(self) -> None:
        current = self._current
        if self._closing and current is not None and not self._held:
            self._current = None
            with contextlib.suppress(Exception):
                await current.conn.close()
