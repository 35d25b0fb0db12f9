"""Group commit and bounded connections on PostgreSQL (``durably_postgres._engine``).

Providers of one process on the same server share one pool, one owner-lock session and
one group committer. Saves that queue while another is in flight are written in one
transaction, each still its own fenced statement: a fenced-out save, a seq conflict or a
failed statement fails only its own item, and the others commit.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from collections.abc import Awaitable
from gc import collect
from typing import Any

import psycopg
import pytest
from test_pg_provider import MakeStore, _wait_until_blocked

from durably.errors import (
    AlreadyExistsError,
    FencedError,
    OwnerLockLostError,
    PreconditionFailedError,
    StoreError,
    StoreUnavailableError,
)
from durably.storage import ExpectedVersion
from durably_postgres import PostgresProvider
from durably_postgres._engine import Engine, _engines
from durably_postgres._ownerlocks import OwnerLockSession


def _engine(store: PostgresProvider) -> Engine:
    engine = store._db.engine
    assert engine is not None
    return engine


class Batching:
    """A store of this test, and a way to make saves queue up into one batch."""

    def __init__(
        self,
        make_store: MakeStore,
        admin: psycopg.AsyncConnection[Any],
        url: str,
        schema: str,
        **options: Any,
    ) -> None:
        self.app = f"durably-gc-{secrets.token_hex(3)}"
        self.store = make_store(application_name=self.app, **options)
        self.admin, self.url, self.schema = admin, url, schema

    async def batched(self, queued: list[Awaitable[Any]]) -> list[Any]:
        """Run ``queued`` while a save of execution ``blocker`` is in flight (held up by
        a row lock), so that they all queue and go out as one batch; their outcomes."""
        store = self.store
        lease = await store.claim("blocker", "me", ttl=60)
        async with await psycopg.AsyncConnection.connect(self.url) as holder:
            await holder.execute(
                f'UPDATE "{self.schema}".executions SET updated_at = now() WHERE id = %s',
                ("blocker",),
            )
            first = asyncio.create_task(store.save_checkpoint("blocker", 0, b"1", lease=lease))
            await _wait_until_blocked(self.admin, self.app)
            tasks = [asyncio.ensure_future(item) for item in queued]
            for _ in range(100):
                if _engine(store).committer.pending == len(queued):
                    break
                await asyncio.sleep(0.01)
            assert _engine(store).committer.pending == len(queued)
            await holder.rollback()
        await first
        return await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
def gc(
    make_store: MakeStore, admin: psycopg.AsyncConnection[Any], pg_url: str, pg_schema: str
) -> Batching:
    return Batching(make_store, admin, pg_url, pg_schema)


@pytest.mark.asyncio
async def test_a_fenced_out_save_fails_alone_in_its_batch(gc: Batching) -> None:
    store = gc.store
    leases = {eid: await store.claim(eid, "me", ttl=60) for eid in ("a", "b", "c")}
    stale = leases["b"]
    await store.claim("b", "me", ttl=60)  # a new epoch: `stale` is fenced out
    outcomes = await gc.batched(
        [
            store.save_checkpoint("a", 0, b"a0", lease=leases["a"]),
            store.save_checkpoint("b", 0, b"b0", lease=stale),
            store.save_checkpoint("c", 0, b"c0", lease=leases["c"]),
        ],
    )
    committer = _engine(store).committer
    assert committer.batches == 1
    assert committer.largest_batch == 3
    assert isinstance(outcomes[1], FencedError)
    assert (await store.load_checkpoint("a", 0)).data == b"a0"
    assert (await store.load_checkpoint("c", 0)).data == b"c0"
    assert outcomes[0].version == (await store.load_checkpoint("a", 0)).info.version
    assert await store.load_latest_checkpoint("b") is None  # the fenced save wrote nothing


@pytest.mark.asyncio
async def test_seq_conflicts_fail_alone_in_their_batch(gc: Batching) -> None:
    store = gc.store
    lease = await store.claim("x", "me", ttl=60)
    await store.save_checkpoint("x", 0, b"there", lease=lease)
    first = await store.save_checkpoint("x", 1, b"v1", lease=lease)
    outcomes = await gc.batched(
        [
            store.save_checkpoint("x", 0, b"again", lease=lease),  # create: exists
            store.save_checkpoint("x", 1, b"v2", mode=ExpectedVersion("999999"), lease=lease),
            store.save_checkpoint("x", 2, b"new", lease=lease),
            store.save_checkpoint("y", 0, b"unleased"),
        ],
    )
    assert _engine(store).committer.largest_batch == 4
    assert isinstance(outcomes[0], AlreadyExistsError)
    assert isinstance(outcomes[1], PreconditionFailedError)
    assert (await store.load_checkpoint("x", 0)).data == b"there"
    loaded = await store.load_checkpoint("x", 1)
    assert (loaded.data, loaded.info.version) == (b"v1", first.version)
    assert (await store.load_checkpoint("x", 2)).data == b"new"
    assert (await store.load_checkpoint("y", 0)).data == b"unleased"


@pytest.mark.asyncio
async def test_a_failing_statement_fails_alone_and_the_batch_is_rerun(gc: Batching) -> None:
    """A statement error aborts the batch's transaction: nothing of it committed, and
    every write runs again alone, so the others still commit."""
    store = gc.store
    lease = await store.claim("z", "me", ttl=60)
    await store.save_checkpoint("z", 0, b"warm", lease=lease)  # connects
    db = store._db
    outcomes = await gc.batched(
        [
            store.save_checkpoint("z", 1, b"z1", lease=lease),
            db.run_write("dividing", "SELECT 1 / 0", {}),
            store.save_checkpoint("w", 0, b"w0"),
        ],
    )
    assert _engine(store).committer.largest_batch == 3
    assert isinstance(outcomes[1], StoreError)
    assert "division by zero" in str(outcomes[1])
    assert not isinstance(outcomes[0], BaseException)
    assert (await store.load_checkpoint("z", 1)).data == b"z1"
    assert (await store.load_checkpoint("w", 0)).data == b"w0"


@pytest.mark.asyncio
async def test_two_failing_statements_in_a_batch_each_fail_alone_and_the_pool_stays_whole(
    gc: Batching,
) -> None:
    """The rerun after a failed batch runs the writes one after the other on the writer's
    connection: run at once, the first failure handed the shared connection back while
    the others still used it (a raw ValueError from the pool), and connections leaked."""
    store = gc.store
    lease = await store.claim("v", "me", ttl=60)
    await store.save_checkpoint("v", 0, b"warm", lease=lease)  # connects
    db = store._db
    outcomes = await gc.batched(
        [
            db.run_write("dividing", "SELECT 1 / 0", {}),
            store.save_checkpoint("v", 1, b"v1", lease=lease),
            db.run_write("dividing again", "SELECT 2 / 0", {}),
            store.save_checkpoint("u", 0, b"u0"),
        ],
    )
    assert _engine(store).committer.largest_batch == 4
    for failed in (outcomes[0], outcomes[2]):
        assert isinstance(failed, StoreError), failed
        assert "division by zero" in str(failed)
    assert not isinstance(outcomes[1], BaseException)
    assert not isinstance(outcomes[3], BaseException)
    assert (await store.load_checkpoint("v", 1)).data == b"v1"
    assert (await store.load_checkpoint("u", 0)).data == b"u0"
    pool = _engine(store).pool
    assert pool is not None
    stats = pool.get_stats()
    # every connection is back in the pool but the writer's pinned one
    assert stats["pool_size"] - stats.get("pool_available", 0) <= 1, stats


def _lent(store: PostgresProvider) -> int:
    """Connections of the store's pool lent out and not returned (the pinned one aside)."""
    pool = store._db.pool
    assert pool is not None
    stats = pool.get_stats()
    pinned = 1 if _engine(store)._pinned is not None else 0
    return stats.get("pool_size", 0) - stats.get("pool_available", 0) - pinned


@pytest.mark.asyncio
async def test_a_rerun_batch_leaks_no_connection_under_pool_pressure(
    make_store: MakeStore, admin: psycopg.AsyncConnection[Any], pg_url: str, pg_schema: str
) -> None:
    """A batch that fails as a whole reruns its writes one after another on the
    committer's connection: none takes a connection of its own and keeps it, even while
    other users wait for the pool."""
    gc = Batching(make_store, admin, pg_url, pg_schema, pool_max_size=4)
    store = gc.store
    leases = {eid: await store.claim(eid, "me", ttl=60) for eid in ("a", "b", "c")}
    db = store._db

    stop = asyncio.Event()

    async def reader(i: int) -> int:  # another user of the pool, waiting for connections
        reads = 0
        while not stop.is_set():
            await store.load_latest_checkpoint(f"r-{i}")
            reads += 1
        return reads

    readers = [asyncio.create_task(reader(i)) for i in range(6)]
    try:
        outcomes = await gc.batched(
            [
                *(
                    store.save_checkpoint(eid, 0, eid.encode(), lease=lease)
                    for eid, lease in leases.items()
                ),
                db.run_write("dividing", "SELECT 1 / 0", {}),
            ],
        )
    finally:
        stop.set()
        reads = await asyncio.gather(*readers)
    assert all(reads)
    assert _engine(store).committer.largest_batch == 4
    assert all(not isinstance(o, BaseException) for o in outcomes[:3]), outcomes
    assert isinstance(outcomes[3], StoreError)
    for eid in leases:
        assert (await store.load_checkpoint(eid, 0)).data == eid.encode()
    assert _lent(store) == 0
    pool = store._db.pool
    assert pool is not None
    for _ in range(4):  # the whole pool can still be checked out
        async with pool.connection(timeout=2):
            pass
    held = [await pool.getconn(timeout=2) for _ in range(3)]  # all but the pinned one
    for conn in held:
        await pool.putconn(conn)


async def _connections(admin: psycopg.AsyncConnection[Any], app: str) -> int:
    cur = await admin.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.asyncio
async def test_100_concurrent_executions_stay_within_the_pool_bound(
    make_store: MakeStore, admin: psycopg.AsyncConnection[Any]
) -> None:
    """100 providers (one per execution, as run_program opens them) in one process, each
    taking an owner lock and a lease and saving checkpoints at the same time: at most
    pool_max_size + 1 connections (the pool and the owner-lock session), and saves that
    queued were written together."""
    app = f"durably-bound-{secrets.token_hex(3)}"
    bound = 4
    # pool_linger = 0: the last close closes the engine at once (lingering: its own tests)
    stores = [
        make_store(application_name=app, pool_max_size=bound, pool_linger=0) for _ in range(100)
    ]
    peak = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, await _connections(admin, app))
            await asyncio.sleep(0.005)

    async def execution(store: PostgresProvider, execution_id: str) -> None:
        lock = await store.lock_owner(execution_id)
        assert lock is not None
        lease = await store.claim(execution_id, "me", ttl=60)
        for seq in range(8):
            await store.save_checkpoint(execution_id, seq, b"x" * 100, lease=lease)
        await store.release(lease)
        await lock.release()

    sampler = asyncio.create_task(sample())
    try:
        await asyncio.gather(*(execution(s, f"e-{i:03d}") for i, s in enumerate(stores)))
        engine = _engine(stores[0])
        assert all(s._db.engine is engine for s in stores), "one shared engine"
        assert engine.committer.largest_batch > 1
    finally:
        done.set()
        await sampler
    peak = max(peak, await _connections(admin, app))
    assert 1 <= peak <= bound + 1
    for store in stores:
        assert await store.load_latest_checkpoint("e-000") is not None
        await store.close()
    for _ in range(200):  # the server ends closed sessions asynchronously
        if await _connections(admin, app) == 0:
            break
        await asyncio.sleep(0.01)
    assert await _connections(admin, app) == 0  # the last close closed the pool and session


@pytest.mark.asyncio
async def test_owner_locks_share_one_session_and_survive_its_loss(
    make_store: MakeStore, admin: psycopg.AsyncConnection[Any]
) -> None:
    """The owner locks of a process's executions live on one session; if it is cut, the
    server drops them (their owners look dead, as with a connection each) and the next
    lock opens a new session, where the locks nobody took meanwhile are taken again."""
    app = f"durably-locks-{secrets.token_hex(3)}"
    one, two = make_store(application_name=app), make_store(application_name=app)
    first = await one.lock_owner("a")
    second = await two.lock_owner("b")
    assert first is not None
    assert second is not None
    session = _engine(one).owner_locks
    assert session is not None
    assert session is _engine(two).owner_locks
    conn = session.connection
    assert conn is not None
    assert await two.lock_owner("a") is None  # a second holder in this process
    cur = await admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    assert await cur.fetchone() == (True,)
    for _ in range(200):
        if await one.owner_lock_free("a") and await one.owner_lock_free("b"):
            break
        await asyncio.sleep(0.01)
    assert await one.owner_lock_free("a")
    again = await two.lock_owner("c")
    assert again is not None
    assert session.connection is not conn
    assert not await one.owner_lock_free("c")
    assert not await one.owner_lock_free("a")  # taken again on the new session
    assert not await one.owner_lock_free("b")
    await first.release()
    await second.release()
    assert await one.owner_lock_free("a")
    await again.release()
    assert await one.owner_lock_free("c")


@pytest.mark.asyncio
async def test_lone_saves_reuse_the_committers_connection(
    make_store: MakeStore, admin: psycopg.AsyncConnection[Any]
) -> None:
    """Saves one after the other take no pool checkout each (the committer keeps its
    connection); one the server closed meanwhile is replaced before the next save,
    which succeeds instead of failing on a dead connection."""
    app = f"durably-pin-{secrets.token_hex(3)}"
    store = make_store(application_name=app)
    lease = await store.claim("p", "me", ttl=60)
    await store.save_checkpoint("p", 0, b"first", lease=lease)
    pool = store._db.pool
    assert pool is not None
    requests = pool.get_stats().get("requests_num", 0)
    for seq in range(1, 11):
        await store.save_checkpoint("p", seq, b"again", lease=lease)
    assert pool.get_stats().get("requests_num", 0) == requests  # no checkout per save
    pinned = _engine(store)._pinned
    assert pinned is not None
    cur = await admin.execute("SELECT pg_terminate_backend(%s)", (pinned.info.backend_pid,))
    assert await cur.fetchone() == (True,)
    await asyncio.sleep(0.2)  # the server's FATAL message reaches the socket
    await store.save_checkpoint("p", 11, b"after", lease=lease)
    assert _engine(store)._pinned is not pinned
    assert (await store.load_checkpoint("p", 11)).data == b"after"


@pytest.mark.asyncio
async def test_a_pool_of_one_pins_nothing(make_store: MakeStore) -> None:
    store = make_store(pool_min_size=1, pool_max_size=1)
    lease = await store.claim("one", "me", ttl=60)
    for seq in range(3):
        await store.save_checkpoint("one", seq, b"x", lease=lease)
        assert await store.load_checkpoint("one", seq) is not None  # the pool is free
    assert _engine(store)._pinned is None


# ------------------------------------------------- the owner-lock session, when it is lost


async def _end_session(
    admin: psycopg.AsyncConnection[Any], conn: psycopg.AsyncConnection[Any]
) -> None:
    """End ``conn``'s server session (its locks are free once this returns) and wait until
    its socket has the server's goodbye to read."""
    cur = await admin.execute("SELECT pg_terminate_backend(%s, 5000)", (conn.info.backend_pid,))
    assert await cur.fetchone() == (True,)
    loop = asyncio.get_running_loop()
    readable = loop.create_future()
    fd = conn.fileno()
    loop.add_reader(fd, readable.set_result, None)
    try:
        await readable
    finally:
        loop.remove_reader(fd)


def _lock_session(store: PostgresProvider) -> OwnerLockSession:
    session = _engine(store).owner_locks
    assert session is not None
    return session


@pytest.mark.asyncio
async def test_a_release_does_not_wait_for_the_lock_session_to_reconnect(
    make_store: MakeStore, admin: psycopg.AsyncConnection[Any]
) -> None:
    """While the owner-lock session reconnects (the server slow or down: connecting
    retries with backoff), releasing a lock -- gone with the lost session anyway --
    returns at once instead of waiting for the connect."""
    store = make_store()
    held = await store.lock_owner("a")
    assert held is not None
    session = _lock_session(store)
    real = session._connect
    entered, gate = asyncio.Event(), asyncio.Event()

    async def slow_connect() -> psycopg.AsyncConnection[Any]:
        entered.set()
        await gate.wait()
        return await real()

    session._connect = slow_connect
    conn = session.connection
    assert conn is not None
    await _end_session(admin, conn)
    other = asyncio.create_task(store.lock_owner("b"))
    try:
        await entered.wait()  # connecting
        await asyncio.wait_for(held.release(), timeout=5)
        assert not other.done()
    finally:
        gate.set()
    again = await other
    assert again is not None
    assert await store.owner_lock_free("a")  # released: not taken again on the new session
    await again.release()


@pytest.mark.asyncio
async def test_callers_waiting_for_the_lock_session_share_one_connect_attempt(
    make_store: MakeStore, admin: psycopg.AsyncConnection[Any]
) -> None:
    """Locks asked for while the session is lost and the server unreachable wait for one
    connect attempt (its retries and backoff) together, not for one attempt each in turn;
    each gets its failure as a StoreUnavailableError."""
    store = make_store()
    first = await store.lock_owner("a")
    assert first is not None
    session = _lock_session(store)
    attempts = 0
    entered, gate = asyncio.Event(), asyncio.Event()

    async def unreachable() -> psycopg.AsyncConnection[Any]:
        nonlocal attempts
        attempts += 1
        entered.set()
        await gate.wait()
        raise StoreUnavailableError("cannot connect (after 4 attempts): the server is down")

    real, session._connect = session._connect, unreachable
    conn = session.connection
    assert conn is not None
    await _end_session(admin, conn)
    waiting = [asyncio.create_task(store.lock_owner(eid)) for eid in ("b", "c", "d")]
    await entered.wait()
    gate.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(o, StoreUnavailableError) for o in outcomes), outcomes
    assert attempts == 1
    session._connect = real  # the server is back: the next lock connects
    again = await store.lock_owner("b")
    assert again is not None
    await again.release()
    await first.release()


@pytest.mark.asyncio
async def test_a_lost_lock_session_is_replaced_and_its_locks_taken_again_unless_taken(
    make_store: MakeStore, admin: psycopg.AsyncConnection[Any]
) -> None:
    """When the session holding a process's owner locks is lost, every lock is free on the
    server at once. The next check (the lease heartbeat's ``ensure_held``) opens a new
    session and takes them all again; a lock another process took in between is lost,
    and its execution learns it (OwnerLockLostError) instead of believing it still holds
    it. The others keep theirs."""
    here = make_store(application_name=f"durably-here-{secrets.token_hex(3)}")
    there = make_store(application_name=f"durably-there-{secrets.token_hex(3)}")
    taken = await here.lock_owner("taken")
    kept = await here.lock_owner("kept")
    assert taken is not None
    assert kept is not None
    assert await there.owner_lock_free("other")
    assert _engine(here) is not _engine(there)  # as good as another process
    conn = _lock_session(here).connection
    assert conn is not None
    await _end_session(admin, conn)
    thief = await there.lock_owner("taken")  # found free: "the owner is dead"
    assert thief is not None
    with pytest.raises(OwnerLockLostError, match="could not take the lock back"):
        await taken.ensure_held()
    await kept.ensure_held()  # taken again on a new session
    assert _lock_session(here).connection is not conn
    assert not await there.owner_lock_free("kept")
    assert await there.lock_owner("kept") is None
    await taken.release()  # lost: harmless, and the thief keeps it
    assert not await here.owner_lock_free("taken")
    await thief.release()
    await kept.release()
    assert await there.owner_lock_free("kept")
    assert await there.owner_lock_free("taken")


# ------------------------------------------- engines: per process and event loop, lifetime


def _backend_pids(url: str, app: str) -> set[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchall()
    return {int(row[0]) for row in rows}


def _until_no_connection(url: str, app: str) -> None:
    for _ in range(500):  # the server ends closed sessions asynchronously
        if not _backend_pids(url, app):
            return
        time.sleep(0.01)
    raise AssertionError(f"connections left: {_backend_pids(url, app)}")


async def _use(store: PostgresProvider, execution_id: str) -> tuple[Engine, int]:
    """Save and read a checkpoint, hold the owner lock a moment; the engine and the
    backend pid of one of the pool's connections."""
    lock = await store.lock_owner(execution_id)
    assert lock is not None
    lease = await store.claim(execution_id, "me", ttl=60)
    await store.save_checkpoint(execution_id, 0, b"x", lease=lease)
    assert (await store.load_checkpoint(execution_id, 0)).data == b"x"
    await store.release(lease)
    await lock.release()
    rows = await store._db.run(
        "the backend", "", {}, idempotent=True, sql="SELECT pg_backend_pid()"
    )
    return _engine(store), int(rows[0][0])


def test_a_provider_used_from_a_second_event_loop_uses_that_loops_engine(
    pg_url: str, pg_schema: str
) -> None:
    """A provider used in one ``asyncio.run`` and then in another takes the second loop's
    engine (its own pool) instead of the first loop's, whose pool belongs to a loop that
    is gone; closing it leaves no connection behind."""
    app = f"durably-loops-{secrets.token_hex(3)}"
    store = PostgresProvider.from_url(pg_url, {"schema": pg_schema, "application_name": app})
    first, _ = asyncio.run(_use(store, "one"))
    second, _ = asyncio.run(_use(store, "two"))
    assert second is not first
    assert second.pool is not first.pool
    asyncio.run(store.close())
    del first, second
    collect()  # the first loop's pool: its loop is closed, its connections go with it
    _until_no_connection(pg_url, app)


def test_a_provider_used_in_another_running_loop_releases_the_old_engine_there(
    pg_url: str, pg_schema: str
) -> None:
    """The old engine's loop still runs (it can come back): the reference is released in
    that loop, and the engine closes there once its last user lets go."""
    app = f"durably-loops2-{secrets.token_hex(3)}"
    store = PostgresProvider.from_url(
        pg_url, {"schema": pg_schema, "application_name": app, "pool_linger": 0}
    )
    old_loop, new_loop = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        first, _ = old_loop.run_until_complete(_use(store, "one"))
        second, _ = new_loop.run_until_complete(_use(store, "two"))
        assert second is not first
        old_loop.run_until_complete(first.closed.wait())  # released in its own loop
        assert first.refs == 0
        assert first.pool is not None
        assert first.pool.closed
        new_loop.run_until_complete(store.close())
        assert second.pool is not None
        assert second.pool.closed
    finally:
        old_loop.close()
        new_loop.close()
    _until_no_connection(pg_url, app)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_uses_its_parents_connections(pg_url: str, pg_schema: str) -> None:
    """A provider the parent used, used again in a forked child, takes an engine of the
    child's own: none of the parent's connections (a socket shared by two processes
    garbles both sessions), and the parent's engine keeps working after the child ended."""
    app = f"durably-fork-{secrets.token_hex(3)}"
    # pool_linger = 0: the parent's loop is closed without asyncio.run, which would close
    # a lingering engine (the child's asyncio.run does: its engine lingers, then closes)
    store = PostgresProvider.from_url(
        pg_url, {"schema": pg_schema, "application_name": app, "pool_linger": 0}
    )
    loop = asyncio.new_event_loop()
    try:
        parent, _ = loop.run_until_complete(_use(store, "parent"))
        parents = _backend_pids(pg_url, app)
        assert parents
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            try:
                os.close(reader)
                signal.alarm(60)  # a child that hangs dies, and the parent's read ends

                async def child() -> dict[str, Any]:
                    engine, backend = await _use(store, "child")
                    report = {"same_engine": engine is parent, "backend": backend}
                    await store.close()
                    return report

                try:
                    report: dict[str, Any] = asyncio.run(child())
                except BaseException as exc:  # reported to the parent, which fails
                    report = {"error": repr(exc)}
                os.write(writer, json.dumps(report).encode())
            finally:
                os._exit(0)
        os.close(writer)
        with os.fdopen(reader, "rb") as pipe:
            output = pipe.read()
        os.waitpid(pid, 0)
        report = json.loads(output)
        assert "error" not in report, report
        assert not report["same_engine"]
        assert report["backend"] not in parents
        again, _ = loop.run_until_complete(_use(store, "parent-again"))
        assert again is parent  # the parent's engine, unharmed
        loop.run_until_complete(store.close())
    finally:
        loop.close()
    _until_no_connection(pg_url, app)


@pytest.mark.asyncio
async def test_a_provider_closed_while_it_connects_leaves_no_engine_behind(
    make_store: MakeStore, admin: psycopg.AsyncConnection[Any]
) -> None:
    """close() during the first operation (which connects and checks the schema): the
    operation fails with StoreError, and the reference it was taking is let go of, so
    the engine and its pool close instead of staying open for good."""
    app = f"durably-close-{secrets.token_hex(3)}"
    store = make_store(application_name=app)
    db = store._db
    entered, gate = asyncio.Event(), asyncio.Event()
    real = db.migrate

    async def slow_migrate(*, migrate: bool) -> Any:
        entered.set()
        await gate.wait()
        return await real(migrate=migrate)

    db.migrate = slow_migrate  # type: ignore[method-assign]
    first = asyncio.create_task(store.load_latest_checkpoint("x"))
    await entered.wait()
    await store.close()
    gate.set()
    with pytest.raises(StoreError, match="is closed"):
        await first
    assert db.engine is None
    assert db._engine_key() not in _engines.get(asyncio.get_running_loop(), {})
    for _ in range(200):  # the server ends closed sessions asynchronously
        if await _connections(admin, app) == 0:
            break
        await asyncio.sleep(0.01)
    assert await _connections(admin, app) == 0


@pytest.mark.asyncio
async def test_the_last_close_closes_the_engine_and_a_held_lock_keeps_only_its_session(
    make_store: MakeStore, admin: psycopg.AsyncConnection[Any]
) -> None:
    """Providers share an engine until the last one closes: then its pool closes. An
    owner lock still held then keeps only the lock session open, until it is released."""
    app = f"durably-last-{secrets.token_hex(3)}"
    one = make_store(application_name=app, pool_linger=0)
    two = make_store(application_name=app, pool_linger=0)
    lock = await one.lock_owner("held")
    assert lock is not None
    await two.load_latest_checkpoint("held")
    engine = _engine(one)
    assert _engine(two) is engine
    assert engine.refs == 2
    await one.close()
    assert engine.pool is not None
    assert not engine.pool.closed
    await two.close()
    assert engine.refs == 0
    assert engine.pool.closed
    assert engine.key not in _engines.get(asyncio.get_running_loop(), {})
    session = engine.owner_locks
    assert session is not None
    conn = session.connection
    assert conn is not None
    assert not conn.closed  # the lock is still held
    await lock.release()
    assert conn.closed
    for _ in range(200):  # the server ends closed sessions asynchronously
        if await _connections(admin, app) == 0:
            break
        await asyncio.sleep(0.01)
    assert await _connections(admin, app) == 0
