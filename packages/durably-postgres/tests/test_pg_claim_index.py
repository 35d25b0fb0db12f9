"""``durably worker`` on PostgreSQL claims through the partial index of unfinished
executions (issue 16, item 4: the CLAIM_NEXT capability), on a 100,000-execution table.

* ``EXPLAIN (ANALYZE, BUFFERS)`` of the claim, run in a transaction that is rolled back:
  an index scan of ``executions_open_idx``, no sequential scan, and a handful of buffers
  where the table has thousands of pages -- the claim's cost does not grow with the
  number of finished executions.
* A real ``durably worker --once`` on that table completes a submitted execution; the
  server's statistics show it used ``executions_open_idx`` and never scanned the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from durably_postgres import PostgresProvider, migrate_async

EXECUTIONS = 100_000
OPEN = 10
COUNTER = Path(__file__).resolve().parents[2] / "durably" / "tests" / "programs"


async def _fill(admin: psycopg.AsyncConnection[Any], s: str) -> None:
    """100,000 executions with expired leases: all but ``OPEN`` finished (completed or
    failed), the rest unfinished and claimable."""
    await admin.execute(
        f"INSERT INTO {s}.executions (id, lease_owner, epoch, lease_expires_at, released,"
        " status) SELECT 'exec-' || lpad(i::text, 6, '0'), 'old-worker', i,"
        " now() - interval '1 day' + i * interval '1 ms', i % 5 = 0,"
        f" CASE WHEN i > {OPEN} THEN (CASE WHEN i % 9 = 0 THEN 'failed' ELSE 'completed' END)"
        f" ELSE 'running' END FROM generate_series(1, {EXECUTIONS}) AS i"
    )
    await admin.execute(f"ANALYZE {s}.executions")


@pytest.mark.asyncio
async def test_claim_next_uses_the_open_index_among_100000_executions(
    make_store: Any,
    pg_schema: str,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    store: PostgresProvider = make_store()
    await store.get_lease("nothing")  # creates the schema
    s = f'"{pg_schema}"'
    await _fill(admin, s)
    cur = await admin.execute(
        f"SELECT relpages FROM pg_class WHERE oid = '{s}.executions'::regclass"
    )
    (pages,) = await cur.fetchone() or (0,)
    assert pages > 500, pages  # a table big enough for a scan to show

    statement = store._db.sql["claim_next:1:1"]
    async with admin.transaction(force_rollback=True):
        cur = await admin.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, {"owner": "w", "ttl": 30.0}
        )
        row = await cur.fetchone()
    assert row is not None
    plan = row[0][0]["Plan"]
    text = json.dumps(plan)
    assert "executions_open_idx" in text, text
    assert "Seq Scan" not in text, text
    # The search for the execution to claim (the part that would grow with the finished
    # executions) touches a handful of buffers. The whole statement adds the update's
    # writes -- the row's new version, its index entries, the free-space map -- which do
    # not depend on the table's size but vary with what other sessions of the server do
    # (one holding an old snapshot keeps the page from being pruned: 66 buffers seen
    # with the other tests running beside this one, 30-40 alone).
    search = _buffers(_node(plan, "Limit"))
    assert search < 10, (search, pages, text)
    buffers = _buffers(plan)
    assert buffers < 100 < pages / 10, (buffers, pages, text)

    # The provider's own claim returns the longest-expired unfinished execution, and
    # never a finished one.
    claimed = [await store.claim_next("w", ttl=30) for _ in range(OPEN + 1)]
    ids = [lease.execution_id for lease in claimed if lease is not None]
    assert ids == [f"exec-{i:06d}" for i in range(1, OPEN + 1)]
    assert claimed[-1] is None


def _node(plan: dict[str, Any], node_type: str) -> dict[str, Any]:
    """The first node of that type in the plan (depth first)."""
    if plan["Node Type"] == node_type:
        return plan
    for child in plan.get("Plans", []):
        with contextlib.suppress(LookupError):
            return _node(child, node_type)
    raise LookupError(node_type)


def _buffers(node: dict[str, Any]) -> int:
    """Shared buffers a plan node and its children touched."""
    return int(node["Shared Hit Blocks"]) + int(node["Shared Read Blocks"])


async def _index_usage(admin: psycopg.AsyncConnection[Any], schema: str) -> tuple[int, int]:
    """(index scans of executions_open_idx, sequential scans of executions)."""
    # This session's own statements (the fill) count once flushed: flush them now.
    await admin.execute("SELECT pg_stat_force_next_flush()")
    await admin.execute("SELECT pg_stat_clear_snapshot()")
    cur = await admin.execute(
        "SELECT (SELECT idx_scan FROM pg_stat_user_indexes WHERE schemaname = %(s)s"
        "        AND indexrelname = 'executions_open_idx'),"
        " (SELECT seq_scan FROM pg_stat_user_tables WHERE schemaname = %(s)s"
        "        AND relname = 'executions')",
        {"s": schema},
    )
    row = await cur.fetchone()
    assert row is not None
    return int(row[0] or 0), int(row[1] or 0)


def _durably(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    return subprocess.run(
        [sys.executable, "-m", "durably", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.asyncio
async def test_the_worker_claims_through_the_index(
    pg_url: str,
    pg_schema: str,
    admin: psycopg.AsyncConnection[Any],
    tmp_path: Path,
) -> None:
    await migrate_async(pg_url, {"schema": pg_schema})
    s = f'"{pg_schema}"'
    await _fill(admin, s)
    await admin.execute(f"UPDATE {s}.executions SET status = 'completed' WHERE status = 'running'")
    (tmp_path / "durably.toml").write_text(
        f'[durability]\nstore = "{pg_url}"\n[durability.postgres]\nschema = "{pg_schema}"\n'
    )
    submitted = await asyncio.to_thread(
        _durably,
        "submit",
        str(COUNTER / "counter.py"),
        "--llm",
        f"scripted:{COUNTER / 'counter.scripted.json'}",
        "--execution-id",
        "job",
        "--input",
        "forty-two",
        cwd=tmp_path,
    )
    assert submitted.returncode == 0, submitted.stderr
    index_before, seq_before = await _index_usage(admin, pg_schema)

    worker = await asyncio.to_thread(_durably, "worker", "--once", "--poll", "0.2", cwd=tmp_path)
    assert worker.returncode == 0, worker.stderr
    assert "1 completed" in worker.stderr, worker.stderr
    cur = await admin.execute(f"SELECT status FROM {s}.executions WHERE id = 'job'")
    assert await cur.fetchone() == ("completed",)

    # Statistics reach the server when the worker's sessions end; give them a moment.
    deadline = time.monotonic() + 10
    while True:
        index_after, seq_after = await _index_usage(admin, pg_schema)
        if index_after > index_before or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert index_after > index_before, "the worker never used executions_open_idx"
    assert seq_after == seq_before, "the worker scanned the executions table"
