"""The storage contract: what a checkpoint provider stores and guarantees.

A *provider* stores opaque bytes plus a little metadata for *executions*. It is shaped
like an object store so that a directory, S3, PostgreSQL or Redis can implement it
faithfully. Everything above bytes -- serialization, compression, checksums, id
validation -- is done here, in the base class, so every provider gets it for free.

Providers subclass :class:`CheckpointProvider` and implement the ``_``-prefixed
*provider methods* (the SPI, declared by its base :class:`~durably._spi.ProviderMethods`).
Users and the rest of durably call the public methods, which validate arguments, wrap
payloads in a checksummed envelope and then call the SPI. The numbered clauses of
``docs/spec/conformance.md`` state every guarantee; the docstrings below cite them as
``[C<n>]``.

This module is the contract's one import path: the value types (:class:`CheckpointInfo`,
:class:`Lease`, :class:`Page`, ...; defined in :mod:`durably._storetypes`), the
capabilities (:class:`Capability`, :class:`ClaimsNext`; :mod:`durably._capabilities`)
and the helpers of :mod:`durably._providerkit` are re-exported here.

Concepts:

* **Checkpoint** -- bytes stored under ``(execution_id, seq)``. ``seq`` is a
  non-negative integer; a writer uses increasing numbers. Checkpoints are immutable
  unless overwritten on purpose (``mode="overwrite"`` or an :class:`ExpectedVersion`).
* **Version** -- an opaque string that changes with every successful write of the object,
  identical rewrites included (a row version, a generation number, an ETag only where the
  store makes each write's ETag unique). ``ExpectedVersion(v)`` makes a write conditional
  on it, as obstore's ``UpdateVersion`` does.
* **Lease** -- a claim on an execution by an *owner*, with an *epoch* that grows with
  every successful claim and an expiry. Epochs never repeat for an execution id, not
  even after ``delete_execution`` (a provider keeps a floor, or draws epochs from a
  store-wide counter), so a lease from before a deletion stays fenced. After
  :meth:`~CheckpointProvider.release` anyone may claim at once; until someone does, the
  released lease is still current (a renew revives it, fenced writes still pass).
  A write that carries a lease whose epoch is no longer the current one is rejected with
  :class:`~durably.errors.FencedError` and is not durable (fencing tokens).
* **Blob** -- content-addressed bytes (``sha256:<hex>``) scoped to an execution, stored
  once however often they are put.

Owner liveness: a lease names its owner, and durably's owners name themselves with a
checkable identity (host, pid, process start time; see :mod:`durably._liveness`). When
an owner is *provably dead* its live lease is taken over at once with
:meth:`~CheckpointProvider.take_over` -- a claim conditional on the dead owner's lease
still being the current one, so it bumps the epoch and fences a wrongly-judged owner.
Providers declare how they help (capabilities ``TAKEOVER`` and ``OWNER_LOCK``): an
owner lock is a per-execution lock the store frees by itself when its holder dies (an
``flock`` on a file, a PostgreSQL session advisory lock), so death is detected across
hosts; without one, same-host owners are checked by pid and start time and other hosts
by lease expiry.

Clocks: ``created_at``, lease expiry and ``updated_at`` come from the provider's clock
(the database server's, the object store's, or this machine's); ``prune(older_than=)``
and :meth:`Lease.expired` compare them with this machine's clock, so keep clocks in sync
(NTP) and leases well above the expected skew.

Fencing covers checkpoint writes and deletes. Blob writes and ``delete_execution`` are not
fenced: blobs are content-addressed (a stale writer can only add unreferenced bytes, which
garbage collection removes) and deleting an execution is an administrative act.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from itertools import pairwise
from types import TracebackType
from typing import Self, final

from durably._blobmethods import BlobMethods
from durably._capabilities import Capability, ClaimsNext
from durably._envelope import Envelope, unwrap
from durably._providerkit import (
    call_with_retries,
    decode_int_cursor,
    decode_metadata,
    encode_int_cursor,
    encode_metadata,
)
from durably._storetypes import (
    DIGEST_RE,
    EXECUTION_ID_RE,
    FINISHED_STATUSES,
    MAX_METADATA_BYTES,
    META_BASE,
    META_STATUS,
    METADATA_KEY_RE,
    BlobInfo,
    CheckpointInfo,
    ExecutionInfo,
    ExpectedVersion,
    Lease,
    OwnerLock,
    Page,
    StoredCheckpoint,
    WriteMode,
    blob_digest,
    check_seq,
    is_finished,
    validate_execution_id,
    validate_metadata,
)
from durably.errors import CorruptObjectError, NotFoundError

__all__ = [
    "DIGEST_RE",
    "EXECUTION_ID_RE",
    "FINISHED_STATUSES",
    "MAX_METADATA_BYTES",
    "METADATA_KEY_RE",
    "META_BASE",
    "META_STATUS",
    "BlobInfo",
    "Capability",
    "CheckpointInfo",
    "CheckpointProvider",
    "ClaimsNext",
    "ExecutionInfo",
    "ExpectedVersion",
    "Lease",
    "OwnerLock",
    "Page",
    "StoredCheckpoint",
    "WriteMode",
    "blob_digest",
    "call_with_retries",
    "decode_int_cursor",
    "decode_metadata",
    "encode_int_cursor",
    "encode_metadata",
    "is_finished",
    "validate_execution_id",
    "validate_metadata",
]


class CheckpointProvider(BlobMethods):
    """Base class of every storage provider.

    Subclasses set :attr:`scheme` and :attr:`capabilities`, implement the abstract
    ``_``-prefixed provider methods and the abstract class method :meth:`from_url`
    that the provider registry calls (all declared by the base
    :class:`~durably._spi.ProviderMethods`). The public methods are template methods marked
    ``@final`` (mypy rejects an override; the conformance suite checks it at run time,
    C26): they validate, wrap and then call the provider methods. :meth:`describe` is
    the one public method meant to be overridden. The methods for checkpoints and
    executions are defined here; those for blobs (:meth:`put_blob`, :meth:`put_blobs`,
    :meth:`get_blob`, :meth:`has_blob`, :meth:`list_blobs`, :meth:`delete_blob`) by the
    base :class:`~durably._blobmethods.BlobMethods`; those for leases and owner locks
    (:meth:`claim`, :meth:`renew`, :meth:`release`, :meth:`get_lease`,
    :meth:`take_over`, :meth:`lock_owner`, :meth:`owner_lock_free`) by its base
    :class:`~durably._ownership.OwnershipMethods`.

    Providers are used from one event loop; they may be used concurrently by many
    tasks of that loop. Use them as async context managers or call :meth:`close`.

    The provider methods receive and return *stored bytes* (already wrapped in the
    envelope); they never need to interpret them. Ids, sequence numbers and metadata
    they receive have been validated.
    """

    envelope: Envelope
    """How payloads are wrapped; the core sets it from configuration."""

    def __init__(self) -> None:
        self.envelope = Envelope()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @final
    async def close(self) -> None:
        """Release connections, file handles and background tasks. Idempotent."""
        await self._close()

    # ---------------------------------------------------------------- checkpoints

    @final
    async def save_checkpoint(
        self,
        execution_id: str,
        seq: int,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
        mode: WriteMode = "create",
        lease: Lease | None = None,
    ) -> CheckpointInfo:
        """Durably store checkpoint ``seq`` of an execution.

        When this returns, the checkpoint survives a crash of this process and of the
        machine, to the extent the backend promises it [C2]. ``mode`` decides what
        happens when ``seq`` already exists [C5-C7]: ``"create"`` (default) raises
        :class:`~durably.errors.AlreadyExistsError`, ``"overwrite"`` replaces it,
        ``ExpectedVersion(v)`` replaces it only if its version is ``v`` (else
        :class:`~durably.errors.PreconditionFailedError`). Of two concurrent writers
        of the same new ``seq`` in mode ``"create"`` exactly one succeeds [C8].

        With ``lease``, the write is fenced: if a newer claim superseded the lease's
        epoch, :class:`~durably.errors.FencedError` is raised and nothing is stored
        [C9]. The check and the write are atomic with respect to claims.

        Returns:
            The stored checkpoint's info, including its new version.
        """
        validate_execution_id(execution_id)
        check_seq(seq)
        meta = validate_metadata(metadata)
        if not isinstance(mode, ExpectedVersion) and mode not in ("create", "overwrite"):
            raise ValueError(f"mode must be 'create', 'overwrite' or ExpectedVersion, not {mode!r}")
        return await self._save_valid(execution_id, seq, bytes(data), meta, mode, lease)

    @final
    async def _save_valid(
        self,
        execution_id: str,
        seq: int,
        data: bytes,
        metadata: dict[str, str],
        mode: WriteMode,
        lease: Lease | None,
    ) -> CheckpointInfo:
        """:meth:`save_checkpoint` once its arguments are known to be valid.

        The core's own checkpoints come here directly, their metadata validated: their
        execution id was validated when the execution's manager was made and their
        sequence number is its counter, so checking them again at every ``await`` would
        only repeat the work. ``metadata`` becomes the provider's (a validated copy).
        """
        if lease is not None and lease.execution_id != execution_id:
            raise ValueError(f"lease is for execution {lease.execution_id!r}, not {execution_id!r}")
        return await self._save(execution_id, seq, self.envelope.wrap(data), metadata, mode, lease)

    @final
    async def load_checkpoint(self, execution_id: str, seq: int) -> StoredCheckpoint:
        """Read checkpoint ``seq`` [C1]; raises NotFoundError if it does not exist.

        Raises:
            NotFoundError: No such checkpoint.
            CorruptObjectError: The stored bytes fail their integrity check [C14].
        """
        validate_execution_id(execution_id)
        check_seq(seq)
        found = await self._load(execution_id, seq)
        if found is None:
            raise NotFoundError(f"no checkpoint {seq} for execution {execution_id!r}")
        return self._open(found)

    @final
    async def load_checkpoints(
        self, execution_id: str, seqs: Sequence[int]
    ) -> list[StoredCheckpoint | None]:
        """Read many checkpoints [C1]: one item per ``seqs`` element, None where absent.

        ``seqs`` must be ascending without duplicates. Each item is verified as
        :meth:`load_checkpoint` verifies it; a provider may read them in one round trip
        (see :meth:`~durably._spi.ProviderMethods._load_many`).

        Raises:
            CorruptObjectError: Stored bytes fail their integrity check [C14].
        """
        validate_execution_id(execution_id)
        for seq in seqs:
            check_seq(seq)
        if any(a >= b for a, b in pairwise(seqs)):
            raise ValueError("seqs must be ascending, without duplicates")
        found = await self._load_many(execution_id, seqs)
        if len(found) != len(seqs) or any(
            item is not None and item[0].seq != seq for seq, item in zip(seqs, found, strict=True)
        ):
            raise CorruptObjectError(
                f"{type(self).__name__}._load_many did not return the {len(seqs)} checkpoints "
                f"asked for of execution {execution_id!r}, in order"
            )
        return [None if item is None else self._open(item) for item in found]

    @final
    async def load_latest_checkpoint(self, execution_id: str) -> StoredCheckpoint | None:
        """Read the checkpoint with the highest ``seq``, or None if there is none [C3]."""
        validate_execution_id(execution_id)
        found = await self._load_latest(execution_id)
        return None if found is None else self._open(found)

    @final
    async def list_checkpoints(
        self,
        execution_id: str,
        *,
        cursor: str | None = None,
        limit: int = 1000,
        after: int | None = None,
    ) -> Page[CheckpointInfo]:
        """List an execution's checkpoints in increasing ``seq`` order, one page at a time [C4].

        Args:
            cursor: ``next_cursor`` of the previous page.
            limit: At most this many items per page (a provider may return fewer).
            after: Only checkpoints with ``seq > after``.
        """
        validate_execution_id(execution_id)
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if after is not None and (not isinstance(after, int) or isinstance(after, bool)):
            raise ValueError(f"after must be an int, not {after!r}")
        return await self._list(execution_id, cursor, limit, after)

    @final
    async def iter_checkpoints(
        self,
        execution_id: str,
        *,
        after: int | None = None,
    ) -> AsyncIterator[CheckpointInfo]:
        """Iterate over all pages of :meth:`list_checkpoints`."""
        cursor: str | None = None
        while True:
            page = await self.list_checkpoints(execution_id, cursor=cursor, after=after)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    @final
    async def delete_checkpoint(
        self,
        execution_id: str,
        seq: int,
        *,
        lease: Lease | None = None,
    ) -> bool:
        """Delete checkpoint ``seq``; return whether it existed [C10]. Fenced like writes."""
        validate_execution_id(execution_id)
        check_seq(seq)
        return await self._delete(execution_id, seq, lease)

    @final
    async def prune(
        self,
        execution_id: str,
        *,
        keep_last: int | None = None,
        older_than: float | None = None,
        lease: Lease | None = None,
    ) -> list[int]:
        """Delete old checkpoints, never what resuming the latest one needs [C11].

        A checkpoint is deleted when it is not among the ``keep_last`` newest (if
        given) **and** older than ``older_than`` seconds (if given). Whatever the
        arguments, the latest checkpoint and every checkpoint with
        ``seq >= latest.metadata["durably.base"]`` are kept: the base is the oldest
        checkpoint the latest one builds on.

        Returns:
            The deleted sequence numbers, ascending.
        """
        validate_execution_id(execution_id)
        if keep_last is None and older_than is None:
            return []
        if keep_last is not None and keep_last < 1:
            raise ValueError("keep_last must be at least 1")
        if older_than is not None and older_than < 0:
            raise ValueError("older_than must not be negative")
        infos = [info async for info in self.iter_checkpoints(execution_id)]
        if not infos:
            return []
        latest = infos[-1]
        protected_from = latest.seq
        base = latest.metadata.get(META_BASE)
        if base is not None and base.isdigit():
            protected_from = min(protected_from, int(base))
        now = time.time()
        doomed = []
        for index, info in enumerate(infos):
            if info.seq >= protected_from:
                continue
            if keep_last is not None and index >= len(infos) - keep_last:
                continue
            if older_than is not None and info.created_at > now - older_than:
                continue
            doomed.append(info.seq)
        return await self._delete_many(execution_id, doomed, lease)

    # ----------------------------------------------------------------- executions

    @final
    async def list_executions(
        self,
        *,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[ExecutionInfo]:
        """List executions in increasing id order, one page at a time [C13]."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        return await self._list_executions(cursor, limit)

    @final
    async def iter_executions(self) -> AsyncIterator[ExecutionInfo]:
        """Iterate over all pages of :meth:`list_executions`."""
        cursor: str | None = None
        while True:
            page = await self.list_executions(cursor=cursor, limit=1000)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    @final
    async def delete_execution(self, execution_id: str) -> bool:
        """Delete an execution: checkpoints, blobs and lease. Returns whether it existed."""
        validate_execution_id(execution_id)
        return await self._delete_execution(execution_id)

    @final
    async def list_open_executions(
        self,
        *,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page[ExecutionInfo]:
        """List the open executions in increasing id order, one page at a time [C31].

        Every execution whose latest checkpoint is not finished (:func:`is_finished`)
        is listed -- also when a crash interrupted the write that opened it -- and an
        execution whose latest checkpoint is finished is not, except for a *stale* entry
        left by a crash between a final write and the index update (read the latest
        checkpoint to decide; :meth:`forget_if_finished` drops a stale entry). The cost
        does not grow with the number of finished executions. Needs
        :attr:`Capability.OPEN_INDEX`.

        Raises:
            UnsupportedError: The provider does not declare ``OPEN_INDEX``.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._require(Capability.OPEN_INDEX, "list open executions")
        return await self._list_open(cursor, limit)

    @final
    async def iter_open_executions(self) -> AsyncIterator[ExecutionInfo]:
        """Iterate over all pages of :meth:`list_open_executions`."""
        cursor: str | None = None
        while True:
            page = await self.list_open_executions(cursor=cursor, limit=1000)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    @final
    async def forget_if_finished(self, execution_id: str) -> bool:
        """Drop the execution's open-index entry if it is stale [C31].

        The entry is removed only if the execution is finished (its latest checkpoint
        is finished) or has no checkpoint, atomically with respect to writers: an
        execution that a concurrent write opens again stays listed. Needs
        :attr:`Capability.OPEN_INDEX`.

        Returns:
            Whether an entry was removed.
        """
        validate_execution_id(execution_id)
        self._require(Capability.OPEN_INDEX, "tidy the open-executions index")
        return await self._forget_if_finished(execution_id)

    # ------------------------------------------------------------------- internal

    def _open(self, found: tuple[CheckpointInfo, bytes]) -> StoredCheckpoint:
        info, stored = found
        what = f"checkpoint {info.seq} of execution {info.execution_id!r}"
        return StoredCheckpoint(info, unwrap(stored, what=what))
