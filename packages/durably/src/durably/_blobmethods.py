"""The provider contract's public methods for blobs: content-addressed bytes per execution.

A *blob* is stored once under ``sha256:<hex>`` of its payload, however often it is put
(C17); :meth:`~BlobMethods.put_blobs` stores many at once -- the new blobs of one
checkpoint, durable before the checkpoint that references them is saved (C33).

:class:`BlobMethods` is a base of :class:`~durably.storage.CheckpointProvider` (above
:class:`~durably._ownership.OwnershipMethods`). Like the others, these are ``@final``
template methods: they validate their arguments, wrap payloads in the checksummed
envelope (and verify it on the way back) and call a provider method (:mod:`durably._spi`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import final

from durably._envelope import Envelope, unwrap
from durably._ownership import OwnershipMethods
from durably._storetypes import BlobInfo, Page, blob_digest, check_digest, validate_execution_id
from durably.errors import CorruptObjectError, NotFoundError, StoreError

__all__ = ["BlobMethods"]


class BlobMethods(OwnershipMethods):
    """Blobs: the public methods (see the module docstring)."""

    envelope: Envelope
    """How payloads are wrapped (set by :class:`~durably.storage.CheckpointProvider`)."""

    @final
    async def put_blob(self, execution_id: str, data: bytes, *, digest: str | None = None) -> str:
        """Store ``data`` under its content address and return it [C17].

        Idempotent: putting bytes that are already stored writes nothing new.
        If ``digest`` is given it must equal :func:`blob_digest` of ``data``.
        """
        validate_execution_id(execution_id)
        actual = blob_digest(data)
        if digest is not None and digest != actual:
            raise ValueError(f"digest {digest} does not match the data ({actual})")
        await self._put_blob(execution_id, actual, self.envelope.wrap(bytes(data)))
        return actual

    @final
    async def put_blobs(self, execution_id: str, blobs: Mapping[str, bytes]) -> dict[str, bool]:
        """Store many blobs at once, each under its content address [C33].

        ``blobs`` maps each digest to its data; every digest must equal
        :func:`blob_digest` of its data, else :class:`ValueError` is raised and nothing is
        stored. Each blob is stored as :meth:`put_blob` stores it (absent-only: one that
        is stored already is not written again), and when this returns all of them are
        durable, as a saved checkpoint is [C2]: the core puts a checkpoint's new blobs
        through this method before it saves the checkpoint. If it raises, each blob is
        stored whole or not at all, and the batch may be put again.

        Returns:
            For every digest of ``blobs``: whether this call wrote it (False: it was
            stored already -- or, after the provider retried a request whose outcome it
            could not see, possibly written by that request: the flags are accounting).
        """
        validate_execution_id(execution_id)
        stored: dict[str, bytes] = {}
        for digest, data in blobs.items():
            actual = blob_digest(data)
            if digest != actual:
                raise ValueError(f"digest {digest} does not match the data ({actual})")
            stored[digest] = self.envelope.wrap(bytes(data))
        if not stored:
            return {}
        written = await self._put_blobs(execution_id, stored)
        if set(written) != set(stored):
            raise StoreError(
                f"{type(self).__name__}._put_blobs did not report the {len(stored)} blobs "
                f"put in execution {execution_id!r}"
            )
        return {digest: bool(written[digest]) for digest in stored}

    @final
    async def get_blob(self, execution_id: str, digest: str) -> bytes:
        """Read a blob; its content is verified against ``digest`` [C17]."""
        validate_execution_id(execution_id)
        check_digest(digest)
        stored = await self._get_blob(execution_id, digest)
        if stored is None:
            raise NotFoundError(f"no blob {digest} in execution {execution_id!r}")
        data = unwrap(stored, what=f"blob {digest} of {execution_id!r}")
        if blob_digest(data) != digest:
            raise CorruptObjectError(f"blob {digest} of {execution_id!r} has other content")
        return data

    @final
    async def has_blob(self, execution_id: str, digest: str) -> bool:
        """Whether a blob is stored."""
        validate_execution_id(execution_id)
        check_digest(digest)
        return await self._has_blob(execution_id, digest)

    @final
    async def list_blobs(
        self,
        execution_id: str,
        *,
        cursor: str | None = None,
        limit: int = 1000,
    ) -> Page[BlobInfo]:
        """List an execution's blobs in increasing digest order, one page at a time."""
        validate_execution_id(execution_id)
        if limit < 1:
            raise ValueError("limit must be at least 1")
        return await self._list_blobs(execution_id, cursor, limit)

    @final
    async def delete_blob(self, execution_id: str, digest: str) -> bool:
        """Delete a blob; return whether it existed."""
        validate_execution_id(execution_id)
        check_digest(digest)
        return await self._delete_blob(execution_id, digest)
