"""``durably worker``: resume orphaned executions, on any number of machines.

A worker repeatedly looks for executions that are not finished and whose lease has
expired (or was released, or never existed: a submitted execution, or whose owner is
provably dead: see ``docs/guides/scaling-out.md``) and resumes each one to the end.
Claims are atomic in every provider, so of several workers exactly one runs an
execution; checkpoint writes are fenced by the lease's epoch, so a worker that was only
paused (not dead) and lost its lease cannot make a write durable after a takeover.

**Supervision.** Every attempt runs in a child process (``python -c`` of
:func:`durably._worker._children.child_main`, started with
:func:`asyncio.create_subprocess_exec`), never in the worker's own process.
``os._exit``, a segfault, the OOM killer or an infinite loop end that attempt only; the
worker counts the failure against the execution, waits an exponentially growing delay
before the next attempt, and after ``max_attempts`` failures writes a final ``failed``
record with the reason (``durably ls`` shows it; ``durably resume`` still continues it
once the cause is fixed). The child applies the ``[worker]`` limits to itself before
anything else runs (``RLIMIT_CPU``, ``RLIMIT_AS``) and dies with the worker
(``PR_SET_PDEATHSIG`` on Linux, and end-of-file on the pipe it was given its job on,
everywhere). ``statement_timeout`` is an inactivity limit: the child reports every step
and every checkpoint it writes on a pipe; an attempt that reports nothing for that long
is killed (with its process group). Loading and restoring the execution report too; the
first report (after the interpreter started and imported what it needs) may take up to
60 s whatever ``statement_timeout`` says.

**Damage.** An execution whose checkpoints cannot be read (``CorruptObjectError``,
``CorruptHistoryError``, ``UnsupportedFormatError``) is reported once and skipped; it
never stops the worker or the other executions. Nothing is written to it (a ``failed``
record would chain onto the damage, and restoring the damaged object from a backup would
then no longer repair it); the worker looks at it again after :data:`DAMAGED_RECHECK`
seconds, so a repaired execution is picked up without restarting workers.

**Finding work.** Providers that declare :attr:`~durably.storage.Capability.CLAIM_NEXT`
(PostgreSQL: ``FOR NO KEY UPDATE SKIP LOCKED`` on a partial index of unfinished
executions) hand out executions one claim at a time: an idle worker costs one query per
poll however many executions are finished. Providers that declare
:attr:`~durably.storage.Capability.OPEN_INDEX` (filesystem, S3, Redis) list only their
open executions (an index maintained as checkpoints are written); the worker reads the
latest checkpoint of each and drops a stale entry (a finished execution still listed
after a crash) with ``forget_if_finished``. With the others the worker lists executions
and reads the latest checkpoint of each one it has not seen finished at its current
``updated_at`` (a finished execution is read once, then only listed).

**Where it lives.** This module is the entry point (:func:`supervise`, :func:`run_worker`);
the parts are in :mod:`durably._worker`: ``_scan`` (:func:`find_resumable`),
``_children`` (the child process and its protocol), ``_supervisor`` (the bookkeeping).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

# The constants and ScanState stay importable from here (``as``: re-exported).
from durably._worker._children import EXIT_ORPHANED as EXIT_ORPHANED
from durably._worker._children import to_the_end
from durably._worker._scan import DAMAGE as DAMAGE
from durably._worker._scan import FINISHED as FINISHED
from durably._worker._scan import ScanState as ScanState
from durably._worker._scan import find_resumable
from durably._worker._supervisor import DAMAGED_RECHECK as DAMAGED_RECHECK
from durably._worker._supervisor import Supervisor, WorkerSummary
from durably.config import DurabilityConfig, WorkerConfig, load_config

__all__ = ["WorkerSummary", "find_resumable", "run_worker", "supervise"]


async def supervise(
    *,
    store: str | None = None,
    concurrency: int = 4,
    poll: float = 1.0,
    once: bool = False,
    config: DurabilityConfig | None = None,
    limits: WorkerConfig | None = None,
) -> WorkerSummary:
    """Run executions in supervised child processes until stopped (or, with ``once``,
    until no resumable execution is left, backoffs included).

    Args:
        store: Store URL (default: the configured one).
        concurrency: Executions run at once (child processes).
        poll: Seconds between looks for work.
        once: Return when nothing is running and nothing is left to run.
        config: The ``[durability]`` settings (default: :func:`~durably.load_config`).
        limits: The ``[worker]`` settings (default: :func:`~durably.config.load_worker_config`).

    Returns:
        What the worker did.
    """
    from durably import open_store
    from durably.config import load_worker_config

    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if not (math.isfinite(poll) and poll > 0):
        raise ValueError("poll must be a positive number of seconds")
    config = config or load_config(overrides={"store": store})
    limits = limits or load_worker_config()
    async with open_store(config=config) as provider:
        sup = Supervisor(provider, config, limits, concurrency)
        try:
            while True:
                for execution_id, task in list(sup.running.items()):
                    if task.done():
                        del sup.running[execution_id]
                        task.result()  # a bug in the supervisor itself is not hidden
                free = concurrency - len(sup.running)
                seen = False
                if free > 0:
                    batch, seen = await sup.next_batch(free)
                    for execution_id, lease in batch:
                        sup.running[execution_id] = asyncio.create_task(
                            sup.attempt(execution_id, lease)
                        )
                if once and not sup.running and not seen and not sup.waiting():
                    return sup.summary
                await _sleep_or_finish(poll, sup.running)
        finally:
            sup.kill_all()
            for task in sup.running.values():
                task.cancel()
            # Every attempt ends (its child reaped) before this returns or raises, even if
            # this task is cancelled meanwhile (stopped again while stopping): that
            # cancellation is raised then, not absorbed.
            await to_the_end(asyncio.gather(*sup.running.values(), return_exceptions=True))


async def _sleep_or_finish(poll: float, running: dict[str, asyncio.Task[None]]) -> None:
    """Sleep ``poll`` seconds, or less if an attempt ends (its slot is free again)."""
    if not running:
        await asyncio.sleep(poll)
        return
    await asyncio.wait(list(running.values()), timeout=poll, return_when=asyncio.FIRST_COMPLETED)


async def run_worker(
    *,
    store: str | None = None,
    concurrency: int = 4,
    poll: float = 1.0,
    once: bool = False,
    config: DurabilityConfig | None = None,
    limits: WorkerConfig | None = None,
    echo: Any = None,
) -> int:
    """Resume orphaned executions until stopped (or, with ``once``, until none is left).

    See :func:`supervise` (``echo`` is accepted for compatibility and unused: what
    agents say is not shown by workers).

    Returns:
        How many executions this worker brought to an end.
    """
    summary = await supervise(
        store=store, concurrency=concurrency, poll=poll, once=once, config=config, limits=limits
    )
    return summary.finished
