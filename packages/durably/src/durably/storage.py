"""The storage contract: what a checkpoint provider stores and guarantees.

A *provider* stores opaque bytes plus a little metadata for *executions*. It is shaped
like an object store so that a directory, S3, PostgreSQL or Redis can implement it
faithfully. Everything above bytes -- serialization, compression, checksums, id
validation -- is done here, in the base class, so every provider gets it for free.

Providers subclass :class:`CheckpointProvider` and implement the ``_``-prefixed
*provider methods* (the SPI). Users and the rest of durably call the public methods,
which validate arguments, wrap payloads in a checksummed envelope and then call the
SPI. The numbered clauses of ``docs/spec/conformance.md`` state every guarantee; the
docstrings below cite them as ``[C<n>]``.

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

import abc
import hashlib
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import TracebackType
from typing import (
    Any,
    ClassVar,
    Generic,
    Literal,
    Protocol,
    Self,
    TypeAlias,
    TypeVar,
    final,
    runtime_checkable,
)

from durably._envelope import Envelope, unwrap
from durably._providerkit import (
    call_with_retries,
    decode_int_cursor,
    decode_metadata,
    encode_int_cursor,
    encode_metadata,
)
from durably.errors import (
    CorruptObjectError,
    InvalidExecutionIdError,
    NotFoundError,
    UnsupportedError,
)

__all__ = [
    "FINISHED_STATUSES",
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

T = TypeVar("T")

EXECUTION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
METADATA_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
MAX_METADATA_BYTES = 2048
META_BASE = "durably.base"
"""Metadata key: the lowest sequence number this checkpoint needs to be resumed (see prune)."""
META_STATUS = "durably.status"
"""Metadata key: ``running``, ``completed`` or ``failed``; providers may index it (a worker
looks for executions that are not finished)."""
FINISHED_STATUSES = frozenset({"completed", "failed"})
"""The values of :data:`META_STATUS` that finish an execution; any other value, or none,
leaves it *open* (see :attr:`Capability.OPEN_INDEX`)."""


def is_finished(metadata: Mapping[str, str]) -> bool:
    """Whether checkpoint metadata marks its execution finished (``completed``/``failed``).

    An execution is *open* when its latest checkpoint is not finished by this test.
    """
    return metadata.get(META_STATUS) in FINISHED_STATUSES


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
    read each unfinished one's latest checkpoint metadata. Checked by the PostgreSQL
    provider's own tests (no conformance clause yet)."""
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
        and lease expiry, a queue). Checked by the PostgreSQL provider's tests.

        Returns:
            The new lease, or None if no execution is claimable.
        """
        ...


class OwnerLock(abc.ABC):
    """A held owner lock (see :attr:`Capability.OWNER_LOCK`); release it when done."""

    @abc.abstractmethod
    async def release(self) -> None:
        """Free the lock. Idempotent; never raises for a lock already lost."""


@dataclass(frozen=True, slots=True)
class ExpectedVersion:
    """Write only if the stored object currently has this version (else PreconditionFailed)."""

    version: str


WriteMode: TypeAlias = Literal["create", "overwrite"] | ExpectedVersion
"""``"create"``: fail with AlreadyExistsError if the sequence exists. ``"overwrite"``:
replace or create. ``ExpectedVersion(v)``: replace only the object whose version is ``v``."""


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """What a provider knows about a stored checkpoint without reading its bytes."""

    execution_id: str
    seq: int
    version: str
    """Opaque; changes whenever the stored object changes."""
    size: int
    """Stored size in bytes (envelope included)."""
    created_at: float
    """UNIX seconds when this version was written."""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint read back: its info and its payload (verified, decompressed)."""

    info: CheckpointInfo
    data: bytes

    @property
    def seq(self) -> int:
        return self.info.seq

    @property
    def metadata(self) -> Mapping[str, str]:
        return self.info.metadata


@dataclass(frozen=True, slots=True)
class ExecutionInfo:
    """An execution known to the store (it has at least one checkpoint, blob or lease)."""

    execution_id: str
    updated_at: float | None = None
    """UNIX seconds of the last write, when the provider knows it cheaply."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A stored blob."""

    digest: str
    size: int
    """Stored size in bytes (envelope included), like :attr:`CheckpointInfo.size`."""
    created_at: float


@dataclass(frozen=True, slots=True)
class Lease:
    """A claim on an execution. Pass it to writes to have them fenced."""

    execution_id: str
    owner: str
    epoch: int
    """Grows by at least one with every successful claim of the execution."""
    expires_at: float
    """UNIX seconds; after this another owner may claim the execution."""
    released: bool = field(default=False, compare=False)
    """Reported by :meth:`~CheckpointProvider.get_lease`: the owner released the lease
    (its ``expires_at`` is then the release time at the latest) [C23]."""

    def expired(self, now: float | None = None) -> bool:
        """Whether the lease expired at ``now`` (default: this machine's clock)."""
        return (time.time() if now is None else now) >= self.expires_at


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing. Pass ``next_cursor`` back to get the next page."""

    items: tuple[T, ...]
    next_cursor: str | None = None


def validate_execution_id(execution_id: str) -> str:
    """Return ``execution_id`` if it is safe everywhere, else raise InvalidExecutionIdError.

    Safe ids are 1-128 characters of ``A-Z a-z 0-9 . _ -`` starting with a letter or
    digit; they cannot name a parent directory, an absolute path, a hidden file or
    contain NUL, so every provider can use them verbatim in paths and keys [C12].
    """
    if not isinstance(execution_id, str) or not EXECUTION_ID_RE.fullmatch(execution_id):
        shown = repr(execution_id)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise InvalidExecutionIdError(
            f"invalid execution id {shown}: use 1-128 characters from A-Z, a-z, 0-9, "
            "'.', '_' and '-', starting with a letter or digit"
        )
    return execution_id


def validate_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Check checkpoint metadata: keys ``[a-z0-9][a-z0-9_.-]*``, str values, <= 2 KiB total."""
    if not metadata:
        return {}
    out: dict[str, str] = {}
    total = 0
    for key, value in metadata.items():
        if not isinstance(key, str) or not METADATA_KEY_RE.fullmatch(key):
            raise ValueError(f"invalid metadata key {key!r}: use [a-z0-9][a-z0-9_.-]{{0,63}}")
        if not isinstance(value, str):
            raise TypeError(f"metadata value for {key!r} must be str, not {type(value).__name__}")
        try:
            total += len(key) + len(value.encode())
        except UnicodeEncodeError:
            raise ValueError(f"metadata value for {key!r} is not valid Unicode text") from None
        out[key] = value
    if total > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {total} bytes; the limit is {MAX_METADATA_BYTES}")
    return out


def _check_seq(seq: int) -> int:
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or seq >= 2**63:
        raise ValueError(f"sequence numbers are integers in [0, 2**63), not {seq!r}")
    return seq


def blob_digest(data: bytes | bytearray | memoryview) -> str:
    """The content address of ``data``: ``"sha256:<64 hex digits>"``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


class CheckpointProvider(abc.ABC):
    """Base class of every storage provider.

    Subclasses set :attr:`scheme` and :attr:`capabilities`, implement the abstract
    ``_``-prefixed provider methods and the abstract class method :meth:`from_url`
    that the provider registry calls. The public methods are template methods marked
    ``@final`` (mypy rejects an override; the conformance suite checks it at run time,
    C26): they validate, wrap and then call the provider methods. :meth:`describe` is
    the one public method meant to be overridden.

    Providers are used from one event loop; they may be used concurrently by many
    tasks of that loop. Use them as async context managers or call :meth:`close`.

    The provider methods receive and return *stored bytes* (already wrapped in the
    envelope); they never need to interpret them. Ids, sequence numbers and metadata
    they receive have been validated.
    """

    scheme: ClassVar[str] = ""
    """The URL scheme this provider serves (``"file"``, ``"s3"``, ...)."""
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    envelope: Envelope
    """How payloads are wrapped; the core sets it from configuration."""

    def __init__(self) -> None:
        self.envelope = Envelope()

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

    async def _close(self) -> None:  # noqa: B027 - optional hook
        """Provider method: release resources. Default: nothing."""

    def describe(self) -> str:
        """A human-readable location of the store, with no secrets (no password)."""
        return f"{self.scheme}://"

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
        _check_seq(seq)
        meta = validate_metadata(metadata)
        if lease is not None and lease.execution_id != execution_id:
            raise ValueError(f"lease is for execution {lease.execution_id!r}, not {execution_id!r}")
        if not isinstance(mode, ExpectedVersion) and mode not in ("create", "overwrite"):
            raise ValueError(f"mode must be 'create', 'overwrite' or ExpectedVersion, not {mode!r}")
        stored = self.envelope.wrap(bytes(data))
        return await self._save(execution_id, seq, stored, meta, mode, lease)

    @final
    async def load_checkpoint(self, execution_id: str, seq: int) -> StoredCheckpoint:
        """Read checkpoint ``seq`` [C1]; raises NotFoundError if it does not exist.

        Raises:
            NotFoundError: No such checkpoint.
            CorruptObjectError: The stored bytes fail their integrity check [C14].
        """
        validate_execution_id(execution_id)
        _check_seq(seq)
        found = await self._load(execution_id, seq)
        if found is None:
            raise NotFoundError(f"no checkpoint {seq} for execution {execution_id!r}")
        return self._open(found)

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
        _check_seq(seq)
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

    # --------------------------------------------------------------------- leases

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
        _check_owner(owner)
        _check_ttl(ttl)
        return await self._claim(execution_id, owner, ttl)

    @final
    async def renew(self, lease: Lease, *, ttl: float) -> Lease:
        """Extend a lease to ``now + ttl`` [C16].

        Renewing an expired lease succeeds as long as nobody claimed the execution
        since. Raises FencedError if the lease was superseded.
        """
        validate_execution_id(lease.execution_id)
        _check_ttl(ttl)
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
        _check_owner(owner)
        _check_ttl(ttl)
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

    # ---------------------------------------------------------------------- blobs

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
    async def get_blob(self, execution_id: str, digest: str) -> bytes:
        """Read a blob; its content is verified against ``digest`` [C17]."""
        validate_execution_id(execution_id)
        _check_digest(digest)
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
        _check_digest(digest)
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
        _check_digest(digest)
        return await self._delete_blob(execution_id, digest)

    # ------------------------------------------------------------------- internal

    def _require(self, capability: Capability, what: str) -> None:
        if capability not in self.capabilities:
            raise UnsupportedError(
                f"cannot {what}: the {self.scheme or type(self).__name__} provider does not "
                f"declare the {capability.value!r} capability"
            )

    def _open(self, found: tuple[CheckpointInfo, bytes]) -> StoredCheckpoint:
        info, stored = found
        what = f"checkpoint {info.seq} of execution {info.execution_id!r}"
        return StoredCheckpoint(info, unwrap(stored, what=what))

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


def _check_owner(owner: str) -> None:
    if not isinstance(owner, str) or not owner or len(owner) > 200 or "\x00" in owner:
        raise ValueError("owner must be a non-empty string of at most 200 characters")
    try:
        owner.encode()
    except UnicodeEncodeError:
        raise ValueError("owner must be valid Unicode text") from None


def _check_ttl(ttl: float) -> None:
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not (0 < ttl <= 365 * 86400):
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")


def _check_digest(digest: str) -> None:
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise ValueError(f"invalid blob digest {digest!r}: expected 'sha256:<64 hex digits>'")
