"""The lease heartbeat checks the owner lock: a lock the store dropped and another process
took ends the execution as a take-over (FencedError), not silently."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

from durably._leasing import leased
from durably.checkpoint import CheckpointManager
from durably.errors import FencedError, OwnerLockLostError, StoreUnavailableError
from durably.storage import Capability, Lease, OwnerLock

from memstore import MemoryStore


class _Lock(OwnerLock):
    def __init__(self, store: LockingStore) -> None:
        self.store = store
        self.released = False

    async def release(self) -> None:
        self.released = True

    async def ensure_held(self) -> None:
        self.store.checks += 1
        self.store.checked.set()
        if self.store.trouble is not None:
            raise self.store.trouble


class LockingStore(MemoryStore):
    """The test store, with an owner lock whose check can be made to fail."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.OWNER_LOCK})

    def __init__(self) -> None:
        super().__init__()
        self.trouble: Exception | None = None
        self.checks = 0
        self.checked = asyncio.Event()
        self.lock: _Lock | None = None

    async def _lock_owner(self, execution_id: str) -> OwnerLock | None:
        self.lock = _Lock(self)
        return self.lock

    async def _owner_lock_free(self, execution_id: str) -> bool:
        return self.lock is None or self.lock.released


def test_a_lost_owner_lock_ends_the_execution_as_a_take_over() -> None:
    async def main() -> None:
        store = LockingStore()
        store.trouble = OwnerLockLostError("another process holds the owner lock now")
        manager = CheckpointManager("locked", store)
        forever = asyncio.Event()
        with pytest.raises(FencedError) as stopped:
            async with leased(manager, 0.3, asyncio.current_task()):
                # cancelled by the heartbeat's first check; the timeout only bounds a failure
                await asyncio.wait_for(forever.wait(), timeout=10)
        assert store.checks == 1
        assert "another process" in str(stopped.value)
        assert store.lock is not None
        assert store.lock.released

    asyncio.run(main())


def test_a_failed_owner_lock_check_is_retried_and_the_execution_goes_on() -> None:
    async def main() -> None:
        store = LockingStore()
        store.trouble = StoreUnavailableError("cannot connect")
        manager = CheckpointManager("locked", store)
        async with leased(manager, 0.3, asyncio.current_task()):
            # the timeouts only bound a failure: the heartbeat checks every 0.1 s
            await asyncio.wait_for(store.checked.wait(), timeout=10)
            store.checked.clear()
            store.trouble = None
            await asyncio.wait_for(store.checked.wait(), timeout=10)  # checked again
        assert store.checks >= 2

    asyncio.run(main())


class _SlowLock(_Lock):
    async def ensure_held(self) -> None:
        self.store.checks += 1
        self.store.checked.set()
        await self.store.unstuck.wait()  # a store that takes for ever to reconnect


class SlowLockStore(LockingStore):
    """An owner-lock check that never ends; renewals counted."""

    def __init__(self) -> None:
        super().__init__()
        self.renewals = 0
        self.renewed = asyncio.Event()
        self.unstuck = asyncio.Event()

    async def _lock_owner(self, execution_id: str) -> OwnerLock | None:
        self.lock = _SlowLock(self)
        return self.lock

    async def _renew(self, lease: Lease, ttl: float) -> Lease:
        self.renewals += 1
        self.renewed.set()
        return await super()._renew(lease, ttl)


def test_a_slow_owner_lock_check_does_not_hold_back_the_lease_renewal() -> None:
    """A check stuck reconnecting is given up after a third of the ttl: the lease is renewed
    again (and the check asked again) instead of expiring behind it."""

    async def main() -> None:
        store = SlowLockStore()
        manager = CheckpointManager("locked", store)
        async with leased(manager, 0.3, asyncio.current_task()):
            try:
                # the timeouts only bound a failure: the heartbeat renews every 0.1 s
                await asyncio.wait_for(store.checked.wait(), timeout=10)
                store.renewed.clear()
                store.checked.clear()
                await asyncio.wait_for(store.renewed.wait(), timeout=10)  # renewed again
                await asyncio.wait_for(store.checked.wait(), timeout=10)  # and checked again
            finally:
                store.unstuck.set()  # a failing run ends
        assert store.renewals >= 2
        assert store.checks >= 2

    asyncio.run(main())
