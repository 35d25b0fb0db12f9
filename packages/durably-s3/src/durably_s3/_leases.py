"""The lease and intent protocol of the S3 provider (see ``docs/providers/s3.md``).

The lease object of an execution is replaced only by conditional writes on its ETag.
A fenced operation that is not the claiming instance's one-request chain write first
records an *intent* in it (which fails once the epoch is superseded); a claim settles
every recorded intent of the epochs it supersedes, kills their chains and places its own
fence marker at the top of the sequence space. Epochs come from the store-wide counter
object (conditional writes), so they never repeat, not even after ``delete_execution``.
:class:`LeaseProtocolMixin` is a base of :class:`~durably_s3.S3Provider`.
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from durably.errors import FencedError, StoreError, fenced, lease_held
from durably.storage import Lease
from durably_s3 import _format as fmt
from durably_s3._client import NOT_MODIFIED, Precondition
from durably_s3._format import Chain, Intent, Job, LeaseRecord
from durably_s3._slots import _CYCLES, SlotsMixin

__all__ = ["FENCED_ACTION", "LeaseProtocolMixin"]

T = TypeVar("T")

_EPOCH_CYCLES = 64
"""Attempts to draw an epoch from the store's counter (each loses to another claim)."""

FENCED_ACTION = "writing to the execution"
"""What a fenced S3 operation is called in its FencedError (the intent protocol judges
saves and deletes alike)."""


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


class LeaseProtocolMixin(SlotsMixin):
    """Lease records, intents, chains, claims and the epoch counter."""

    _chains: dict[str, _ChainState]
    _leases: dict[str, tuple[LeaseRecord, str]]
    _done: dict[str, set[str]]
    _epoch_counter: tuple[int, str] | None

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

    async def _write_lease(
        self, execution_id: str, record: LeaseRecord, if_match: str | None
    ) -> str:
        etag, _ = await self._s3.put(
            self._layout.lease(execution_id),
            record.to_bytes(),
            if_none_match=if_match is None,
            if_match=if_match,
            data=False,
        )
        self._leases[execution_id] = (record, etag)
        return etag

    async def _update_lease(
        self,
        execution_id: str,
        mutate: Callable[[LeaseRecord | None], T],
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
                etag = await self._write_lease(
                    execution_id, record, cached[1] if cached is not None else None
                )
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
        lease: Lease,
        record: LeaseRecord | None,
        action: str = FENCED_ACTION,
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
            if (
                record.chain is not None
                and record.chain.state in ("alive", "killing")
                and record.chain.id != mine
            ):
                record.chain.state = "killing"
                return True
            return False

        updated = await self._update_lease(execution_id, mutate)
        assert updated is not None
        record, _etag, kill = updated
        if (
            chain is not None
            and record.chain is not None
            and record.chain.id == mine
            and record.chain.state != "alive"
        ):
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
            if (
                current is None
                or current.epoch != record.epoch
                or current.chain is None
                or current.chain.id != chain.id
                or current.chain.state != "killing"
            ):
                raise _Skip
            current.chain.state = "dead"

        try:
            await self._update_lease(execution_id, mutate)
        except _Skip:
            pass

    async def _settle(
        self, execution_id: str, seq: int, condition: str, intent_id: str, epoch: int
    ) -> None:
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

    async def _claim_if(
        self, execution_id: str, owner: str, ttl: float, dead: Lease | None
    ) -> Lease:
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
                replaced = dead is not None and (old.owner, old.epoch) == (dead.owner, dead.epoch)
                if old.owner != owner and old.live(now) and not replaced:
                    raise lease_held(execution_id, old.owner, old.expires_at)
                jobs = [*old.jobs, Job(old.epoch, old.chain, old.intents)]
            epoch = await self._next_epoch(current[0].epoch if current is not None else 0)
            record = LeaseRecord(
                owner,
                epoch,
                now + ttl,
                chain=Chain(fmt.new_nonce().hex(), None, "claiming"),
                jobs=jobs,
            )
            try:
                await self._write_lease(execution_id, record, current[1] if current else None)
                break
            except Precondition:
                self._leases.pop(execution_id, None)
        else:
            raise StoreError(f"could not claim execution {execution_id!r}: its lease kept changing")
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
            if (
                current is None
                or current.epoch != epoch
                or current.chain is None
                or current.chain.id != chain_id
            ):
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
                    self._layout.epochs,
                    fmt.encode_epoch_counter(epoch),
                    if_none_match=etag is None,
                    if_match=etag,
                    data=False,
                )
            except Precondition:
                # Another claim drew an epoch meanwhile: read the counter again.
                self._epoch_counter = cached = None
                await asyncio.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 7)))
                continue
            self._epoch_counter = (epoch, new_etag)
            return epoch
        raise StoreError(
            f"could not draw an epoch from s3://{self.bucket}/"
            f"{self._layout.epochs}: it kept changing (too many concurrent claims)"
        )

    # ------------------------------------------------------- renew, release, read

    async def _renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """A new expiry, by a conditional write of the lease object [C16]."""
        expires_at = 0.0

        def mutate(record: LeaseRecord | None) -> None:
            nonlocal expires_at
            record = self._check(lease, record, "renewing the lease")
            expires_at = record.expires_at = time.time() + ttl
            record.released_at = None

        await self._update_lease(lease.execution_id, mutate)
        return Lease(lease.execution_id, lease.owner, lease.epoch, expires_at)

    async def _release_lease(self, lease: Lease) -> None:
        """Mark the lease released unless it was superseded [C23]."""

        def mutate(record: LeaseRecord | None) -> None:
            if (
                record is None
                or record.epoch != lease.epoch
                or record.owner != lease.owner
                or record.released_at is not None
            ):
                raise _Skip
            record.released_at = time.time()

        try:
            await self._update_lease(lease.execution_id, mutate)
        except _Skip:
            pass

    async def _lease_of(self, execution_id: str) -> Lease | None:
        """The lease object as a Lease (released: expiry capped at the release)."""
        current = await self._read_lease(execution_id)
        if current is None:
            return None
        record = current[0]
        expires = record.expires_at
        if record.released_at is not None:
            expires = min(expires, record.released_at)
        return Lease(
            execution_id,
            record.owner,
            record.epoch,
            expires,
            released=record.released_at is not None,
        )
