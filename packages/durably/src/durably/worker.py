"""``durably worker``: resume orphaned executions, on any number of machines.

A worker repeatedly looks for executions that are not finished and whose lease has
expired (or was released, or never existed: a submitted execution, or whose owner is
provably dead: see ``docs/guides/scaling-out.md``), claims one -- the
claim is atomic in every provider, so of several workers exactly one wins -- and resumes
it to the end, renewing its lease while it runs. A worker that dies stops renewing; once
its leases expire another worker takes its executions over. Checkpoint writes are fenced
by the lease's epoch, so a worker that was only paused (not dead) and lost its lease
cannot make a write durable after the takeover.

It only uses the storage contract, so it works with every provider. Providers that can
find candidates cheaply (PostgreSQL's ``FOR UPDATE SKIP LOCKED``) offer
``find_resumable``; the others are scanned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from durably._liveness import inspect_owner
from durably.config import DurabilityConfig, load_config
from durably.errors import DurablyError, LeaseHeldError
from durably.storage import META_STATUS, Capability, CheckpointProvider

__all__ = ["find_resumable", "run_worker"]

log = logging.getLogger("durably.worker")


async def find_resumable(provider: CheckpointProvider, *, limit: int = 100) -> list[str]:
    """Executions that are not finished and that no live owner holds a lease on."""
    finder = getattr(provider, "find_resumable", None)
    if finder is not None:
        found: list[str] = await finder(limit=limit)
        return found
    now = time.time()
    found = []
    async for execution in provider.iter_executions():
        latest = await provider.load_latest_checkpoint(execution.execution_id)
        if latest is None or latest.metadata.get(META_STATUS) in ("completed", "failed"):
            continue
        lease = await provider.get_lease(execution.execution_id)
        if lease is not None and lease.expires_at > now and not lease.released:
            # A live lease: still resumable at once if its owner is provably dead.
            state = await inspect_owner(provider, execution.execution_id, lease=lease)
            if state.liveness != "dead" or Capability.TAKEOVER not in provider.capabilities:
                continue
        found.append(execution.execution_id)
        if len(found) >= limit:
            break
    return found


async def run_worker(
    *,
    store: str | None = None,
    concurrency: int = 4,
    poll: float = 1.0,
    once: bool = False,
    config: DurabilityConfig | None = None,
    echo: Any = None,
) -> int:
    """Resume orphaned executions until stopped (or, with ``once``, until none is left).

    Returns:
        How many executions this worker brought to an end.
    """
    from durably import open_store
    from durably.runner import resume_execution

    config = config or load_config(overrides={"store": store})
    finished = 0
    running: dict[str, asyncio.Task[Any]] = {}

    async def resume(execution_id: str) -> None:
        nonlocal finished
        try:
            result = await resume_execution(execution_id, config=config, echo=echo)
        except LeaseHeldError:
            return  # another worker was faster
        except DurablyError as exc:
            log.error("execution %s could not be resumed: %s", execution_id, exc)
            return
        log.info("execution %s: %s", execution_id, result.status)
        if result.status in ("completed", "failed"):
            finished += 1

    async with open_store(config=config) as provider:
        try:
            while True:
                for execution_id, task in list(running.items()):
                    if task.done():
                        del running[execution_id]
                free = concurrency - len(running)
                candidates = []
                if free > 0:
                    candidates = [e for e in await find_resumable(provider, limit=free * 4)
                                  if e not in running]
                    for execution_id in candidates[:free]:
                        running[execution_id] = asyncio.create_task(resume(execution_id))
                if once and not running and not candidates:
                    return finished
                await asyncio.sleep(poll)
        finally:
            for task in running.values():
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*running.values(), return_exceptions=True)
