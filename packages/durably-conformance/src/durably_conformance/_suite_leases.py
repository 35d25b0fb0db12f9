"""Lease clauses: fencing (C9), claim (C15), renew (C16), release and get_lease (C23).

Taking over a dead owner's lease (C29) and owner locks (C30): ``_suite_liveness``.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from durably.errors import (
    FencedError,
    LeaseHeldError,
    NotFoundError,
)
from durably.storage import CheckpointInfo, CheckpointProvider, Lease
from durably_conformance._base import ProviderPool, SuiteBase
from durably_conformance._helpers import eventually, sleep_past

__all__ = ["LeaseSuite"]

RUN = "run-1"
LONG = 600.0
"""TTL of leases that must not expire during a test."""


async def _seqs(provider: CheckpointProvider, execution_id: str = RUN) -> list[int]:
    return [info.seq async for info in provider.iter_checkpoints(execution_id)]


class LeaseSuite(SuiteBase):
    """Clauses C9, C15, C16 and C23."""

    def _assert_expiry(self, lease: Lease, ttl: float, before: float, after: float) -> None:
        tolerance = self.clock_tolerance
        assert before + ttl - tolerance <= lease.expires_at <= after + ttl + tolerance, (
            f"expires_at {lease.expires_at} is not now + ttl in UNIX seconds "
            f"(now={after}, ttl={ttl})"
        )

    async def _claim_after_expiry(
        self,
        provider: CheckpointProvider,
        execution_id: str,
        owner: str,
        expired: Lease,
        ttl: float,
    ) -> Lease:
        """Wait for ``expired`` to expire, then claim (retrying while the store lags)."""
        await sleep_past(expired.expires_at)
        return await eventually(
            lambda: provider.claim(execution_id, owner, ttl=ttl),
            retry_on=LeaseHeldError,
            within=self.expiry_grace,
        )

    # ------------------------------------------------------------- C9 fencing

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(9)
    async def test_c09_the_current_lease_may_write(self, provider: CheckpointProvider) -> None:
        """[C9] Saves, overwrites, deletes and prunes carrying the current lease succeed."""
        lease = await provider.claim(RUN, "worker-a", ttl=LONG)
        for seq in range(4):
            await provider.save_checkpoint(RUN, seq, bytes([seq]), lease=lease)
        await provider.save_checkpoint(RUN, 0, b"again", mode="overwrite", lease=lease)
        assert await provider.delete_checkpoint(RUN, 1, lease=lease)
        assert await provider.prune(RUN, keep_last=1, lease=lease) == [0, 2]
        assert await _seqs(provider) == [3]

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(9)
    async def test_c09_a_superseded_lease_writes_nothing(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C9] After a newer claim, every write with the old lease raises FencedError."""
        old = await provider.claim(RUN, "worker-a", ttl=LONG)
        await provider.save_checkpoint(RUN, 0, b"zero", lease=old)
        kept = await provider.save_checkpoint(RUN, 1, b"one", lease=old)
        new = await provider.claim(RUN, "worker-a", ttl=LONG)  # a restarted process
        assert new.epoch > old.epoch
        await self._assert_fenced(provider, old, kept)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(9)
    @pytest.mark.durably_persistent
    async def test_c09_a_fenced_write_is_not_durable(self, provider_pool: ProviderPool) -> None:
        """[C9] A fenced write left nothing behind: a fresh instance does not see it either."""
        provider = provider_pool.first
        old = await provider.claim(RUN, "worker-a", ttl=LONG)
        await provider.save_checkpoint(RUN, 0, b"zero", lease=old)
        kept = await provider.save_checkpoint(RUN, 1, b"one", lease=old)
        await provider.claim(RUN, "worker-a", ttl=LONG)
        await self._assert_fenced(provider, old, kept)
        await provider.close()
        await self._assert_unchanged(provider_pool.new(), kept)

    async def _assert_fenced(
        self,
        provider: CheckpointProvider,
        old: Lease,
        kept: CheckpointInfo,
    ) -> None:
        with pytest.raises(FencedError):
            await provider.save_checkpoint(RUN, 2, b"two", lease=old)
        with pytest.raises(FencedError):
            await provider.save_checkpoint(RUN, 1, b"clobber", mode="overwrite", lease=old)
        with pytest.raises(FencedError):
            await provider.delete_checkpoint(RUN, 1, lease=old)
        with pytest.raises(FencedError):
            await provider.prune(RUN, keep_last=1, lease=old)
        await self._assert_unchanged(provider, kept)

    async def _assert_unchanged(self, provider: CheckpointProvider, kept: CheckpointInfo) -> None:
        assert await _seqs(provider) == [0, 1], "a fenced write or delete changed the listing"
        with pytest.raises(NotFoundError):
            await provider.load_checkpoint(RUN, 2)
        one = await provider.load_checkpoint(RUN, 1)
        assert (one.data, one.info.version) == (b"one", kept.version)
        latest = await provider.load_latest_checkpoint(RUN)
        assert latest is not None
        assert latest.seq == 1

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(9)
    async def test_c09_a_lease_never_granted_is_fenced(self, provider: CheckpointProvider) -> None:
        """[C9] A made-up lease on an execution nobody claimed is fenced, nothing written."""
        forged = Lease(RUN, "forger", 1, time.time() + LONG)
        with pytest.raises(FencedError):
            await provider.save_checkpoint(RUN, 0, b"x", lease=forged)
        assert await _seqs(provider) == []
        real = await provider.claim(RUN, "worker-a", ttl=LONG)
        forged = Lease(RUN, "forger", real.epoch + 1000, time.time() + LONG)
        with pytest.raises(FencedError):
            await provider.save_checkpoint(RUN, 0, b"x", lease=forged)
        assert await _seqs(provider) == []

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(9)
    async def test_c09_a_lease_is_for_one_execution(self, provider: CheckpointProvider) -> None:
        """[C9] A lease for another execution is refused (ValueError), nothing written."""
        lease = await provider.claim("run-2", "worker-a", ttl=LONG)
        with pytest.raises(ValueError, match="lease"):
            await provider.save_checkpoint(RUN, 0, b"x", lease=lease)
        assert await _seqs(provider) == []

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(9)
    async def test_c09_an_expired_lease_nobody_replaced_still_writes(
        self,
        provider: CheckpointProvider,
        lease_ttl: float,
    ) -> None:
        """[C9] Fencing compares epochs: an expired lease whose epoch is current may write."""
        lease = await provider.claim(RUN, "worker-a", ttl=lease_ttl)
        await sleep_past(lease.expires_at)
        await provider.save_checkpoint(RUN, 0, b"late but unopposed", lease=lease)
        assert (await provider.load_checkpoint(RUN, 0)).data == b"late but unopposed"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(9)
    async def test_c09_takeover_fences_the_previous_owner(
        self,
        provider: CheckpointProvider,
        lease_ttl: float,
    ) -> None:
        """[C9] Once another owner claimed an expired lease, the old holder is fenced."""
        old = await provider.claim(RUN, "worker-a", ttl=lease_ttl)
        await provider.save_checkpoint(RUN, 0, b"a0", lease=old)
        new = await self._claim_after_expiry(provider, RUN, "worker-b", old, LONG)
        assert new.epoch > old.epoch
        assert new.owner == "worker-b"
        with pytest.raises(FencedError):
            await provider.save_checkpoint(RUN, 1, b"a1", lease=old)
        await provider.save_checkpoint(RUN, 1, b"b1", lease=new)
        assert (await provider.load_checkpoint(RUN, 1)).data == b"b1"

    # --------------------------------------------------------------- C15 claim

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(15)
    async def test_c15_claim_a_fresh_execution(self, provider: CheckpointProvider) -> None:
        """[C15] Claiming an unclaimed execution returns a lease for it, owner and expiry."""
        before = time.time()
        lease = await provider.claim(RUN, "worker-a", ttl=120)
        after = time.time()
        assert isinstance(lease, Lease)
        assert (lease.execution_id, lease.owner) == (RUN, "worker-a")
        assert isinstance(lease.epoch, int)
        assert not isinstance(lease.epoch, bool)
        self._assert_expiry(lease, 120, before, after)
        assert not lease.expired()

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(15)
    async def test_c15_another_owner_cannot_claim_a_live_lease(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C15] While a lease is live, another owner's claim raises LeaseHeldError."""
        lease = await provider.claim(RUN, "worker-a", ttl=LONG)
        with pytest.raises(LeaseHeldError) as raised:
            await provider.claim(RUN, "worker-b", ttl=LONG)
        assert raised.value.owner in (None, "worker-a"), "LeaseHeldError.owner names the holder"
        current = await provider.get_lease(RUN)
        assert current is not None
        assert (current.owner, current.epoch) == ("worker-a", lease.epoch)
        await provider.save_checkpoint(RUN, 0, b"still mine", lease=lease)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(15)
    async def test_c15_the_same_owner_reclaims_with_a_higher_epoch(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C15] A claim by the holder of a live lease succeeds with a higher epoch."""
        first = await provider.claim(RUN, "worker-a", ttl=LONG)
        second = await provider.claim(RUN, "worker-a", ttl=LONG)
        assert second.epoch > first.epoch
        current = await provider.get_lease(RUN)
        assert current is not None
        assert current.epoch == second.epoch

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(15)
    async def test_c15_a_released_lease_can_be_claimed_at_once(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C15] After release, another owner claims immediately, with a higher epoch."""
        first = await provider.claim(RUN, "worker-a", ttl=LONG)
        await provider.release(first)
        second = await provider.claim(RUN, "worker-b", ttl=LONG)
        assert second.owner == "worker-b"
        assert second.epoch > first.epoch
        with pytest.raises(FencedError):
            await provider.save_checkpoint(RUN, 0, b"x", lease=first)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(15)
    async def test_c15_an_expired_lease_can_be_claimed_by_another_owner(
        self,
        provider: CheckpointProvider,
        lease_ttl: float,
    ) -> None:
        """[C15] After the TTL passed, another owner's claim succeeds with a higher epoch."""
        first = await provider.claim(RUN, "worker-a", ttl=lease_ttl)
        second = await self._claim_after_expiry(provider, RUN, "worker-b", first, LONG)
        assert second.owner == "worker-b"
        assert second.epoch > first.epoch

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(15)
    async def test_c15_epochs_only_grow(self, provider: CheckpointProvider) -> None:
        """[C15] Every successful claim has a higher epoch than all before it."""
        epochs = []
        for owner in ("a", "a", "b", "c", "c", "a"):
            current = await provider.get_lease(RUN)
            if current is not None and current.owner != owner:
                await provider.release(current)
            epochs.append((await provider.claim(RUN, owner, ttl=LONG)).epoch)
        assert epochs == sorted(set(epochs)), f"epochs did not strictly grow: {epochs}"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(15)
    async def test_c15_concurrent_claims_exactly_one_wins(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C15] Of many owners claiming at once, exactly one gets the lease."""
        for round_ in range(5):
            execution_id = f"run-{round_}"
            owners = [f"worker-{i}" for i in range(10)]
            results = await asyncio.gather(
                *(provider.claim(execution_id, owner, ttl=LONG) for owner in owners),
                return_exceptions=True,
            )
            winners = [r for r in results if isinstance(r, Lease)]
            assert len(winners) == 1, f"{len(winners)} owners got the lease: {results}"
            assert all(
                isinstance(r, LeaseHeldError) for r in results if not isinstance(r, Lease)
            ), results
            current = await provider.get_lease(execution_id)
            assert current is not None
            assert (current.owner, current.epoch) == (winners[0].owner, winners[0].epoch)

    # --------------------------------------------------------------- C16 renew

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(16)
    async def test_c16_renew_extends_the_same_epoch(self, provider: CheckpointProvider) -> None:
        """[C16] renew keeps owner and epoch and moves expires_at to now + ttl."""
        lease = await provider.claim(RUN, "worker-a", ttl=30)
        before = time.time()
        renewed = await provider.renew(lease, ttl=LONG)
        after = time.time()
        assert (renewed.execution_id, renewed.owner, renewed.epoch) == (
            RUN,
            "worker-a",
            lease.epoch,
        )
        self._assert_expiry(renewed, LONG, before, after)
        assert renewed.expires_at > lease.expires_at
        current = await provider.get_lease(RUN)
        assert current is not None
        assert current.epoch == lease.epoch
        assert abs(current.expires_at - renewed.expires_at) <= self.clock_tolerance
        with pytest.raises(LeaseHeldError):
            await provider.claim(RUN, "worker-b", ttl=LONG)
        await provider.save_checkpoint(RUN, 0, b"x", lease=renewed)
        await provider.save_checkpoint(RUN, 1, b"y", lease=lease)  # same epoch

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(16)
    async def test_c16_renewing_a_superseded_lease_is_fenced(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C16] renew of a lease whose epoch was superseded raises FencedError."""
        old = await provider.claim(RUN, "worker-a", ttl=LONG)
        new = await provider.claim(RUN, "worker-a", ttl=LONG)
        with pytest.raises(FencedError):
            await provider.renew(old, ttl=LONG)
        current = await provider.get_lease(RUN)
        assert current is not None
        assert current.epoch == new.epoch
        with pytest.raises(FencedError):
            await provider.renew(Lease("run-2", "worker-a", 1, time.time() + LONG), ttl=LONG)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(16)
    async def test_c16_an_expired_lease_nobody_claimed_can_be_renewed(
        self,
        provider: CheckpointProvider,
        lease_ttl: float,
    ) -> None:
        """[C16] Renewing after expiry succeeds (same epoch) when nobody claimed since."""
        lease = await provider.claim(RUN, "worker-a", ttl=lease_ttl)
        await sleep_past(lease.expires_at)
        renewed = await provider.renew(lease, ttl=LONG)
        assert renewed.epoch == lease.epoch
        assert not renewed.expired()
        with pytest.raises(LeaseHeldError):
            await provider.claim(RUN, "worker-b", ttl=LONG)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(16)
    async def test_c16_renewing_after_a_takeover_is_fenced(
        self,
        provider: CheckpointProvider,
        lease_ttl: float,
    ) -> None:
        """[C16] Once another owner claimed the expired lease, renewing it raises FencedError."""
        old = await provider.claim(RUN, "worker-a", ttl=lease_ttl)
        new = await self._claim_after_expiry(provider, RUN, "worker-b", old, LONG)
        with pytest.raises(FencedError):
            await provider.renew(old, ttl=LONG)
        current = await provider.get_lease(RUN)
        assert current is not None
        assert (current.owner, current.epoch) == ("worker-b", new.epoch)

    # ----------------------------------------------------- C23 release, get_lease

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(23)
    async def test_c23_get_lease_of_a_never_claimed_execution_is_none(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C23] get_lease returns None for an execution nobody ever claimed."""
        assert await provider.get_lease(RUN) is None
        await provider.save_checkpoint(RUN, 0, b"x")
        await provider.claim("run-2", "worker-a", ttl=LONG)
        assert await provider.get_lease(RUN) is None

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(23)
    async def test_c23_get_lease_returns_the_current_lease(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C23] get_lease returns the lease of the last successful claim."""
        lease = await provider.claim(RUN, "worker-a", ttl=LONG)
        current = await provider.get_lease(RUN)
        assert current is not None
        assert (current.execution_id, current.owner, current.epoch) == (
            RUN,
            "worker-a",
            lease.epoch,
        )
        assert abs(current.expires_at - lease.expires_at) <= self.clock_tolerance
        assert not current.released

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(23)
    async def test_c23_a_released_lease_is_still_reported(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C23] After release, get_lease still returns the (released) lease record."""
        lease = await provider.claim(RUN, "worker-a", ttl=LONG)
        await provider.release(lease)
        current = await provider.get_lease(RUN)
        assert current is not None, "get_lease returns released leases too (None = never claimed)"
        assert current.epoch == lease.epoch
        assert current.released, "get_lease reports a released lease with released=True"
        await provider.release(lease)  # releasing twice is harmless

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(23)
    async def test_c23_releasing_a_superseded_lease_changes_nothing(
        self,
        provider: CheckpointProvider,
    ) -> None:
        """[C23] release of a superseded lease is ignored: the current lease stays live."""
        old = await provider.claim(RUN, "worker-a", ttl=LONG)
        new = await provider.claim(RUN, "worker-a", ttl=LONG)
        await provider.release(old)
        with pytest.raises(LeaseHeldError):
            await provider.claim(RUN, "worker-b", ttl=LONG)
        current = await provider.get_lease(RUN)
        assert current is not None
        assert current.epoch == new.epoch
        await provider.save_checkpoint(RUN, 0, b"x", lease=new)
        await provider.release(Lease("run-2", "nobody", 7, time.time()))  # never claimed
