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
import os
import secrets
import time
from typing import Any

import psycopg
import pytest
from test_pg_group_commit import _backend_pids, _engine, _until_no_connection, _use
from test_pg_provider import MakeStore

from durably_postgres import PostgresProvider
from durably_postgres._engine import Engine, _engines


@pytest.mark.asyncio
async def test_the_next_provider_takes_the_lingering_engine_with_its_connections(
    make_store: MakeStore, pg_url: str
) -> None:
    app = f"durably-linger-{secrets.token_hex(3)}"
    first = make_store(application_name=app)
    await _use(first, "one")
    engine = _engine(first)
    await first.close()
    assert engine.refs == 0
    assert engine.lingering
    assert engine.pool is not None
    assert not engine.pool.closed
    before = await asyncio.to_thread(_backend_pids, pg_url, app)
    assert before  # the pool's connections and the owner-lock session are still open

    second = make_store(application_name=app)
    await _use(second, "two")
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
    await _use(store, "one")
    engine = _engine(store)
    await store.close()
    assert engine.lingering
    await asyncio.wait_for(engine.closed.wait(), timeout=10)
    assert not engine.lingering
    assert engine.pool is not None
    assert engine.pool.closed
    assert engine.key not in _engines.get(asyncio.get_running_loop(), {})
    await asyncio.to_thread(_until_no_connection, pg_url, app)

    again = make_store(application_name=app, pool_linger=0.2)  # a new engine connects
    await _use(again, "two")
    assert _engine(again) is not engine


@pytest.mark.asyncio
async def test_a_provider_that_takes_the_engine_back_outlives_the_old_deadline(
    make_store: MakeStore,
) -> None:
    """The timer of the first close is cancelled when a provider takes the engine again:
    it never closes an engine in use, however long that use lasts."""
    store = make_store(pool_linger=0.2)
    await _use(store, "one")
    engine = _engine(store)
    await store.close()
    taker = make_store(pool_linger=0.2)
    await taker.load_latest_checkpoint("one")
    assert _engine(taker) is engine
    await asyncio.sleep(0.5)  # well past the first deadline
    assert not engine.closed.is_set()
    assert engine.pool is not None
    assert not engine.pool.closed
    await _use(taker, "two")
    await taker.close()
    await asyncio.wait_for(engine.closed.wait(), timeout=10)


@pytest.mark.asyncio
async def test_pool_linger_0_closes_the_engine_with_its_last_provider(
    make_store: MakeStore, pg_url: str
) -> None:
    app = f"durably-linger-0-{secrets.token_hex(3)}"
    store = make_store(application_name=app, pool_linger=0)
    await _use(store, "one")
    engine = _engine(store)
    await store.close()
    assert engine.closed.is_set()
    assert not engine.lingering
    await asyncio.to_thread(_until_no_connection, pg_url, app)


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
        await _use(store, "one")
        engines.append(_engine(store))
        await store.close()
        assert engines[0].lingering

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    engine = engines[0]
    assert engine.closed.is_set()
    assert engine.pool is not None
    assert engine.pool.closed
    _until_no_connection(pg_url, app)
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
    await _use(store, "one")
    engine = _engine(store)
    await store.close()
    old = await asyncio.to_thread(_backend_pids, pg_url, app)
    assert old
    await admin.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s",
        (app,),
    )
    await asyncio.to_thread(_until_no_connection, pg_url, app)

    again = make_store(application_name=app)
    await _use(again, "two")
    assert _engine(again) is engine
    now = await asyncio.to_thread(_backend_pids, pg_url, app)
    assert now
    assert not now & old


def test_a_store_closed_by_a_task_cancelled_at_shutdown_does_not_linger_past_the_loop(
    pg_url: str, pg_schema: str
) -> None:
    """An execution still running when ``main()`` returns is cancelled by asyncio.run's
    shutdown, and closes its provider in a ``finally``. A wait started then would not be
    cancelled (the shutdown cancels the tasks it found once): the engine closes at once."""
    app = f"durably-linger-shut-{secrets.token_hex(3)}"
    engines: list[Engine] = []

    async def execution(store: PostgresProvider, started: asyncio.Event) -> None:
        try:
            await _use(store, "bg")
            engines.append(_engine(store))
            started.set()
            await asyncio.sleep(3600)  # waiting for the LLM, the user, a timer
        finally:
            await store.close()

    async def main() -> None:
        store = PostgresProvider.from_url(
            pg_url, {"schema": pg_schema, "application_name": app, "pool_linger": 3600}
        )
        started = asyncio.Event()
        asyncio.get_running_loop().create_task(execution(store, started))
        await started.wait()  # main returns while the execution still runs

    asyncio.run(main())
    assert engines[0].closed.is_set()
    assert not engines[0].lingering
    _until_no_connection(pg_url, app)


@pytest.mark.asyncio
async def test_the_schema_is_checked_again_when_the_engine_is_taken_again(
    make_store: MakeStore, pg_url: str, pg_schema: str
) -> None:
    """Between two executions the schema may change behind the process's back: upgraded
    by a newer durably, or dropped. The provider that takes the lingering engine checks
    it again (on a pooled connection), as a provider of a new engine does."""
    from durably.errors import StoreError
    from durably_postgres import SCHEMA_VERSION

    first = make_store()
    await first.save_checkpoint("x", 0, b"x")
    engine = _engine(first)
    await first.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            f'INSERT INTO "{pg_schema}".schema_version (version, description) VALUES (%s, %s)',
            (SCHEMA_VERSION + 1, "from a newer durably"),
        )
    newer = make_store()
    with pytest.raises(StoreError, match="newer than"):
        await newer.save_checkpoint("x", 1, b"y")

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{pg_schema}" CASCADE')
    again = make_store()
    await again.save_checkpoint("x", 0, b"z")  # created again, as on first use
    assert (await again.load_checkpoint("x", 0)).data == b"z"
    assert engine.closed.is_set()  # the refused check closed the old engine


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_running_the_parents_loop_leaves_its_lingering_engine_alone(
    pg_url: str, pg_schema: str
) -> None:
    """Python lets a forked child run the event loop it inherited. The parent's lingering
    engine's timer may fire there: it must not close the parent's sessions (a socket
    shared by two processes)."""
    import signal

    app = f"durably-linger-fork-{secrets.token_hex(3)}"
    store = PostgresProvider.from_url(
        pg_url, {"schema": pg_schema, "application_name": app, "pool_linger": 0.3}
    )
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_use(store, "parent"))
        engine = _engine(store)
        loop.run_until_complete(store.close())
        assert engine.lingering
        before = _backend_pids(pg_url, app)
        assert before
        pid = os.fork()
        if pid == 0:  # the child: unrelated asyncio work on the inherited loop
            try:
                signal.alarm(30)
                loop.run_until_complete(asyncio.sleep(1.0))  # past the timer
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(0.2)
        assert _backend_pids(pg_url, app) == before  # every session of the parent is alive
        again = PostgresProvider.from_url(
            pg_url, {"schema": pg_schema, "application_name": app, "pool_linger": 0}
        )
        loop.run_until_complete(_use(again, "parent-again"))
        assert _engine(again) is engine  # and still works
        loop.run_until_complete(again.close())
    finally:
        loop.close()


# psycopg_pool's worker tasks, pending in the closed loop, are reported as they are
# collected: that is what the docs say happens to such a loop's engine.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_the_engine_of_a_loop_closed_without_cancelling_is_dropped_by_the_next_provider(
    pg_url: str, pg_schema: str
) -> None:
    """``loop.close()`` without asyncio.run's cancellation: nothing can close a lingering
    engine properly any more. The next provider (in another loop) drops it, and the
    garbage collector closes its connections."""
    import gc

    app = f"durably-linger-plain-{secrets.token_hex(3)}"
    options = {"schema": pg_schema, "application_name": app}
    store = PostgresProvider.from_url(pg_url, options)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_use(store, "one"))
    loop.run_until_complete(store.close())
    loop.close()
    assert loop in _engines

    async def next_use() -> None:
        other = PostgresProvider.from_url(pg_url, {**options, "pool_linger": 0})
        await _use(other, "two")
        await other.close()

    asyncio.run(next_use())
    assert loop not in _engines
    del loop, store
    gc.collect()
    _until_no_connection(pg_url, app)
