"""The provider methods (the SPI): what a storage provider implements.

:class:`ProviderMethods` is the base of :class:`~durably.storage.CheckpointProvider` and
holds the half of the contract a provider fills in: its URL :attr:`~ProviderMethods.scheme`,
its :attr:`~ProviderMethods.capabilities`, :meth:`~ProviderMethods.from_url`,
:meth:`~ProviderMethods.describe` and the ``_``-prefixed provider methods. The public
methods callers use are :class:`~durably.storage.CheckpointProvider`'s: they validate
their arguments, wrap payloads in the checksummed envelope and then call a provider
method here. Providers subclass :class:`~durably.storage.CheckpointProvider`, never this
class.

The provider methods receive and return *stored bytes* (already wrapped in the
envelope); they never need to interpret them. Ids, sequence numbers and metadata they
receive have been validated. Each one's guarantees are those of the public method that
calls it (the ``[C<n>]`` clauses of ``docs/spec/conformance.md``, cited there). The
optional ones raise :class:`~durably.errors.UnsupportedError` unless overridden; they are
called only when the provider declares their capability.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Self

from durably._capabilities import Capability
from durably._storetypes import (
    BlobInfo,
    CheckpointInfo,
    ExecutionInfo,
    Lease,
    OwnerLock,
    Page,
    WriteMode,
)
from durably.errors import UnsupportedError

__all__ = ["ProviderMethods"]


class ProviderMethods(abc.ABC):
    """What a storage provider defines (see the module docstring)."""

    scheme: ClassVar[str] = ""
    """The URL scheme this provider serves (``"file"``, ``"s3"``, ...)."""
    capabilities: ClassVar[frozenset[Capability]] = frozenset()

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> Self:
        """Build an instance for a store URL of :attr:`scheme` and its options [C28].

        The provider registry calls it (through the ``durably.providers`` entry point)
        with the whole store URL and the user's ``[durability.<scheme>]`` table, which
        may be empty. It must do no I/O (connect on first use).

        Args:
            url: The store URL, e.g. ``"gizmo://host/path"``.
            options: The provider's options; an empty mapping when none are configured.

        Raises:
            ConfigError: A malformed URL, or an option the provider does not know or
                whose value is invalid (named in the message).
        """

    def describe(self) -> str:
        """A human-readable location of the store, with no secrets (no password)."""
        return f"{self.scheme}://"

    async def _close(self) -> None:  # noqa: B027 - optional hook
        """Provider method: release resources. Default: nothing."""

    async def _delete_many(
        self,
        execution_id: str,
        seqs: Iterable[int],
        lease: Lease | None,
    ) -> list[int]:
        """Provider method: delete many checkpoints. Default: one :meth:`_delete` each."""
        deleted = []
        for seq in seqs:
            if await self._delete(execution_id, seq, lease):
                deleted.append(seq)
        return deleted

    # ------------------------------------------------------- provider methods (SPI)

    @abc.abstractmethod
    async def _save(
        self,
        execution_id: str,
        seq: int,
        stored: bytes,
        metadata: dict[str, str],
        mode: WriteMode,
        lease: Lease | None,
    ) -> CheckpointInfo:
        """Store ``stored`` durably under (execution_id, seq), honouring mode and lease.

        Must raise AlreadyExistsError / PreconditionFailedError / FencedError without
        writing anything when the condition fails, and must make the check and the write
        atomic against other instances if the provider declares ``SHARED``.
        """

    @abc.abstractmethod
    async def _load(self, execution_id: str, seq: int) -> tuple[CheckpointInfo, bytes] | None:
        """Return the info and stored bytes of a checkpoint, or None."""

    async def _load_many(
        self, execution_id: str, seqs: Sequence[int]
    ) -> list[tuple[CheckpointInfo, bytes] | None]:
        """Provider method (optional): the info and stored bytes of many checkpoints.

        Returns one item per ``seqs`` element, in the same order (``seqs`` is ascending,
        without duplicates): what :meth:`_load` would return for it, None for one that is
        not stored. Resume reads the history since the base snapshot through this
        method, a page at a time, so a provider that can read many checkpoints in one
        round trip (one query, one read of a log, concurrent requests) should override
        it; each item has the guarantees of :meth:`_load` [C1]. Default: one
        :meth:`_load` each, in order.
        """
        return [await self._load(execution_id, seq) for seq in seqs]

    @abc.abstractmethod
    async def _load_latest(self, execution_id: str) -> tuple[CheckpointInfo, bytes] | None:
        """Return the checkpoint with the highest seq, or None."""

    @abc.abstractmethod
    async def _list(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
        after: int | None,
    ) -> Page[CheckpointInfo]:
        """Return a page of checkpoint infos with seq > after, ascending."""

    @abc.abstractmethod
    async def _delete(self, execution_id: str, seq: int, lease: Lease | None) -> bool:
        """Delete a checkpoint (fenced by ``lease`` if given); return whether it existed."""

    @abc.abstractmethod
    async def _list_executions(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        """Return a page of executions, ascending by id."""

    @abc.abstractmethod
    async def _delete_execution(self, execution_id: str) -> bool:
        """Delete everything stored for an execution."""

    async def _list_open(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        """Provider method: a page of open executions, ascending by id (see
        :meth:`list_open_executions`). Only called when ``OPEN_INDEX`` is declared."""
        raise UnsupportedError(f"{type(self).__name__} declares OPEN_INDEX without _list_open")

    async def _forget_if_finished(self, execution_id: str) -> bool:
        """Provider method: drop a stale open-index entry (see :meth:`forget_if_finished`)."""
        raise UnsupportedError(
            f"{type(self).__name__} declares OPEN_INDEX without _forget_if_finished"
        )

    @abc.abstractmethod
    async def _claim(self, execution_id: str, owner: str, ttl: float) -> Lease:
        """Atomically claim (see :meth:`claim`)."""

    @abc.abstractmethod
    async def _renew(self, lease: Lease, ttl: float) -> Lease:
        """Atomically renew (see :meth:`renew`)."""

    @abc.abstractmethod
    async def _release(self, lease: Lease) -> None:
        """Release if still current (see :meth:`release`)."""

    @abc.abstractmethod
    async def _get_lease(self, execution_id: str) -> Lease | None:
        """Return the current lease record."""

    async def _take_over(self, lease: Lease, owner: str, ttl: float) -> Lease:
        """Provider method: atomically claim if ``lease`` is current or claim would succeed
        (see :meth:`take_over`). Only called when ``TAKEOVER`` is declared."""
        raise UnsupportedError(f"{type(self).__name__} declares TAKEOVER without _take_over")

    async def _lock_owner(self, execution_id: str) -> OwnerLock | None:
        """Provider method: take the owner lock without waiting (see :meth:`lock_owner`)."""
        raise UnsupportedError(f"{type(self).__name__} declares OWNER_LOCK without _lock_owner")

    async def _owner_lock_free(self, execution_id: str) -> bool:
        """Provider method: whether the owner lock is free, without keeping it."""
        raise UnsupportedError(
            f"{type(self).__name__} declares OWNER_LOCK without _owner_lock_free"
        )

    @abc.abstractmethod
    async def _put_blob(self, execution_id: str, digest: str, stored: bytes) -> bool:
        """Store a blob if absent; return True if it was written, False if it existed."""

    async def _put_blobs(self, execution_id: str, blobs: Mapping[str, bytes]) -> dict[str, bool]:
        """Provider method (optional): store many blobs, each only if absent [C33].

        ``blobs`` maps each digest (validated, distinct) to its stored bytes. Returns, for
        every digest of ``blobs``, what :meth:`_put_blob` would return for it: ``True`` if
        this call wrote the blob, ``False`` if it was stored already (and then it was not
        touched). The core stores the new blobs of a checkpoint through this method, in one
        call, before it saves the checkpoint that references them, so a provider that can
        make many blobs durable at once (one transaction, one pipeline, concurrent
        requests, one flush for many files) should override it.

        Durability: when it returns, every blob of the batch is stored as durably as
        :meth:`_save` stores a checkpoint [C2] -- a crash of the process or the machine
        right after the return loses none of them. Partial failure: when it raises,
        each blob of the batch is either stored whole (visible, readable and verified
        like any other) or not at all -- never half-written under its digest -- and the
        caller knows nothing of which; it may put the same batch again (absent-only
        writes make that safe). Default: one :meth:`_put_blob` each, in order.
        """
        return {
            digest: await self._put_blob(execution_id, digest, blobs[digest]) for digest in blobs
        }

    @abc.abstractmethod
    async def _get_blob(self, execution_id: str, digest: str) -> bytes | None:
        """Return a blob's stored bytes, or None."""

    @abc.abstractmethod
    async def _has_blob(self, execution_id: str, digest: str) -> bool:
        """Return whether a blob exists."""

    @abc.abstractmethod
    async def _list_blobs(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
    ) -> Page[BlobInfo]:
        """Return a page of blobs, ascending by digest."""

    @abc.abstractmethod
    async def _delete_blob(self, execution_id: str, digest: str) -> bool:
        """Delete a blob; return whether it existed."""
