"""PostgreSQL's batched blob write (C33): ``_blobs.put_blobs``, one multi-row
``INSERT ... ON CONFLICT DO NOTHING`` per batch.

``PostgresProvider._put_blobs`` is not wired to it yet (``_provider.py`` is being
changed elsewhere); :class:`BatchingProvider` is that one-method change, and the blob
clauses of the conformance suite run against it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from durably.storage import blob_digest
from durably_conformance import Backdoor, ProviderFactory
from durably_conformance._suite_blobs import BlobSuite
from durably_postgres import PostgresProvider
from durably_postgres import _blobs as blobs_module
from durably_postgres.testing import PostgresBackdoor


class BatchingProvider(PostgresProvider):
    """The provider with ``_put_blobs`` wired to :func:`durably_postgres._blobs.put_blobs`."""

    async def _put_blobs(self, execution_id: str, blobs: Mapping[str, bytes]) -> dict[str, bool]:
        return await blobs_module.put_blobs(self._db, execution_id, blobs)


class TestBatchedBlobClauses(BlobSuite):
    """C17, C25 and C33 against the batching provider."""

    @pytest.fixture
    def make_provider(self, pg_url: str, pg_schema: str) -> ProviderFactory:
        return lambda: BatchingProvider.from_url(pg_url, {"schema": pg_schema})

    @pytest.fixture
    def backdoor(self, pg_url: str, pg_schema: str) -> Backdoor:
        return PostgresBackdoor(pg_url, pg_schema)


def _batch(count: int, size: int = 2000) -> dict[str, bytes]:
    payloads = [bytes([i % 251]) * size + str(i).encode() for i in range(count)]
    return {blob_digest(p): p for p in payloads}


@pytest.mark.asyncio
async def test_a_batch_is_one_statement(
    pg_url: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """29 blobs (a 100 KB state's) in one round trip; a re-put is one statement too."""
    provider = BatchingProvider.from_url(pg_url, {"schema": pg_schema})
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
    provider = BatchingProvider.from_url(pg_url, {"schema": pg_schema})
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
