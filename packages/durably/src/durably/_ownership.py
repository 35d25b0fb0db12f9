"""The provider contract's public methods for who may write an execution: leases and owner locks.

A *lease* is a claim on an execution by an *owner*, with an *epoch* that grows with every
successful claim: a write that carries a superseded lease is fenced (see
:mod:`durably.storage`). An *owner lock* (capability ``OWNER_LOCK``) is a per-execution
lock the store frees by itself when its holder dies, so that owner death is detected on
any host; :meth:`~OwnershipMethods.take_over` (capability ``TAKEOVER``) claims an
execution whose owner was found dead while its lease is still live.

:class:`OwnershipMethods` is a base of :class:`~durably.storage.CheckpointProvider`, which
adds the methods for the data (checkpoints, executions, blobs). Like those, these are
``@final`` template methods: they validate their arguments, check the capability they
need and call a provider method (:mod:`durably._spi`).
"""

from __future__ import annotations

from typing import final

from durably._capabilities import Capability
from durably._spi import ProviderMethods
from durably._storetypes import Lease, OwnerLock, check_owner, check_ttl, validate_execution_id
from durably.errors import UnsupportedError

__all__ = ["OwnershipMethods"]


class OwnershipMethods(ProviderMethods):
    """Leases and owner locks: the public methods (see the module docstring)."""

    @final
    async def claim(self, execution_id: str, owner: str, *, ttl: float) -> Lease:
        """Claim an execution for ``owner`` for ``ttl`` seconds [C15].

        Succeeds when there is no lease, the lease expired, or it was released; the
        new lease's epoch is greater than every earlier epoch of the execution. A
        claim by the same owner while its lease is live also succeeds with a new
        epoch (so a restarted process fences its own previous incarnation).

        Raises:
            LeaseHeldError: Another owner holds a live lease.
        """
        validate_execution_id(execution_id)
        check_owner(owner)
        check_ttl(ttl)
        return await self._claim(execution_id, owner, ttl)

    @final
    async def renew(self, lease: Lease, *, ttl: float) -> Lease:
        """Extend a lease to ``now + ttl`` [C16].

        Renewing an expired lease succeeds as long as nobody claimed the execution
        since. Raises FencedError if the lease was superseded.
        """
        validate_execution_id(lease.execution_id)
        check_ttl(ttl)
        return await self._renew(lease, ttl)

    @final
    async def release(self, lease: Lease) -> None:
        """Give a lease up so others may claim at once. A superseded lease is ignored."""
        validate_execution_id(lease.execution_id)
        await self._release(lease)

    @final
    async def get_lease(self, execution_id: str) -> Lease | None:
        """The current lease (live, expired or released), or None if never claimed."""
        validate_execution_id(execution_id)
        return await self._get_lease(execution_id)

    @final
    async def take_over(self, lease: Lease, owner: str, *, ttl: float) -> Lease:
        """Claim an execution whose current lease may still be live: ``lease`` [C29].

        For an owner found dead: succeeds when ``lease`` (same owner and epoch) is still
        the current lease, live or not, and whenever :meth:`claim` would succeed. The new
        lease's epoch is greater than every earlier one, so ``lease``'s holder is fenced
        if it was alive after all. Of concurrent take-overs of one lease exactly one
        wins. Needs :attr:`Capability.TAKEOVER`.

        Raises:
            LeaseHeldError: Another live lease replaced ``lease`` meanwhile.
            UnsupportedError: The provider does not declare ``TAKEOVER``.
        """
        validate_execution_id(lease.execution_id)
        check_owner(owner)
        check_ttl(ttl)
        self._require(Capability.TAKEOVER, "take over a lease")
        return await self._take_over(lease, owner, ttl)

    @final
    async def lock_owner(self, execution_id: str) -> OwnerLock | None:
        """Take the execution's owner lock, or return None if a live holder has it [C30].

        The store frees the lock when :meth:`OwnerLock.release` is called or when this
        process (or its connection to the store) dies. Needs :attr:`Capability.OWNER_LOCK`.
        """
        validate_execution_id(execution_id)
        self._require(Capability.OWNER_LOCK, "lock an owner")
        return await self._lock_owner(execution_id)

    @final
    async def owner_lock_free(self, execution_id: str) -> bool:
        """Whether nobody holds the execution's owner lock (a probe) [C30]."""
        validate_execution_id(execution_id)
        self._require(Capability.OWNER_LOCK, "probe an owner lock")
        return await self._owner_lock_free(execution_id)

    # ------------------------------------------------------------------- internal

    def _require(self, capability: Capability, what: str) -> None:
        if capability not in self.capabilities:
            raise UnsupportedError(
                f"cannot {what}: the {self.scheme or type(self).__name__} provider does not "
                f"declare the {capability.value!r} capability"
            )
