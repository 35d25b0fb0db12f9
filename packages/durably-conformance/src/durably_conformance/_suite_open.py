"""The open-executions index clause (C31): what ``durably worker`` finds work through."""

from __future__ import annotations

import pytest

from durably.storage import META_STATUS, CheckpointProvider, ExecutionInfo
from durably_conformance._backdoor import Backdoor
from durably_conformance._base import ProviderPool, SuiteBase
from durably_conformance._helpers import collect_pages, list_while_changing

__all__ = ["OpenIndexSuite"]

LONG = 600.0
RUNNING = {META_STATUS: "running"}
COMPLETED = {META_STATUS: "completed"}
FAILED = {META_STATUS: "failed"}


async def _open_ids(provider: CheckpointProvider, *, limit: int = 100) -> list[str]:
    async def fetch(cursor: str | None) -> object:
        return await provider.list_open_executions(cursor=cursor, limit=limit)

    items, _pages = await collect_pages(fetch, limit=limit, max_pages=10_000)
    for item in items:
        assert isinstance(item, ExecutionInfo)
    return [item.execution_id for item in items]


class OpenIndexSuite(SuiteBase):
    """Clause C31 (capability ``OPEN_INDEX``).

    A backdoor may implement the optional ``add_open_entry(execution_id)`` -- leave an
    index entry for the execution as a crash between a final write and the index update
    would -- so that :meth:`test_c31_forget_if_finished_drops_only_stale_entries` can
    check that a stale entry is dropped; without it that part is skipped.
    """

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(31)
    @pytest.mark.durably_open_index
    async def test_c31_open_executions_are_listed_and_finished_ones_are_not(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C31] Running and status-less executions are listed; completed, failed,
        blob-only, lease-only and deleted ones are not."""
        assert await _open_ids(provider) == []
        await provider.save_checkpoint("plain", 0, b"p0")
        await provider.save_checkpoint("running", 0, b"r0", metadata=RUNNING)
        for execution_id, final in (("completed", COMPLETED), ("failed", FAILED)):
            await provider.save_checkpoint(execution_id, 0, b"x0", metadata=RUNNING)
            await provider.save_checkpoint(execution_id, 1, b"x1", metadata=final)
        await provider.put_blob("blob-only", b"just a blob")
        await provider.claim("lease-only", "worker-a", ttl=LONG)
        await provider.save_checkpoint("deleted", 0, b"d0", metadata=RUNNING)
        assert await provider.delete_execution("deleted")
        leased = await provider.claim("leased", "worker-a", ttl=LONG)
        await provider.save_checkpoint("leased", 0, b"l0", metadata=RUNNING, lease=leased)
        await provider.save_checkpoint(
            "leased-done",
            0,
            b"l0",
            metadata=RUNNING,
            lease=await provider.claim("leased-done", "w", ttl=LONG),
        )
        done_lease = await provider.get_lease("leased-done")
        assert done_lease is not None
        await provider.save_checkpoint(
            "leased-done", 1, b"l1", metadata=COMPLETED, lease=done_lease
        )
        assert await _open_ids(provider) == ["leased", "plain", "running"]
        # Resuming a failed execution opens it again; finishing it closes it.
        await provider.save_checkpoint("failed", 2, b"x2", metadata=RUNNING)
        assert await _open_ids(provider) == ["failed", "leased", "plain", "running"]
        await provider.save_checkpoint("failed", 3, b"x3", metadata=COMPLETED)
        await provider.save_checkpoint("running", 1, b"r1", metadata=FAILED)
        assert await _open_ids(provider) == ["leased", "plain"]

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(31)
    @pytest.mark.durably_open_index
    async def test_c31_the_latest_checkpoint_decides(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C31] A finished checkpoint saved below an open latest one leaves it open;
        overwriting the latest with a finished one closes it."""
        await provider.save_checkpoint("run-1", 0, b"a", metadata=RUNNING)
        await provider.save_checkpoint("run-1", 5, b"b", metadata=RUNNING)
        await provider.save_checkpoint("run-1", 3, b"c", metadata=COMPLETED)
        assert await _open_ids(provider) == ["run-1"]
        await provider.save_checkpoint("run-1", 5, b"d", metadata=FAILED, mode="overwrite")
        assert await _open_ids(provider) == []
        await provider.save_checkpoint("run-1", 5, b"e", metadata=RUNNING, mode="overwrite")
        assert await _open_ids(provider) == ["run-1"]

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(31)
    @pytest.mark.durably_open_index
    async def test_c31_listing_is_paged_in_id_order_and_survives_writes(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C31] Pages in ascending id order; finishing listed executions and opening lower
        ids between pages skips and repeats nothing."""
        initial = [f"exec-{i:02d}" for i in range(14)]
        for execution_id in initial:
            await provider.save_checkpoint(execution_id, 0, b"x", metadata=RUNNING)
        for i in range(5):
            await provider.save_checkpoint(f"done-{i}", 0, b"x", metadata=COMPLETED)
        everything = await _open_ids(provider, limit=4)
        assert everything == initial
        inserted: list[str] = []

        async def finish(execution_id: str) -> None:
            await provider.save_checkpoint(execution_id, 1, b"y", metadata=COMPLETED)

        async def insert_before(execution_id: str) -> None:
            for _ in range(2):
                inserted.append(f"a-{len(inserted):02d}")  # "a-..." < "exec-..."
                await provider.save_checkpoint(inserted[-1], 0, b"new", metadata=RUNNING)

        seen = await list_while_changing(
            lambda cursor: provider.list_open_executions(cursor=cursor, limit=3),
            lambda item: item.execution_id,
            delete=finish,
            insert_before=insert_before,
            limit=3,
        )
        assert seen == sorted(set(seen)), f"duplicates or disorder: {seen}"
        assert set(initial) <= set(seen), f"skipped {sorted(set(initial) - set(seen))}"
        assert set(seen) <= set(initial) | set(inserted), seen
        with pytest.raises(ValueError):
            await provider.list_open_executions(limit=0)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(31)
    @pytest.mark.durably_open_index
    async def test_c31_deleting_reopens_or_unlists(self, provider: CheckpointProvider) -> None:
        """[C31] Deleting a finished latest checkpoint above an open one reopens the
        execution; deleting the open top of a finished one, its last checkpoint or the
        execution unlists it; pruning changes nothing."""
        await provider.save_checkpoint("reopened", 0, b"a", metadata=RUNNING)
        await provider.save_checkpoint("reopened", 1, b"b", metadata=COMPLETED)
        await provider.save_checkpoint("closed", 0, b"a", metadata=FAILED)
        await provider.save_checkpoint("closed", 1, b"b", metadata=RUNNING)
        await provider.save_checkpoint("emptied", 0, b"a", metadata=RUNNING)
        await provider.save_checkpoint("gone", 0, b"a", metadata=RUNNING)
        for seq in range(4):
            await provider.save_checkpoint("pruned", seq, b"p", metadata=RUNNING)
        assert await _open_ids(provider) == ["closed", "emptied", "gone", "pruned"]
        assert await provider.delete_checkpoint("reopened", 1)
        assert await provider.delete_checkpoint("closed", 1)
        assert await provider.delete_checkpoint("emptied", 0)
        assert await provider.delete_execution("gone")
        assert await provider.prune("pruned", keep_last=1) == [0, 1, 2]
        assert await _open_ids(provider) == ["pruned", "reopened"]

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(31)
    @pytest.mark.durably_open_index
    async def test_c31_forget_if_finished_drops_only_stale_entries(
        self,
        provider: CheckpointProvider,
        checked_backdoor: Backdoor,
    ) -> None:
        """[C31] forget_if_finished keeps an open execution's entry (False), returns False
        without an entry, and drops a stale entry (True)."""
        await provider.save_checkpoint("open", 0, b"a", metadata=RUNNING)
        await provider.save_checkpoint("done", 0, b"a", metadata=COMPLETED)
        assert await provider.forget_if_finished("open") is False
        assert await provider.forget_if_finished("done") is False
        assert await provider.forget_if_finished("never-existed") is False
        assert await _open_ids(provider) == ["open"]
        add = getattr(checked_backdoor, "add_open_entry", None)
        if add is None:
            pytest.skip(
                "the backdoor has no add_open_entry(execution_id): stale entries cannot be made"
            )
        await add("done")
        await add("never-existed")
        assert await _open_ids(provider) == ["done", "never-existed", "open"], (
            "the backdoor's add_open_entry made no entry"
        )
        assert await provider.forget_if_finished("done") is True
        assert await provider.forget_if_finished("never-existed") is True
        assert await provider.forget_if_finished("open") is False
        assert await _open_ids(provider) == ["open"]

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(31)
    @pytest.mark.durably_open_index
    @pytest.mark.durably_shared
    async def test_c31_the_index_is_shared_between_instances(
        self,
        provider_pool: ProviderPool,
    ) -> None:
        """[C31] An execution opened through one instance is listed by another, and
        finished through a third it is listed by none."""
        first, second, third = (provider_pool.new() for _ in range(3))
        lease = await first.claim("run-1", "worker-a", ttl=LONG)
        await first.save_checkpoint("run-1", 0, b"a", metadata=RUNNING, lease=lease)
        assert await _open_ids(second) == ["run-1"]
        await first.release(lease)
        taken = await third.claim("run-1", "worker-b", ttl=LONG)
        await third.save_checkpoint("run-1", 1, b"b", metadata=COMPLETED, lease=taken)
        for instance in (first, second, third):
            assert await _open_ids(instance) == []
        # The first instance opens it again (a resume): the others see it.
        await third.release(taken)
        again = await first.claim("run-1", "worker-a", ttl=LONG)
        await first.save_checkpoint("run-1", 2, b"c", metadata=RUNNING, lease=again)
        assert await _open_ids(third) == ["run-1"]
