"""An in-process storage provider for durably: the example third-party provider.

It keeps everything in Python dictionaries, so it is neither persistent (a new
process starts empty) nor shared (other processes cannot see it). It is complete
all the same: it implements every provider method of
:class:`durably.storage.CheckpointProvider` and passes the conformance suite
(``durably_conformance.ProviderSuite``) with the clauses of the capabilities it does
not declare skipped. Read it next to ``docs/guides/writing-a-provider.md``.

Use it through a store URL once the distribution is installed (its ``pyproject.toml``
registers the ``memory`` scheme in the ``durably.providers`` entry-point group)::

    import durably

    store = durably.open_store("memory://scratch")

or directly, with several provider instances on one :class:`MemoryStore`::

    store = MemoryStore()
    first, second = MemoryProvider(store), MemoryProvider(store)

How the contract is met:

* **Atomicity.** Every provider method runs its check-then-act section under the
  store's :class:`asyncio.Lock`. (Here the sections contain no ``await`` and would be
  atomic anyway on one event loop; a provider that awaits I/O between the check and
  the write needs the lock, or the backend's conditional write, to stay correct.)
* **Versions** come from a counter, so every write produces a new one.
* **Epochs** come from one counter per store, so a new claim's epoch is greater than
  every epoch ever granted -- even after :meth:`~MemoryProvider._delete_execution`
  dropped an execution's lease record.
* **Cursors** are the last key of the previous page (a seq, an execution id, a
  digest), so a listing survives writes and deletes between pages.
* **The open-executions index** (``OPEN_INDEX``, C31) is a set of execution ids,
  brought up to date in the same locked section as every save and delete: an
  execution is in it exactly when its latest checkpoint is not finished.
* **Claiming the next execution** (``CLAIM_NEXT``, C32) walks that set under the same
  lock and claims the first execution without a live lease.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

from durably.errors import (
    ConfigError,
    LeaseHeldError,
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
    encode_int_cursor,
    is_finished,
)

__all__ = ["LeaseRecord", "MemoryProvider", "MemoryStore", "StoredObject"]

__version__ = "0.1.0"


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One stored checkpoint or blob: what the provider knows and the envelope bytes."""

    stored: bytes
    created_at: float
    info: CheckpointInfo | None = None
    """Set for checkpoints, None for blobs."""


@dataclass(slots=True)
class LeaseRecord:
    """The current lease of an execution and whether its holder released it."""

    lease: Lease
    released: bool = False


class MemoryStore:
    """The data of one in-memory store. Share it between provider instances.

    Attributes:
        checkpoints: ``execution id -> seq -> object``.
        blobs: ``execution id -> digest -> object``.
        leases: ``execution id -> lease record``.
        open: The open executions (the ``OPEN_INDEX`` of C31).
        lock: Serializes every provider method on this store.
    """

    def __init__(self) -> None:
        self.checkpoints: dict[str, dict[int, StoredObject]] = {}
        self.blobs: dict[str, dict[str, StoredObject]] = {}
        self.leases: dict[str, LeaseRecord] = {}
        self.open: set[str] = set()
        self.lock = asyncio.Lock()
        self._versions = itertools.count(1)
        self._epochs = itertools.count(1)

    def next_version(self) -> str:
        """A version string never handed out before by this store."""
        return f"v{next(self._versions)}"

    def next_epoch(self) -> int:
        """An epoch greater than every epoch handed out before by this store."""
        return next(self._epochs)


class MemoryProvider(CheckpointProvider):
    """A dictionary-backed provider for tests, demos and short-lived programs.

    Args:
        store: The store to use; several instances may share one. Default: a new,
            empty store private to this instance.
        name: A label shown by :meth:`describe`.
    """

    scheme: ClassVar[str] = "memory"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.TAKEOVER, Capability.OPEN_INDEX, Capability.CLAIM_NEXT}
    )

    def __init__(self, store: MemoryStore | None = None, *, name: str = "") -> None:
        super().__init__()
        self.store = store if store is not None else MemoryStore()
        self.name = name

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> Self:
        """Build a provider for ``memory://NAME`` (NAME is only a label).

        Each call makes a new, empty store. No option is accepted.

        Raises:
            ConfigError: The URL is not a ``memory://`` URL or an option was given.
        """
        parts = urlsplit(url)
        if parts.scheme != cls.scheme:
            raise ConfigError(
                f"not a {cls.scheme}:// URL: {url!r}",
                key="durability.store",
                fix="Use e.g. 'memory://scratch'",
            )
        if options:
            raise ConfigError(
                f"unknown option(s) {', '.join(sorted(map(str, options)))}",
                key=f"durability.{cls.scheme}",
                fix="The memory provider takes no options; remove the [durability.memory] table",
            )
        return cls(name=parts.netloc + parts.path)

    def describe(self) -> str:
        return f"{self.scheme}://{self.name}"

    # ------------------------------------------------------------------ helpers

    def _check_fence(self, execution_id: str, lease: Lease | None, action: str) -> None:
        """Raise FencedError unless ``lease`` carries the execution's current epoch.

        The error comes from :func:`durably.errors.fenced`, like every provider's.
        """
        if lease is None:
            return
        record = self.store.leases.get(execution_id)
        if record is None or record.lease.epoch != lease.epoch:
            raise fenced(
                lease, action, current_epoch=None if record is None else record.lease.epoch
            )

    # -------------------------------------------------------------- checkpoints

    async def _save(
        self,
        execution_id: str,
        seq: int,
        stored: bytes,
        metadata: dict[str, str],
        mode: WriteMode,
        lease: Lease | None,
    ) -> CheckpointInfo:
        async with self.store.lock:
            self._check_fence(execution_id, lease, f"saving checkpoint {seq}")
            current = self.store.checkpoints.get(execution_id, {}).get(seq)
            version = None if current is None or current.info is None else current.info.version
            if mode == "create" and current is not None:
                raise already_exists(execution_id, seq, version=version)
            if isinstance(mode, ExpectedVersion) and version != mode.version:
                raise precondition_failed(
                    execution_id, seq, mode.version, actual=version, missing=version is None
                )
            now = time.time()
            info = CheckpointInfo(
                execution_id=execution_id,
                seq=seq,
                version=self.store.next_version(),
                size=len(stored),
                created_at=now,
                metadata=MappingProxyType(dict(metadata)),
            )
            self.store.checkpoints.setdefault(execution_id, {})[seq] = StoredObject(
                stored, now, info
            )
            self._reindex(execution_id)
            return info

    async def _load(self, execution_id: str, seq: int) -> tuple[CheckpointInfo, bytes] | None:
        async with self.store.lock:
            found = self.store.checkpoints.get(execution_id, {}).get(seq)
            if found is None or found.info is None:
                return None
            return found.info, found.stored

    async def _load_latest(self, execution_id: str) -> tuple[CheckpointInfo, bytes] | None:
        async with self.store.lock:
            seqs = self.store.checkpoints.get(execution_id)
            if not seqs:
                return None
            found = seqs[max(seqs)]
            assert found.info is not None
            return found.info, found.stored

    async def _list(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
        after: int | None,
    ) -> Page[CheckpointInfo]:
        start = -1 if after is None else after
        resume = decode_int_cursor(cursor)  # the last seq listed: survives deletes [C4]
        if resume is not None:
            start = max(start, resume)
        async with self.store.lock:
            seqs = self.store.checkpoints.get(execution_id, {})
            wanted = sorted(seq for seq in seqs if seq > start)
            infos = [seqs[seq].info for seq in wanted[:limit]]
        items = tuple(info for info in infos if info is not None)
        more = len(wanted) > limit
        return Page(items, encode_int_cursor(items[-1].seq) if more else None)

    async def _delete(self, execution_id: str, seq: int, lease: Lease | None) -> bool:
        async with self.store.lock:
            self._check_fence(execution_id, lease, f"deleting checkpoint {seq}")
            deleted = self._pop_checkpoint(execution_id, seq)
            self._reindex(execution_id)
            return deleted

    async def _delete_many(
        self,
        execution_id: str,
        seqs: Iterable[int],
        lease: Lease | None,
    ) -> list[int]:
        # One fence check for the whole batch: either all of it happens or nothing.
        async with self.store.lock:
            self._check_fence(execution_id, lease, "pruning checkpoints")
            deleted = [seq for seq in seqs if self._pop_checkpoint(execution_id, seq)]
            self._reindex(execution_id)
            return deleted

    def _pop_checkpoint(self, execution_id: str, seq: int) -> bool:
        seqs = self.store.checkpoints.get(execution_id)
        if seqs is None or seqs.pop(seq, None) is None:
            return False
        if not seqs:
            del self.store.checkpoints[execution_id]
        return True

    def _is_open(self, execution_id: str) -> bool:
        seqs = self.store.checkpoints.get(execution_id)
        if not seqs:
            return False
        latest = seqs[max(seqs)].info
        return latest is not None and not is_finished(latest.metadata)

    def _reindex(self, execution_id: str) -> None:
        """Bring the open index up to date (under the lock, with the write it follows)."""
        if self._is_open(execution_id):
            self.store.open.add(execution_id)
        else:
            self.store.open.discard(execution_id)

    # --------------------------------------------------------------- executions

    async def _list_executions(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        async with self.store.lock:
            ids = sorted({*self.store.checkpoints, *self.store.blobs, *self.store.leases})
            if cursor is not None:
                ids = [execution_id for execution_id in ids if execution_id > cursor]
            items = tuple(
                ExecutionInfo(execution_id, self._updated_at(execution_id))
                for execution_id in ids[:limit]
            )
        more = len(ids) > limit
        return Page(items, items[-1].execution_id if more else None)

    def _updated_at(self, execution_id: str) -> float | None:
        objects = [
            *self.store.checkpoints.get(execution_id, {}).values(),
            *self.store.blobs.get(execution_id, {}).values(),
        ]
        return max((obj.created_at for obj in objects), default=None)

    async def _delete_execution(self, execution_id: str) -> bool:
        async with self.store.lock:
            found = [
                table.pop(execution_id, None) is not None
                for table in (self.store.checkpoints, self.store.blobs, self.store.leases)
            ]
            self.store.open.discard(execution_id)
            return any(found)

    async def _list_open(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        async with self.store.lock:
            ids = sorted(e for e in self.store.open if cursor is None or e > cursor)
            items = tuple(ExecutionInfo(e, self._updated_at(e)) for e in ids[:limit])
        more = len(ids) > limit
        return Page(items, items[-1].execution_id if more else None)

    async def _forget_if_finished(self, execution_id: str) -> bool:
        async with self.store.lock:
            if execution_id not in self.store.open or self._is_open(execution_id):
                return False
            self.store.open.discard(execution_id)
            return True

    # ------------------------------------------------------------------- leases

    async def _claim(self, execution_id: str, owner: str, ttl: float) -> Lease:
        return await self._claim_if(execution_id, owner, ttl, None)

    async def _take_over(self, lease: Lease, owner: str, ttl: float) -> Lease:
        # TAKEOVER: the claim, also allowed while ``lease`` is the current live one.
        return await self._claim_if(lease.execution_id, owner, ttl, lease)

    async def claim_next(self, owner: str, *, ttl: float) -> Lease | None:
        """CLAIM_NEXT (C32): claim an open execution nobody holds a live lease on."""
        async with self.store.lock:
            now = time.time()
            for execution_id in sorted(self.store.open):
                record = self.store.leases.get(execution_id)
                if record is None or record.released or record.lease.expired(now):
                    lease = Lease(execution_id, owner, self.store.next_epoch(), now + ttl)
                    self.store.leases[execution_id] = LeaseRecord(lease)
                    return lease
            return None

    async def _claim_if(
        self,
        execution_id: str,
        owner: str,
        ttl: float,
        dead: Lease | None,
    ) -> Lease:
        async with self.store.lock:
            now = time.time()
            record = self.store.leases.get(execution_id)
            replaced = (
                dead is not None
                and record is not None
                and (record.lease.owner, record.lease.epoch) == (dead.owner, dead.epoch)
            )
            if (
                record is not None
                and not record.released
                and record.lease.owner != owner
                and not record.lease.expired(now)
                and not replaced
            ):
                raise LeaseHeldError(
                    f"execution {execution_id!r} is claimed by {record.lease.owner!r}",
                    owner=record.lease.owner,
                    expires_at=record.lease.expires_at,
                )
            lease = Lease(execution_id, owner, self.store.next_epoch(), now + ttl)
            self.store.leases[execution_id] = LeaseRecord(lease)
            return lease

    async def _renew(self, lease: Lease, ttl: float) -> Lease:
        async with self.store.lock:
            self._check_fence(lease.execution_id, lease, "renewing the lease")
            record = self.store.leases[lease.execution_id]
            renewed = Lease(
                lease.execution_id, record.lease.owner, record.lease.epoch, time.time() + ttl
            )
            self.store.leases[lease.execution_id] = LeaseRecord(renewed)
            return renewed

    async def _release(self, lease: Lease) -> None:
        async with self.store.lock:
            record = self.store.leases.get(lease.execution_id)
            if record is None or record.lease.epoch != lease.epoch:
                return  # superseded (or gone): nothing to give up
            now = time.time()
            record.lease = Lease(
                lease.execution_id,
                record.lease.owner,
                record.lease.epoch,
                min(record.lease.expires_at, now),
            )
            record.released = True

    async def _get_lease(self, execution_id: str) -> Lease | None:
        async with self.store.lock:
            record = self.store.leases.get(execution_id)
            if record is None:
                return None
            return dataclasses.replace(record.lease, released=record.released)

    # -------------------------------------------------------------------- blobs

    async def _put_blob(self, execution_id: str, digest: str, stored: bytes) -> bool:
        async with self.store.lock:
            blobs = self.store.blobs.setdefault(execution_id, {})
            if digest in blobs:
                return False
            blobs[digest] = StoredObject(stored, time.time())
            return True

    async def _get_blob(self, execution_id: str, digest: str) -> bytes | None:
        async with self.store.lock:
            found = self.store.blobs.get(execution_id, {}).get(digest)
            return None if found is None else found.stored

    async def _has_blob(self, execution_id: str, digest: str) -> bool:
        async with self.store.lock:
            return digest in self.store.blobs.get(execution_id, {})

    async def _list_blobs(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
    ) -> Page[BlobInfo]:
        async with self.store.lock:
            blobs = self.store.blobs.get(execution_id, {})
            digests = sorted(d for d in blobs if cursor is None or d > cursor)
            items = tuple(
                BlobInfo(d, len(blobs[d].stored), blobs[d].created_at) for d in digests[:limit]
            )
        more = len(digests) > limit
        return Page(items, items[-1].digest if more else None)

    async def _delete_blob(self, execution_id: str, digest: str) -> bool:
        async with self.store.lock:
            blobs = self.store.blobs.get(execution_id)
            if blobs is None or blobs.pop(digest, None) is None:
                return False
            if not blobs:
                del self.store.blobs[execution_id]
            return True
