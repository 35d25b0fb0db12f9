"""PostgreSQL writes a batch of blobs as one multi-row ``INSERT ... ON CONFLICT DO
NOTHING`` per 16 MiB (the blob clauses, C33 included, run in the provider's conformance
suite)."""

from __future__ import annotations

from typing import Any

import pytest

from durably.storage import blob_digest
from durably_postgres import PostgresProvider
from durably_postgres import _blobs as blobs_module


def _batch(count: int, size: int = 2000) -> dict[str, bytes]:
    payloads = [bytes([i % 251]) * size + str(i).encode() for i in range(count)]
    return {blob_digest(p): p for p in payloads}


@pytest.mark.asyncio
async def test_a_batch_is_one_statement(
    pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """29 blobs (a 100 KB state's) in one round trip; a re-put is one statement too."""
    provider = PostgresProvider.from_url(pg_url, {"schema": pg_schema})
    try:
        await provider.put_blob("run-1", b"connects and migrates")
        statements: list[str] = []
        run = provider._db.run

        async def counting(what: str, name: str, params: dict[str, Any], **kw: Any) -> Any:
            statements.append(name)
            return await run(what, name, params, **kw)

        monkeypatch.setattr(provider._db, "run", counting)
        batch = _batch(29)
        assert await provider.put_blobs("run-1", batch) == dict.fromkeys(batch, True)
        assert statements == ["put_blobs"]
        assert await provider.put_blobs("run-1", batch) == dict.fromkeys(batch, False)
        assert statements == ["put_blobs", "put_blobs"]
        listed = await provider.list_executions()
        assert [info.execution_id for info in listed.items] == ["run-1"]
    finally:
        await provider.close()


@pytest.mark.asyncio
async def test_big_batches_are_split_and_big_blobs_checked_first(
    pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs_module, "BATCH_BYTES", 10_000)
    monkeypatch.setattr(blobs_module, "BLOB_PRECHECK_SIZE", 50_000)
    provider = PostgresProvider.from_url(pg_url, {"schema": pg_schema})
    try:
        big = b"B" * 60_000
        await provider.put_blob("run-2", big)
        batch = {**_batch(12, size=3000), blob_digest(big): big}
        written = await provider.put_blobs("run-2", batch)
        assert written == {**dict.fromkeys(batch, True), blob_digest(big): False}
        for digest, data in batch.items():
            assert await provider.get_blob("run-2", digest) == data
    finally:
        await provider.close()
