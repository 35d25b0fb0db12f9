"""PostgreSQL-specific behaviour: one round trip per write, fencing under a row lock,
claim_next, the status column, sequences that never repeat, batched prune."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import pq

from durably.errors import FencedError, LeaseHeldError, PreconditionFailedError
from durably.storage import ExpectedVersion, Lease
from durably_postgres import PostgresProvider, _checkpoints, _provider

MakeStore = Callable[..., PostgresProvider]


@asynccontextmanager
async def _traced(store: PostgresProvider, path: Path) -> AsyncIterator[Callable[[], str]]:
    """Record the wire protocol of the store's only pooled connection (libpq trace)."""
    pool = store._db.pool
    assert pool is not None
    assert pool.max_size == 1
    with path.open("w") as fh:
        async with pool.connection() as conn:
            conn.pgconn.trace(fh.fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        yield lambda: path.read_text()
        async with pool.connection() as conn:
            conn.pgconn.untrace()


def _messages(trace: str, sender: str, name: str) -> int:
    return sum(
        1
        for line in trace.splitlines()
        if line.split("\t")[:1] == [sender] and line.split("\t")[2:3] == [name]
    )


@pytest.mark.asyncio
async def test_one_round_trip_per_write(make_store: MakeStore, tmp_path: Path) -> None:
    """A save -- fenced or not, any mode -- is ONE request/response: the client sends one
    Sync and the server answers with one ReadyForQuery; no BEGIN/COMMIT."""
    store = make_store(pool_min_size=1, pool_max_size=1)
    lease = await store.claim("rt", "me", ttl=60)
    # Warm up: psycopg prepares a statement on its 5th execution (one extra round trip,
    # once per connection); after that each execution is a single round trip.
    for seq in range(6):
        await store.save_checkpoint("rt", seq, b"warm", lease=lease)
        await store.save_checkpoint("rt-free", seq, b"warm")
    async with _traced(store, tmp_path / "trace.txt") as read:
        for seq in range(6, 16):
            await store.save_checkpoint(
                "rt", seq, b"payload" * 100, lease=lease, metadata={"step": str(seq)}
            )
            await store.save_checkpoint("rt-free", seq, b"payload")
    trace = read()
    assert _messages(trace, "F", "Sync") == 20
    assert _messages(trace, "B", "ReadyForQuery") == 20
    assert _messages(trace, "F", "Execute") == 20
    assert "BEGIN" not in trace
    assert "COMMIT" not in trace

    info = await store.load_checkpoint("rt", 15)
    async with _traced(store, tmp_path / "trace2.txt") as read:
        await store.save_checkpoint(
            "rt", 15, b"again", mode=ExpectedVersion(info.info.version), lease=lease
        )
        await store.save_checkpoint("rt", 15, b"again", mode="overwrite", lease=lease)
        renewed = await store.renew(lease, ttl=60)
        await store.save_checkpoint("rt", 16, b"x", lease=renewed)
    trace = read()
    assert _messages(trace, "B", "ReadyForQuery") == 4


async def _wait_until_blocked(admin: psycopg.AsyncConnection[Any], app: str) -> None:
    for _ in range(500):
        cur = await admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND wait_event_type = 'Lock'",
            (app,),
        )
        if (await cur.fetchone()) == (1,):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the save did not wait for the execution row")


@pytest.mark.asyncio
async def test_fence_check_waits_for_a_concurrent_claim_and_rechecks(
    pg_url: str,
    pg_schema: str,
    make_store: MakeStore,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    """A save racing a claim: the claim's transaction holds the execution row; the save
    waits for it, re-reads the row, sees the new epoch and writes nothing."""
    app = f"durably-fence-{secrets.token_hex(3)}"
    store = make_store(application_name=app)
    lease = await store.claim("race", "old-owner", ttl=60)
    await store.save_checkpoint("race", 0, b"before", lease=lease)
    s = f'"{pg_schema}"'
    async with await psycopg.AsyncConnection.connect(pg_url) as thief:
        await thief.execute(  # what a claim by another owner does, not yet committed
            f"UPDATE {s}.executions SET lease_owner = 'thief',"
            f" epoch = nextval('{s}.epochs') WHERE id = 'race'"
        )
        save = asyncio.create_task(store.save_checkpoint("race", 1, b"racing", lease=lease))
        await _wait_until_blocked(admin, app)
        assert not save.done()
        await thief.commit()
        with pytest.raises(FencedError):
            await save
    cur = await admin.execute(f"SELECT seq FROM {s}.checkpoints ORDER BY seq")
    assert [row[0] for row in await cur.fetchall()] == [0]


@pytest.mark.asyncio
async def test_fence_waits_then_writes_when_the_claim_rolls_back(
    pg_url: str,
    pg_schema: str,
    make_store: MakeStore,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    app = f"durably-fence-{secrets.token_hex(3)}"
    store = make_store(application_name=app)
    lease = await store.claim("race", "owner", ttl=60)
    s = f'"{pg_schema}"'
    async with await psycopg.AsyncConnection.connect(pg_url) as thief:
        await thief.execute(
            f"UPDATE {s}.executions SET lease_owner = 'thief',"
            f" epoch = nextval('{s}.epochs') WHERE id = 'race'"
        )
        save = asyncio.create_task(store.save_checkpoint("race", 0, b"kept", lease=lease))
        await _wait_until_blocked(admin, app)
        assert not save.done()
        await thief.rollback()
        info = await save
    assert (await store.load_checkpoint("race", info.seq)).data == b"kept"


@pytest.mark.asyncio
async def test_a_forged_lease_is_fenced(make_store: MakeStore) -> None:
    store = make_store()
    real = await store.claim("f", "owner", ttl=60)
    forged = Lease("f", "someone-else", real.epoch, real.expires_at)
    with pytest.raises(FencedError):
        await store.save_checkpoint("f", 0, b"x", lease=forged)
    never = Lease("never-claimed", "owner", 1, time.time() + 60)
    with pytest.raises(FencedError):
        await store.save_checkpoint("never-claimed", 0, b"x", lease=never)
    assert [e.execution_id async for e in store.iter_executions()] == ["f"]


@pytest.mark.asyncio
async def test_epochs_and_versions_never_repeat_after_delete(make_store: MakeStore) -> None:
    store = make_store()
    old = await store.claim("d", "owner", ttl=60)
    first = await store.save_checkpoint("d", 0, b"one", lease=old)
    assert await store.delete_execution("d")
    assert await store.get_lease("d") is None
    new = await store.claim("d", "owner", ttl=60)
    assert new.epoch > old.epoch
    with pytest.raises(FencedError):  # the pre-delete lease stays fenced
        await store.save_checkpoint("d", 0, b"zombie", lease=old)
    second = await store.save_checkpoint("d", 0, b"two", lease=new)
    assert second.version != first.version
    with pytest.raises(PreconditionFailedError):
        await store.save_checkpoint("d", 0, b"stale", mode=ExpectedVersion(first.version))
    with pytest.raises(PreconditionFailedError):
        await store.save_checkpoint("d", 0, b"junk", mode=ExpectedVersion("not-a-number"))


@pytest.mark.asyncio
async def test_metadata_with_nul_and_unicode_round_trips(make_store: MakeStore) -> None:
    store = make_store()
    meta = {"nul": "a\x00b\x00", "only-nul": "\x00", "emoji": "🦀 ∂ 日本", "empty": ""}
    await store.save_checkpoint("m", 0, b"x", metadata=meta)
    assert dict((await store.load_checkpoint("m", 0)).metadata) == meta
    page = await store.list_checkpoints("m")
    assert dict(page.items[0].metadata) == meta


@pytest.mark.asyncio
async def test_executions_are_listed_in_code_point_order(make_store: MakeStore) -> None:
    """ids are compared byte-wise (COLLATE "C"), as Python compares str, whatever the
    database's collation -- so cursors and ordering agree with every other provider."""
    store = make_store()
    ids = ["a", "B", "b", "A", "0", "a-1", "a.1", "a_1", "Z9", "z", "a1"]
    for execution_id in ids:
        await store.save_checkpoint(execution_id, 0, b"x")
    listed = []
    cursor = None
    while True:
        page = await store.list_executions(cursor=cursor, limit=3)
        listed += [e.execution_id for e in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert listed == sorted(ids)


@pytest.mark.asyncio
async def test_status_column_follows_durably_status_metadata(
    make_store: MakeStore,
    pg_schema: str,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    store = make_store()

    async def status() -> str | None:
        cur = await admin.execute(
            f'SELECT status FROM "{pg_schema}".executions WHERE id = %s', ("s",)
        )
        row = await cur.fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]

    await store.save_checkpoint("s", 0, b"x")
    assert await status() is None
    await store.save_checkpoint("s", 1, b"x", metadata={"durably.status": "running"})
    assert await status() == "running"
    await store.save_checkpoint("s", 2, b"x", metadata={"other": "y"})
    assert await status() == "running"  # a save without the key keeps it
    lease = await store.claim("s", "me", ttl=60)
    await store.save_checkpoint("s", 3, b"x", metadata={"durably.status": "completed"}, lease=lease)
    assert await status() == "completed"
    with pytest.raises(FencedError):
        await store.save_checkpoint(
            "s",
            4,
            b"x",
            metadata={"durably.status": "failed"},
            lease=Lease("s", "me", lease.epoch - 1, 0),
        )
    assert await status() == "completed"  # a rejected write changes nothing


async def _expire(store: PostgresProvider, ids: list[str]) -> None:
    """Give every execution a lease by a dead owner that has already expired."""
    for execution_id in ids:
        lease = await store.claim(execution_id, "dead-worker", ttl=0.001)
        await store.save_checkpoint(execution_id, 0, b"x", lease=lease)
    await asyncio.sleep(0.05)


@pytest.mark.asyncio
async def test_claim_next_takes_expired_and_released_skips_live_and_completed(
    make_store: MakeStore,
) -> None:
    store = make_store()
    assert await store.claim_next("w", ttl=60) is None
    await _expire(store, ["expired"])
    await store.claim("live", "other", ttl=600)
    released = await store.claim("released", "other", ttl=600)
    await store.release(released)
    done = await store.claim("done", "other", ttl=0.001)
    await store.save_checkpoint(
        "done", 0, b"x", lease=done, metadata={"durably.status": "completed"}
    )
    await store.save_checkpoint("never-claimed", 0, b"x")
    await asyncio.sleep(0.05)

    got = []
    while (lease := await store.claim_next("w", ttl=60, include_unclaimed=False)) is not None:
        got.append(lease)
    assert sorted(lease.execution_id for lease in got) == ["expired", "released"]
    for lease in got:
        assert lease.owner == "w"
        assert await store.get_lease(lease.execution_id) == lease
        await store.save_checkpoint(lease.execution_id, 1, b"resumed", lease=lease)
    unclaimed = await store.claim_next("w", ttl=60)
    assert unclaimed is not None
    assert unclaimed.execution_id == "never-claimed"
    completed = await store.claim_next("w", ttl=60, exclude_completed=False)
    assert completed is not None
    assert completed.execution_id == "done"
    assert completed.epoch > done.epoch
    assert await store.claim_next("w", ttl=60, exclude_completed=False) is None
    with pytest.raises(LeaseHeldError):
        await store.claim("expired", "thief", ttl=60)


@pytest.mark.asyncio
async def test_concurrent_claim_next_never_hands_out_an_execution_twice(
    make_store: MakeStore,
) -> None:
    setup = make_store()
    ids = [f"job-{i:03d}" for i in range(40)]
    await _expire(setup, ids)
    workers = [make_store(pool_max_size=8) for _ in range(2)]
    results = await asyncio.gather(
        *(workers[i % 2].claim_next(f"worker-{i % 2}", ttl=60) for i in range(60))
    )
    leases = [lease for lease in results if lease is not None]
    assert sorted(lease.execution_id for lease in leases) == ids  # each exactly once
    assert results.count(None) == 20
    for lease in leases:
        assert await setup.get_lease(lease.execution_id) == lease


@pytest.mark.asyncio
async def test_client_lease_clock(make_store: MakeStore) -> None:
    store = make_store(lease_clock="client")
    before = time.time()
    lease = await store.claim("c", "me", ttl=30)
    assert before + 30 <= lease.expires_at <= time.time() + 30
    with pytest.raises(LeaseHeldError):
        await store.claim("c", "other", ttl=30)
    short = await store.claim("c", "me", ttl=0.001)
    await asyncio.sleep(0.02)
    taken = await store.claim("c", "other", ttl=30)
    assert taken.epoch > short.epoch
    await _expire(store, ["d"])
    next_lease = await store.claim_next("w", ttl=30)
    assert next_lease is not None
    assert next_lease.execution_id == "d"


@pytest.mark.asyncio
async def test_prune_deletes_in_batches(
    make_store: MakeStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = make_store()
    lease = await store.claim("p", "me", ttl=60)
    for seq in range(30):
        await store.save_checkpoint("p", seq, b"x", lease=lease)
    batches: list[list[int]] = []
    real = _checkpoints.delete

    async def spy(db: Any, execution_id: str, seqs: list[int], lease: Lease | None) -> list[int]:
        batches.append(list(seqs))
        return await real(db, execution_id, seqs, lease)

    monkeypatch.setattr(_provider, "DELETE_BATCH", 7)
    monkeypatch.setattr(_checkpoints, "delete", spy)
    assert await store.prune("p", keep_last=2, lease=lease) == list(range(28))
    assert [len(b) for b in batches] == [7, 7, 7, 7]
    assert [i.seq async for i in store.iter_checkpoints("p")] == [28, 29]

    stale = lease
    await store.claim("p", "me", ttl=60)  # supersedes it
    for seq in range(30, 40):
        await store.save_checkpoint("p", seq, b"x")
    batches.clear()
    with pytest.raises(FencedError):
        await store.prune("p", keep_last=1, lease=stale)
    assert len(batches) == 1  # stopped at the first batch, which deleted nothing
    assert len([i async for i in store.iter_checkpoints("p")]) == 12


@pytest.mark.asyncio
async def test_large_blob_already_stored_is_not_sent_again(
    make_store: MakeStore,
    tmp_path: Path,
) -> None:
    store = make_store(pool_min_size=1, pool_max_size=1)
    data = secrets.token_bytes(_provider.BLOB_PRECHECK_SIZE + 10)
    digest = await store.put_blob("b", data)
    async with _traced(store, tmp_path / "blob.txt") as read:
        assert await store.put_blob("b", data) == digest
    trace = read()
    assert _messages(trace, "B", "ReadyForQuery") == 1  # only the existence check
    assert len(trace) < 100_000  # the megabyte was not sent
    assert await store.get_blob("b", digest) == data


@pytest.mark.asyncio
async def test_an_owner_postgres_cannot_store_is_a_value_error(make_store: MakeStore) -> None:
    store = make_store()
    for call in (store.claim("x", "bad\ud800", ttl=5), store.claim_next("bad\ud800", ttl=5)):
        with pytest.raises(ValueError, match="valid Unicode"):
            await call
    assert await store.get_lease("x") is None
