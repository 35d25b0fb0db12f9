"""What the S3 provider writes: key layout, object encodings, the lease record.

Key layout under the store's prefix (``<p>/`` below; nothing when there is no prefix)::

    <p>/executions/<id>!/checkpoints/<seq, 20 digits>   a checkpoint, or a marker
    <p>/executions/<id>!/blobs/<sha256 hex>             a blob (its envelope, verbatim)
    <p>/executions/<id>!/lease                          the lease record (JSON)
    <p>/heads/<id>                                      a lazily advanced hint (JSON)
    <p>/probes/<random>                                 transient (conditional-write probe)
    <p>/epochs                                          the store's epoch counter (JSON)

The ``!`` after the execution id makes S3's byte-order listing of ``executions/``
(``Delimiter="/"``) equal the id order the contract asks for: ``!`` sorts before every
character an id may contain, so ``run!/`` comes before ``run-1!/`` exactly as ``run``
comes before ``run-1`` (with a plain ``/``, ``run-1/`` would sort first).

A checkpoint object is the core's envelope followed by a small trailer::

    envelope | metadata JSON (M bytes, usually 0) | nonce (16) | M (u32 LE) | check (8) | "DS3T"

The random nonce makes every write's ETag new (the ETag is the checkpoint's version, and
a rewrite of identical bytes must still change it). The metadata lives in S3 user
metadata (``x-amz-meta-durably-meta``, percent-encoded JSON) when it fits S3's 2 KB
user-metadata limit, else in the trailer (``durably-meta-in-body: M``); ``check`` is a
BLAKE2b-64 of the trailer's metadata, nonce and length. The envelope comes first, so
the middle of an object is envelope payload, which the core's checksum covers.

A *marker* is a 28-byte object (``"DS3M" | epoch (u64 LE) | nonce (16)``) that occupies
a sequence slot without being a checkpoint: fence markers placed by claims, tombstones
left by deletes that must keep a slot occupied, and kill markers (see the fencing
section of ``docs/providers/s3.md``). Readers skip them; listings recognise them by
their size (no checkpoint object is shorter than 32 bytes).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, unquote

from durably.errors import CorruptObjectError
from durably.storage import EXECUTION_ID_RE, decode_metadata, encode_metadata

__all__ = [
    "MARKER_SIZE",
    "TRAILER_SIZE",
    "Layout",
    "LeaseRecord",
    "ObjectMeta",
    "decode_checkpoint",
    "decode_trailer",
    "encode_checkpoint",
    "encode_marker",
    "format_version",
    "new_nonce",
    "parse_version",
]

FORMAT = "1"
TRAILER_MAGIC = b"DS3T"
MARKER_MAGIC = b"DS3M"
_TRAILER_TAIL = struct.Struct("<16sI8s4s")
TRAILER_SIZE = _TRAILER_TAIL.size
"""Size of the fixed part of a checkpoint's trailer (32 bytes)."""
MARKER_SIZE = 28
"""Size of every marker object; checkpoint objects are at least 32 bytes long."""
SEQ_DIGITS = 20
MAX_USER_METADATA = 1900
"""Bytes of S3 user metadata (keys + values) we allow ourselves; S3's limit is 2 KB."""

# User-metadata keys (S3 stores them lower-case, after "x-amz-meta-").
M_FORMAT = "durably-format"
M_KIND = "durably-kind"
M_CREATED = "durably-created"
M_EPOCH = "durably-epoch"
M_WRITE = "durably-write"
M_META = "durably-meta"
M_META_IN_BODY = "durably-meta-in-body"
M_PROTECTED = "durably-protected"
M_MARKER = "durably-marker"

Kind = Literal["checkpoint", "marker"]
MarkerKind = Literal["fence", "tombstone", "kill", "touch"]

_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")
"""Printable ASCII but "%" and space (SigV4 collapses runs of spaces in header values)."""


def is_execution_id(name: str) -> bool:
    """Whether ``name`` is a valid execution id (keys under a listed prefix may not be)."""
    return EXECUTION_ID_RE.fullmatch(name) is not None


def new_nonce() -> bytes:
    """16 random bytes: a write id that makes the object's ETag unique."""
    return os.urandom(16)


class Layout:
    """The object keys of one store (bucket + prefix).

    Args:
        prefix: The key prefix, without leading or trailing ``/`` (may be empty).
    """

    __slots__ = ("base", "epochs", "executions", "heads", "open", "open_ready", "probes")

    def __init__(self, prefix: str) -> None:
        self.base = f"{prefix}/" if prefix else ""
        self.executions = f"{self.base}executions/"
        self.heads = f"{self.base}heads/"
        self.probes = f"{self.base}probes/"
        self.epochs = f"{self.base}epochs"
        """The store-wide epoch counter: the highest epoch any claim was granted."""
        self.open = f"{self.base}open/"
        """The open-executions index: one marker per open execution (see ``_open.py``)."""
        self.open_ready = f"{self.base}open-ready"
        """Written once the open index is complete (store-wide bookkeeping)."""

    def open_entry(self, execution_id: str) -> str:
        return f"{self.open}{execution_id}"

    def execution_dir(self, execution_id: str) -> str:
        return f"{self.executions}{execution_id}!/"

    def checkpoints(self, execution_id: str) -> str:
        return f"{self.execution_dir(execution_id)}checkpoints/"

    def checkpoint(self, execution_id: str, seq: int) -> str:
        return f"{self.checkpoints(execution_id)}{seq:0{SEQ_DIGITS}d}"

    def blobs(self, execution_id: str) -> str:
        return f"{self.execution_dir(execution_id)}blobs/"

    def blob(self, execution_id: str, hexdigest: str) -> str:
        return f"{self.blobs(execution_id)}{hexdigest}"

    def lease(self, execution_id: str) -> str:
        return f"{self.execution_dir(execution_id)}lease"

    def head(self, execution_id: str) -> str:
        return f"{self.heads}{execution_id}"

    def execution_cursor(self, execution_id: str) -> str:
        """A ``StartAfter`` key past every key of ``execution_id`` and before the next id."""
        return f"{self.executions}{execution_id}!0"

    def execution_of_prefix(self, common_prefix: str) -> str | None:
        """The execution id of a ``CommonPrefixes`` entry (None for foreign entries)."""
        if not common_prefix.startswith(self.executions) or not common_prefix.endswith("!/"):
            return None
        return common_prefix[len(self.executions) : -2] or None

    @staticmethod
    def seq_of(key: str) -> int | None:
        """The sequence number in a checkpoint key (None for foreign keys)."""
        tail = key.rpartition("/")[2]
        if len(tail) != SEQ_DIGITS or not tail.isdigit():
            return None
        return int(tail)


# ----------------------------------------------------------------- versions


def format_version(etag: str, protected: bool) -> str:
    """The contract's ``version`` of a checkpoint: its ETag, plus ``:p`` if protected."""
    return f"{etag}:p" if protected else etag


def parse_version(version: str) -> tuple[str, bool]:
    """Split a version into (ETag, protected)."""
    if version.endswith(":p"):
        return version[:-2], True
    return version, False


# ---------------------------------------------------------------- metadata


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    """What a checkpoint slot object says about itself (from its S3 user metadata)."""

    kind: Kind
    etag: str
    size: int
    """Object size in bytes (trailer included)."""
    created_at: float | None = None
    epoch: int = 0
    """The fenced writer's epoch (checkpoints) or the marker's epoch; 0 when unfenced."""
    write: str = ""
    """The write id (hex nonce) of the PUT that created this object."""
    protected: bool = False
    """The slot once held a marker: deleting the checkpoint leaves a tombstone."""
    metadata: dict[str, str] | None = None
    """Checkpoint metadata, or None when it is in the object's trailer."""
    meta_in_body: int = 0
    """Length of the metadata JSON in the trailer (0 when it is in user metadata)."""
    marker: str = ""

    @property
    def version(self) -> str:
        return format_version(self.etag, self.protected)

    @property
    def stored_size(self) -> int:
        """Size of the envelope (what the core stored) inside a checkpoint object."""
        return self.size - TRAILER_SIZE - self.meta_in_body

    @classmethod
    def parse(cls, user: dict[str, str], etag: str, size: int, what: str) -> ObjectMeta:
        """Read an object's user metadata.

        Raises:
            CorruptObjectError: The metadata is malformed (not written by this provider).
        """
        lowered = {k.lower(): v for k, v in user.items()}
        try:
            kind = lowered.get(M_KIND, "checkpoint")
            epoch = int(lowered.get(M_EPOCH, "0") or "0")
            write = lowered.get(M_WRITE, "")
            protected = lowered.get(M_PROTECTED) == "1"
            if kind == "marker":
                return cls(
                    "marker",
                    etag,
                    size,
                    epoch=epoch,
                    write=write,
                    protected=True,
                    marker=lowered.get(M_MARKER, ""),
                )
            if kind != "checkpoint":
                raise ValueError(f"unknown kind {kind!r}")
            created = lowered.get(M_CREATED)
            created_at = float(created) if created else None
            in_body = int(lowered.get(M_META_IN_BODY, "0") or "0")
            metadata: dict[str, str] | None
            if in_body:
                metadata = None
            else:
                raw = lowered.get(M_META)
                metadata = decode_metadata(unquote(raw), what) if raw else {}
            return cls(
                "checkpoint",
                etag,
                size,
                created_at=created_at,
                epoch=epoch,
                write=write,
                protected=protected,
                metadata=metadata,
                meta_in_body=in_body,
            )
        except (ValueError, TypeError) as exc:
            raise CorruptObjectError(f"{what} has malformed S3 metadata: {exc}") from exc


def _user_metadata_size(user: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in user.items())


def encode_checkpoint(
    stored: bytes,
    *,
    metadata: dict[str, str],
    created_at: float,
    epoch: int,
    protected: bool,
    nonce: bytes,
) -> tuple[bytes, dict[str, str]]:
    """Build a checkpoint object: (body, S3 user metadata)."""
    user = {
        M_FORMAT: FORMAT,
        M_KIND: "checkpoint",
        M_CREATED: repr(created_at),
        M_WRITE: nonce.hex(),
    }
    if epoch:
        user[M_EPOCH] = str(epoch)
    if protected:
        user[M_PROTECTED] = "1"
    meta_bytes = b""
    if metadata:
        encoded = quote(encode_metadata(metadata), safe=_SAFE)
        if _user_metadata_size(user) + len(M_META) + len(encoded) <= MAX_USER_METADATA:
            user[M_META] = encoded
        else:
            meta_bytes = encode_metadata(metadata).encode()
            user[M_META_IN_BODY] = str(len(meta_bytes))
    length = struct.pack("<I", len(meta_bytes))
    check = hashlib.blake2b(meta_bytes + nonce + length, digest_size=8).digest()
    tail = _TRAILER_TAIL.pack(nonce, len(meta_bytes), check, TRAILER_MAGIC)
    return b"".join((stored, meta_bytes, tail)), user


def decode_trailer(body: bytes | memoryview, what: str) -> tuple[int, bytes, dict[str, str] | None]:
    """Split a checkpoint object: (envelope length, nonce, metadata in the trailer or None).

    ``body`` may be just the object's tail as long as it holds the whole trailer.

    Raises:
        CorruptObjectError: The trailer is missing, truncated or damaged.
    """
    view = memoryview(body)
    if len(view) < TRAILER_SIZE:
        raise CorruptObjectError(
            f"{what} is truncated: {len(view)} bytes, shorter than the S3 provider's trailer"
        )
    nonce, meta_len, check, magic = _TRAILER_TAIL.unpack_from(view, len(view) - TRAILER_SIZE)
    if magic != TRAILER_MAGIC:
        raise CorruptObjectError(f"{what} is truncated or damaged (no S3 provider trailer)")
    start = len(view) - TRAILER_SIZE - meta_len
    if start < 0:
        raise CorruptObjectError(f"{what} is truncated (its trailer is longer than the object)")
    meta_bytes = bytes(view[start : len(view) - TRAILER_SIZE])
    length = struct.pack("<I", meta_len)
    if hashlib.blake2b(meta_bytes + nonce + length, digest_size=8).digest() != check:
        raise CorruptObjectError(f"{what} has a damaged S3 provider trailer")
    metadata: dict[str, str] | None = None
    if meta_len:
        metadata = decode_metadata(meta_bytes, what)
    return start, nonce, metadata


def decode_checkpoint(
    body: bytes,
    meta: ObjectMeta,
    what: str,
) -> tuple[bytes, dict[str, str]]:
    """Return (envelope bytes, checkpoint metadata) of a whole checkpoint object."""
    if len(body) != meta.size:
        raise CorruptObjectError(
            f"{what} came back with {len(body)} bytes; S3 announced {meta.size}"
        )
    envelope_len, _nonce, in_body = decode_trailer(body, what)
    if meta.meta_in_body and (
        in_body is None or len(body) - TRAILER_SIZE - envelope_len != meta.meta_in_body
    ):
        raise CorruptObjectError(f"{what} lost the metadata its S3 metadata points to")
    metadata = in_body if meta.meta_in_body else meta.metadata
    return body[:envelope_len], dict(metadata or {})


def encode_marker(epoch: int, kind: MarkerKind, nonce: bytes) -> tuple[bytes, dict[str, str]]:
    """Build a marker object: (28-byte body, S3 user metadata)."""
    body = MARKER_MAGIC + struct.pack("<Q", epoch) + nonce
    assert len(body) == MARKER_SIZE
    user = {
        M_FORMAT: FORMAT,
        M_KIND: "marker",
        M_MARKER: kind,
        M_EPOCH: str(epoch),
        M_WRITE: nonce.hex(),
        M_PROTECTED: "1",
    }
    return body, user


# ------------------------------------------------------------------- leases


@dataclass(slots=True)
class Intent:
    """A fenced operation that may still be in flight (see the fencing argument).

    ``slots`` maps each sequence number the operation may change to the condition of
    its single conditional request: ``""`` for "absent" (If-None-Match) or the ETag it
    requires (If-Match).
    """

    id: str
    slots: dict[int, str]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "slots": {str(k): v for k, v in self.slots.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Intent:
        return cls(str(data["id"]), {int(k): str(v) for k, v in data["slots"].items()})


@dataclass(slots=True)
class Chain:
    """The claiming instance's one-request write path (see the fencing argument)."""

    id: str
    start: int | None
    """The slot of the claim's fence marker (None while the claim is in progress)."""
    state: str
    """``claiming``, ``alive``, ``killing`` or ``dead``."""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "start": self.start, "state": self.state}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Chain | None:
        if data is None:
            return None
        start = data.get("start")
        return cls(str(data["id"]), None if start is None else int(start), str(data["state"]))


@dataclass(slots=True)
class Job:
    """A superseded epoch whose loose ends a claim must tie up before it completes."""

    epoch: int
    chain: Chain | None
    intents: list[Intent]

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "chain": None if self.chain is None else self.chain.to_json(),
            "intents": [i.to_json() for i in self.intents],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(
            int(data["epoch"]),
            Chain.from_json(data.get("chain")),
            [Intent.from_json(i) for i in data.get("intents", [])],
        )


@dataclass(slots=True)
class LeaseRecord:
    """The JSON body of an execution's ``lease`` object."""

    owner: str
    epoch: int
    expires_at: float
    released_at: float | None = None
    chain: Chain | None = None
    intents: list[Intent] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)

    def live(self, now: float) -> bool:
        return self.released_at is None and now < self.expires_at

    def to_bytes(self) -> bytes:
        data = {
            "format": 1,
            "owner": self.owner,
            "epoch": self.epoch,
            "expires_at": self.expires_at,
            "released_at": self.released_at,
            "chain": None if self.chain is None else self.chain.to_json(),
            "intents": [i.to_json() for i in self.intents],
            "jobs": [j.to_json() for j in self.jobs],
            "nonce": new_nonce().hex(),
        }
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, body: bytes, what: str) -> LeaseRecord:
        try:
            data = json.loads(body)
            released = data.get("released_at")
            return cls(
                owner=str(data["owner"]),
                epoch=int(data["epoch"]),
                expires_at=float(data["expires_at"]),
                released_at=None if released is None else float(released),
                chain=Chain.from_json(data.get("chain")),
                intents=[Intent.from_json(i) for i in data.get("intents", [])],
                jobs=[Job.from_json(j) for j in data.get("jobs", [])],
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorruptObjectError(f"{what} is not a valid lease record: {exc}") from exc


def encode_epoch_counter(epoch: int) -> bytes:
    return json.dumps({"epoch": epoch}).encode()


def decode_epoch_counter(body: bytes, what: str) -> int:
    """The epoch in the store's counter object.

    Raises:
        CorruptObjectError: The object is not a counter (guessing a value could let an
            epoch repeat).
    """
    try:
        epoch = json.loads(body)["epoch"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObjectError(f"{what} is not a valid epoch counter: {exc}") from exc
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise CorruptObjectError(f"{what} is not a valid epoch counter: {epoch!r}")
    return epoch


def encode_head(seq: int) -> bytes:
    return json.dumps({"seq": seq, "nonce": new_nonce().hex()}).encode()


def decode_head(body: bytes) -> int | None:
    """The sequence number of a head hint (None when unreadable: it is only a hint)."""
    try:
        seq = json.loads(body)["seq"]
    except (ValueError, KeyError, TypeError):
        return None
    return seq if isinstance(seq, int) and seq >= 0 else None
