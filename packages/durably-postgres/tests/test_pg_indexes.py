"""The provider's hot queries use indexes (checked with EXPLAIN on ~45k rows)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from durably_postgres import PostgresProvider

MakeStore = Callable[..., PostgresProvider]


@pytest.mark.asyncio
async def test_hot_queries_use_index_scans(
    make_store: MakeStore,
    pg_schema: str,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    store = make_store()
    await store.save_checkpoint("seed", 0, b"x")  # creates the schema
    stored = (await store.load_checkpoint("seed", 0)).info
    s = f'"{pg_schema}"'
    # 20,000 executions with one checkpoint each, one with 20,000 checkpoints, 5,000 blobs.
    await admin.execute(
        f"INSERT INTO {s}.executions (id, lease_owner, epoch, lease_expires_at, status)"
        " SELECT 'exec-' || lpad(i::text, 6, '0'), 'w', i, now() + (i % 7 - 3) * interval '1 h',"
        " CASE WHEN i % 3 = 0 THEN 'completed' END FROM generate_series(1, 20000) AS i"
    )
    await admin.execute(f"INSERT INTO {s}.executions (id) VALUES ('hot')")
    await admin.execute(
        f"INSERT INTO {s}.checkpoints (execution_id, seq, version, data, metadata, size)"
        " SELECT 'exec-' || lpad(i::text, 6, '0'), 0, i, %(data)s, '{}'::jsonb, %(size)s"
        " FROM generate_series(1, 20000) AS i"
        " UNION ALL SELECT 'hot', i, i, %(data)s, '{}'::jsonb, %(size)s"
        " FROM generate_series(0, 19999) AS i",
        {"data": b"\x00" * 200, "size": stored.size},
    )
    await admin.execute(
        f"INSERT INTO {s}.blobs (execution_id, digest, data, size)"
        " SELECT 'exec-' || lpad(i::text, 6, '0'), 'sha256:' || md5(i::text) || md5(i::text),"
        " '\\x00', 1 FROM generate_series(1, 20000, 4) AS i"
    )
    for table in ("executions", "checkpoints", "blobs"):
        await admin.execute(f"ANALYZE {s}.{table}")

    sql = store._db.sql
    queries: dict[str, tuple[str, dict[str, Any], str]] = {
        "latest checkpoint": (sql["load_latest"], {"id": "hot"}, "checkpoints_pkey"),
        "one checkpoint": (sql["load"], {"id": "hot", "seq": 12345}, "checkpoints_pkey"),
        "list checkpoints": (
            sql["list"],
            {"id": "hot", "after": 15000, "limit": 1001},
            "checkpoints_pkey",
        ),
        "list executions": (
            sql["list_executions"],
            {"cursor": "exec-010000", "limit": 101},
            "executions_pkey",
        ),
        "claim next": (sql["claim_next:1:1"], {"owner": "w", "ttl": 30.0}, "executions_open_idx"),
        "fenced save": (
            sql.save("create", True),
            {
                "id": "hot",
                "seq": 20000,
                "data": b"x",
                "size": 1,
                "meta": None,
                "status": None,
                "epoch": 0,
                "owner": "w",
            },
            "executions_pkey",
        ),
    }
    for what, (query, params, index) in queries.items():
        cur = await admin.execute("EXPLAIN " + query, params)
        plan = "\n".join(str(row[0]) for row in await cur.fetchall())
        assert index in plan, f"{what} does not use {index}:\n{plan}"
        assert "Seq Scan" not in plan, f"{what} scans a table:\n{plan}"
