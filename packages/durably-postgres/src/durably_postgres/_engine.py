"""What the providers of one process share per server: the pool, group commit, owner locks.

``run_program`` opens a provider per execution. If each opened its own pool and its own
owner-lock session, 100 executions running at once in one process would need 100 or
more connections (and PostgreSQL's ``max_connections`` is 100 by default). Instead, the
providers of an event loop that connect to the same server with the same connection
options share one :class:`Engine` (reference-counted: when the last provider closes,
the engine closes its pool, at once or after it lingered, below):

- **one pool** of at most ``pool_max_size`` connections;
- **one group committer** for checkpoint writes (:class:`durably._groupcommit.GroupCommitter`):
  a save that finds no other in flight runs alone, as one autocommit statement; saves that
  queued meanwhile are written together, in one transaction on one connection -- each
  still its own fenced statement, each with its own outcome (:meth:`Engine.run_batch`);
- **one session** holding the owner locks of every execution this process runs
  (:mod:`durably_postgres._ownerlocks`), instead of a connection per execution.

So a process holds at most ``pool_max_size + 1`` connections per server and options,
however many executions it runs (plus one, briefly, while the first provider checks the
schema). The schema is checked (and migrated) once per engine and schema.

An engine whose last provider closed **lingers** for ``pool_linger`` seconds (the option
of the provider that closed last; 0: it closes at once): a provider opened meanwhile
takes it again, with its connections and its owner-lock session (its schemas are checked
again, on a pooled connection), so an application that runs executions one after
another (``run_program`` opens and closes a provider each time) does not connect to the
server for each of them. A lingering engine closes when the time is up, or when its
event loop shuts down: ``asyncio.run`` cancels the wait, and the engine closes in that
loop before it ends. A provider closed by a task being cancelled (during that shutdown,
say) closes the engine at once. A forked child that runs the parent's loop never closes
the parent's lingering engine; a loop closed without cancelling its tasks leaves its
engine to the garbage collector (:func:`_forget_closed_loops`).

An engine belongs to the process and the event loop that made it: its pool, tasks and
locks work in that loop only, and its sockets are that process's. A provider used in
another event loop, or in a child after ``os.fork()``, takes a reference on the engine of
the loop it runs in (:meth:`Engine.is_current`) and lets go of the old one
(:func:`abandon`): in its own loop if that loop still runs; not at all if it belongs to
the parent process (a forked child never uses, closes or releases the parent's
connections -- closing them would end the parent's sessions).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from durably._groupcommit import GroupCommitter
from durably_postgres._errors import is_connection_loss
from durably_postgres._idle import closed_by_server
from durably_postgres._ownerlocks import OwnerLockSession

if TYPE_CHECKING:
    from durably_postgres._client import AsyncConn, PostgresClient, Row

__all__ = [
    "MAX_BATCH",
    "Engine",
    "EngineKey",
    "Write",
    "abandon",
    "acquire",
    "discard_if_dead",
    "release",
]

log = logging.getLogger("durably.postgres")

MAX_BATCH = 128
"""Checkpoint writes per group-commit transaction at most."""


async def discard_if_dead(conn: AsyncConn) -> None:
    """Pool ``check``: reject an idle connection the server has already given up on.

    Looking costs no round trip (:func:`~durably_postgres._idle.closed_by_server`), and
    keeps a stale connection from failing a non-retryable write.
    """
    if closed_by_server(conn):
        await conn.close()
        raise psycopg.OperationalError("stale pooled connection discarded")


@dataclass(frozen=True, slots=True)
class EngineKey:
    """What must be equal for two providers to share connections."""

    conninfo: str = field(repr=False)
    min_size: int
    max_size: int
    timeout: float
    prepared_statements: bool


@dataclass(slots=True)
class Write:
    """One statement handed to the group committer."""

    client: PostgresClient
    what: str
    query: str
    params: dict[str, Any]

    @property
    def order(self) -> tuple[str, int]:
        """Lock order inside a batch: by execution, then seq (no deadlock between batches)."""
        return str(self.params.get("id", "")), int(self.params.get("seq", 0))


class Engine:
    """The pool, committer and owner-lock session shared by a process's providers."""

    def __init__(self, key: EngineKey) -> None:
        self.key = key
        self.refs = 0
        self.pid = os.getpid()
        self._loop = weakref.ref(asyncio.get_running_loop())
        self.pool: AsyncConnectionPool[AsyncConn] | None = None
        self.schemas: set[str] = set()
        """Schemas checked (and migrated) on this engine."""
        self.opening = asyncio.Lock()
        self.committer: GroupCommitter[Write, list[Row]] = GroupCommitter(
            self._run_one, self.run_batch, max_batch=MAX_BATCH
        )
        self.owner_locks: OwnerLockSession | None = None
        self._pinned: AsyncConn | None = None
        self.closed = asyncio.Event()
        """Set once the last reference was released and the pool closed."""
        self._lingering: asyncio.Task[None] | None = None
        """While no provider holds the engine: the wait after which it closes."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the engine works in (None once that loop was collected)."""
        return self._loop()

    def is_current(self) -> bool:
        """Whether the engine belongs to this process and the running event loop."""
        return self.pid == os.getpid() and self._loop() is asyncio.get_running_loop()

    @asynccontextmanager
    async def writer(self) -> AsyncIterator[AsyncConn]:
        """The committer's connection: kept out of the pool between flushes.

        Saves follow each other without a pool checkout and return (one flush at a time:
        the committer never runs two). Before each use it is checked like a pooled one
        (:func:`discard_if_dead`, no round trip) and replaced if the server closed it; after
        an error it goes back to the pool, which discards it if it is broken. With
        ``pool_max_size = 1`` nothing is pinned (every other operation needs that one).
        """
        pool = self.pool
        assert pool is not None
        if pool.max_size < 2:
            async with pool.connection() as lent:
                yield lent
            return
        pinned = self._pinned
        if pinned is not None:
            try:
                await discard_if_dead(pinned)
            except psycopg.OperationalError:  # closed: the pool replaces it
                self._pinned = None
                await pool.putconn(pinned)
        conn = self._pinned
        if conn is None:
            conn = self._pinned = await pool.getconn()
        try:
            yield conn
        except BaseException:
            self._pinned = None
            await pool.putconn(conn)
            raise

    async def _run_one(self, write: Write) -> list[Row]:
        return await write.client.run(
            write.what, "", write.params, idempotent=False, sql=write.query, connection=self.writer
        )

    async def run_batch(self, writes: list[Write]) -> Sequence[list[Row] | BaseException]:
        """Run ``writes`` in one transaction, one round trip (pipeline mode).

        Each write is its own statement and reports its own outcome in its rows (the
        fenced saves return "fence failed" or "no version" instead of raising), so one
        fenced-out or conflicting save does not touch the others. If the transaction fails
        as a whole (a statement error, a deadlock), nothing of it committed, and each write
        runs again alone to get its own result. If the connection is lost, the outcome of
        the COMMIT is unknown: every write fails with StoreUnavailableError.
        """
        assert self.pool is not None
        order = sorted(range(len(writes)), key=lambda i: writes[i].order)
        try:
            async with self.writer() as conn:
                rows = await _pipelined(conn, [writes[i] for i in order])
        except psycopg.Error as exc:
            if not exc.sqlstate or is_connection_loss(exc):
                # No answer from the server (a lost connection, a client-side error): the
                # COMMIT's outcome is unknown, so nothing may run again blindly.
                return [write.client.translate(exc, write.what) for write in writes]
            # The server refused the transaction: nothing of it committed. Each write runs
            # again alone, one after the other (they share the writer's connection).
            log.debug(
                "a group commit of %d writes failed (%s); running each alone", len(writes), exc
            )
            again: list[list[Row] | BaseException] = [[] for _ in writes]
            for index in order:
                try:
                    again[index] = await self._run_one(writes[index])
                except Exception as error:  # that write's own outcome
                    again[index] = error
            return again
        outcomes: list[list[Row] | BaseException] = [[] for _ in writes]
        for position, index in enumerate(order):
            outcomes[index] = rows[position]
        return outcomes

    @property
    def lingering(self) -> bool:
        """Whether the engine waits, unreferenced, to be taken again or closed."""
        return self._lingering is not None

    def linger(self, seconds: float) -> None:
        """Close in ``seconds`` unless :meth:`revive` comes first (no reference left)."""
        self._lingering = asyncio.get_running_loop().create_task(
            self._close_after(seconds),
            name=f"durably: idle PostgreSQL engine ({seconds:g} s)",
            context=contextvars.Context(),  # not the closing task's: it keeps nothing alive
        )

    def revive(self) -> None:
        """A provider takes the engine: if it lingers, it stays open, and its schemas are
        checked again by that provider (upgraded or dropped meanwhile, as for a new one)."""
        task, self._lingering = self._lingering, None
        if task is not None:
            task.cancel()
            self.schemas.clear()

    async def _close_after(self, seconds: float) -> None:
        # Time is up, or the loop shuts down: asyncio.run (and asyncio.Runner, asgiref,
        # pytest-asyncio) cancel the loop's tasks and run them to their end, so the engine
        # closes here, in its loop, before that ends. Not when revived meanwhile. (A loop
        # closed with this wait pending closes the coroutine instead, GeneratorExit: nothing
        # runs; see _forget_closed_loops.)
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            await self._close_lingering(loop_ending=True)
            raise
        await self._close_lingering(loop_ending=False)

    async def _close_lingering(self, *, loop_ending: bool) -> None:
        if self._lingering is not asyncio.current_task():
            return  # revived: a provider holds the engine again
        self._lingering = None
        _forget(self)
        if self.pid != os.getpid():
            return  # a forked child runs the parent's loop: these are the parent's sessions
        await self.close(loop_ending=loop_ending)

    def lock_session(self, connect: Callable[[], Awaitable[AsyncConn]]) -> OwnerLockSession:
        """The session that holds this engine's owner locks (made on first use)."""
        if self.owner_locks is None:
            self.owner_locks = OwnerLockSession(connect)
        return self.owner_locks

    async def close(self, *, loop_ending: bool = False) -> None:
        """Close the pool and the idle owner-lock session (see :func:`release`).

        ``loop_ending``: this task is cancelled, as the event loop's shutdown cancels every
        task, the pool's workers included; ``pool.close()`` would stop at waiting for
        them (their cancellation) before closing its connections, so they are closed
        first (``drain``), and that cancellation, which is not this task's, is not
        re-raised.
        """
        try:
            await self.committer.wait_idle()
            pinned, self._pinned = self._pinned, None
            if pinned is not None and self.pool is not None:
                await self.pool.putconn(pinned)
            if self.owner_locks is not None:
                await self.owner_locks.close_when_unused()
            if self.pool is not None:
                if not loop_ending:
                    await self.pool.close()
                else:
                    await self.pool.drain()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self.pool.close()
        finally:
            self.closed.set()


async def _pipelined(conn: AsyncConn, writes: list[Write]) -> list[list[Row]]:
    async with conn.pipeline(), conn.transaction():
        cursors = [await conn.execute(w.query, w.params, binary=True) for w in writes]
    return [await cursor.fetchall() for cursor in cursors]


_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[EngineKey, Engine]] = (
    weakref.WeakKeyDictionary()
)
_inherited: list[object] = []
"""Engines of the parent process, after a fork: kept referenced so that their connections
(the parent's sockets) are never closed from the child."""


def _after_fork_in_child() -> None:
    _inherited.append(dict(_engines))
    _engines.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


async def acquire(
    key: EngineKey,
    schema: str,
    prepare: Callable[[Engine, bool], Awaitable[None]],
) -> Engine:
    """Take a reference on the engine of ``key`` in this event loop (made if needed).

    ``prepare(engine, need_pool)`` checks (migrates) ``schema`` and, if ``need_pool``,
    opens the pool; it runs once per engine and schema, under the engine's lock.
    """
    _forget_closed_loops()
    engines = _engines.setdefault(asyncio.get_running_loop(), {})
    engine = engines.get(key)
    if engine is None:
        engine = engines[key] = Engine(key)
    engine.revive()
    engine.refs += 1
    try:
        if schema not in engine.schemas or engine.pool is None:
            async with engine.opening:
                if schema not in engine.schemas or engine.pool is None:
                    await prepare(engine, engine.pool is None)
                    engine.schemas.add(schema)
    except BaseException:
        await release(engine)
        raise
    return engine


async def release(engine: Engine, linger: float = 0.0) -> None:
    """Drop a reference (in the engine's own loop). The last one closes the engine's pool
    and idle lock session, at once or after ``linger`` seconds in which no provider took
    the engine again (:meth:`Engine.linger`)."""
    engine.refs -= 1
    if engine.refs > 0:
        return
    task = asyncio.current_task()
    # A task being cancelled closes at once: asyncio.run's shutdown cancels the loop's
    # tasks once, and a wait started by one of them then would outlive the loop; and the
    # pool's workers may be cancelled with it (Engine.close's loop_ending).
    cancelled = task is not None and task.cancelling() > 0
    if linger > 0 and engine.pool is not None and not engine.pool.closed and not cancelled:
        engine.linger(linger)
        return
    _forget(engine)
    await engine.close(loop_ending=cancelled)


def _forget_closed_loops() -> None:
    """Drop the engines of event loops that were closed with an engine still open.

    Such a loop was closed without cancelling its tasks (``loop.close()`` after
    ``run_until_complete``, not ``asyncio.run``), with a lingering engine or a provider
    never closed. The engine's tasks refer to the loop, which keeps the loop's entry in
    :data:`_engines` alive: dropped here, the engine, its tasks and its connections are
    left to the garbage collector (which closes the sockets; asyncio reports the pending
    tasks destroyed). Nothing can close them properly once their loop is closed.
    """
    try:
        closed = [loop for loop in _engines if loop.is_closed()]
    except RuntimeError:  # another thread's loop changed the mapping: sweep next time
        return
    for loop in closed:
        _engines.pop(loop, None)


def _forget(engine: Engine) -> None:
    loop = engine.loop
    engines = _engines.get(loop, {}) if loop is not None else {}
    if engines.get(engine.key) is engine:
        del engines[engine.key]


def abandon(engine: Engine) -> None:
    """Drop a reference on an engine that is not :meth:`~Engine.is_current`.

    The parent's engine, in a forked child: nothing is done -- its connections are the
    parent's (psycopg does not close a connection in a process that did not open it).
    Another loop's: released in that loop if it can still run; if it is closed, the
    reference is dropped here, and the last one forgets the engine: its pool's tasks
    ended with the loop, and its connections are closed when collected.
    """
    if engine.pid != os.getpid():
        return
    loop = engine.loop
    if loop is not None and not loop.is_closed():
        asyncio.run_coroutine_threadsafe(release(engine), loop)
        return
    engine.refs -= 1
    if engine.refs <= 0:
        _forget(engine)
