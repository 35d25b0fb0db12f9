"""Blob clauses: content addressing and integrity (C17), listing and deleting (C25),
batched puts (C33)."""

from __future__ import annotations

import itertools
import time

import pytest

from durably.errors import CorruptObjectError, NotFoundError
from durably.storage import BlobInfo, CheckpointProvider, blob_digest
from durably_conformance._backdoor import Backdoor
from durably_conformance._base import ProviderPool, SuiteBase
from durably_conformance._helpers import collect_pages, list_while_changing, random_bytes

__all__ = ["BlobSuite"]

RUN = "run-1"


async def _blob_infos(
    provider: CheckpointProvider,
    execution_id: str = RUN,
    *,
    limit: int = 1000,
) -> list[BlobInfo]:
    async def fetch(cursor: str | None) -> object:
        return await provider.list_blobs(execution_id, cursor=cursor, limit=limit)

    items, _pages = await collect_pages(fetch, limit=limit, max_pages=10_000)
    return items


class BlobSuite(SuiteBase):
    """Clauses C17, C25 and C33."""

    # --------------------------------------------------------------- C17 blobs

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(17)
    async def test_c17_put_get_has(self, provider: CheckpointProvider) -> None:
        """[C17] put_blob returns the sha256 address; get_blob and has_blob find it."""
        data = random_bytes(4096, seed=17)
        digest = await provider.put_blob(RUN, data)
        assert digest == blob_digest(data)
        assert await provider.get_blob(RUN, digest) == data
        assert await provider.has_blob(RUN, digest) is True
        other = blob_digest(b"never stored")
        assert await provider.has_blob(RUN, other) is False
        with pytest.raises(NotFoundError):
            await provider.get_blob(RUN, other)
        assert await provider.put_blob(RUN, data, digest=digest) == digest

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(17)
    async def test_c17_put_is_idempotent(
        self,
        provider: CheckpointProvider,
        checked_backdoor: Backdoor,
    ) -> None:
        """[C17] Putting stored bytes again writes nothing: _put_blob says False, no new place."""
        data = random_bytes(4096, seed=171)
        digest = blob_digest(data)
        stored = provider.envelope.wrap(data)
        assert await provider._put_blob(RUN, digest, stored) is True, (
            "_put_blob of a new blob must return True"
        )
        before = sorted(await checked_backdoor.locations())
        assert await provider._put_blob(RUN, digest, stored) is False, (
            "_put_blob of a stored blob must return False (and not rewrite it)"
        )
        assert await provider.put_blob(RUN, data) == digest
        assert sorted(await checked_backdoor.locations()) == before
        assert [info.digest for info in await _blob_infos(provider)] == [digest]
        assert await provider.get_blob(RUN, digest) == data

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(17)
    async def test_c17_a_wrong_digest_is_refused(self, provider: CheckpointProvider) -> None:
        """[C17] put_blob with a digest that does not match the data stores nothing."""
        wrong = blob_digest(b"something else")
        with pytest.raises(ValueError, match="digest"):
            await provider.put_blob(RUN, b"data", digest=wrong)
        assert not await provider.has_blob(RUN, wrong)
        assert not await provider.has_blob(RUN, blob_digest(b"data"))
        for malformed in ("sha256:xyz", "md5:" + "0" * 32, blob_digest(b"x").upper()):
            with pytest.raises(ValueError):
                await provider.get_blob(RUN, malformed)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(17)
    async def test_c17_a_corrupt_blob_is_detected(
        self,
        provider: CheckpointProvider,
        checked_backdoor: Backdoor,
    ) -> None:
        """[C17] A blob damaged in storage raises CorruptObjectError; others still load."""
        damaged = random_bytes(8192, seed=172)
        intact = random_bytes(8192, seed=173)
        damaged_digest = await provider.put_blob(RUN, damaged)
        intact_digest = await provider.put_blob(RUN, intact)
        await checked_backdoor.corrupt_blob(RUN, damaged_digest)
        with pytest.raises(CorruptObjectError):
            await provider.get_blob(RUN, damaged_digest)
        assert await provider.get_blob(RUN, intact_digest) == intact

    # ------------------------------------------------- C25 list and delete blobs

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(25)
    async def test_c25_blobs_are_listed_by_ascending_digest(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C25] list_blobs pages through every blob once, ascending by digest."""
        before = time.time()
        digests = sorted([await provider.put_blob(RUN, f"blob {i}".encode()) for i in range(12)])
        after = time.time()
        for limit in (1, 5, 12, 1000):
            infos = await _blob_infos(provider, limit=limit)
            assert [info.digest for info in infos] == digests, f"limit={limit}"
        for info in await _blob_infos(provider):
            assert isinstance(info, BlobInfo)
            assert isinstance(info.size, int)
            assert info.size >= 0
            tolerance = self.clock_tolerance
            assert before - tolerance <= info.created_at <= after + tolerance
        page = await provider.list_blobs("never-written")
        assert list(page.items) == []
        assert page.next_cursor is None

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(25)
    async def test_c25_cursor_survives_deletes_and_inserts_before_it(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C25] Deleting listed blobs and putting blobs with lower digests between pages
        skips and repeats nothing (a keyset cursor, not an offset)."""
        initial = [await provider.put_blob(RUN, f"blob {i}".encode()) for i in range(12)]
        inserted: list[str] = []
        candidates = (f"inserted blob {i}".encode() for i in itertools.count())

        async def insert_before(digest: str) -> None:
            for _ in range(2):
                data = next(c for c in candidates if blob_digest(c) < digest)
                inserted.append(await provider.put_blob(RUN, data))

        seen = await list_while_changing(
            lambda cursor: provider.list_blobs(RUN, cursor=cursor, limit=3),
            lambda info: info.digest,
            delete=lambda digest: provider.delete_blob(RUN, digest),
            insert_before=insert_before,
            limit=3,
        )
        assert seen == sorted(set(seen)), f"duplicates or disorder: {seen}"
        assert set(initial) <= set(seen), f"skipped {sorted(set(initial) - set(seen))}"
        assert set(seen) <= set(initial) | set(inserted), seen

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(25)
    async def test_c25_delete_blob(self, provider: CheckpointProvider) -> None:
        """[C25] delete_blob returns True once, then False; the blob is gone, others stay."""
        gone = await provider.put_blob(RUN, b"to delete")
        kept = await provider.put_blob(RUN, b"to keep")
        assert await provider.delete_blob(RUN, gone) is True
        assert await provider.delete_blob(RUN, gone) is False
        assert not await provider.has_blob(RUN, gone)
        with pytest.raises(NotFoundError):
            await provider.get_blob(RUN, gone)
        assert [info.digest for info in await _blob_infos(provider)] == [kept]
        assert await provider.get_blob(RUN, kept) == b"to keep"
        assert await provider.put_blob(RUN, b"to delete") == gone  # can be stored again
        assert await provider.get_blob(RUN, gone) == b"to delete"

    # ----------------------------------------------------- C33 batched puts

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(33)
    async def test_c33_put_blobs_stores_every_blob(
        self,
        provider: CheckpointProvider,
        checked_backdoor: Backdoor,
    ) -> None:
        """[C33] put_blobs stores every blob of the batch, each as put_blob would (same
        locations, no leftovers); putting the batch again writes nothing."""
        sizes = [0, 1, 100, 4096, 70_000, *range(200, 3200, 100)]
        batch = {blob_digest(d): d for d in (random_bytes(n, seed=330 + n) for n in sizes)}
        await provider.put_blob("run-0", b"first use")  # store-wide bookkeeping, if any
        before = set(await checked_backdoor.locations())
        assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, True)
        for digest, data in batch.items():
            assert await provider.has_blob(RUN, digest) is True
            assert await provider.get_blob(RUN, digest) == data
        assert [info.digest for info in await _blob_infos(provider)] == sorted(batch)
        after_batch = sorted(await checked_backdoor.locations())
        by_batch = set(after_batch) - before
        for data in batch.values():
            await provider.put_blob("run-2", data)
        one_by_one = sorted(set(await checked_backdoor.locations()) - set(after_batch))
        assert len(by_batch) == len(one_by_one), (
            "put_blobs must leave the locations that putting each blob leaves, no more "
            f"(a temporary file?): {len(by_batch)} new after the batch, {len(one_by_one)} "
            "for the same blobs put one by one"
        )
        stored = {digest: provider.envelope.wrap(data) for digest, data in batch.items()}
        assert await provider._put_blobs(RUN, stored) == dict.fromkeys(batch, False), (
            "_put_blobs of stored blobs must report each as not written"
        )
        assert await provider.put_blobs(RUN, batch) == dict.fromkeys(batch, False)
        assert sorted(await checked_backdoor.locations()) == sorted([*after_batch, *one_by_one])

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(33)
    async def test_c33_a_batch_of_stored_and_new_blobs(
        self,
        provider: CheckpointProvider,
        checked_backdoor: Backdoor,
    ) -> None:
        """[C33] In a batch mixing stored and new blobs only the new ones are written, and
        each blob of a batch is its own object: a damaged one does not hide the others."""
        old = [random_bytes(3000, seed=3300 + i) for i in range(3)]
        new = [random_bytes(5000, seed=3310 + i) for i in range(4)]
        for data in old:
            await provider.put_blob(RUN, data)
        batch = {blob_digest(d): d for d in [new[0], *old, *new[1:]]}
        written = await provider.put_blobs(RUN, batch)
        assert written == {blob_digest(d): d in new for d in batch.values()}
        assert [info.digest for info in await _blob_infos(provider)] == sorted(batch)
        damaged = blob_digest(new[1])
        await checked_backdoor.corrupt_blob(RUN, damaged)
        with pytest.raises(CorruptObjectError):
            await provider.get_blob(RUN, damaged)
        for digest, data in batch.items():
            if digest != damaged:
                assert await provider.get_blob(RUN, digest) == data
        assert await provider.put_blobs(RUN, {}) == {}

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(33)
    async def test_c33_a_wrong_digest_stores_nothing_of_the_batch(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C33] A batch with one digest that does not match its data is refused whole."""
        good = random_bytes(2000, seed=333)
        batch = {blob_digest(good): good, blob_digest(b"other"): b"not the other"}
        with pytest.raises(ValueError, match="digest"):
            await provider.put_blobs(RUN, batch)
        assert not await provider.has_blob(RUN, blob_digest(good))
        assert await _blob_infos(provider) == []

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(33)
    @pytest.mark.durably_persistent
    async def test_c33_a_batch_survives_a_new_instance(self, provider_pool: ProviderPool) -> None:
        """[C33] Once put_blobs returned, a new instance finds every blob of the batch."""
        batch = {blob_digest(d): d for d in (random_bytes(1500, seed=3330 + i) for i in range(9))}
        await provider_pool.first.put_blobs(RUN, batch)
        await provider_pool.first.close()
        second = provider_pool.new()
        for digest, data in batch.items():
            assert await second.get_blob(RUN, digest) == data
        assert await second.put_blobs(RUN, batch) == dict.fromkeys(batch, False)
