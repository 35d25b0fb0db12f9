"""Typed, secret-free errors; nothing half-written when a statement dies."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from durably.errors import StoreError, StoreUnavailableError
from durably_postgres import PostgresProvider, migrate_async
from durably_postgres.testing import ThrowawayCluster, free_port

MakeStore = Callable[..., PostgresProvider]


def _chain(exc: BaseException | None) -> str:
    """Every message in an exception chain."""
    parts = []
    while exc is not None:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def _url(url: str, **changes: str) -> str:
    """``url`` with user/password/port/dbname changed, as a postgresql:// URL."""
    p = {k: str(v) for k, v in conninfo_to_dict(url).items()}
    p.update(changes)
    auth = p.get("user", "postgres") + (f":{p['password']}" if p.get("password") else "")
    return (
        f"postgresql://{auth}@{p.get('host', '127.0.0.1')}:{p.get('port', '5432')}/"
        f"{p.get('dbname', 'postgres')}"
    )


@pytest.mark.asyncio
async def test_server_down_is_retried_then_unavailable_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://alice:s3cret@127.0.0.1:{port}/db"
    store = PostgresProvider.from_url(url, {"connect_retries": 2, "connect_timeout": 2})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreUnavailableError) as info:
        await store.save_checkpoint("x", 0, b"x")
    message = str(info.value)
    assert f"postgresql://alice@127.0.0.1:{port}/db (after 3 attempts)" in message
    assert "Is the server running" in message
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2
    assert "s3cret" not in _chain(info.value)
    assert "s3cret" not in caplog.text
    await store.close()


@pytest.mark.asyncio
async def test_missing_database(pg_url: str) -> None:
    url = _url(pg_url, dbname=f"nosuch_{secrets.token_hex(3)}", password="s3cret")
    store = PostgresProvider.from_url(url, {"connect_retries": 3})
    with pytest.raises(StoreUnavailableError, match=r"does not exist\. Create it") as info:
        await store.load_latest_checkpoint("x")
    assert "(after" not in str(info.value)  # a permanent error is not retried
    assert "s3cret" not in _chain(info.value)
    await store.close()


@pytest.mark.asyncio
async def test_unknown_role(pg_url: str) -> None:
    user = f"nobody_{secrets.token_hex(3)}"
    store = PostgresProvider.from_url(_url(pg_url, user=user, password="s3cret"), {})
    with pytest.raises(
        StoreUnavailableError, match=f"authentication failed for user '{user}'"
    ) as info:
        await store.get_lease("x")
    assert "s3cret" not in _chain(info.value)
    await store.close()


@pytest.fixture(scope="module")
def scram_cluster() -> Any:
    reason = ThrowawayCluster.unavailable_reason()
    if reason:
        pytest.skip(f"needs a throwaway cluster with password authentication: {reason}")
    with ThrowawayCluster(auth="scram-sha-256", password="right-pw") as cluster:
        yield cluster


@pytest.mark.asyncio
async def test_wrong_password(
    scram_cluster: ThrowawayCluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = _url(scram_cluster.url, password="s3cret")
    store = PostgresProvider.from_url(wrong, {"connect_retries": 3})
    with pytest.raises(
        StoreUnavailableError, match="authentication failed for user 'postgres'"
    ) as info:
        await store.save_checkpoint("x", 0, b"x")
    assert "(after" not in str(info.value)
    assert "s3cret" not in _chain(info.value)
    assert "s3cret" not in caplog.text
    await store.close()
    right = PostgresProvider.from_url(scram_cluster.url, {})
    try:
        await right.save_checkpoint("x", 0, b"with the right password")
        assert (await right.load_checkpoint("x", 0)).data == b"with the right password"
    finally:
        await right.close()


@pytest.fixture
def limited_role(pg_url: str) -> Any:
    """A LOGIN role with no privileges beyond PUBLIC's (skipped if we cannot create one)."""
    role = f"durably_limited_{secrets.token_hex(3)}"
    try:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'pw'")
    except psycopg.Error as exc:
        pytest.skip(f"cannot create a role for the permission test: {exc}")
    yield role
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP OWNED BY "{role}"')
        conn.execute(f'DROP ROLE "{role}"')


@pytest.mark.asyncio
async def test_permission_denied_says_what_to_grant(
    pg_url: str,
    pg_schema: str,
    limited_role: str,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    url = _url(pg_url, user=limited_role, password="pw")
    store = PostgresProvider.from_url(url, {"schema": pg_schema})
    with pytest.raises(StoreError, match="permission denied") as info:
        await store.save_checkpoint("x", 0, b"x")  # may not create the schema
    assert "durably migrate" in str(info.value)
    await store.close()

    await migrate_async(pg_url, {"schema": pg_schema})  # by the owner
    store = PostgresProvider.from_url(url, {"schema": pg_schema})
    with pytest.raises(StoreError, match=r"permission denied.*Grant the role USAGE on schema"):
        await store.save_checkpoint("x", 0, b"x")
    await store.close()

    s = f'"{pg_schema}"'
    for grant in (
        f'GRANT USAGE ON SCHEMA {s} TO "{limited_role}"',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO "{limited_role}"',
        f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA {s} TO "{limited_role}"',
    ):
        await admin.execute(grant)
    store = PostgresProvider.from_url(url, {"schema": pg_schema, "migrate": False})
    try:
        lease = await store.claim("x", "me", ttl=30)
        await store.save_checkpoint("x", 0, b"least privilege is enough", lease=lease)
        assert (await store.load_checkpoint("x", 0)).data == b"least privilege is enough"
    finally:
        await store.close()


async def _wait_for_lock_wait(admin: psycopg.AsyncConnection[Any], app: str) -> int:
    """The pid of the backend of ``app`` once it waits for a lock."""
    for _ in range(500):
        cur = await admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
            " AND wait_event_type = 'Lock'",
            (app,),
        )
        row = await cur.fetchone()
        if row:
            return int(row[0])
        await asyncio.sleep(0.01)
    raise AssertionError("the save never waited for the lock")


async def _checkpoint_rows(
    admin: psycopg.AsyncConnection[Any], schema: str, execution_id: str
) -> list[int]:
    cur = await admin.execute(
        f'SELECT seq FROM "{schema}".checkpoints WHERE execution_id = %s ORDER BY seq',
        (execution_id,),
    )
    return [row[0] for row in await cur.fetchall()]


@pytest.mark.asyncio
async def test_connection_lost_mid_statement_leaves_nothing(
    pg_url: str,
    pg_schema: str,
    make_store: MakeStore,
) -> None:
    """The backend is killed after the statement inserted the checkpoint row (it then
    waits for the execution row, locked by another transaction): nothing survives."""
    app = f"durably-kill-{secrets.token_hex(3)}"
    store = make_store(application_name=app, pool_min_size=1, pool_max_size=1)
    await store.save_checkpoint("big", 0, b"small first")
    payload = os.urandom(8 * 1024 * 1024)  # incompressible
    async with (
        await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin,
        await psycopg.AsyncConnection.connect(pg_url) as locker,
    ):
        await locker.execute(
            f'SELECT 1 FROM "{pg_schema}".executions WHERE id = %s FOR UPDATE', ("big",)
        )
        save = asyncio.create_task(store.save_checkpoint("big", 1, payload))
        pid = await _wait_for_lock_wait(admin, app)
        cur = await admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
        assert await cur.fetchone() == (True,)
        with pytest.raises(StoreUnavailableError, match="lost the connection") as info:
            await save
        assert "committed entirely or not at all" in str(info.value)
        await locker.rollback()
        assert await _checkpoint_rows(admin, pg_schema, "big") == [0]
    # The pool replaces the dead connection; the store works on.
    await store.save_checkpoint("big", 1, payload)
    assert (await store.load_checkpoint("big", 1)).data == payload


@pytest.mark.asyncio
async def test_statement_timeout_cancels_and_leaves_nothing(
    pg_url: str,
    pg_schema: str,
    make_store: MakeStore,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    store = make_store(statement_timeout=0.2)
    lease = await store.claim("slow", "me", ttl=60)
    await store.save_checkpoint("slow", 0, b"x", lease=lease)
    async with await psycopg.AsyncConnection.connect(pg_url) as locker:
        await locker.execute(
            f'SELECT 1 FROM "{pg_schema}".executions WHERE id = %s FOR UPDATE', ("slow",)
        )
        for mode_lease in (None, lease):
            with pytest.raises(StoreError, match=r"cancelled.*nothing was written"):
                await store.save_checkpoint("slow", 1, b"y" * 100_000, lease=mode_lease)
        await locker.rollback()
    assert await _checkpoint_rows(admin, pg_schema, "slow") == [0]


@pytest.mark.asyncio
async def test_a_dropped_schema_is_reported(
    pg_url: str,
    pg_schema: str,
    make_store: MakeStore,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    store = make_store()
    await store.save_checkpoint("x", 0, b"x")
    await admin.execute(f'DROP SCHEMA "{pg_schema}" CASCADE')
    with pytest.raises(StoreError, match=r"tables are missing.*durably migrate"):
        await store.load_checkpoint("x", 0)


@pytest.mark.asyncio
async def test_a_terminated_idle_connection_is_replaced(
    make_store: MakeStore,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    """A server restart or an idle timeout kills pooled connections; the next write must
    not fail on one (the pool check spots it without a round trip)."""
    app = f"durably-idle-{secrets.token_hex(3)}"
    store = make_store(application_name=app, pool_min_size=1, pool_max_size=1)
    await store.save_checkpoint("idle", 0, b"x")
    cur = await admin.execute(
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s",
        (app,),
    )
    assert await cur.fetchall() == [(True,)]
    await store.save_checkpoint("idle", 1, b"after the kill")
    assert (await store.load_checkpoint("idle", 1)).data == b"after the kill"


@pytest.mark.asyncio
async def test_a_closed_store_refuses_work(make_store: MakeStore) -> None:
    store = make_store()
    await store.save_checkpoint("x", 0, b"x")
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="is closed"):
        await store.load_checkpoint("x", 0)
    never_used = make_store()
    await never_used.close()
    with pytest.raises(StoreError, match="is closed"):
        await never_used.load_checkpoint("x", 0)
