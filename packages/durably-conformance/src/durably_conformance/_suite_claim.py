"""The claim-next clause (C32): how ``durably worker`` claims work in one step."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from durably.errors import FencedError, LeaseHeldError
from durably.storage import META_STATUS, CheckpointProvider, Lease
from durably_conformance._base import ProviderPool, SuiteBase

__all__ = ["ClaimNextSuite"]

LONG = 600.0
RUNNING = {META_STATUS: "running"}
COMPLETED = {META_STATUS: "completed"}
FAILED = {META_STATUS: "failed"}


async def _claim_next(provider: CheckpointProvider, owner: str, ttl: float) -> Lease | None:
    claim: Any = getattr(provider, "claim_next", None)
    assert claim is not None, (
        f"{type(provider).__name__} declares Capability.CLAIM_NEXT but has no claim_next"
    )
    lease = await claim(owner, ttl=ttl)
    assert lease is None or isinstance(lease, Lease), f"claim_next returned {lease!r}"
    return lease


async def _drain(provider: CheckpointProvider, owner: str) -> list[Lease]:
    claimed: list[Lease] = []
    for _ in range(100):
        lease = await _claim_next(provider, owner, LONG)
        if lease is None:
            return claimed
        claimed.append(lease)
    raise AssertionError("claim_next kept returning executions: the same one twice?")


class ClaimNextSuite(SuiteBase):
    """Clause C32 (capability ``CLAIM_NEXT``)."""

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(32)
    @pytest.mark.durably_claim_next
    async def test_c32_claims_each_open_execution_nobody_holds_once(
        self, provider: CheckpointProvider
    ) -> None:
        """[C32] claim_next claims unfinished executions whose lease was released or never
        existed, once each; never a finished one or one under a live lease; the new epoch
        fences the previous holder."""
        await provider.save_checkpoint("plain", 0, b"p0")
        await provider.save_checkpoint("running", 0, b"r0", metadata=RUNNING)
        for execution_id, final in (("completed", COMPLETED), ("failed", FAILED)):
            await provider.save_checkpoint(execution_id, 0, b"x0", metadata=RUNNING)
            await provider.save_checkpoint(execution_id, 1, b"x1", metadata=final)
        held = await provider.claim("held", "worker-a", ttl=LONG)
        await provider.save_checkpoint("held", 0, b"h0", metadata=RUNNING, lease=held)
        released = await provider.claim("released", "worker-a", ttl=LONG)
        await provider.save_checkpoint("released", 0, b"l0", metadata=RUNNING, lease=released)
        await provider.release(released)

        claimed = await _drain(provider, "worker-x")
        ids = sorted(lease.execution_id for lease in claimed)
        assert ids == ["plain", "released", "running"], (
            f"claim_next claimed {ids}; expected each unfinished execution nobody holds, once"
        )
        for lease in claimed:
            assert lease.owner == "worker-x"
            assert not lease.expired()
            current = await provider.get_lease(lease.execution_id)
            assert current is not None
            assert (current.owner, current.epoch) == ("worker-x", lease.epoch)
            with pytest.raises(LeaseHeldError):
                await provider.claim(lease.execution_id, "worker-y", ttl=LONG)
        again = next(lease for lease in claimed if lease.execution_id == "released")
        assert again.epoch > released.epoch, "the new epoch must exceed the released one"
        with pytest.raises(FencedError):
            await provider.save_checkpoint("released", 1, b"old", lease=released)
        await provider.save_checkpoint("released", 1, b"new", lease=again)
        current = await provider.get_lease("held")
        assert current is not None
        assert current.epoch == held.epoch, "claim_next took an execution under a live lease"

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(32)
    @pytest.mark.durably_claim_next
    async def test_c32_an_expired_lease_is_claimed(
        self, provider: CheckpointProvider, lease_ttl: float
    ) -> None:
        """[C32] An unfinished execution whose lease expired is claimed with a higher
        epoch, and its previous holder is fenced."""
        old = await provider.claim("expiring", "worker-a", ttl=lease_ttl)
        await provider.save_checkpoint("expiring", 0, b"e0", metadata=RUNNING, lease=old)
        assert await _claim_next(provider, "worker-b", LONG) is None, (
            "claim_next took an execution under a live lease"
        )
        deadline = time.monotonic() + lease_ttl + self.expiry_grace + 5.0
        await asyncio.sleep(lease_ttl)
        new = await _claim_next(provider, "worker-b", LONG)
        while new is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            new = await _claim_next(provider, "worker-b", LONG)
        assert new is not None, "an execution whose lease expired was never claimed"
        assert (new.execution_id, new.owner) == ("expiring", "worker-b")
        assert new.epoch > old.epoch
        with pytest.raises(FencedError):
            await provider.save_checkpoint("expiring", 1, b"a1", lease=old)

    @pytest.mark.asyncio(loop_scope="function")
    @pytest.mark.durably_clause(32)
    @pytest.mark.durably_claim_next
    async def test_c32_concurrent_claims_never_get_the_same_execution(
        self, provider_pool: ProviderPool
    ) -> None:
        """[C32] Many workers claiming at once (one instance each) get distinct
        executions, every open one exactly once."""
        first = provider_pool.first
        wanted = {f"job-{n:02d}" for n in range(12)}
        for execution_id in sorted(wanted):
            await first.save_checkpoint(execution_id, 0, b"j0", metadata=RUNNING)
        workers = [first, *(provider_pool.new() for _ in range(3))]

        async def worker(provider: CheckpointProvider, name: str) -> list[str]:
            return [lease.execution_id for lease in await _drain(provider, name)]

        results = await asyncio.gather(
            *(worker(p, f"worker-{n}") for n, p in enumerate(workers) for _ in range(2))
        )
        claimed = [execution_id for result in results for execution_id in result]
        assert sorted(claimed) == sorted(wanted), (
            f"claimed {sorted(claimed)}: every open execution must be claimed exactly once"
        )
