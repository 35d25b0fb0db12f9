"""Execution clauses: listing (C13), isolation (C18), deleting an execution (C24)."""

from __future__ import annotations

import functools
import random
import time

import pytest

from durably.errors import FencedError, NotFoundError
from durably.storage import CheckpointProvider, ExecutionInfo, Lease, blob_digest
from durably_conformance._backdoor import Backdoor
from durably_conformance._base import SuiteBase
from durably_conformance._helpers import (
    collect_pages,
    drain,
    gather_limited,
    list_while_changing,
)

__all__ = ["ExecutionSuite"]

LONG = 600.0


async def _execution_ids(provider: CheckpointProvider, *, limit: int | None = None) -> list[str]:
    async def fetch(cursor: str | None) -> object:
        if limit is None:
            return await provider.list_executions(cursor=cursor)
        return await provider.list_executions(cursor=cursor, limit=limit)

    items, _pages = await collect_pages(fetch, limit=limit or 100, max_pages=100_000)
    for item in items:
        assert isinstance(item, ExecutionInfo)
    return [item.execution_id for item in items]


async def _seqs(provider: CheckpointProvider, execution_id: str) -> list[int]:
    return [info.seq async for info in provider.iter_checkpoints(execution_id)]


class ExecutionSuite(SuiteBase):
    """Clauses C13, C18 and C24."""

    # ----------------------------------------------------- C13 list executions

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(13)
    async def test_c13_an_empty_store_lists_no_executions(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C13] A new store lists no executions and no cursor."""
        page = await provider.list_executions()
        assert list(page.items) == []
        assert page.next_cursor is None
        assert await drain(provider.iter_executions()) == []

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(13)
    async def test_c13_executions_are_listed_in_ascending_id_order(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C13] Executions come in ascending code-point order of their ids (case-sensitive)."""
        ids = [
            "b",
            "a",
            "A",
            "Z9",
            "a-b",
            "a.b",
            "a_b",
            "a0",
            "0",
            "9z",
            "run-1",
            "run-10",
            "run-1.0",
            "run-2",
        ]
        random.Random(13).shuffle(ids)
        for execution_id in ids:
            await provider.save_checkpoint(execution_id, 0, b"x")
        assert await _execution_ids(provider) == sorted(ids)
        now = time.time()
        for info in (await provider.list_executions()).items:
            assert info.updated_at is None or abs(info.updated_at - now) <= self.clock_tolerance

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(13)
    async def test_c13_paging_returns_every_execution_once(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C13] Following next_cursor with any limit yields every execution once, in order."""
        ids = sorted(f"exec-{i:03d}" for i in range(23))
        for execution_id in ids:
            await provider.save_checkpoint(execution_id, 0, b"x")
        for limit in (1, 2, 4, 22, 23, 24, 100):
            assert await _execution_ids(provider, limit=limit) == ids, f"limit={limit}"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(13)
    async def test_c13_a_checkpoint_a_blob_or_a_lease_makes_an_execution(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C13] An execution is listed if it has a checkpoint, a blob or a lease."""
        await provider.save_checkpoint("with-checkpoint", 0, b"x")
        await provider.put_blob("with-blob", b"blob")
        await provider.claim("with-lease", "worker-a", ttl=LONG)
        assert await _execution_ids(provider) == ["with-blob", "with-checkpoint", "with-lease"]

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(13)
    async def test_c13_cursor_survives_writes_between_pages(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C13] Executions present during the whole listing are returned exactly once."""
        ids = [f"exec-{i}" for i in range(10)]
        for execution_id in ids:
            await provider.save_checkpoint(execution_id, 0, b"x")
        first = await provider.list_executions(limit=3)
        seen = [item.execution_id for item in first.items]
        assert 1 <= len(seen) <= 3
        assert first.next_cursor is not None
        await provider.delete_execution("exec-7")
        await provider.save_checkpoint("exec-77", 0, b"x")
        cursor: str | None = first.next_cursor
        pages = 0
        while cursor is not None:
            page = await provider.list_executions(cursor=cursor, limit=3)
            seen.extend(item.execution_id for item in page.items)
            cursor = page.next_cursor
            pages += 1
            assert pages < 100, "listing did not end"
        assert seen == sorted(set(seen)), f"duplicates or disorder: {seen}"
        stable = set(ids) - {"exec-7"}
        assert stable <= set(seen), f"missing {sorted(stable - set(seen))}"
        assert set(seen) <= stable | {"exec-7", "exec-77"}

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(13)
    async def test_c13_cursor_survives_deletes_and_inserts_before_it(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C13] Deleting listed executions and creating lower ids between pages skips and
        repeats nothing (a keyset cursor, not an offset)."""
        initial = [f"exec-{i:02d}" for i in range(12)]
        for execution_id in initial:
            await provider.save_checkpoint(execution_id, 0, b"x")
        inserted: list[str] = []

        async def insert_before(execution_id: str) -> None:
            for _ in range(2):
                inserted.append(f"a-{len(inserted):02d}")  # "a-..." < "exec-..."
                await provider.save_checkpoint(inserted[-1], 0, b"new")

        seen = await list_while_changing(
            lambda cursor: provider.list_executions(cursor=cursor, limit=3),
            lambda item: item.execution_id,
            delete=provider.delete_execution,
            insert_before=insert_before,
            limit=3,
        )
        assert seen == sorted(set(seen)), f"duplicates or disorder: {seen}"
        assert set(initial) <= set(seen), f"skipped {sorted(set(initial) - set(seen))}"
        assert set(seen) <= set(initial) | set(inserted), seen

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(13)
    async def test_c13_paging_past_1000_executions(self, provider: CheckpointProvider) -> None:
        """[C13] 1,100 executions: default pages (100) and iter_executions (pages of 1,000)."""
        ids = [f"exec-{i:05d}" for i in range(1100)]
        await gather_limited(
            (
                functools.partial(provider.save_checkpoint, execution_id, 0, b"")
                for execution_id in ids
            ),
            limit=self.write_concurrency,
        )
        assert [item.execution_id async for item in provider.iter_executions()] == ids
        assert await _execution_ids(provider) == ids

    # ---------------------------------------------------------- C18 isolation

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(18)
    async def test_c18_checkpoints_of_executions_are_separate(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C18] Same seqs in executions whose ids share a prefix never mix."""
        ids = ["run-1", "run-10", "run-1.0", "run-1-a", "run-"]
        for execution_id in ids:
            for seq in range(3):
                await provider.save_checkpoint(execution_id, seq, f"{execution_id}/{seq}".encode())
        for execution_id in ids:
            assert await _seqs(provider, execution_id) == [0, 1, 2]
            latest = await provider.load_latest_checkpoint(execution_id)
            assert latest is not None
            assert latest.data == f"{execution_id}/2".encode()
            for seq in range(3):
                got = await provider.load_checkpoint(execution_id, seq)
                assert got.data == f"{execution_id}/{seq}".encode()
                assert got.info.execution_id == execution_id
        assert await provider.delete_checkpoint("run-1", 2)
        assert await provider.prune("run-1", keep_last=1) == [0]
        for execution_id in ids[1:]:
            assert await _seqs(provider, execution_id) == [0, 1, 2], execution_id
        assert await _seqs(provider, "run-1") == [1]

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(18)
    async def test_c18_leases_are_per_execution(self, provider: CheckpointProvider) -> None:
        """[C18] A lease on one execution neither blocks nor fences another."""
        first = await provider.claim("run-1", "worker-a", ttl=LONG)
        second = await provider.claim("run-10", "worker-b", ttl=LONG)
        await provider.claim("run-1", "worker-a", ttl=LONG)  # supersedes `first` only
        with pytest.raises(FencedError):
            await provider.save_checkpoint("run-1", 0, b"x", lease=first)
        await provider.save_checkpoint("run-10", 0, b"x", lease=second)
        assert (await provider.load_checkpoint("run-10", 0)).data == b"x"
        current = await provider.get_lease("run-10")
        assert current is not None
        assert (current.owner, current.epoch) == ("worker-b", second.epoch)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(18)
    async def test_c18_blobs_are_per_execution(self, provider: CheckpointProvider) -> None:
        """[C18] A blob put in one execution is not visible in another."""
        digest = await provider.put_blob("run-1", b"shared bytes")
        assert not await provider.has_blob("run-10", digest)
        with pytest.raises(NotFoundError):
            await provider.get_blob("run-10", digest)
        assert list((await provider.list_blobs("run-10")).items) == []
        assert await provider.delete_blob("run-10", digest) is False
        assert await provider.get_blob("run-1", digest) == b"shared bytes"
        await provider.put_blob("run-10", b"shared bytes")
        assert await provider.delete_blob("run-1", digest)
        assert await provider.get_blob("run-10", digest) == b"shared bytes"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(18)
    async def test_c18_executions_live_in_separate_locations(
        self,
        provider: CheckpointProvider,
        checked_backdoor: Backdoor,
    ) -> None:
        """[C18] Deleting one execution removes exactly the locations its writes created."""
        backdoor = checked_backdoor
        assert await backdoor.locations() == [], "the store must start empty"
        await _populate(provider, "run-1")
        after_first = set(await backdoor.locations())
        assert after_first, "the backdoor sees no locations after writes"
        await _populate(provider, "run-10")
        after_second = set(await backdoor.locations())
        assert after_second - after_first, "the second execution added no location"
        assert await provider.delete_execution("run-10")
        assert set(await backdoor.locations()) == after_first, (
            "deleting run-10 must remove its locations and only those"
        )
        assert await _seqs(provider, "run-1") == [0, 1]

    # ---------------------------------------------------- C24 delete_execution

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(24)
    async def test_c24_delete_execution_removes_everything(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C24] delete_execution removes checkpoints, blobs and lease, and returns True once."""
        await _populate(provider, "run-1")
        await _populate(provider, "run-2")
        assert await provider.delete_execution("run-1") is True
        assert await provider.load_latest_checkpoint("run-1") is None
        assert await _seqs(provider, "run-1") == []
        assert list((await provider.list_blobs("run-1")).items) == []
        assert not await provider.has_blob("run-1", _BLOB_DIGEST)
        assert await provider.get_lease("run-1") is None
        assert await _execution_ids(provider) == ["run-2"]
        assert await provider.delete_execution("run-1") is False
        # The other execution is untouched.
        assert await _seqs(provider, "run-2") == [0, 1]
        assert await provider.get_blob("run-2", _BLOB_DIGEST) == _BLOB
        current = await provider.get_lease("run-2")
        assert current is not None
        assert current.owner == "worker-a"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(24)
    async def test_c24_delete_execution_leaves_no_location_behind(
        self,
        provider: CheckpointProvider,
        checked_backdoor: Backdoor,
    ) -> None:
        """[C24] After delete_execution, the store holds what it held before the execution."""
        await _populate(provider, "run-1")
        assert await provider.delete_execution("run-1")
        assert await checked_backdoor.locations() == []

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(24)
    async def test_c24_unknown_and_partial_executions(self, provider: CheckpointProvider) -> None:
        """[C24] delete_execution: False for unknown ids, True for lease- or blob-only ones."""
        assert await provider.delete_execution("never-written") is False
        await provider.claim("lease-only", "worker-a", ttl=LONG)
        await provider.put_blob("blob-only", b"b")
        assert await provider.delete_execution("lease-only") is True
        assert await provider.delete_execution("blob-only") is True
        assert await _execution_ids(provider) == []

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(24)
    async def test_c24_a_deleted_execution_can_start_again(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C24] After delete_execution the id is free: seq 0 can be created, anyone can claim."""
        await _populate(provider, "run-1")
        assert await provider.delete_execution("run-1")
        await provider.save_checkpoint("run-1", 0, b"again", mode="create")
        lease = await provider.claim("run-1", "worker-b", ttl=LONG)
        assert lease.owner == "worker-b"
        assert (await provider.load_checkpoint("run-1", 0)).data == b"again"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(24)
    async def test_c24_epochs_never_repeat_after_delete_execution(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C24] A claim after delete_execution gets an epoch above every earlier one of the
        id, so leases from before the deletion stay fenced (C9) and cannot renew (C16)."""
        old: list[Lease] = []
        for round_ in range(3):
            lease = await provider.claim("run-1", f"worker-{round_}", ttl=LONG)
            assert all(lease.epoch > earlier.epoch for earlier in old), (
                f"after delete_execution, a claim got epoch {lease.epoch}; earlier leases of "
                f"the id had epochs {[earlier.epoch for earlier in old]}"
            )
            await provider.save_checkpoint("run-1", 0, b"x", mode="overwrite", lease=lease)
            for stale in old:
                with pytest.raises(FencedError):
                    await provider.save_checkpoint("run-1", 1, b"zombie", lease=stale)
                with pytest.raises(FencedError):
                    await provider.renew(stale, ttl=LONG)
            with pytest.raises(NotFoundError):
                await provider.load_checkpoint("run-1", 1)
            old.append(lease)
            assert await provider.delete_execution("run-1") is True


_BLOB = b"blob of the execution"
_BLOB_DIGEST = blob_digest(_BLOB)


async def _populate(provider: CheckpointProvider, execution_id: str) -> None:
    """Two checkpoints, a blob and a live lease."""
    lease = await provider.claim(execution_id, "worker-a", ttl=LONG)
    await provider.save_checkpoint(execution_id, 0, b"zero", metadata={"a": "b"}, lease=lease)
    await provider.save_checkpoint(execution_id, 1, b"one", lease=lease)
    assert await provider.put_blob(execution_id, _BLOB) == _BLOB_DIGEST
