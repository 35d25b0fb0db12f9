"""Slots, markers, the sequence scan and head hints of the S3 provider.

A *slot* is the key of one sequence number of an execution: it holds a checkpoint or a
*marker* (a fence, a kill, a touch or a tombstone; see ``docs/providers/s3.md``). This
module reads slots (with a cache of their metadata), writes markers, finds the top of
the sequence space from the *head hint* (listing as little as possible) and keeps that
hint near the top. :class:`SlotsMixin` is a base of :class:`~durably_s3.S3Provider`;
the lease and intent protocol (:mod:`durably_s3._leases`) and the open index
(:mod:`durably_s3._open`) build on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from durably.errors import CorruptObjectError, StoreError
from durably.storage import CheckpointInfo
from durably_s3 import _format as fmt
from durably_s3._client import CONDITIONAL_WRITES_HELP, Listed, Precondition, S3Client
from durably_s3._format import MARKER_SIZE, ObjectMeta

__all__ = ["HEAD_EVERY", "SlotsMixin"]

log = logging.getLogger("durably.s3")

T = TypeVar("T")

HEAD_EVERY = 64
"""A writer advances an execution's head hint after this many new checkpoints."""
_CYCLES = 16
"""Attempts of one conditional operation before giving up (each loses a race)."""
_CONCURRENCY = 16
"""Requests a listing keeps in flight to read checkpoint metadata."""
_CACHE_SIZE = 20_000
_PROBED: set[str] = set()
"""Endpoints whose conditional-write support this process has checked (a property of
the server, not of a bucket)."""


@dataclass(slots=True)
class _HeadState:
    etag: str | None = None
    pending: int = 0
    max_seq: int = -1
    task: asyncio.Task[None] | None = None


def _info(
    execution_id: str, seq: int, meta: ObjectMeta, metadata: Mapping[str, str], fallback_time: float
) -> CheckpointInfo:
    return CheckpointInfo(
        execution_id=execution_id,
        seq=seq,
        version=meta.version,
        size=meta.stored_size,
        created_at=meta.created_at if meta.created_at is not None else fallback_time,
        metadata=dict(metadata),
    )


class SlotsMixin:
    """Slot, marker, scan and head-hint helpers (state lives in the provider)."""

    bucket: str
    _s3: S3Client
    _layout: fmt.Layout
    _heads: dict[str, _HeadState]
    _cache: OrderedDict[str, tuple[ObjectMeta, dict[str, str]]]
    _probed: bool
    _probe_lock: asyncio.Lock | None

    def _key(self, execution_id: str, seq: int) -> str:
        return self._layout.checkpoint(execution_id, seq)

    def _what(self, execution_id: str, seq: int) -> str:
        return (
            f"checkpoint {seq} of execution {execution_id!r} (s3://{self.bucket}/"
            f"{self._key(execution_id, seq)})"
        )

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
        return ObjectMeta.parse(
            found.metadata, found.etag, found.size, self._what(execution_id, seq)
        )

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
                _etag, version = await self._s3.put(
                    key, b"durably probe 1", if_none_match=True, data=False
                )
            except StoreError as exc:
                if type(exc) is not StoreError:
                    raise
                raise StoreError(
                    f"a conditional PutObject to s3://{self.bucket}/{key} failed "
                    f"({exc}). {CONDITIONAL_WRITES_HELP}"
                ) from exc
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

    async def _put_marker(
        self, execution_id: str, seq: int, epoch: int, kind: fmt.MarkerKind, if_match: str | None
    ) -> str:
        body, user = fmt.encode_marker(epoch, kind, fmt.new_nonce())
        key = self._key(execution_id, seq)
        etag, _ = await self._s3.put(
            key, body, metadata=user, if_none_match=if_match is None, if_match=if_match, data=False
        )
        self._cache.pop(key, None)
        return etag

    async def _touch_fence(
        self, execution_id: str, seq: int, fence_epoch: int, epoch: int, kind: fmt.MarkerKind
    ) -> None:
        """If ``seq`` still holds the fence marker of ``fence_epoch``, give it a new ETag."""
        for _ in range(_CYCLES):
            meta = await self._slot(execution_id, seq)
            if (
                meta is None
                or meta.kind != "marker"
                or meta.marker != "fence"
                or meta.epoch != fence_epoch
            ):
                return
            try:
                await self._put_marker(execution_id, seq, epoch, kind, meta.etag)
                return
            except Precondition:
                continue
        raise StoreError(f"slot {seq} of execution {execution_id!r} kept changing")

    async def _place_marker(
        self, execution_id: str, epoch: int, kind: fmt.MarkerKind, *, takeover: bool
    ) -> tuple[int, str]:
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
                if (
                    meta is not None
                    and meta.kind == "marker"
                    and meta.marker == "fence"
                    and meta.epoch <= epoch
                ):
                    try:
                        return seq, await self._put_marker(
                            execution_id, seq, epoch, kind, meta.etag
                        )
                    except Precondition:
                        continue
            target = 0 if top is None else (fmt.Layout.seq_of(top.key) or 0) + 1
            if target >= 2**63:
                raise StoreError(
                    f"execution {execution_id!r} has no sequence number left for a fence marker"
                )
            try:
                return target, await self._put_marker(execution_id, target, epoch, kind, None)
            except Precondition:
                continue
        raise StoreError(
            f"could not place a marker on execution {execution_id!r}: the top "
            "of its sequence kept moving"
        )

    async def _rewrite(
        self, execution_id: str, seq: int, meta: ObjectMeta, *, protected: bool
    ) -> None:
        """Write a checkpoint again, unchanged but for a new nonce (hence a new ETag)."""
        key = self._key(execution_id, seq)
        found = await self._s3.get(key)
        if not isinstance(found, tuple):
            raise Precondition("vanished")
        info, body = found
        current = ObjectMeta.parse(
            info.metadata, info.etag, info.size, self._what(execution_id, seq)
        )
        if current.etag != meta.etag:
            raise Precondition("changed")
        stored, metadata = fmt.decode_checkpoint(body, current, self._what(execution_id, seq))
        new_body, user = fmt.encode_checkpoint(
            stored,
            metadata=metadata,
            created_at=current.created_at or info.last_modified,
            epoch=current.epoch,
            protected=protected,
            nonce=fmt.new_nonce(),
        )
        await self._s3.put(key, new_body, metadata=user, if_match=meta.etag)
        self._cache.pop(key, None)

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

    def _note_write(self, execution_id: str, seq: int) -> None:
        state = self._heads.setdefault(execution_id, _HeadState())
        state.pending += 1
        state.max_seq = max(state.max_seq, seq)
        if state.pending >= HEAD_EVERY and state.task is None:
            state.task = asyncio.get_running_loop().create_task(
                self._advance_head_soon(execution_id, state)
            )

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
                    key,
                    fmt.encode_head(target),
                    if_none_match=state.etag is None,
                    if_match=state.etag,
                    data=False,
                )
                return
            except Precondition:
                state.etag = None
        if state is self._heads.get(execution_id):
            state.pending = max(state.pending, 1)

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
            _length, _nonce, metadata = fmt.decode_trailer(found[1], self._what(execution_id, seq))
            if metadata is None:
                raise CorruptObjectError(f"{self._what(execution_id, seq)} lost its metadata")
        self._remember(item.key, meta, metadata)
        return _info(execution_id, seq, meta, metadata, item.last_modified)
