"""Owner liveness clauses: take-over of a dead owner's lease (C29), owner locks (C30)."""

from __future__ import annotations

import asyncio
import time

import pytest

from durably.errors import FencedError, LeaseHeldError
from durably.storage import CheckpointProvider, Lease
from durably_conformance._base import ProviderPool, SuiteBase

__all__ = ["LivenessSuite"]

RUN = "run-1"
LONG = 600.0
"""TTL of leases that must not expire during a test."""


class LivenessSuite(SuiteBase):
    """Clauses C29 and C30."""

    # ------------------------------------------------------------ C29 take-over

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(29)
    @pytest.mark.durably_takeover
    async def test_c29_a_live_lease_is_taken_over_and_fenced(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C29] take_over replaces a live lease with a higher epoch; the old one is fenced."""
        old = await provider.claim(RUN, "worker-a", ttl=LONG)
        await provider.save_checkpoint(RUN, 0, b"a0", lease=old)
        new = await provider.take_over(old, "worker-b", ttl=LONG)
        assert (new.execution_id, new.owner) == (RUN, "worker-b")
        assert new.epoch > old.epoch
        assert not new.expired()
        current = await provider.get_lease(RUN)
        assert current is not None
        assert (current.owner, current.epoch) == ("worker-b", new.epoch)
        with pytest.raises(FencedError):
            await provider.save_checkpoint(RUN, 1, b"a1", lease=old)
        with pytest.raises(FencedError):
            await provider.renew(old, ttl=LONG)
        with pytest.raises(LeaseHeldError):
            await provider.claim(RUN, "worker-a", ttl=LONG)
        await provider.save_checkpoint(RUN, 1, b"b1", lease=new)
        assert (await provider.load_checkpoint(RUN, 1)).data == b"b1"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(29)
    @pytest.mark.durably_takeover
    async def test_c29_a_replaced_lease_cannot_be_taken_over_again(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C29] Once the lease changed hands, taking the old one over raises LeaseHeldError."""
        old = await provider.claim(RUN, "worker-a", ttl=LONG)
        new = await provider.take_over(old, "worker-b", ttl=LONG)
        with pytest.raises(LeaseHeldError):
            await provider.take_over(old, "worker-c", ttl=LONG)
        again = await provider.claim(RUN, "worker-b", ttl=LONG)  # b restarts
        with pytest.raises(LeaseHeldError):
            await provider.take_over(new, "worker-c", ttl=LONG)
        current = await provider.get_lease(RUN)
        assert current is not None
        assert (current.owner, current.epoch) == ("worker-b", again.epoch)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(29)
    @pytest.mark.durably_takeover
    async def test_c29_concurrent_take_overs_exactly_one_wins(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C29] Of many owners taking the same lease over at once, exactly one wins."""
        for round_ in range(5):
            execution_id = f"run-{round_}"
            dead = await provider.claim(execution_id, "dead-owner", ttl=LONG)
            results = await asyncio.gather(
                *(provider.take_over(dead, f"worker-{i}", ttl=LONG) for i in range(10)),
                return_exceptions=True,
            )
            winners = [r for r in results if isinstance(r, Lease)]
            assert len(winners) == 1, f"{len(winners)} owners took the lease over: {results}"
            assert all(
                isinstance(r, LeaseHeldError) for r in results if not isinstance(r, Lease)
            ), results
            current = await provider.get_lease(execution_id)
            assert current is not None
            assert (current.owner, current.epoch) == (winners[0].owner, winners[0].epoch)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(29)
    @pytest.mark.durably_takeover
    @pytest.mark.durably_shared
    async def test_c29_take_overs_across_instances_exactly_one_wins(
        self,
        provider_pool: ProviderPool,
    ) -> None:
        """[C29] Take-overs through several instances of one store: exactly one wins."""
        instances = [provider_pool.new() for _ in range(4)]
        dead = await instances[0].claim(RUN, "dead-owner", ttl=LONG)
        results = await asyncio.gather(
            *(p.take_over(dead, f"worker-{i}", ttl=LONG) for i, p in enumerate(instances)),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, Lease)]
        assert len(winners) == 1, results
        assert all(isinstance(r, LeaseHeldError) for r in results if not isinstance(r, Lease)), (
            results
        )
        with pytest.raises(FencedError):
            await instances[1].save_checkpoint(RUN, 0, b"x", lease=dead)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(29)
    @pytest.mark.durably_takeover
    async def test_c29_take_over_claims_whatever_claim_could(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C29] take_over succeeds wherever claim would: released or never-claimed leases."""
        first = await provider.claim(RUN, "worker-a", ttl=LONG)
        other = await provider.claim("run-2", "worker-x", ttl=LONG)
        await provider.release(first)
        stale = Lease(RUN, "somebody-else", first.epoch - 1, time.time() + LONG)
        second = await provider.take_over(stale, "worker-b", ttl=LONG)
        assert second.epoch > first.epoch
        assert second.owner == "worker-b"
        never = Lease("run-3", "nobody", 1, time.time() + LONG)
        third = await provider.take_over(never, "worker-c", ttl=LONG)
        assert third.epoch > 0
        assert third.owner == "worker-c"
        current = await provider.get_lease("run-2")
        assert current is not None
        assert (current.owner, current.epoch) == ("worker-x", other.epoch), "others untouched"

    # ------------------------------------------------------------ C30 owner locks

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(30)
    @pytest.mark.durably_owner_lock
    async def test_c30_an_owner_lock_has_one_holder(self, provider_pool: ProviderPool) -> None:
        """[C30] While held, owner_lock_free is False and other instances cannot take it."""
        first, second = provider_pool.new(), provider_pool.new()
        assert await first.owner_lock_free(RUN)
        held = await first.lock_owner(RUN)
        assert held is not None
        try:
            assert not await second.owner_lock_free(RUN)
            assert not await first.owner_lock_free(RUN)
            assert await second.lock_owner(RUN) is None
            assert await first.lock_owner(RUN) is None, "a second holder in the same process"
        finally:
            await held.release()
        assert await second.owner_lock_free(RUN)
        again = await second.lock_owner(RUN)
        assert again is not None
        await again.release()
        await again.release()  # releasing twice is harmless

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(30)
    @pytest.mark.durably_owner_lock
    async def test_c30_owner_locks_are_per_execution(self, provider: CheckpointProvider) -> None:
        """[C30] One execution's owner lock does not hold another's."""
        one = await provider.lock_owner(RUN)
        two = await provider.lock_owner("run-2")
        assert one is not None
        assert two is not None
        assert await provider.owner_lock_free("run-3")
        await one.release()
        assert await provider.owner_lock_free(RUN)
        assert not await provider.owner_lock_free("run-2")
        await two.release()
        listed = [e.execution_id async for e in provider.iter_executions()]
        assert listed == [], f"owner locks alone must not make executions: {listed}"
