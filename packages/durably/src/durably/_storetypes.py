"""The storage contract's values: what providers take and return, and how it is checked.

The value types of :mod:`durably.storage` (checkpoint and blob infos, leases, pages, write
modes), the metadata keys the core writes and providers may index, and the validation
every public method of :class:`~durably.storage.CheckpointProvider` applies before it
calls a provider method (ids, sequence numbers, metadata, owners, TTLs, digests).
Everything here is re-exported by :mod:`durably.storage`; import it from there.
"""

from __future__ import annotations

import abc
import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeAlias, TypeVar

from durably.errors import InvalidExecutionIdError

__all__ = [
    "DIGEST_RE",
    "EXECUTION_ID_RE",
    "FINISHED_STATUSES",
    "MAX_METADATA_BYTES",
    "METADATA_KEY_RE",
    "META_BASE",
    "META_STATUS",
    "SEQ_END",
    "BlobInfo",
    "CheckpointInfo",
    "ExecutionInfo",
    "ExpectedVersion",
    "Lease",
    "OwnerLock",
    "Page",
    "StoredCheckpoint",
    "WriteMode",
    "blob_digest",
    "check_digest",
    "check_owner",
    "check_seq",
    "check_ttl",
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


class OwnerLock(abc.ABC):
    """A held owner lock (see :attr:`Capability.OWNER_LOCK`); release it when done."""

    @abc.abstractmethod
    async def release(self) -> None:
        """Free the lock. Idempotent; never raises for a lock already lost."""

    async def ensure_held(self) -> None:  # noqa: B027 - optional, does nothing by default
        """Check that the store still holds the lock, taking it again if it dropped it.

        A store may drop an owner lock while this process lives -- the connection
        holding it broke -- and other processes may then judge the owner dead and take
        the execution over. The lease heartbeat calls this: a provider whose locks can
        be dropped so takes them again, unless another process got one first. The
        default does nothing (a lock that only the process's death frees). The heartbeat
        cancels a check that takes longer than a third of the lease's ttl (and asks again
        soon), so that it never holds back the lease's renewal.

        Raises:
            OwnerLockLostError: Another process holds the lock now.
            StoreError: The store could not be reached to check (transient: ask again).
        """


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
    """Check checkpoint metadata: keys ``[a-z0-9][a-z0-9_.-]*``, str values, <= 2 KiB total.

    Returns:
        A new dict with the same items.

    Raises:
        ValueError: A key that does not match, a value that is not valid Unicode, or
            more than :data:`MAX_METADATA_BYTES` (keys and UTF-8 values).
        TypeError: A value that is not a ``str``.
    """
    if not metadata:
        return {}
    out: dict[str, str] = {}
    total = 0
    for key, value in metadata.items():
        if type(key) is not str or key not in _VALID_KEYS:
            _check_key(key)
        if not isinstance(value, str):
            raise TypeError(f"metadata value for {key!r} must be str, not {type(value).__name__}")
        if value.isascii():  # one byte a character: no need to encode it to count
            total += len(key) + len(value)
        else:
            try:
                total += len(key) + len(value.encode())
            except UnicodeEncodeError:
                raise ValueError(f"metadata value for {key!r} is not valid Unicode text") from None
        out[key] = value
    if total > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {total} bytes; the limit is {MAX_METADATA_BYTES}")
    return out


_VALID_KEYS: set[str] = set()
"""Metadata keys found valid: the same few keys are checked at every checkpoint."""
_MAX_VALID_KEYS = 1024


def _check_key(key: object) -> None:
    """Raise ValueError unless ``key`` is a metadata key; remember it if it is."""
    if not isinstance(key, str) or not METADATA_KEY_RE.fullmatch(key):
        raise ValueError(f"invalid metadata key {key!r}: use [a-z0-9][a-z0-9_.-]{{0,63}}")
    if type(key) is str and len(_VALID_KEYS) < _MAX_VALID_KEYS:
        _VALID_KEYS.add(key)


#: Sequence numbers are below this.
SEQ_END = 2**63


def check_seq(seq: int) -> int:
    """``seq`` if it is a sequence number (an int in ``[0, SEQ_END)``), else ValueError."""
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or seq >= SEQ_END:
        raise ValueError(f"sequence numbers are integers in [0, 2**63), not {seq!r}")
    return seq


def blob_digest(data: bytes | bytearray | memoryview) -> str:
    """The content address of ``data``: ``"sha256:<64 hex digits>"``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_owner(owner: str) -> None:
    """Raise ValueError unless ``owner`` names a lease owner (1-200 characters, no NUL)."""
    if not isinstance(owner, str) or not owner or len(owner) > 200 or "\x00" in owner:
        raise ValueError("owner must be a non-empty string of at most 200 characters")
    try:
        owner.encode()
    except UnicodeEncodeError:
        raise ValueError("owner must be valid Unicode text") from None


def check_ttl(ttl: float) -> None:
    """Raise ValueError unless ``ttl`` is a lease duration (0 < ttl <= a year)."""
    if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not (0 < ttl <= 365 * 86400):
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")


def check_digest(digest: str) -> None:
    """Raise ValueError unless ``digest`` is a blob address (``sha256:<hex>``)."""
    if not isinstance(digest, str) or not DIGEST_RE.fullmatch(digest):
        raise ValueError(f"invalid blob digest {digest!r}: expected 'sha256:<64 hex digits>'")
