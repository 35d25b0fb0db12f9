"""Schema migrations: created on first use, idempotent, race-free, newer versions refused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

import durably_postgres
from durably.errors import StoreError
from durably_postgres import SCHEMA_VERSION, PostgresProvider, migrate, migrate_async
from durably_postgres.testing import drop_schema, random_schema

ALL = tuple(range(1, SCHEMA_VERSION + 1))

MakeStore = Callable[..., PostgresProvider]
SRC = Path(durably_postgres.__file__).resolve().parents[1]


async def _versions(admin: psycopg.AsyncConnection[Any], schema: str) -> list[int]:
    cur = await admin.execute(f'SELECT version FROM "{schema}".schema_version ORDER BY version')
    return [row[0] for row in await cur.fetchall()]


async def _tables(admin: psycopg.AsyncConnection[Any], schema: str) -> list[str]:
    cur = await admin.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)
    )
    return [row[0] for row in await cur.fetchall()]


@pytest.mark.asyncio
async def test_first_use_creates_the_schema(
    make_store: MakeStore,
    pg_schema: str,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    assert await _tables(admin, pg_schema) == []
    store = make_store()
    assert await store.load_latest_checkpoint("nothing") is None
    assert await _tables(admin, pg_schema) == [
        "blobs",
        "checkpoints",
        "executions",
        "schema_version",
    ]
    assert await _versions(admin, pg_schema) == list(range(1, SCHEMA_VERSION + 1))
    cur = await admin.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = %s ORDER BY 1", (pg_schema,)
    )
    assert [row[0] for row in await cur.fetchall()] == [
        "blobs_pkey",
        "checkpoints_pkey",
        "executions_open_idx",
        "executions_pkey",
        "schema_version_pkey",
    ]


@pytest.mark.asyncio
async def test_migrate_is_idempotent_and_keeps_data(
    pg_url: str,
    pg_schema: str,
    make_store: MakeStore,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    first = await migrate_async(pg_url, {"schema": pg_schema})
    assert (first.before, first.after, first.applied) == (0, SCHEMA_VERSION, ALL)
    store = make_store()
    await store.save_checkpoint("keep", 0, b"still here")
    for _ in range(2):
        again = await migrate_async(pg_url, {"schema": pg_schema})
        assert (again.before, again.after, again.applied) == (SCHEMA_VERSION, SCHEMA_VERSION, ())
    assert await _versions(admin, pg_schema) == list(ALL)
    assert (await make_store().load_checkpoint("keep", 0)).data == b"still here"


def test_sync_migrate(pg_url: str, pg_schema: str) -> None:
    assert migrate(pg_url, {"schema": pg_schema}).applied == ALL
    assert migrate(pg_url, {"schema": pg_schema}).applied == ()


@pytest.mark.asyncio
async def test_concurrent_first_use_on_a_fresh_schema(
    pg_url: str,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    """Several providers (own connections) start at once on a schema that does not exist."""
    for _round in range(4):
        schema = random_schema()
        stores = [PostgresProvider.from_url(pg_url, {"schema": schema}) for _ in range(6)]
        try:
            infos = await asyncio.gather(
                *(store.save_checkpoint(f"race-{i}", 0, b"x") for i, store in enumerate(stores))
            )
            assert len(infos) == 6
            assert await _versions(admin, schema) == list(ALL)
            listed = await stores[0].list_executions()
            assert [e.execution_id for e in listed.items] == [f"race-{i}" for i in range(6)]
        finally:
            for store in stores:
                await store.close()
            drop_schema(pg_url, schema)


_CHILD = """
import json, sys, time
from durably_postgres import migrate
url, schema, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
report = migrate(url, {"schema": schema})
print(json.dumps({"before": report.before, "applied": list(report.applied)}))
"""


def test_two_processes_migrate_a_fresh_schema_at_once(pg_url: str, pg_schema: str) -> None:
    start = time.time() + 1.5  # both children are past their imports by then
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *sys.path])}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, pg_url, pg_schema, str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        results.append(json.loads(out))
    # The advisory lock serializes them: exactly one applied migration 1, the other
    # found it done once it got the lock (or had not even needed it).
    assert sorted(r["applied"] for r in results) == [[], list(ALL)]


@pytest.mark.asyncio
async def test_a_newer_schema_is_refused(
    pg_url: str,
    pg_schema: str,
    make_store: MakeStore,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    await migrate_async(pg_url, {"schema": pg_schema})
    await admin.execute(
        f'INSERT INTO "{pg_schema}".schema_version (version, description) VALUES (%s, %s)',
        (SCHEMA_VERSION + 1, "from the future"),
    )
    with pytest.raises(StoreError, match="Upgrade durably-postgres") as info:
        await make_store().save_checkpoint("x", 0, b"x")
    assert f"version {SCHEMA_VERSION + 1}" in str(info.value)
    with pytest.raises(StoreError, match="Upgrade durably-postgres"):
        await migrate_async(pg_url, {"schema": pg_schema})
    with pytest.raises(StoreError, match="Upgrade durably-postgres"):
        await make_store(migrate=False).get_lease("x")
    assert await _versions(admin, pg_schema) == [*ALL, SCHEMA_VERSION + 1]


@pytest.mark.asyncio
async def test_migrate_false_refuses_a_missing_schema(
    pg_url: str,
    pg_schema: str,
    make_store: MakeStore,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    with pytest.raises(StoreError, match=r"does not exist and automatic migration is off") as e:
        await make_store(migrate=False).save_checkpoint("x", 0, b"x")
    assert "durably migrate" in str(e.value)
    assert await _tables(admin, pg_schema) == []
    await migrate_async(pg_url, {"schema": pg_schema})
    store = make_store(migrate=False)
    await store.save_checkpoint("x", 0, b"x")
    assert (await store.load_checkpoint("x", 0)).data == b"x"


@pytest.mark.asyncio
async def test_an_empty_version_table_is_migrated(
    pg_schema: str,
    make_store: MakeStore,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    """A schema created by hand (or a crash before migration 1 committed) is completed."""
    await admin.execute(f'CREATE SCHEMA "{pg_schema}"')
    await admin.execute(
        f'CREATE TABLE "{pg_schema}".schema_version (version integer PRIMARY KEY,'
        " description text NOT NULL, applied_at timestamptz NOT NULL"
        " DEFAULT now())"
    )
    store = make_store()
    await store.save_checkpoint("x", 0, b"x")
    assert await _versions(admin, pg_schema) == list(ALL)
