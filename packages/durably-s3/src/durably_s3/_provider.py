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
import copy
import functools
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

from aiobotocore.session import AioSession

from durably.errors import (
    ConfigError,
    CorruptObjectError,
    FencedError,
    LeaseHeldError,
    StoreError,
    already_exists,
    fenced,
    precondition_failed,
)
from durably.storage import (
    BlobInfo,
    Capability,
    CheckpointInfo,
    CheckpointProvider,
    ExecutionInfo,
    ExpectedVersion,
    Lease,
    Page,
    WriteMode,
    decode_int_cursor,
)
from durably_s3 import _format as fmt
from durably_s3._client import (
    CONDITIONAL_WRITES_HELP,
    NOT_MODIFIED,
    Listed,
    Precondition,
    S3Client,
)
from durably_s3._format import MARKER_SIZE, Chain, Intent, Job, LeaseRecord, ObjectMeta
from durably_s3._options import S3Options, parse_options, parse_url

__all__ = ["S3Provider"]

log = logging.getLogger("durably.s3")

T = TypeVar("T")

HEAD_EVERY = 64
"""A writer advances an execution's head hint after this many new checkpoints."""
_CYCLES = 16
"""Attempts of one conditional operation before giving up (each loses a race)."""
_CONCURRENCY = 16
"""Requests a listing keeps in flight to read checkpoint metadata."""
_EPOCH_CYCLES = 64
"""Attempts to draw an epoch from the store's counter (each loses to another claim)."""
_CACHE_SIZE = 20_000
_PROBED: set[str] = set()
"""Endpoints whose conditional-write support this process has checked (a property of
the server, not of a bucket)."""


class _Superseded(Exception):
    pass


class _Skip(Exception):
    """A lease mutation that does not need to be written."""


@dataclass(slots=True)
class _ChainState:
    """This instance's one-request write path for an execution it claimed."""

    epoch: int
    owner: str
    chain_id: str
    next: int
    next_etag: str | None
    """The ETag of our own fence marker at ``next`` (the first write replaces it)."""
    dead: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def serves(self, lease: Lease) -> bool:
        return not self.dead and self.epoch == lease.epoch and self.owner == lease.owner


@dataclass(slots=True)
class _HeadState:
    etag: str | None = None
    pending: int = 0
    max_seq: int = -1
    task: asyncio.Task[None] | None = None


FENCED_ACTION = "writing to the execution"
"""What a fenced S3 operation is called in its FencedError (the intent protocol judges
saves and deletes alike)."""


def _info(execution_id: str, seq: int, meta: ObjectMeta, metadata: Mapping[str, str],
          fallback_time: float) -> CheckpointInfo:
    return CheckpointInfo(
        execution_id=execution_id, seq=seq, version=meta.version, size=meta.stored_size,
        created_at=meta.created_at if meta.created_at is not None else fallback_time,
        metadata=dict(metadata),
    )


class S3Provider(CheckpointProvider):
    """Checkpoints in an S3 bucket (AWS S3 or an S3-compatible store).

    Select it with ``store = "s3://bucket/prefix"``; options come from the
    ``[durability.s3]`` table (see :mod:`durably_s3._options` and
    ``docs/providers/s3.md``). Credentials, region and endpoint follow the standard AWS
    configuration chain unless an option overrides them.

    Guarantees beyond the contract: a steady-state checkpoint save is one PUT request,
    finding the latest checkpoint is three requests however many there are, and fencing
    holds between processes and machines (see the module docstring).

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
        {Capability.PERSISTENT, Capability.SHARED, Capability.LARGE_OBJECTS,
         Capability.TAKEOVER}
    )

    def __init__(
        self, bucket: str, prefix: str = "", options: Mapping[str, Any] | S3Options | None = None,
        *, session: AioSession | None = None,
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

    # ================================================================ helpers

    def _key(self, execution_id: str, seq: int) -> str:
        return self._layout.checkpoint(execution_id, seq)

    def _what(self, execution_id: str, seq: int) -> str:
        return f"checkpoint {seq} of execution {execution_id!r} (s3://{self.bucket}/" \
               f"{self._key(execution_id, seq)})"

    def _remember(self, key: str, meta: ObjectMeta, metadata: dict[str, str]) -> None:
        self._cache[key] = (meta, metadata)
        self._cache.move_to_end(key)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _slot(self, execution_id: str, seq: int) -> ObjectMeta | None:
        """HEAD a sequence slot: what occupies it (checkpoint or marker), or None."""
        key = self._key(execution_id, seq)
        found = await self._s3.head(key)
        if found is None:
            self._cache.pop(key, None)
            return None
        return ObjectMeta.parse(found.metadata, found.etag, found.size,
                                self._what(execution_id, seq))

    async def _gather(self, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
        semaphore = asyncio.Semaphore(_CONCURRENCY)

        async def run(job: Callable[[], Awaitable[T]]) -> T:
            async with semaphore:
                return await job()

        return list(await asyncio.gather(*(run(job) for job in jobs)))

    async def _preflight(self) -> None:
        """Before the first write: check once that the server honours conditional writes.

        A server that ignores If-None-Match would let two writers both "win"; one that
        rejects it with NotImplemented cannot run durably at all. Either way we stop
        here with a StoreError that says so, instead of corrupting executions later.
        """
        if self._probed:
            return
        client = await self._s3.client()
        identity = str(client.meta.endpoint_url)
        if identity in _PROBED:
            self._probed = True
            return
        if self._probe_lock is None:
            self._probe_lock = asyncio.Lock()
        async with self._probe_lock:
            if self._probed:
                return
            key = f"{self._layout.probes}{fmt.new_nonce().hex()}"
            problem = None
            try:
                _etag, version = await self._s3.put(key, b"durably probe 1", if_none_match=True,
                                                    data=False)
            except StoreError as exc:
                if type(exc) is not StoreError:
                    raise
                raise StoreError(f"a conditional PutObject to s3://{self.bucket}/{key} failed "
                                 f"({exc}). {CONDITIONAL_WRITES_HELP}") from exc
            try:
                try:
                    await self._s3.put(key, b"durably probe 2", if_none_match=True, data=False)
                    problem = "accepted If-None-Match: * for an object that exists"
                except Precondition:
                    pass
                if problem is None:
                    try:
                        await self._s3.put(key, b"durably probe 3", if_match="0" * 32, data=False)
                        problem = "accepted If-Match with an ETag the object does not have"
                    except Precondition:
                        pass
            except StoreError as exc:
                if type(exc) is not StoreError:
                    raise
                problem = f"rejected a conditional PutObject ({exc})"
            finally:
                if version is not None:
                    for found_key, version_id in await self._s3.list_versions(key):
                        if found_key == key:
                            await self._s3.delete(key, version_id=version_id)
                else:
                    await self._s3.delete(key)
            if problem is not None:
                raise StoreError(
                    f"the S3 endpoint serving bucket {self.bucket!r} "
                    f"({self._s3.describe_endpoint()}) {problem}. {CONDITIONAL_WRITES_HELP}"
                )
            _PROBED.add(identity)
            self._probed = True

    # ========================================================= lease records

    async def _read_lease(self, execution_id: str) -> tuple[LeaseRecord, str] | None:
        """The lease record and its ETag (fresh from S3), or None."""
        key = self._layout.lease(execution_id)
        cached = self._leases.get(execution_id)
        found = await self._s3.get(key, if_none_match=cached[1] if cached else None)
        if found is NOT_MODIFIED and cached is not None:
            return cached
        if not isinstance(found, tuple):
            self._leases.pop(execution_id, None)
            return None
        info, body = found
        record = LeaseRecord.from_bytes(body, f"the lease of execution {execution_id!r}")
        self._leases[execution_id] = (record, info.etag)
        return record, info.etag

    async def _write_lease(self, execution_id: str, record: LeaseRecord,
                           if_match: str | None) -> str:
        etag, _ = await self._s3.put(
            self._layout.lease(execution_id), record.to_bytes(),
            if_none_match=if_match is None, if_match=if_match, data=False,
        )
        self._leases[execution_id] = (record, etag)
        return etag

    async def _update_lease(
        self, execution_id: str, mutate: Callable[[LeaseRecord | None], T],
    ) -> tuple[LeaseRecord, str, T] | None:
        """Read-modify-conditional-write the lease record until it sticks.

        ``mutate`` changes a copy of the record in place (it may raise, e.g. FencedError,
        or _Skip to write nothing). The first attempt uses the cached record and ETag
        (one request when nothing changed); a failed condition re-reads.
        """
        cached = self._leases.get(execution_id)
        use_cache = cached is not None
        for _ in range(_CYCLES):
            if not use_cache:
                cached = await self._read_lease(execution_id)
            record = copy.deepcopy(cached[0]) if cached is not None else None
            try:
                result = mutate(record)
            except (FencedError, _Skip, _Superseded):
                if use_cache:  # decide on fresh data only
                    use_cache = False
                    continue
                raise
            if record is None:
                raise _Skip
            forget = self._prune_intents(execution_id, record)
            try:
                etag = await self._write_lease(execution_id, record,
                                               cached[1] if cached is not None else None)
            except Precondition:
                self._leases.pop(execution_id, None)
                use_cache = False
                continue
            self._done.get(execution_id, set()).difference_update(forget)
            return record, etag, result
        raise StoreError(f"the lease of execution {execution_id!r} kept changing under us")

    def _prune_intents(self, execution_id: str, record: LeaseRecord) -> set[str]:
        """Drop the intents of ours that got their answer; return the ids to forget once
        the record is written (those dropped, and those no longer in the record)."""
        done = self._done.get(execution_id)
        if not done:
            return set()
        record.intents = [i for i in record.intents if i.id not in done]
        return set(done)

    def _fenced(self, lease: Lease) -> FencedError:
        """The error for a superseded lease (and forget our chain of that epoch)."""
        self._drop_chain(lease.execution_id, lease.epoch)
        return fenced(lease, FENCED_ACTION)

    def _drop_chain(self, execution_id: str, epoch: int | None = None) -> None:
        chain = self._chains.get(execution_id)
        if chain is not None and (epoch is None or chain.epoch <= epoch):
            chain.dead = True
            del self._chains[execution_id]

    @staticmethod
    def _check(
        lease: Lease, record: LeaseRecord | None, action: str = FENCED_ACTION,
    ) -> LeaseRecord:
        """``record`` if ``lease`` is its current lease, else FencedError (no side effect:
        it may be judging a cached record)."""
        if record is None:
            raise fenced(lease, action)
        if record.epoch != lease.epoch or record.owner != lease.owner:
            raise fenced(lease, action, current_epoch=record.epoch)
        return record

    async def _check_current(self, lease: Lease) -> None:
        """Raise FencedError unless ``lease`` is current (fresh read)."""
        current = await self._read_lease(lease.execution_id)
        self._check(lease, current[0] if current else None)

    async def _register(self, lease: Lease, intent: Intent) -> None:
        """Record a fenced operation's intent in the lease (fails once superseded)."""
        execution_id = lease.execution_id
        chain = self._chains.get(execution_id)
        mine = chain.chain_id if chain is not None and chain.epoch == lease.epoch else None

        def mutate(record: LeaseRecord | None) -> bool:
            record = self._check(lease, record)
            record.intents.append(intent)
            if (record.chain is not None and record.chain.state in ("alive", "killing")
                    and record.chain.id != mine):
                record.chain.state = "killing"
                return True
            return False

        updated = await self._update_lease(execution_id, mutate)
        assert updated is not None
        record, _etag, kill = updated
        if chain is not None and record.chain is not None and record.chain.id == mine \
                and record.chain.state != "alive":
            chain.dead = True
        if kill:
            await self._kill_chain(lease, record)

    def _intent_done(self, execution_id: str, intent: Intent) -> None:
        """The intent's single request got its answer: it can no longer take effect."""
        self._done.setdefault(execution_id, set()).add(intent.id)

    async def _kill_chain(self, lease: Lease, record: LeaseRecord) -> None:
        """Stop the claiming instance's one-request path: occupy its next slot."""
        execution_id = lease.execution_id
        chain = record.chain
        assert chain is not None
        if chain.start is not None:
            await self._touch_fence(execution_id, chain.start, record.epoch, record.epoch, "kill")
        await self._place_marker(execution_id, record.epoch, "kill", takeover=False)

        def mutate(current: LeaseRecord | None) -> None:
            if (current is None or current.epoch != record.epoch or current.chain is None
                    or current.chain.id != chain.id or current.chain.state != "killing"):
                raise _Skip
            current.chain.state = "dead"

        try:
            await self._update_lease(execution_id, mutate)
        except _Skip:
            pass

    # ================================================================ markers

    async def _put_marker(self, execution_id: str, seq: int, epoch: int, kind: fmt.MarkerKind,
                          if_match: str | None) -> str:
        body, user = fmt.encode_marker(epoch, kind, fmt.new_nonce())
        key = self._key(execution_id, seq)
        etag, _ = await self._s3.put(key, body, metadata=user, if_none_match=if_match is None,
                                     if_match=if_match, data=False)
        self._cache.pop(key, None)
        return etag

    async def _touch_fence(self, execution_id: str, seq: int, fence_epoch: int, epoch: int,
                           kind: fmt.MarkerKind) -> None:
        """If ``seq`` still holds the fence marker of ``fence_epoch``, give it a new ETag."""
        for _ in range(_CYCLES):
            meta = await self._slot(execution_id, seq)
            if (meta is None or meta.kind != "marker" or meta.marker != "fence"
                    or meta.epoch != fence_epoch):
                return
            try:
                await self._put_marker(execution_id, seq, epoch, kind, meta.etag)
                return
            except Precondition:
                continue
        raise StoreError(f"slot {seq} of execution {execution_id!r} kept changing")

    async def _place_marker(self, execution_id: str, epoch: int, kind: fmt.MarkerKind, *,
                            takeover: bool) -> tuple[int, str]:
        """Occupy the slot above the highest occupied one; return (seq, ETag).

        With ``takeover``, a fence marker that is itself the highest slot is replaced
        instead (so claims without writes do not pile markers up).
        """
        for _ in range(_CYCLES * 4):
            top = await self._top(execution_id)
            if top is not None and takeover and top.size == MARKER_SIZE:
                seq = fmt.Layout.seq_of(top.key)
                assert seq is not None
                meta = await self._slot(execution_id, seq)
                if (meta is not None and meta.kind == "marker" and meta.marker == "fence"
                        and meta.epoch <= epoch):
                    try:
                        return seq, await self._put_marker(execution_id, seq, epoch, kind,
                                                           meta.etag)
                    except Precondition:
                        continue
            target = 0 if top is None else (fmt.Layout.seq_of(top.key) or 0) + 1
            if target >= 2**63:
                raise StoreError(f"execution {execution_id!r} has no sequence number left "
                                 "for a fence marker")
            try:
                return target, await self._put_marker(execution_id, target, epoch, kind, None)
            except Precondition:
                continue
        raise StoreError(f"could not place a marker on execution {execution_id!r}: the top "
                         "of its sequence kept moving")

    async def _settle(self, execution_id: str, seq: int, condition: str, intent_id: str,
                      epoch: int) -> None:
        """Make an intent's request condition false for good (a claim's clean-up).

        ``condition`` is ``""`` (the request needs the slot empty) or the ETag the
        request needs. Afterwards the slot is occupied for ever (markers are never
        deleted, a protected checkpoint leaves a tombstone) or holds a new ETag
        (ETags never repeat).
        """
        for _ in range(_CYCLES):
            meta = await self._slot(execution_id, seq)
            try:
                if meta is None:
                    if condition == "":
                        await self._put_marker(execution_id, seq, epoch, "touch", None)
                    return
                if meta.write == intent_id:
                    return  # it took effect before the claim: part of the old epoch
                if condition == "":
                    if meta.kind == "marker" or meta.protected:
                        return
                    await self._rewrite(execution_id, seq, meta, protected=True)
                    return
                if meta.etag != condition:
                    return
                if meta.kind == "marker":
                    await self._put_marker(execution_id, seq, epoch, "touch", meta.etag)
                else:
                    await self._rewrite(execution_id, seq, meta, protected=meta.protected)
                return
            except Precondition:
                continue
        raise StoreError(f"slot {seq} of execution {execution_id!r} kept changing")

    async def _rewrite(self, execution_id: str, seq: int, meta: ObjectMeta, *,
                       protected: bool) -> None:
        """Write a checkpoint again, unchanged but for a new nonce (hence a new ETag)."""
        key = self._key(execution_id, seq)
        found = await self._s3.get(key)
        if not isinstance(found, tuple):
            raise Precondition("vanished")
        info, body = found
        current = ObjectMeta.parse(info.metadata, info.etag, info.size, self._what(execution_id,
                                                                                   seq))
        if current.etag != meta.etag:
            raise Precondition("changed")
        stored, metadata = fmt.decode_checkpoint(body, current, self._what(execution_id, seq))
        new_body, user = fmt.encode_checkpoint(
            stored, metadata=metadata, created_at=current.created_at or info.last_modified,
            epoch=current.epoch, protected=protected, nonce=fmt.new_nonce())
        await self._s3.put(key, new_body, metadata=user, if_match=meta.etag)
        self._cache.pop(key, None)

    # ============================================================ sequence scan

    async def _head_hint(self, execution_id: str) -> int:
        found = await self._s3.get(self._layout.head(execution_id))
        if not isinstance(found, tuple):
            return 0
        info, body = found
        state = self._heads.setdefault(execution_id, _HeadState())
        state.etag = info.etag
        return fmt.decode_head(body) or 0

    async def _keys(self, execution_id: str, lo: int, hi: int | None) -> list[Listed]:
        """Keys of the slots ``lo <= seq < hi`` (all above ``lo`` when ``hi`` is None)."""
        prefix = self._layout.checkpoints(execution_id)
        start = self._key(execution_id, lo - 1) if lo > 0 else None
        stop = self._key(execution_id, hi) if hi is not None and hi < 2**63 else None
        found = await self._s3.list_all(prefix, start_after=start, stop_at=stop)
        return [item for item in found if fmt.Layout.seq_of(item.key) is not None]

    async def _descending(self, execution_id: str) -> AsyncIterator[Listed]:
        """Slot keys from the highest down, listing as little as possible.

        Lists from the head hint upwards (one request: writers keep the hint within
        ``HEAD_EVERY`` checkpoints of the top), then, only if needed, ever larger
        ranges below it.
        """
        hint = await self._head_hint(execution_id)
        for item in reversed(await self._keys(execution_id, hint, None)):
            yield item
        high, span = hint, 1024
        while high > 0:
            low = max(0, high - span)
            for item in reversed(await self._keys(execution_id, low, high)):
                yield item
            high, span = low, span * 8

    async def _top(self, execution_id: str) -> Listed | None:
        """The highest occupied slot (checkpoint or marker)."""
        async for item in self._descending(execution_id):
            return item
        return None

    # ============================================================ head hints

    def _note_write(self, execution_id: str, seq: int) -> None:
        state = self._heads.setdefault(execution_id, _HeadState())
        state.pending += 1
        state.max_seq = max(state.max_seq, seq)
        if state.pending >= HEAD_EVERY and state.task is None:
            state.task = asyncio.get_running_loop().create_task(
                self._advance_head_soon(execution_id, state))

    async def _advance_head_soon(self, execution_id: str, state: _HeadState) -> None:
        try:
            await self._advance_head(execution_id)
        except StoreError as exc:
            log.debug("could not advance the head of %s: %s", execution_id, exc)
        finally:
            state.task = None

    async def _advance_head(self, execution_id: str) -> None:
        """Move the head hint up to the highest seq this instance wrote (never down)."""
        state = self._heads.get(execution_id)
        if state is None:
            return
        key = self._layout.head(execution_id)
        for _ in range(4):
            target, state.pending = state.max_seq, 0
            if state.etag is None:
                found = await self._s3.get(key)
                if isinstance(found, tuple):
                    info, body = found
                    state.etag = info.etag
                    if (fmt.decode_head(body) or 0) >= target:
                        return
            try:
                state.etag, _ = await self._s3.put(
                    key, fmt.encode_head(target), if_none_match=state.etag is None,
                    if_match=state.etag, data=False)
                return
            except Precondition:
                state.etag = None
        if state is self._heads.get(execution_id):
            state.pending = max(state.pending, 1)

    # ============================================================ checkpoints

    async def _save(
        self, execution_id: str, seq: int, stored: bytes, metadata: dict[str, str],
        mode: WriteMode, lease: Lease | None,
    ) -> CheckpointInfo:
        await self._preflight()
        if lease is None:
            return await self._put_checkpoint(execution_id, seq, stored, metadata, mode, None)
        chain = self._chains.get(execution_id)
        if chain is None or not chain.serves(lease):
            return await self._put_checkpoint(execution_id, seq, stored, metadata, mode, lease)
        if seq == chain.next and mode in ("create", "overwrite"):
            info = await self._chain_put(execution_id, chain, seq, stored, metadata, lease)
            if info is not None:
                return info
        if seq < chain.next or not chain.serves(lease):
            return await self._put_checkpoint(execution_id, seq, stored, metadata, mode, lease)
        # A write above our chain's next slot. Under the chain's lock (no one-request
        # write may land meanwhile), and keeping the one-request path only if nobody has
        # started to kill it: then our new top is where a killer or a claim would fence.
        async with chain.lock:
            info = await self._put_checkpoint(execution_id, seq, stored, metadata, mode, lease)
            if chain.serves(lease) and seq >= chain.next:
                current = await self._read_lease(execution_id)
                record = current[0] if current else None
                if (record is not None and record.epoch == lease.epoch
                        and record.chain is not None and record.chain.id == chain.chain_id
                        and record.chain.state == "alive"):
                    chain.next, chain.next_etag = seq + 1, None
                else:
                    chain.dead = True
        return info

    async def _chain_put(
        self, execution_id: str, chain: _ChainState, seq: int, stored: bytes,
        metadata: dict[str, str], lease: Lease,
    ) -> CheckpointInfo | None:
        """The one-request fenced write; None when the slow path must take over."""
        async with chain.lock:
            if not chain.serves(lease) or seq != chain.next:
                return None
            nonce = fmt.new_nonce()
            created = time.time()
            protected = chain.next_etag is not None
            body, user = fmt.encode_checkpoint(stored, metadata=metadata, created_at=created,
                                               epoch=lease.epoch, protected=protected,
                                               nonce=nonce)
            key = self._key(execution_id, seq)
            try:
                etag, _ = await self._s3.put(key, body, metadata=user,
                                             if_none_match=chain.next_etag is None,
                                             if_match=chain.next_etag)
            except Precondition:
                chain.dead = True
                meta = await self._slot(execution_id, seq)
                if meta is not None and meta.kind == "marker" and meta.epoch > lease.epoch:
                    raise self._fenced(lease) from None
                return None
            chain.next, chain.next_etag = seq + 1, None
        return self._stored(execution_id, seq, key, etag, len(body), user, metadata, created)

    def _stored(self, execution_id: str, seq: int, key: str, etag: str, size: int,
                user: dict[str, str], metadata: dict[str, str], created: float) -> CheckpointInfo:
        meta = ObjectMeta.parse(user, etag, size, key)
        self._remember(key, meta, metadata)
        self._note_write(execution_id, seq)
        return _info(execution_id, seq, meta, metadata, created)

    async def _put_checkpoint(
        self, execution_id: str, seq: int, stored: bytes, metadata: dict[str, str],
        mode: WriteMode, lease: Lease | None,
    ) -> CheckpointInfo:
        """A conditional write in cycles: decide the condition, (register it), send it.

        Each cycle sends exactly one conditional PutObject; with a lease, the cycle's
        condition is first recorded as an intent (which fails once superseded).
        """
        key = self._key(execution_id, seq)
        epoch = lease.epoch if lease is not None else 0
        forced: tuple[str, bool] | None = None
        for _ in range(_CYCLES):
            condition: str | None
            if forced is not None:
                (condition, protected), forced = forced, None
            elif isinstance(mode, ExpectedVersion):
                condition, protected = fmt.parse_version(mode.version)
            elif mode == "overwrite":
                meta = await self._slot(execution_id, seq)
                if meta is None:
                    condition, protected = None, False
                elif meta.kind == "marker":
                    if lease is not None and meta.epoch > epoch:
                        raise self._fenced(lease)
                    condition, protected = meta.etag, True
                else:
                    condition, protected = meta.etag, meta.protected
            else:
                condition, protected = None, False
            nonce = fmt.new_nonce()
            intent = Intent(nonce.hex(), {seq: condition or ""})
            if lease is not None:
                await self._register(lease, intent)
            created = time.time()
            body, user = fmt.encode_checkpoint(stored, metadata=metadata, created_at=created,
                                               epoch=epoch, protected=protected, nonce=nonce)
            try:
                etag, _ = await self._s3.put(key, body, metadata=user,
                                             if_none_match=condition is None,
                                             if_match=condition)
            except Precondition:
                self._intent_done(execution_id, intent)
            else:
                self._intent_done(execution_id, intent)
                return self._stored(execution_id, seq, key, etag, len(body), user, metadata,
                                    created)
            meta = await self._slot(execution_id, seq)
            if meta is not None and meta.kind == "marker":
                if lease is not None and meta.epoch > epoch:
                    raise self._fenced(lease)
                if not isinstance(mode, ExpectedVersion):
                    forced = (meta.etag, True)  # a marker is an empty slot we may fill
                    continue
            if lease is not None:
                await self._check_current(lease)
            if isinstance(mode, ExpectedVersion):
                missing = meta is None or meta.kind == "marker"
                raise precondition_failed(
                    execution_id, seq, mode.version,
                    actual=None if meta is None or missing else meta.version, missing=missing)
            if mode == "create" and meta is not None:
                raise already_exists(execution_id, seq, version=meta.version)
        raise StoreError(f"gave up writing {self._what(execution_id, seq)}: it kept changing")

    async def _load_key(self, execution_id: str, seq: int) -> tuple[CheckpointInfo, bytes] | None:
        key = self._key(execution_id, seq)
        found = await self._s3.get(key)
        if not isinstance(found, tuple):
            return None
        info, body = found
        what = self._what(execution_id, seq)
        meta = ObjectMeta.parse(info.metadata, info.etag, info.size, what)
        if meta.kind == "marker":
            return None
        stored, metadata = fmt.decode_checkpoint(body, meta, what)
        self._remember(key, meta, metadata)
        return _info(execution_id, seq, meta, metadata, info.last_modified), stored

    async def _load(self, execution_id: str, seq: int) -> tuple[CheckpointInfo, bytes] | None:
        return await self._load_key(execution_id, seq)

    async def _load_latest(self, execution_id: str) -> tuple[CheckpointInfo, bytes] | None:
        async for item in self._descending(execution_id):
            if item.size == MARKER_SIZE:
                continue
            seq = fmt.Layout.seq_of(item.key)
            assert seq is not None
            found = await self._load_key(execution_id, seq)
            if found is not None:
                return found
        return None

    async def _checkpoint_info(self, execution_id: str, item: Listed) -> CheckpointInfo | None:
        """The info of a listed checkpoint: from the cache when its ETag matches, else HEAD."""
        seq = fmt.Layout.seq_of(item.key)
        assert seq is not None
        cached = self._cache.get(item.key)
        if cached is not None and cached[0].etag == item.etag:
            return _info(execution_id, seq, cached[0], cached[1], item.last_modified)
        meta = await self._slot(execution_id, seq)
        if meta is None or meta.kind == "marker":
            return None
        metadata = meta.metadata
        if metadata is None:
            tail = fmt.TRAILER_SIZE + meta.meta_in_body
            found = await self._s3.get(item.key, byte_range=f"bytes=-{tail}")
            if not isinstance(found, tuple):
                return None
            _length, _nonce, metadata = fmt.decode_trailer(found[1], self._what(execution_id,
                                                                                seq))
            if metadata is None:
                raise CorruptObjectError(f"{self._what(execution_id, seq)} lost its metadata")
        self._remember(item.key, meta, metadata)
        return _info(execution_id, seq, meta, metadata, item.last_modified)

    async def _list(
        self, execution_id: str, cursor: str | None, limit: int, after: int | None,
    ) -> Page[CheckpointInfo]:
        starts = []
        if after is not None and after >= 2**63 - 1:
            return Page((), None)
        if after is not None and after >= 0:
            starts.append(self._key(execution_id, after))
        resume = decode_int_cursor(cursor)
        if resume is not None:
            starts.append(self._key(execution_id, resume))
        start = max(starts) if starts else None
        prefix = self._layout.checkpoints(execution_id)
        while True:
            page = await self._s3.list_page(prefix, start_after=start, max_keys=limit)
            candidates = [item for item in page.objects
                          if item.size != MARKER_SIZE and fmt.Layout.seq_of(item.key) is not None]
            infos = await self._gather(
                functools.partial(self._checkpoint_info, execution_id, item)
                for item in candidates
            )
            items = tuple(info for info in infos if info is not None)
            last = page.objects[-1].key if page.objects else None
            if not page.truncated or last is None:
                return Page(items, None)
            if items:
                return Page(items, str(fmt.Layout.seq_of(last)))
            start = last

    async def _delete(self, execution_id: str, seq: int, lease: Lease | None) -> bool:
        await self._preflight()
        key = self._key(execution_id, seq)
        for _ in range(_CYCLES):
            meta = await self._slot(execution_id, seq)
            if meta is None or meta.kind == "marker":
                if lease is not None:
                    await self._check_current(lease)
                return False
            tombstone = meta.protected or await self._is_top_of_leased(execution_id, seq, lease)
            intent = Intent(fmt.new_nonce().hex(), {seq: meta.etag})
            if lease is not None:
                await self._register(lease, intent)
            try:
                if tombstone:
                    await self._put_marker(execution_id, seq, lease.epoch if lease else 0,
                                           "tombstone", meta.etag)
                else:
                    await self._s3.delete(key, if_match=meta.etag)
            except Precondition:
                self._intent_done(execution_id, intent)
                continue
            self._intent_done(execution_id, intent)
            self._cache.pop(key, None)
            return True
        raise StoreError(f"gave up deleting {self._what(execution_id, seq)}: it kept changing")

    async def _is_top_of_leased(self, execution_id: str, seq: int, lease: Lease | None) -> bool:
        """Whether ``seq`` is the highest slot of an execution that has a lease.

        Deleting that slot leaves a tombstone, so the top of the sequence never moves
        down under a lease holder (its next one-request write stays where a claim fences).
        """
        above = await self._s3.list_page(self._layout.checkpoints(execution_id),
                                         start_after=self._key(execution_id, seq), max_keys=1)
        if above.objects:
            return False
        if lease is not None:
            return True
        return await self._s3.head(self._layout.lease(execution_id)) is not None

    async def _delete_many(
        self, execution_id: str, seqs: Iterable[int], lease: Lease | None,
    ) -> list[int]:
        """Prune: one DeleteObjects request per 1,000 checkpoints (conditional on ETags)."""
        wanted = sorted(set(seqs))
        if not wanted:
            if lease is not None:
                await self._check_current(lease)
            return []
        await self._preflight()

        async def meta_of(seq: int) -> tuple[int, ObjectMeta | None]:
            cached = self._cache.get(self._key(execution_id, seq))
            if cached is not None:
                return seq, cached[0]
            return seq, await self._slot(execution_id, seq)

        found = await self._gather(functools.partial(meta_of, seq) for seq in wanted)
        present = {seq: meta for seq, meta in found
                   if meta is not None and meta.kind == "checkpoint"}
        intent = Intent(fmt.new_nonce().hex(), {seq: meta.etag for seq, meta in present.items()})
        if lease is not None:
            await self._register(lease, intent)
        deleted: list[int] = []
        try:
            plain = {self._key(execution_id, seq): seq for seq, meta in present.items()
                     if not meta.protected}
            gone = await self._s3.delete_many(
                (key, present[seq].etag) for key, seq in plain.items())
            deleted.extend(plain[key] for key in gone if key in plain)
            for seq, meta in present.items():
                if meta.protected:
                    try:
                        await self._put_marker(execution_id, seq, lease.epoch if lease else 0,
                                               "tombstone", meta.etag)
                        deleted.append(seq)
                    except Precondition:
                        pass
        finally:
            self._intent_done(execution_id, intent)
        for seq in deleted:
            self._cache.pop(self._key(execution_id, seq), None)
        return sorted(deleted)

    # ============================================================= executions

    async def _list_executions(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        start = self._layout.execution_cursor(cursor) if cursor else None
        items: list[ExecutionInfo] = []
        token: str | None = None
        while True:
            page = await self._s3.list_page(self._layout.executions, start_after=start,
                                            delimiter="/", max_keys=limit - len(items),
                                            token=token)
            for prefix in page.prefixes:
                execution_id = self._layout.execution_of_prefix(prefix)
                if execution_id is not None:
                    items.append(ExecutionInfo(execution_id))
            if not page.truncated:
                return Page(tuple(items), None)
            if len(items) >= limit:
                return Page(tuple(items), items[-1].execution_id)
            token = page.token

    async def _delete_execution(self, execution_id: str) -> bool:
        state = self._heads.pop(execution_id, None)
        if state is not None and state.task is not None:
            state.task.cancel()
            await asyncio.gather(state.task, return_exceptions=True)
        self._drop_chain(execution_id)
        self._done.pop(execution_id, None)
        # The counter must cover the epoch of the lease about to go (a record written
        # before the counter existed may be above it), so that the next claim of this id
        # gets a higher epoch [C24].
        lease = await self._read_lease(execution_id)
        self._leases.pop(execution_id, None)
        if lease is not None:
            await self._next_epoch(lease[0].epoch, grant=False)
        directory = self._layout.execution_dir(execution_id)
        for key in [k for k in self._cache if k.startswith(directory)]:
            del self._cache[key]
        keys = await self._s3.list_all(directory)
        head_key = self._layout.head(execution_id)
        if await self._is_versioned():
            versions = await self._s3.list_versions(directory)
            versions += [(k, v) for k, v in await self._s3.list_versions(head_key)
                         if k == head_key]
            await self._s3.delete_many(((k, v) for k, v in versions), versions=True)
        else:
            doomed: list[tuple[str, str | None]] = [(item.key, None) for item in keys]
            if await self._s3.head(head_key) is not None:
                doomed.append((head_key, None))
            if doomed:
                await self._s3.delete_many(doomed)
        await self._s3.abort_uploads(directory)
        return bool(keys)

    async def _is_versioned(self) -> bool:
        """Whether the bucket has (or had) versioning on; asked once, lazily."""
        if not self._versioning_known:
            self._versioning = await self._s3.versioning()
            self._versioning_known = True
        return self._versioning is not None

    # ================================================================= leases

    async def _claim(self, execution_id: str, owner: str, ttl: float) -> Lease:
        return await self._claim_if(execution_id, owner, ttl, None)

    async def _take_over(self, lease: Lease, owner: str, ttl: float) -> Lease:
        return await self._claim_if(lease.execution_id, owner, ttl, lease)

    async def _claim_if(self, execution_id: str, owner: str, ttl: float,
                        dead: Lease | None) -> Lease:
        """Claim; with ``dead``, also while ``dead`` is the current (live) lease. The
        lease object is replaced with a conditional write on its ETag, so of concurrent
        take-overs of one lease exactly one wins."""
        await self._preflight()
        record: LeaseRecord | None = None
        for _ in range(_CYCLES):
            current = await self._read_lease(execution_id)
            now = time.time()
            jobs: list[Job] = []
            if current is not None:
                old = current[0]
                replaced = dead is not None and (old.owner, old.epoch) == (
                    dead.owner, dead.epoch)
                if old.owner != owner and old.live(now) and not replaced:
                    raise LeaseHeldError(
                        f"execution {execution_id!r} is leased by {old.owner!r} until "
                        f"{old.expires_at:.3f}", owner=old.owner, expires_at=old.expires_at)
                jobs = [*old.jobs, Job(old.epoch, old.chain, old.intents)]
            epoch = await self._next_epoch(current[0].epoch if current is not None else 0)
            record = LeaseRecord(owner, epoch, now + ttl,
                                 chain=Chain(fmt.new_nonce().hex(), None, "claiming"), jobs=jobs)
            try:
                await self._write_lease(execution_id, record, current[1] if current else None)
                break
            except Precondition:
                self._leases.pop(execution_id, None)
        else:
            raise StoreError(f"could not claim execution {execution_id!r}: its lease kept "
                             "changing")
        assert record is not None
        assert record.chain is not None
        self._drop_chain(execution_id)
        # Tie up the superseded epochs: no request of theirs may take effect from now on.
        done = self._done.get(execution_id, set())
        for job in record.jobs:
            for intent in job.intents:
                if intent.id in done:
                    continue
                for seq, condition in intent.slots.items():
                    await self._settle(execution_id, seq, condition, intent.id, epoch)
            if job.chain is not None and job.chain.start is not None:
                await self._touch_fence(execution_id, job.chain.start, job.epoch, epoch, "fence")
        seq, fence_etag = await self._place_marker(execution_id, epoch, "fence", takeover=True)
        chain_id = record.chain.id

        def finalize(current: LeaseRecord | None) -> None:
            if (current is None or current.epoch != epoch or current.chain is None
                    or current.chain.id != chain_id):
                raise _Superseded
            current.chain.start = seq
            if current.chain.state == "claiming":
                current.chain.state = "alive"
            current.jobs = []
            # The lease lasts ttl from the claim's end, not from its first request.
            current.expires_at = max(current.expires_at, time.time() + ttl)

        try:
            updated = await self._update_lease(execution_id, finalize)
        except _Superseded:
            updated = None
        expires_at = record.expires_at
        if updated is not None:
            expires_at = updated[0].expires_at
            if updated[0].chain is not None and updated[0].chain.state == "alive":
                self._chains[execution_id] = _ChainState(epoch, owner, chain_id, seq, fence_etag)
        return Lease(execution_id, owner, epoch, expires_at)

    async def _read_epoch_counter(self) -> tuple[int, str | None]:
        """The store's epoch counter and its ETag (0 and None before the first claim)."""
        key = self._layout.epochs
        found = await self._s3.get(key)
        if not isinstance(found, tuple):
            return 0, None
        info, body = found
        return fmt.decode_epoch_counter(body, f"s3://{self.bucket}/{key}"), info.etag

    async def _next_epoch(self, above: int, *, grant: bool = True) -> int:
        """Draw an epoch from the store's counter: greater than ``above`` and than every
        epoch granted in this store before -- to any execution, deleted ones included --
        so that an execution's epochs never repeat, not even after ``delete_execution``.

        The counter object only grows, by conditional writes, and each successful write
        grants the epoch it wrote to exactly one claim. With ``grant=False`` the counter
        is only raised to at least ``above`` (``delete_execution`` does this for a lease
        record older than the counter) and ``above`` is returned.
        """
        cached: tuple[int, str | None] | None = self._epoch_counter
        for attempt in range(_EPOCH_CYCLES):
            current, etag = cached if cached is not None else await self._read_epoch_counter()
            if not grant and current >= above:
                return above
            epoch = max(current, above) + 1 if grant else above
            try:
                new_etag, _ = await self._s3.put(
                    self._layout.epochs, fmt.encode_epoch_counter(epoch),
                    if_none_match=etag is None, if_match=etag, data=False,
                )
            except Precondition:
                # Another claim drew an epoch meanwhile: read the counter again.
                self._epoch_counter = cached = None
                await asyncio.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 7)))
                continue
            self._epoch_counter = (epoch, new_etag)
            return epoch
        raise StoreError(f"could not draw an epoch from s3://{self.bucket}/"
                         f"{self._layout.epochs}: it kept changing (too many concurrent claims)")

    async def _renew(self, lease: Lease, ttl: float) -> Lease:
        expires_at = 0.0

        def mutate(record: LeaseRecord | None) -> None:
            nonlocal expires_at
            record = self._check(lease, record, "renewing the lease")
            expires_at = record.expires_at = time.time() + ttl
            record.released_at = None

        await self._update_lease(lease.execution_id, mutate)
        return Lease(lease.execution_id, lease.owner, lease.epoch, expires_at)

    async def _release(self, lease: Lease) -> None:
        def mutate(record: LeaseRecord | None) -> None:
            if (record is None or record.epoch != lease.epoch or record.owner != lease.owner
                    or record.released_at is not None):
                raise _Skip
            record.released_at = time.time()

        try:
            await self._update_lease(lease.execution_id, mutate)
        except _Skip:
            pass

    async def _get_lease(self, execution_id: str) -> Lease | None:
        current = await self._read_lease(execution_id)
        if current is None:
            return None
        record = current[0]
        expires = record.expires_at
        if record.released_at is not None:
            expires = min(expires, record.released_at)
        return Lease(execution_id, record.owner, record.epoch, expires,
                     released=record.released_at is not None)

    # ================================================================== blobs

    def _blob_key(self, execution_id: str, digest: str) -> str:
        return self._layout.blob(execution_id, digest.partition(":")[2])

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

    async def _get_blob(self, execution_id: str, digest: str) -> bytes | None:
        found = await self._s3.get(self._blob_key(execution_id, digest))
        if not isinstance(found, tuple):
            return None
        return found[1]

    async def _has_blob(self, execution_id: str, digest: str) -> bool:
        return await self._s3.head(self._blob_key(execution_id, digest)) is not None

    async def _list_blobs(
        self, execution_id: str, cursor: str | None, limit: int,
    ) -> Page[BlobInfo]:
        prefix = self._layout.blobs(execution_id)
        if cursor is not None and not all(c in "0123456789abcdef" for c in cursor):
            raise ValueError(f"invalid cursor {cursor!r}")
        start = f"{prefix}{cursor}" if cursor else None
        page = await self._s3.list_page(prefix, start_after=start, max_keys=max(1, limit))
        items = []
        for item in page.objects:
            hexdigest = item.key[len(prefix):]
            if len(hexdigest) == 64:
                items.append(BlobInfo(f"sha256:{hexdigest}", item.size, item.last_modified))
        last = page.objects[-1].key[len(prefix):] if page.objects else None
        return Page(tuple(items), last if page.truncated else None)

    async def _delete_blob(self, execution_id: str, digest: str) -> bool:
        key = self._blob_key(execution_id, digest)
        found = await self._s3.head(key)
        if found is None:
            return False
        await self._s3.delete(key)
        return True
