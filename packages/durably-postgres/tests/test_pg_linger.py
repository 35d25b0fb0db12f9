"""The engine lingers after its last provider closed (``pool_linger``).

An application that runs executions one after another opens and closes a provider for
each; the engine (pool, owner-lock session, checked schemas) stays open ``pool_linger``
seconds so that the next provider takes it again instead of connecting anew. These
tests check that it is taken again with its connections, that it closes when the time
is up or when its loop shuts down, that a stale timer never closes an engine in use, and
that connections the server ended meanwhile are replaced.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import psycopg
import pytest
from test_pg_provider import MakeStore

from durably_postgres import PostgresProvider
from durably_postgres._engine import Engine, _engines


def _engine(store: PostgresProvider) -> Engine:
    engine = store._db.engine
    assert engine is not None
    return engine


def _backend_pids(url: str, app: str) -> set[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchall()
    return {int(row[0]) for row in rows}


async def _until(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _execution(store: PostgresProvider, execution_id: str) -> None:
    """What run_program does with its provider: owner lock, lease, saves, release."""
    lock = await store.lock_owner(execution_id)
    assert lock is not None
    lease = await store.claim(execution_id, "me", ttl=60)
    for seq in range(3):
        await store.save_checkpoint(execution_id, seq, b"x" * 100, lease=lease)
    assert (await store.load_latest_checkpoint(execution_id)) is not None
    await store.release(lease)
    await lock.release()


@pytest.mark.asyncio
async def test_the_next_provider_takes_the_lingering_engine_with_its_connections(
    make_store: MakeStore, pg_url: str
) -> None:
    app = f"durably-linger-{secrets.token_hex(3)}"
    first = make_store(application_name=app)
    await _execution(first, "one")
    engine = _engine(first)
    await first.close()
    assert engine.refs == 0
    assert engine.lingering
    assert engine.pool is not None
    assert not engine.pool.closed
    before = await asyncio.to_thread(_backend_pids, pg_url, app)
    assert before  # the pool's connections and the owner-lock session are still open

    second = make_store(application_name=app)
    await _execution(second, "two")
    assert _engine(second) is engine
    assert not engine.lingering
    # No connection was opened for the second execution: the same server sessions.
    assert await asyncio.to_thread(_backend_pids, pg_url, app) == before
    await second.close()
    assert engine.lingering


@pytest.mark.asyncio
async def test_a_lingering_engine_closes_when_the_time_is_up(
    make_store: MakeStore, pg_url: str
) -> None:
    app = f"durably-linger-up-{secrets.token_hex(3)}"
    store = make_store(application_name=app, pool_linger=0.2)
    await _execution(store, "one")
    engine = _engine(store)
    await store.close()
    assert engine.lingering
    await asyncio.wait_for(engine.closed.wait(), timeout=10)
    assert not engine.lingering
    assert engine.pool is not None
    assert engine.pool.closed
    assert engine.key not in _engines.get(asyncio.get_running_loop(), {})
    await _until(lambda: not _backend_pids(pg_url, app), "the sessions to end")

    again = make_store(application_name=app, pool_linger=0.2)  # a new engine connects
    await _execution(again, "two")
    assert _engine(again) is not engine


@pytest.mark.asyncio
async def test_a_provider_that_takes_the_engine_back_outlives_the_old_deadline(
    make_store: MakeStore,
) -> None:
    """The timer of the first close is cancelled when a provider takes the engine again:
    it never closes an engine in use, however long that use lasts."""
    store = make_store(pool_linger=0.2)
    await _execution(store, "one")
    engine = _engine(store)
    await store.close()
    taker = make_store(pool_linger=0.2)
    await taker.load_latest_checkpoint("one")
    assert _engine(taker) is engine
    await asyncio.sleep(0.5)  # well past the first deadline
    assert not engine.closed.is_set()
    assert engine.pool is not None
    assert not engine.pool.closed
    await _execution(taker, "two")
    await taker.close()
    await asyncio.wait_for(engine.closed.wait(), timeout=10)


@pytest.mark.asyncio
async def test_pool_linger_0_closes_the_engine_with_its_last_provider(
    make_store: MakeStore, pg_url: str
) -> None:
    app = f"durably-linger-0-{secrets.token_hex(3)}"
    store = make_store(application_name=app, pool_linger=0)
    await _execution(store, "one")
    engine = _engine(store)
    await store.close()
    assert engine.closed.is_set()
    assert not engine.lingering
    await _until(lambda: not _backend_pids(pg_url, app), "the sessions to end")


def test_asyncio_run_closes_a_lingering_engine_before_its_loop_ends(
    pg_url: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An hour of linger does not keep connections past ``asyncio.run``: the loop's
    shutdown cancels the wait and the engine closes in that loop, with nothing left
    pending for the garbage collector."""
    app = f"durably-linger-run-{secrets.token_hex(3)}"
    engines: list[Engine] = []

    async def main() -> None:
        store = PostgresProvider.from_url(
            pg_url, {"schema": pg_schema, "application_name": app, "pool_linger": 3600}
        )
        await _execution(store, "one")
        engines.append(_engine(store))
        await store.close()
        assert engines[0].lingering

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    engine = engines[0]
    assert engine.closed.is_set()
    assert engine.pool is not None
    assert engine.pool.closed
    deadline = time.monotonic() + 10
    while _backend_pids(pg_url, app):  # the server ends closed sessions asynchronously
        assert time.monotonic() < deadline, "connections left after asyncio.run"
        time.sleep(0.01)
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not problems, [r.getMessage() for r in problems]


@pytest.mark.asyncio
async def test_connections_the_server_ended_while_lingering_are_replaced(
    make_store: MakeStore, pg_url: str, admin: psycopg.AsyncConnection[Any]
) -> None:
    """An idle engine's sessions can be ended by the server (``idle_session_timeout``, an
    administrator, a restart): the next provider that takes the engine still works, on
    new connections, owner lock included."""
    app = f"durably-linger-cut-{secrets.token_hex(3)}"
    store = make_store(application_name=app)
    await _execution(store, "one")
    engine = _engine(store)
    await store.close()
    old = await asyncio.to_thread(_backend_pids, pg_url, app)
    assert old
    await admin.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s",
        (app,),
    )
    await _until(lambda: not _backend_pids(pg_url, app), "the sessions to end")

    again = make_store(application_name=app)
    await _execution(again, "two")
    assert _engine(again) is engine
    now = await asyncio.to_thread(_backend_pids, pg_url, app)
    assert now
    assert not now & old
