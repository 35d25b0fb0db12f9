"""The optional abilities a storage provider declares, and the optional fast path of workers.

:class:`Capability` values go in a provider's
:attr:`~durably.storage.CheckpointProvider.capabilities`; the public methods that need one
raise :class:`~durably.errors.UnsupportedError` without it, and the conformance suite
skips the clauses of an undeclared capability with a reason. :class:`ClaimsNext` is the
method a provider with :attr:`Capability.CLAIM_NEXT` has. Both are re-exported by
:mod:`durably.storage`; import them from there.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol, runtime_checkable

from durably._storetypes import Lease

__all__ = ["Capability", "ClaimsNext"]


class Capability(StrEnum):
    """Optional abilities a provider declares in :attr:`CheckpointProvider.capabilities`.

    The conformance suite skips the clauses of an undeclared capability with a reason.
    """

    PERSISTENT = "persistent"
    """Data survives a new provider instance (and a new process) on the same URL."""
    SHARED = "shared"
    """Two provider instances on the same URL see each other's writes, and conditional
    writes and leases hold between them (and between processes or machines)."""
    LARGE_OBJECTS = "large_objects"
    """Checkpoints and blobs of at least 64 MiB round-trip."""
    TAKEOVER = "takeover"
    """:meth:`CheckpointProvider.take_over` replaces a given lease atomically even while
    it is live (a conditional claim): of concurrent take-overs exactly one wins [C29].
    Without it a dead owner's lease is only claimable once it expired."""
    OWNER_LOCK = "owner_lock"
    """:meth:`CheckpointProvider.lock_owner` gives a per-execution lock that the store
    frees by itself when the holding process (or its connection) dies, and
    :meth:`CheckpointProvider.owner_lock_free` tells whether it is held [C30]: owner
    death is detected at once, on any host. Without it only same-host owners are checked
    (by pid and process start time); owners on other hosts by lease expiry."""
    CLAIM_NEXT = "claim_next"
    """The provider has ``claim_next(owner, *, ttl) -> Lease | None`` (see
    :class:`ClaimsNext`): it claims one unfinished execution that nobody holds a live
    lease on, through an index or a queue, so that an idle ``durably worker`` costs the
    same with 100 or 100,000 finished executions. Without it workers list executions and
    read each unfinished one's latest checkpoint metadata. Clause C32."""
    OPEN_INDEX = "open_index"
    """:meth:`CheckpointProvider.list_open_executions` lists the *open* executions --
    those whose latest checkpoint is not finished (see :func:`is_finished`) -- from an
    index the provider maintains as checkpoints are saved and deleted, so that finding
    them costs the same with 100 or 100,000 finished executions; and
    :meth:`CheckpointProvider.forget_if_finished` drops a stale entry [C31]. An entry is
    never missing for an open execution, not even after a crash; a stale entry (a
    finished execution still listed, e.g. after a crash between a final write and the
    index update) is allowed. ``durably worker`` uses it instead of listing every
    execution."""


@runtime_checkable
class ClaimsNext(Protocol):
    """The optional fast path of :attr:`Capability.CLAIM_NEXT`, for workers.

    A provider that declares the capability has this method (it is not part of the
    base class: providers without it need not implement anything).
    """

    async def claim_next(self, owner: str, *, ttl: float) -> Lease | None:
        """Claim one execution for ``owner`` for ``ttl`` seconds, or return None.

        Candidates are executions whose latest checkpoint's ``durably.status`` is
        neither ``completed`` nor ``failed`` and whose lease expired, was released or
        never existed. The claim is atomic like :meth:`CheckpointProvider.claim` (the
        new epoch is greater than every earlier one, fencing the previous holder), and
        concurrent callers -- in one process or several -- never get the same
        execution from one round of claims; they do not wait for each other either. Its
        cost must not grow with the number of finished executions (an index on status
        and lease expiry, a queue). Clause C32 of the conformance suite.

        Returns:
            The new lease, or None if no execution is claimable.
        """
        ...
