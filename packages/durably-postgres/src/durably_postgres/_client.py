"""The connection to PostgreSQL: connecting, migrating, the pool, one statement at a time.

:class:`PostgresClient` is what the provider's modules talk to. On first use (in each
process and event loop, :meth:`PostgresClient.current_engine`) it connects (retrying
transient failures with exponential backoff), migrates the schema if the options allow it
(:func:`~durably_postgres._migrations.ensure_schema`) and opens a
``psycopg_pool.AsyncConnectionPool`` of autocommit connections, whose ``check`` drops
idle connections the server already closed -- or takes a reference on the one the
process's other providers on the same server already share
(:mod:`durably_postgres._engine`). :meth:`PostgresClient.run_write` hands a write to the
shared group committer. :meth:`PostgresClient.run` runs one
statement (one round trip, one transaction): retried when the server rolled it back
(deadlock, serialization failure) and, if ``idempotent``, after a lost connection;
psycopg errors become durably errors (:mod:`durably_postgres._errors`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from durably.errors import DurablyError, StoreError
from durably.storage import call_with_retries
from durably_postgres import _engine
from durably_postgres._engine import Engine, EngineKey, Write, discard_if_dead
from durably_postgres._errors import (
    connect_error,
    connect_error_is_permanent,
    detail_of,
    is_connection_loss,
    is_rolled_back,
    translate,
)
from durably_postgres._migrations import MigrationReport, ensure_schema, quote_ident
from durably_postgres._options import PostgresOptions, Target
from durably_postgres._ownerlocks import OwnerLockSession
from durably_postgres._sql import Statements, render

__all__ = ["STATEMENT_RETRIES", "AsyncConn", "PostgresClient", "Row"]

log = logging.getLogger("durably.postgres")

STATEMENT_RETRIES = 3
"""Retries of a statement the server rolled back (deadlock, serialization failure) or,
for idempotent operations, of one whose connection broke."""

Row = TupleRow
AsyncConn = psycopg.AsyncConnection[TupleRow]


class PostgresClient:
    """One store's connections to its server (the pool is made on first use).

    Args:
        target: Where to connect (from the URL).
        options: The validated ``[durability.postgres]`` options.
        describe: The store's description, for the "closed" error.
    """

    def __init__(
        self, target: Target, options: PostgresOptions, describe: Callable[[], str]
    ) -> None:
        self.target = target
        self.options = options
        self.schema = options.schema
        self.sql: Statements = render(quote_ident(options.schema), options.lease_clock)
        self._describe = describe
        self._engine: Engine | None = None
        self._closed = False

    @property
    def pool(self) -> AsyncConnectionPool[AsyncConn] | None:
        """The (shared) pool, once the first operation made it."""
        engine = self._engine
        return engine.pool if engine is not None else None

    @property
    def engine(self) -> Engine | None:
        """The engine this client shares with the process's other providers, once used."""
        return self._engine

    def _refuse_closed(self) -> None:
        if self._closed:
            raise StoreError(f"the PostgreSQL store {self._describe()} is closed")

    async def current_engine(self) -> Engine:
        """The engine of this process and event loop (connecting on first use).

        A client used before in another event loop, or in the parent of this forked
        process, takes a reference on this loop's engine and lets go of the other
        (:func:`durably_postgres._engine.abandon`): it never uses another loop's pool or
        the parent's connections. Raises StoreError once :meth:`close` was called.
        """
        engine = self._engine
        if engine is not None and engine.is_current():
            return engine
        self._refuse_closed()
        fresh = await _engine.acquire(self._engine_key(), self.schema, self._prepare)
        engine = self._engine
        if self._closed or (engine is not None and engine.is_current()):
            # Closed meanwhile, or another task of this loop took the reference first.
            await _engine.release(fresh)
            self._refuse_closed()
            assert engine is not None
            return engine
        self._engine = fresh
        if engine is not None:
            _engine.abandon(engine)
        return fresh

    async def connect(self) -> AsyncConn:
        """One connection, retrying transient failures with exponential backoff."""
        attempts = self.options.connect_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await psycopg.AsyncConnection.connect(
                    self.target.conninfo(), autocommit=True
                )
            except psycopg.Error as exc:
                if connect_error_is_permanent(exc) or attempt == attempts:
                    raise connect_error(exc, self.target, attempt) from exc
                delay = min(5.0, 0.2 * 2 ** (attempt - 1)) * (0.5 + random.random())
                log.warning(
                    "cannot connect to %s (%s); retrying in %.1f s (attempt %d of %d)",
                    self.target.where,
                    detail_of(exc, self.target),
                    delay,
                    attempt,
                    attempts,
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def migrate(self, *, migrate: bool) -> MigrationReport:
        """Check the schema's version; with ``migrate``, create or upgrade it first."""
        conn = await self.connect()
        try:
            return await ensure_schema(conn, self.schema, migrate=migrate)
        except psycopg.Error as exc:
            raise translate(exc, "preparing the schema", self.target, schema=self.schema) from exc
        finally:
            await conn.close()

    def _engine_key(self) -> EngineKey:
        opts = self.options
        return EngineKey(
            self.target.conninfo(),
            opts.pool_min_size,
            opts.pool_max_size,
            opts.pool_timeout,
            opts.prepared_statements,
        )

    async def _prepare(self, engine: Engine, need_pool: bool) -> None:
        """Check (migrate) this client's schema; open the engine's pool if it has none.

        An engine with a pool (taken again after it lingered, or shared with a provider
        of another schema) checks on one of its pooled connections; a new one on a
        connection of its own, before the pool opens (a wrong password or an unreachable
        server fails there, with the connection's own error).
        """
        if engine.pool is not None and not need_pool:
            try:
                async with engine.pool.connection() as conn:
                    await ensure_schema(conn, self.schema, migrate=self.options.migrate)
            except psycopg.Error as exc:
                raise translate(
                    exc, "preparing the schema", self.target, schema=self.schema
                ) from exc
            return
        await self.migrate(migrate=self.options.migrate)
        if not need_pool:
            return
        kwargs: dict[str, Any] = {"autocommit": True}
        if not self.options.prepared_statements:
            kwargs["prepare_threshold"] = None
        pool = AsyncConnectionPool(
            self.target.conninfo(),
            kwargs=kwargs,
            check=discard_if_dead,
            min_size=self.options.pool_min_size,
            max_size=self.options.pool_max_size,
            timeout=self.options.pool_timeout,
            name=f"durably {self.target.where}",
            open=False,
        )
        await pool.open(wait=False)
        engine.pool = pool

    async def ready(self) -> AsyncConnectionPool[AsyncConn]:
        """The pool (connecting and migrating on first use)."""
        engine = await self.current_engine()
        assert engine.pool is not None
        return engine.pool

    async def close(self) -> None:
        """Let go of the shared engine (idempotent); later operations raise StoreError.

        The last provider of the process to let go of it closes its pool, at once or
        after ``pool_linger`` seconds in which no provider took it again (see
        :mod:`durably_postgres._engine`). An engine of another loop or process is let go
        of as :meth:`current_engine` says.
        """
        self._closed = True
        engine, self._engine = self._engine, None
        if engine is None:
            return
        if engine.is_current():
            await _engine.release(engine, linger=self.options.pool_linger)
        else:
            _engine.abandon(engine)

    async def owner_locks(self) -> OwnerLockSession:
        """The session holding this process's owner locks on this server (made on first use)."""
        engine = await self.current_engine()
        return engine.lock_session(self.connect)

    async def run_write(self, what: str, sql: str, params: dict[str, Any]) -> list[Row]:
        """Run a non-idempotent write through the group committer (see
        :mod:`durably_postgres._engine`): alone at once when nothing else is in flight,
        else in the next transaction with the writes that queued meanwhile. Returns once
        its transaction committed."""
        engine = await self.current_engine()
        if self.options.lease_clock == "client":
            params["now"] = time.time()
        return await engine.committer.submit(Write(self, what, sql, params))

    def translate(self, exc: psycopg.Error, what: str) -> DurablyError:
        """The durably error of a psycopg error (no password in it)."""
        return translate(exc, what, self.target, schema=self.schema)

    async def run(
        self,
        what: str,
        name: str,
        params: dict[str, Any],
        *,
        idempotent: bool,
        sql: str | None = None,
        connection: Callable[[], AbstractAsyncContextManager[AsyncConn]] | None = None,
    ) -> list[Row]:
        """Run one statement (one round trip) and return its rows.

        Statements the server rolled back (deadlock, serialization failure) are retried;
        so are ``idempotent`` ones whose connection broke. Errors become durably errors.
        ``connection`` lends the connection to run on (default: a pooled one).
        """
        pool = await self.ready()
        query = sql if sql is not None else self.sql[name]
        if self.options.lease_clock == "client":
            params["now"] = time.time()

        lend = connection or pool.connection

        async def attempt() -> list[Row]:
            async with lend() as conn:
                cur = await conn.execute(query, params, binary=True)
                return await cur.fetchall()

        return await call_with_retries(
            attempt,
            what=what,
            catch=psycopg.Error,
            retryable=lambda exc: is_rolled_back(exc) or (idempotent and is_connection_loss(exc)),
            translate=lambda exc: self.translate(exc, what),
            retries=STATEMENT_RETRIES,
            log=log,
            where=self.target.where,
            describe=lambda exc: detail_of(exc, self.target),
            backoff=lambda n: 0.05 * n * (0.5 + random.random()),
        )
