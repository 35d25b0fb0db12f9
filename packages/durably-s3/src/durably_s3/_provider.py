"""The S3 storage provider: conditional writes, fencing in the sequence space.

How fencing works (the full argument is in ``docs/providers/s3.md``):

* Every fenced operation takes effect through exactly one conditional request on one
  *slot* (the key of a sequence number): If-None-Match (the slot must be empty) or
  If-Match (the slot must hold a given ETag). ETags never repeat (each write carries a
  random nonce), and slots that matter for fencing never become empty again (markers
  are only ever replaced, never deleted, and a checkpoint that replaced a marker leaves
  a tombstone when it is deleted).
* The instance that claimed a lease writes the *next* sequence number with one
  request (the "chain"): the claim put a fence marker at the top of the sequence space,
  the first write replaces it (If-Match), each later one creates the next slot
  (If-None-Match). A newer claim puts its own fence marker at the top -- exactly where
  the old chain writes next -- so the old holder's next write collides and is fenced.
* Every other fenced operation first records an *intent* in the lease object with a
  conditional write of the lease (which fails once the epoch is superseded), naming the
  slot and the condition of its single request. A claim settles every recorded intent
  before it completes: it makes each named condition false forever. An operation by an
  instance that is not the chain's also *kills* the chain (a marker on top), so that
  from then on only intents write.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Self

from aiobotocore.session import AioSession

from durably.errors import ConfigError, StoreError
from durably.storage import (
    BlobInfo,
    Capability,
    CheckpointInfo,
    CheckpointProvider,
    ExecutionInfo,
    Lease,
    Page,
    WriteMode,
    is_finished,
)
from durably_s3 import _format as fmt
from durably_s3._checkpoints import CheckpointsMixin
from durably_s3._client import Precondition, S3Client
from durably_s3._format import LeaseRecord, ObjectMeta
from durably_s3._leases import _ChainState
from durably_s3._options import S3Options, parse_options, parse_url
from durably_s3._slots import HEAD_EVERY, _HeadState

__all__ = ["S3Provider"]

log = logging.getLogger("durably.s3")


class S3Provider(CheckpointsMixin, CheckpointProvider):
    """Checkpoints in an S3 bucket (AWS S3 or an S3-compatible store).

    Select it with ``store = "s3://bucket/prefix"``; options come from the
    ``[durability.s3]`` table (see :mod:`durably_s3._options` and
    ``docs/providers/s3.md``). Credentials, region and endpoint follow the standard AWS
    configuration chain unless an option overrides them.

    Guarantees beyond the contract: a steady-state checkpoint save is one PUT request
    (the first unfinished save of a claim also marks the execution open: a GET and a
    PUT, see :mod:`durably_s3._open`), finding the latest checkpoint is three requests
    however many there are, and fencing holds between processes and machines (see the
    module docstring).

    Args:
        bucket: The bucket.
        prefix: Key prefix of the store inside the bucket (no leading/trailing ``/``).
        options: The ``[durability.s3]`` options (a mapping, validated, or S3Options).
        session: An aiobotocore session to create the client from (for event hooks).

    Raises:
        ConfigError: An unknown option or an invalid value.
    """

    scheme: ClassVar[str] = "s3"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.PERSISTENT,
            Capability.SHARED,
            Capability.LARGE_OBJECTS,
            Capability.TAKEOVER,
            Capability.OPEN_INDEX,
        }
    )

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        options: Mapping[str, Any] | S3Options | None = None,
        *,
        session: AioSession | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(options, S3Options):
            options = parse_options(options)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.options = options
        self._s3 = S3Client(bucket, options, session)
        self._layout = fmt.Layout(self.prefix)
        self._chains: dict[str, _ChainState] = {}
        self._leases: dict[str, tuple[LeaseRecord, str]] = {}
        self._done: dict[str, set[str]] = {}
        self._heads: dict[str, _HeadState] = {}
        self._cache: OrderedDict[str, tuple[ObjectMeta, dict[str, str]]] = OrderedDict()
        self._marked: dict[str, tuple[int, float]] = {}
        """Executions this instance marked open, by the lease epoch it marked them for."""
        self._open_ready = False
        """Seen the open index complete (``open-ready``)."""
        self._epoch_counter: tuple[int, str] | None = None
        """The store's epoch counter as this instance last wrote it: (epoch, ETag)."""
        self._versioning: str | None = None
        self._versioning_known = False
        self._probed = False
        self._probe_lock: asyncio.Lock | None = None

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> Self:
        """Create a provider from ``s3://bucket/prefix`` and the ``[durability.s3]`` table.

        No I/O happens here: the client is created on first use.

        Raises:
            ConfigError: A malformed URL, or an unknown or invalid option (named).
        """
        bucket, prefix = parse_url(url)
        if options is not None and not isinstance(options, Mapping):
            raise ConfigError("[durability.s3] must be a table", key="durability.s3")
        return cls(bucket, prefix, options)

    def describe(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return f"{where} ({self._s3.describe_endpoint()})"

    async def _close(self) -> None:
        tasks = [state.task for state in self._heads.values() if state.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for execution_id, state in list(self._heads.items()):
            if state.pending and (state.etag is not None or state.max_seq >= HEAD_EVERY):
                try:
                    await self._advance_head(execution_id)
                except StoreError as exc:
                    log.debug("could not advance the head of %s on close: %s", execution_id, exc)
        self._heads.clear()
        self._chains.clear()
        self._leases.clear()
        await self._s3.close()

    # ============================================================= checkpoints

    async def _save(
        self,
        execution_id: str,
        seq: int,
        stored: bytes,
        metadata: dict[str, str],
        mode: WriteMode,
        lease: Lease | None,
    ) -> CheckpointInfo:
        await self._preflight()
        finished = is_finished(metadata)
        epoch = lease.epoch if lease is not None else None
        if not finished:
            await self._note_open(execution_id, epoch)  # before: a crash keeps the marker
        info = await self._save_slot(execution_id, seq, stored, metadata, mode, lease)
        if finished:
            await self._close_open(execution_id, epoch or 0)
        return info

    async def _load(self, execution_id: str, seq: int) -> tuple[CheckpointInfo, bytes] | None:
        return await self._load_key(execution_id, seq)

    async def _load_many(
        self, execution_id: str, seqs: Sequence[int]
    ) -> list[tuple[CheckpointInfo, bytes] | None]:
        """The page's GETs concurrently, a bounded number in flight; each as :meth:`_load`."""
        return await self._gather(
            functools.partial(self._load_key, execution_id, seq) for seq in seqs
        )

    async def _load_latest(self, execution_id: str) -> tuple[CheckpointInfo, bytes] | None:
        return await self._load_top(execution_id)

    async def _list(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
        after: int | None,
    ) -> Page[CheckpointInfo]:
        return await self._list_slots(execution_id, cursor, limit, after)

    async def _delete(self, execution_id: str, seq: int, lease: Lease | None) -> bool:
        await self._preflight()
        latest = await self._latest_state(execution_id)
        if latest is None or latest.seq != seq:
            return await self._delete_slot(execution_id, seq, lease)
        # The latest checkpoint goes: the one below decides whether the execution is open.
        epoch = lease.epoch if lease is not None else 0
        await self._mark_open(execution_id, epoch)  # before: a crash keeps the marker
        deleted = await self._delete_slot(execution_id, seq, lease)
        await self._close_open(execution_id, epoch)
        return deleted

    async def _delete_many(
        self,
        execution_id: str,
        seqs: Iterable[int],
        lease: Lease | None,
    ) -> list[int]:
        """One DeleteObjects request per 1,000 checkpoints (conditional on ETags)."""
        return await self._delete_slots(execution_id, seqs, lease)

    # ============================================================== executions

    async def _list_executions(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        return await self._list_execution_prefixes(cursor, limit)

    async def _delete_execution(self, execution_id: str) -> bool:
        return await self._delete_all(execution_id)

    async def _list_open(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        return await self._list_open_markers(cursor, limit)

    async def _forget_if_finished(self, execution_id: str) -> bool:
        return await self._forget_marker_if_finished(execution_id)

    # ================================================================== leases

    async def _claim(self, execution_id: str, owner: str, ttl: float) -> Lease:
        return await self._claim_if(execution_id, owner, ttl, None)

    async def _renew(self, lease: Lease, ttl: float) -> Lease:
        return await self._renew_lease(lease, ttl)

    async def _release(self, lease: Lease) -> None:
        await self._release_lease(lease)

    async def _get_lease(self, execution_id: str) -> Lease | None:
        return await self._lease_of(execution_id)

    async def _take_over(self, lease: Lease, owner: str, ttl: float) -> Lease:
        return await self._claim_if(lease.execution_id, owner, ttl, lease)

    # =================================================================== blobs

    async def _put_blob(self, execution_id: str, digest: str, stored: bytes) -> bool:
        key = self._blob_key(execution_id, digest)
        if await self._s3.head(key) is not None:
            return False
        await self._preflight()
        try:
            await self._s3.put(key, stored, if_none_match=True)
        except Precondition:
            return False
        return True

    async def _put_blobs(self, execution_id: str, blobs: Mapping[str, bytes]) -> dict[str, bool]:
        """The PUTs concurrently, a bounded number in flight; each as :meth:`_put_blob`.
        Each blob is one object, so a failure leaves every blob whole or absent (C33)."""
        written = await self._gather(
            functools.partial(self._put_blob, execution_id, digest, stored)
            for digest, stored in blobs.items()
        )
        return dict(zip(blobs, written, strict=True))

    async def _get_blob(self, execution_id: str, digest: str) -> bytes | None:
        found = await self._s3.get(self._blob_key(execution_id, digest))
        if not isinstance(found, tuple):
            return None
        return found[1]

    async def _has_blob(self, execution_id: str, digest: str) -> bool:
        return await self._s3.head(self._blob_key(execution_id, digest)) is not None

    async def _list_blobs(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
    ) -> Page[BlobInfo]:
        prefix = self._layout.blobs(execution_id)
        if cursor is not None and not all(c in "0123456789abcdef" for c in cursor):
            raise ValueError(f"invalid cursor {cursor!r}")
        start = f"{prefix}{cursor}" if cursor else None
        page = await self._s3.list_page(prefix, start_after=start, max_keys=max(1, limit))
        items = []
        for item in page.objects:
            hexdigest = item.key[len(prefix) :]
            if len(hexdigest) == 64:
                items.append(BlobInfo(f"sha256:{hexdigest}", item.size, item.last_modified))
        last = page.objects[-1].key[len(prefix) :] if page.objects else None
        return Page(tuple(items), last if page.truncated else None)

    async def _delete_blob(self, execution_id: str, digest: str) -> bool:
        key = self._blob_key(execution_id, digest)
        found = await self._s3.head(key)
        if found is None:
            return False
        await self._s3.delete(key)
        return True

    def _blob_key(self, execution_id: str, digest: str) -> str:
        return self._layout.blob(execution_id, digest.partition(":")[2])
