"""The worker's bookkeeping: finding or claiming work, running attempts, counting failures.

An attempt that fails (its child died, timed out or raised something the program did not
record) is retried after ``backoff`` seconds, doubled for each further failure up to
``max_backoff``; after ``max_attempts`` failures the execution is marked ``failed`` with
the reason. A damaged execution is set aside and looked at again after
:data:`DAMAGED_RECHECK` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from durably._worker._children import Outcome, kill, run_child
from durably._worker._scan import DAMAGE, ScanState, find_resumable
from durably.config import DurabilityConfig, WorkerConfig
from durably.errors import DurablyError, LeaseHeldError
from durably.storage import Capability, CheckpointProvider, ClaimsNext, Lease

__all__ = ["DAMAGED_RECHECK", "Supervisor", "WorkerSummary"]

log = logging.getLogger("durably.worker")

DAMAGED_RECHECK = 300.0
"""Seconds before a worker looks again at an execution it found damaged."""


@dataclass
class _Attempts:
    """An execution's failed attempts in this worker, and when it may be tried again."""

    failures: int = 0
    not_before: float = 0.0
    """``time.monotonic()`` before which the execution is not attempted again."""
    last_error: str = ""


@dataclass
class WorkerSummary:
    """What a worker did (``run_worker`` returns :attr:`finished`)."""

    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Executions that ended ``failed`` in this worker: the program failed, or the worker
    gave up after ``max_attempts`` (with the reason)."""
    damaged: dict[str, str] = field(default_factory=dict)
    """Executions skipped because their checkpoints cannot be read (with the error)."""
    attempts: dict[str, int] = field(default_factory=dict)
    """Failed attempts, by execution."""

    @property
    def finished(self) -> int:
        """Executions brought to an end (completed or failed)."""
        return len(self.completed) + len(self.failed)


class Supervisor:
    """A worker's state: what runs, what failed how often, what is damaged.

    :func:`durably.worker.supervise` drives it: :meth:`next_batch` finds (or claims) up
    to the free slots' worth of executions, :meth:`attempt` runs one in a child process
    (:func:`~durably._worker._children.run_child`) and books its outcome.
    """

    def __init__(
        self,
        provider: CheckpointProvider,
        config: DurabilityConfig,
        limits: WorkerConfig,
        concurrency: int,
    ) -> None:
        from durably._liveness import this_owner

        self.provider = provider
        self.config = config
        self.limits = limits
        self.concurrency = concurrency
        self.summary = WorkerSummary()
        self.attempts: dict[str, _Attempts] = {}
        self.running: dict[str, asyncio.Task[None]] = {}
        self.children: dict[str, asyncio.subprocess.Process] = {}
        self.scan = ScanState()
        self.damaged_since: dict[str, float] = {}
        """Damaged executions, by when (``time.monotonic()``) they were last found so."""
        self.owner = this_owner().encode()
        self.claims = (
            isinstance(provider, ClaimsNext) and Capability.CLAIM_NEXT in provider.capabilities
        )

    # ----------------------------------------------------------------- bookkeeping

    def held_back(self, execution_id: str) -> bool:
        """Found damaged a short while ago, or waiting for its backoff.

        Failed executions need no holding back: their ``failed`` record keeps every
        worker away until someone resumes them. A damaged one is looked at again after
        :data:`DAMAGED_RECHECK` seconds (or ``max_backoff``, if longer), so that
        restoring the damaged object repairs it without restarting workers.
        """
        now = time.monotonic()
        since = self.damaged_since.get(execution_id)
        if since is not None and now - since < max(DAMAGED_RECHECK, self.limits.max_backoff):
            return True
        entry = self.attempts.get(execution_id)
        return entry is not None and entry.not_before > now

    def waiting(self) -> bool:
        """Some execution waits for its backoff (a ``--once`` worker waits for it)."""
        now = time.monotonic()
        return any(
            a.not_before > now
            for e, a in self.attempts.items()
            if e not in self.summary.failed and e not in self.summary.damaged
        )

    def damaged(self, execution_id: str, exc: BaseException | str) -> None:
        """Set a damaged execution aside (reported once, while the error stays the same)."""
        self.damaged_since[execution_id] = time.monotonic()
        self.attempts.pop(execution_id, None)
        if self.summary.damaged.get(execution_id) != str(exc):
            self.summary.damaged[execution_id] = str(exc)
            log.error("execution %s is damaged and is skipped: %s", execution_id, exc)

    # ----------------------------------------------------------------- finding work

    async def next_batch(self, free: int) -> tuple[list[tuple[str, Lease | None]], bool]:
        """Up to ``free`` executions to start (with the lease claimed for them, if any),
        and whether any was found (damaged and backing-off executions do not count: a
        ``--once`` worker ends when only they are left)."""
        if self.claims:
            return await self._claim_batch(free)
        found = await find_resumable(
            self.provider,
            limit=free,
            state=self.scan,
            on_damaged=self.damaged,
            skip=lambda e: e in self.running or self.held_back(e),
        )
        return [(e, None) for e in found], bool(found)

    async def _claim_batch(self, free: int) -> tuple[list[tuple[str, Lease | None]], bool]:
        assert isinstance(self.provider, ClaimsNext)
        batch: list[tuple[str, Lease | None]] = []
        # Held-back executions come back from the index too: give each back at once
        # (released, so that other workers may run them) and claim the next one.
        budget = free + len(self.summary.damaged) + len(self.attempts) + 1
        ttl = max(self.config.lease_ttl, 10.0)
        for _ in range(budget):
            if len(batch) >= free:
                break
            lease = await self.provider.claim_next(self.owner, ttl=ttl)
            if lease is None:
                break
            execution_id = lease.execution_id
            if (
                execution_id in self.running
                or self.held_back(execution_id)
                or any(e == execution_id for e, _ in batch)
            ):
                await self.provider.release(lease)
                continue
            batch.append((execution_id, lease))
        # Held-back executions do not count as work found (a ``--once`` worker ends when
        # only they are left), as with the scan.
        return batch, bool(batch)

    # ----------------------------------------------------------------- attempts

    async def attempt(self, execution_id: str, handoff: Lease | None) -> None:
        try:
            outcome = await run_child(
                execution_id,
                handoff,
                config=self.config,
                limits=self.limits,
                children=self.children,
            )
        except Exception as exc:  # the worker's own trouble (spawning, the pipe)
            outcome = Outcome("error", f"could not run the attempt: {exc}")
        if outcome.kind in ("completed", "already-completed"):
            self.attempts.pop(execution_id, None)
            self.damaged_since.pop(execution_id, None)
            self.summary.damaged.pop(execution_id, None)  # repaired since
            self.summary.completed.append(execution_id)
            log.info("execution %s: completed", execution_id)
        elif outcome.kind == "failed":
            self.attempts.pop(execution_id, None)
            self.summary.failed[execution_id] = outcome.error
            log.warning("execution %s: failed: %s", execution_id, outcome.error)
        elif outcome.kind == "busy":
            log.info("execution %s: %s", execution_id, outcome.error or "taken by another worker")
        elif outcome.kind == "damaged":
            self.damaged(execution_id, outcome.error)
        else:
            await self._failed_attempt(execution_id, outcome.error)

    async def _failed_attempt(self, execution_id: str, reason: str) -> None:
        entry = self.attempts.setdefault(execution_id, _Attempts())
        entry.failures += 1
        entry.last_error = reason
        self.summary.attempts[execution_id] = entry.failures
        limit = self.limits.max_attempts
        if entry.failures < limit:
            delay = min(self.limits.max_backoff, self.limits.backoff * 2 ** (entry.failures - 1))
            entry.not_before = time.monotonic() + delay
            log.warning(
                "execution %s: attempt %d of %d failed: %s; next attempt in %.1f s",
                execution_id,
                entry.failures,
                limit,
                reason,
                delay,
            )
            return
        why = f"gave up after {entry.failures} failed attempt(s); the last one: {reason}"
        log.error("execution %s: %s", execution_id, why)
        try:
            await self._mark_failed(execution_id, why)
        except LeaseHeldError:
            entry.failures -= 1  # someone else runs it now: not ours to mark
            entry.not_before = time.monotonic() + self.limits.backoff
            return
        except DAMAGE as exc:
            self.damaged(execution_id, exc)
            return
        except DurablyError as exc:
            log.error("execution %s: could not be marked failed: %s", execution_id, exc)
            entry.not_before = time.monotonic() + self.limits.max_backoff
            return
        self.summary.failed[execution_id] = why

    async def _mark_failed(self, execution_id: str, reason: str) -> None:
        from durably._liveness import acquire_lease
        from durably.checkpoint import CheckpointManager

        manager = CheckpointManager(execution_id, self.provider, config=self.config)
        held = await acquire_lease(self.provider, execution_id, self.config.lease_ttl)
        try:
            manager.lease = held.lease
            await manager.mark_failed(reason)
        finally:
            with contextlib.suppress(DurablyError):
                await self.provider.release(manager.lease or held.lease)
            with contextlib.suppress(Exception):
                await held.release_lock()

    def kill_all(self) -> None:
        for proc in list(self.children.values()):
            kill(proc)
