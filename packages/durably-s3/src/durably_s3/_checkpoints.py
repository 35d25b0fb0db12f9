"""Checkpoints and executions of the S3 provider: slot writes, reads, listing, deletion.

:class:`CheckpointsMixin` is a base of :class:`~durably_s3.S3Provider`. A leased save by
the instance that holds the claim is the one-request *chain* write; every other fenced
write or delete is a conditional request in *cycles*, each first recorded as an intent
in the lease object (:mod:`durably_s3._leases`). Slots, markers and the head hint are
:mod:`durably_s3._slots`'; the open index is :mod:`durably_s3._open`'s. The whole
argument is in ``docs/providers/s3.md`` and the provider's module docstring.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterable

from durably.errors import StoreError, already_exists, precondition_failed
from durably.storage import (
    CheckpointInfo,
    ExecutionInfo,
    ExpectedVersion,
    Lease,
    Page,
    WriteMode,
    decode_int_cursor,
)
from durably_s3 import _format as fmt
from durably_s3._client import Precondition
from durably_s3._format import MARKER_SIZE, Intent, ObjectMeta
from durably_s3._leases import LeaseProtocolMixin, _ChainState
from durably_s3._open import OpenIndexMixin
from durably_s3._slots import _CYCLES, _info

__all__ = ["CheckpointsMixin"]


class CheckpointsMixin(OpenIndexMixin, LeaseProtocolMixin):
    """Writing, reading, listing and deleting checkpoints and executions in the bucket."""

    _versioning: str | None
    _versioning_known: bool

    async def _load_top(self, execution_id: str) -> tuple[CheckpointInfo, bytes] | None:
        """The checkpoint in the highest slot that holds one (markers skipped) [C3]."""
        async for item in self._descending(execution_id):
            if item.size == MARKER_SIZE:
                continue
            seq = fmt.Layout.seq_of(item.key)
            assert seq is not None
            found = await self._load_key(execution_id, seq)
            if found is not None:
                return found
        return None

    async def _list_slots(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
        after: int | None,
    ) -> Page[CheckpointInfo]:
        """A page of checkpoints (markers skipped) by key, i.e. by seq [C4]."""
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
            candidates = [
                item
                for item in page.objects
                if item.size != MARKER_SIZE and fmt.Layout.seq_of(item.key) is not None
            ]
            infos = await self._gather(
                functools.partial(self._checkpoint_info, execution_id, item) for item in candidates
            )
            items = tuple(info for info in infos if info is not None)
            last = page.objects[-1].key if page.objects else None
            if not page.truncated or last is None:
                return Page(items, None)
            if items:
                return Page(items, str(fmt.Layout.seq_of(last)))
            start = last

    async def _delete_slots(
        self, execution_id: str, seqs: Iterable[int], lease: Lease | None
    ) -> list[int]:
        """Prune: one DeleteObjects request per 1,000 checkpoints (conditional on ETags).

        Only ``prune`` calls it, and it never deletes the latest checkpoint: the open
        index does not change.
        """
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
        present = {
            seq: meta for seq, meta in found if meta is not None and meta.kind == "checkpoint"
        }
        intent = Intent(fmt.new_nonce().hex(), {seq: meta.etag for seq, meta in present.items()})
        if lease is not None:
            await self._register(lease, intent)
        deleted: list[int] = []
        try:
            plain = {
                self._key(execution_id, seq): seq
                for seq, meta in present.items()
                if not meta.protected
            }
            gone = await self._s3.delete_many(
                (key, present[seq].etag) for key, seq in plain.items()
            )
            deleted.extend(plain[key] for key in gone if key in plain)
            for seq, meta in present.items():
                if meta.protected:
                    try:
                        await self._put_marker(
                            execution_id, seq, lease.epoch if lease else 0, "tombstone", meta.etag
                        )
                        deleted.append(seq)
                    except Precondition:
                        pass
        finally:
            self._intent_done(execution_id, intent)
        for seq in deleted:
            self._cache.pop(self._key(execution_id, seq), None)
        return sorted(deleted)

    async def _save_slot(
        self,
        execution_id: str,
        seq: int,
        stored: bytes,
        metadata: dict[str, str],
        mode: WriteMode,
        lease: Lease | None,
    ) -> CheckpointInfo:
        """Write a checkpoint: the one-request chain write, or conditional cycles."""
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
                if (
                    record is not None
                    and record.epoch == lease.epoch
                    and record.chain is not None
                    and record.chain.id == chain.chain_id
                    and record.chain.state == "alive"
                ):
                    chain.next, chain.next_etag = seq + 1, None
                else:
                    chain.dead = True
        return info

    async def _chain_put(
        self,
        execution_id: str,
        chain: _ChainState,
        seq: int,
        stored: bytes,
        metadata: dict[str, str],
        lease: Lease,
    ) -> CheckpointInfo | None:
        """The one-request fenced write; None when the slow path must take over."""
        async with chain.lock:
            if not chain.serves(lease) or seq != chain.next:
                return None
            nonce = fmt.new_nonce()
            created = time.time()
            protected = chain.next_etag is not None
            body, user = fmt.encode_checkpoint(
                stored,
                metadata=metadata,
                created_at=created,
                epoch=lease.epoch,
                protected=protected,
                nonce=nonce,
            )
            key = self._key(execution_id, seq)
            try:
                etag, _ = await self._s3.put(
                    key,
                    body,
                    metadata=user,
                    if_none_match=chain.next_etag is None,
                    if_match=chain.next_etag,
                )
            except Precondition:
                chain.dead = True
                meta = await self._slot(execution_id, seq)
                if meta is not None and meta.kind == "marker" and meta.epoch > lease.epoch:
                    raise self._fenced(lease) from None
                return None
            chain.next, chain.next_etag = seq + 1, None
        return self._stored(execution_id, seq, key, etag, len(body), user, metadata, created)

    def _stored(
        self,
        execution_id: str,
        seq: int,
        key: str,
        etag: str,
        size: int,
        user: dict[str, str],
        metadata: dict[str, str],
        created: float,
    ) -> CheckpointInfo:
        meta = ObjectMeta.parse(user, etag, size, key)
        self._remember(key, meta, metadata)
        self._note_write(execution_id, seq)
        return _info(execution_id, seq, meta, metadata, created)

    async def _put_checkpoint(
        self,
        execution_id: str,
        seq: int,
        stored: bytes,
        metadata: dict[str, str],
        mode: WriteMode,
        lease: Lease | None,
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
            body, user = fmt.encode_checkpoint(
                stored,
                metadata=metadata,
                created_at=created,
                epoch=epoch,
                protected=protected,
                nonce=nonce,
            )
            try:
                etag, _ = await self._s3.put(
                    key, body, metadata=user, if_none_match=condition is None, if_match=condition
                )
            except Precondition:
                self._intent_done(execution_id, intent)
            else:
                self._intent_done(execution_id, intent)
                return self._stored(
                    execution_id, seq, key, etag, len(body), user, metadata, created
                )
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
                    execution_id,
                    seq,
                    mode.version,
                    actual=None if meta is None or missing else meta.version,
                    missing=missing,
                )
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

    async def _delete_slot(self, execution_id: str, seq: int, lease: Lease | None) -> bool:
        """Delete one checkpoint (fenced by ``lease``) with a conditional request."""
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
                    await self._put_marker(
                        execution_id, seq, lease.epoch if lease else 0, "tombstone", meta.etag
                    )
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
        above = await self._s3.list_page(
            self._layout.checkpoints(execution_id),
            start_after=self._key(execution_id, seq),
            max_keys=1,
        )
        if above.objects:
            return False
        if lease is not None:
            return True
        return await self._s3.head(self._layout.lease(execution_id)) is not None

    # ============================================================== executions

    async def _list_execution_prefixes(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        """A page of the executions' directories, by id (``/`` as delimiter) [C13]."""
        start = self._layout.execution_cursor(cursor) if cursor else None
        items: list[ExecutionInfo] = []
        token: str | None = None
        while True:
            page = await self._s3.list_page(
                self._layout.executions,
                start_after=start,
                delimiter="/",
                max_keys=limit - len(items),
                token=token,
            )
            for prefix in page.prefixes:
                execution_id = self._layout.execution_of_prefix(prefix)
                if execution_id is not None:
                    items.append(ExecutionInfo(execution_id))
            if not page.truncated:
                return Page(tuple(items), None)
            if len(items) >= limit:
                return Page(tuple(items), items[-1].execution_id)
            token = page.token

    async def _delete_all(self, execution_id: str) -> bool:
        """Delete every object (and version) of the execution; the open marker last [C24]."""
        state = self._heads.pop(execution_id, None)
        if state is not None and state.task is not None:
            state.task.cancel()
            await asyncio.gather(state.task, return_exceptions=True)
        self._drop_chain(execution_id)
        self._done.pop(execution_id, None)
        self._marked.pop(execution_id, None)
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
        open_key = self._layout.open_entry(execution_id)
        if await self._is_versioned():
            versions = await self._s3.list_versions(directory)
            versions += [(k, v) for k, v in await self._s3.list_versions(head_key) if k == head_key]
            await self._s3.delete_many(((k, v) for k, v in versions), versions=True)
        else:
            doomed: list[tuple[str, str | None]] = [(item.key, None) for item in keys]
            if await self._s3.head(head_key) is not None:
                doomed.append((head_key, None))
            if doomed:
                await self._s3.delete_many(doomed)
        await self._s3.abort_uploads(directory)
        # The marker goes last: a crash before leaves it stale, never missing.
        if await self._is_versioned():
            await self._s3.delete_many(
                ((k, v) for k, v in await self._s3.list_versions(open_key) if k == open_key),
                versions=True,
            )
        elif await self._s3.head(open_key) is not None:
            await self._s3.delete(open_key)
        return bool(keys)

    async def _is_versioned(self) -> bool:
        """Whether the bucket has (or had) versioning on; asked once, lazily."""
        if not self._versioning_known:
            self._versioning = await self._s3.versioning()
            self._versioning_known = True
        return self._versioning is not None
