"""A small in-memory provider for the core's own tests (not a conformance reference), and
:func:`run_counter`, which runs the counter program on one."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from durably.errors import AlreadyExistsError, FencedError, LeaseHeldError, PreconditionFailedError
from durably.storage import (
    BlobInfo,
    CheckpointInfo,
    CheckpointProvider,
    ExecutionInfo,
    ExpectedVersion,
    Lease,
    Page,
)


class MemoryStore(CheckpointProvider):
    scheme = "mem"

    def __init__(self) -> None:
        super().__init__()
        self.checkpoints: dict[str, dict[int, tuple[CheckpointInfo, bytes]]] = {}
        self.blobs: dict[str, dict[str, bytes]] = {}
        self.leases: dict[str, Lease] = {}
        self.released: set[str] = set()
        self.version = 0
        self.saves = 0

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> MemoryStore:
        return cls()

    def _fence(self, eid: str, lease: Lease | None) -> None:
        if lease is not None and self.leases.get(eid, lease).epoch != lease.epoch:
            raise FencedError("fenced")

    async def _save(
        self,
        eid: str,
        seq: int,
        stored: bytes,
        metadata: dict[str, str],
        mode: Any,
        lease: Lease | None,
    ) -> CheckpointInfo:
        self._fence(eid, lease)
        existing = self.checkpoints.setdefault(eid, {}).get(seq)
        if mode == "create" and existing:
            raise AlreadyExistsError(f"{eid}/{seq}")
        if isinstance(mode, ExpectedVersion) and (
            not existing or existing[0].version != mode.version
        ):
            raise PreconditionFailedError("version")
        self.version += 1
        self.saves += 1
        info = CheckpointInfo(eid, seq, str(self.version), len(stored), time.time(), metadata)
        self.checkpoints[eid][seq] = (info, stored)
        return info

    async def _load(self, eid: str, seq: int) -> tuple[CheckpointInfo, bytes] | None:
        return self.checkpoints.get(eid, {}).get(seq)

    async def _load_latest(self, eid: str) -> tuple[CheckpointInfo, bytes] | None:
        found = self.checkpoints.get(eid)
        return found[max(found)] if found else None

    async def _list(
        self, eid: str, cursor: str | None, limit: int, after: int | None
    ) -> Page[CheckpointInfo]:
        start = int(cursor) if cursor else (after if after is not None else -1)
        seqs = sorted(s for s in self.checkpoints.get(eid, {}) if s > start)
        page = seqs[:limit]
        items = tuple(self.checkpoints[eid][s][0] for s in page)
        return Page(items, str(page[-1]) if len(seqs) > limit else None)

    async def _delete(self, eid: str, seq: int, lease: Lease | None) -> bool:
        self._fence(eid, lease)
        return self.checkpoints.get(eid, {}).pop(seq, None) is not None

    async def _list_executions(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        ids = sorted(i for i in set(self.checkpoints) | set(self.leases) if i > (cursor or ""))
        return Page(
            tuple(ExecutionInfo(i) for i in ids[:limit]),
            ids[limit - 1] if len(ids) > limit else None,
        )

    async def _delete_execution(self, eid: str) -> bool:
        found = eid in self.checkpoints
        self.checkpoints.pop(eid, None)
        self.blobs.pop(eid, None)
        self.leases.pop(eid, None)
        return found

    async def _claim(self, eid: str, owner: str, ttl: float) -> Lease:
        current = self.leases.get(eid)
        if (
            current
            and current.owner != owner
            and not current.expired()
            and eid not in self.released
        ):
            raise LeaseHeldError("held", owner=current.owner, expires_at=current.expires_at)
        self.released.discard(eid)
        lease = Lease(eid, owner, (current.epoch if current else 0) + 1, time.time() + ttl)
        self.leases[eid] = lease
        return lease

    async def _renew(self, lease: Lease, ttl: float) -> Lease:
        self._fence(lease.execution_id, lease)
        renewed = Lease(lease.execution_id, lease.owner, lease.epoch, time.time() + ttl)
        self.leases[lease.execution_id] = renewed
        return renewed

    async def _release(self, lease: Lease) -> None:
        if self.leases.get(lease.execution_id, lease).epoch == lease.epoch:
            self.released.add(lease.execution_id)

    async def _get_lease(self, eid: str) -> Lease | None:
        return self.leases.get(eid)

    async def _put_blob(self, eid: str, digest: str, stored: bytes) -> bool:
        blobs = self.blobs.setdefault(eid, {})
        if digest in blobs:
            return False
        blobs[digest] = stored
        return True

    async def _get_blob(self, eid: str, digest: str) -> bytes | None:
        return self.blobs.get(eid, {}).get(digest)

    async def _has_blob(self, eid: str, digest: str) -> bool:
        return digest in self.blobs.get(eid, {})

    async def _list_blobs(self, eid: str, cursor: str | None, limit: int) -> Page[BlobInfo]:
        digests = sorted(d for d in self.blobs.get(eid, {}) if d > (cursor or ""))
        return Page(
            tuple(BlobInfo(d, len(self.blobs[eid][d]), 0.0) for d in digests[:limit]),
            digests[limit - 1] if len(digests) > limit else None,
        )

    async def _delete_blob(self, eid: str, digest: str) -> bool:
        return self.blobs.get(eid, {}).pop(digest, None) is not None


async def run_counter(store: MemoryStore, config: Any = None, *, execution_id: str = "ret") -> None:
    """Run ``programs/counter.py`` with its scripted LLM to completion on ``store``."""
    from durably import CheckpointManager
    from durably._execution import Execution, UserIO
    from durably.llm import open_llm
    from durably.runner import Program, _drive

    here = Path(__file__).parent
    manager = CheckpointManager(execution_id, store, config=config)
    llm = open_llm(f"scripted:{here / 'programs/counter.scripted.json'}")
    execution = Execution(
        manager,
        program=Program.load(here / "programs/counter.py"),
        llm=llm,
        io=UserIO(["x"], echo=None),
    )
    result = await _drive(execution, manager, resume=False)
    assert result.status == "completed"
