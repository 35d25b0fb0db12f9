"""Holding an execution's lease while a run, resume or submit writes to it.

:func:`leased` claims the lease (taking a provably dead owner's over at once, see
:mod:`durably._liveness`), renews it in the background and turns its loss -- this process
was paused or cut off past the lease and another one took over, or the store dropped
its owner lock and another process took it -- into a
:class:`~durably.errors.FencedError` that names the new holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from durably.checkpoint import CheckpointManager
from durably.errors import ConflictError, DurablyError, FencedError, OwnerLockLostError, fenced
from durably.storage import Lease

__all__ = ["leased"]

log = logging.getLogger("durably")
T = TypeVar("T")


@contextlib.asynccontextmanager
async def leased(
    manager: CheckpointManager,
    ttl: float,
    on_lost: asyncio.Task[Any] | None = None,
    notice: Callable[[str], None] | None = None,
) -> AsyncIterator[Lease]:
    """Hold the execution's lease (and owner lock) while the body runs.

    The claim takes a provably dead owner's lease over at once (see durably._liveness).
    A heartbeat renews the lease every third of ``ttl``, and checks that the owner lock
    is still held (:meth:`~durably.storage.OwnerLock.ensure_held`: a store that dropped
    it takes it again). If a renewal finds the lease superseded (this process was paused
    or cut off and another one took over), or another process got the owner lock while
    the store had dropped it (:class:`~durably.errors.OwnerLockLostError`: it is taking
    the execution over), ``on_lost`` is cancelled and the body ends with
    :class:`FencedError`, as it does when a checkpoint write is fenced.

    Only that cancellation -- the one this context sent its own task -- is absorbed (and
    withdrawn: ``uncancel``). Any other goes on, even after a lost lease: Ctrl-C, which
    ``asyncio.run`` turns into cancelling the main task, still stops the run as
    interrupted.
    """
    from durably._liveness import acquire_lease

    provider = manager.provider
    if not manager.config.enabled:  # nothing is written, so there is nothing to fence
        yield Lease(manager.execution_id, "durability-disabled", 0, float("inf"))
        return
    held = await acquire_lease(provider, manager.execution_id, ttl)
    lease = held.lease
    manager.lease = lease
    if held.took_over is not None and notice is not None:
        notice(
            f"took execution {manager.execution_id} over from "
            f"{held.took_over.owner_label}: {held.took_over.reason}"
        )
    stop = asyncio.Event()
    lost: ConflictError | None = None
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0  # others' requests, so far
    sent = 0  # cancellations this context sent its task and did not withdraw yet

    async def renew() -> None:
        nonlocal lease, lost, sent
        interval = ttl / 3
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                return
            except TimeoutError:
                pass
            try:
                lease = await provider.renew(lease, ttl=ttl)
                manager.lease = lease
                if held.lock is not None:
                    # Bounded: a slow check (a store reconnecting) must not hold back the
                    # next renewal past the lease's expiry.
                    await asyncio.wait_for(held.lock.ensure_held(), timeout=ttl / 3)
                interval = ttl / 3
            except (FencedError, OwnerLockLostError) as exc:
                lost = exc
                # Not once the body ended (it is awaiting this task in `finally`).
                if on_lost is not None and not stop.is_set() and on_lost.cancel():
                    sent += on_lost is task  # withdrawn when the context ends
                return
            except (DurablyError, TimeoutError) as exc:  # transient: retry sooner
                log.warning(
                    "renewing the lease on execution %s failed (%s); retrying",
                    manager.execution_id,
                    exc if str(exc) else "the owner-lock check took too long",
                )
                interval = max(0.05, min(interval, ttl / 10))

    async def superseded() -> FencedError:
        holder = "another process"
        epoch: int | None = None
        try:
            current = await provider.get_lease(manager.execution_id)
        except DurablyError:
            current = None
        except asyncio.CancelledError:
            # The look-up ended cancelled by itself (a store's connection torn down): the
            # take-over stands, its holder unknown. A cancellation of this task goes on.
            me = asyncio.current_task()
            if me is None or me.cancelling():
                raise
            current = None
        if current is not None and current.epoch != lease.epoch:
            holder, epoch = _holder(current.owner), current.epoch
        return fenced(lease, "running the execution", current_epoch=epoch, taken_over_by=holder)

    def foreign_cancellation() -> bool:
        """Withdraw the cancellations this context sent its task; whether another one
        (Ctrl-C) is still pending (Python's rule: absorb only what you asked for)."""
        nonlocal sent
        if task is None:
            return False
        for _ in range(sent):
            task.uncancel()
        sent = 0
        return task.cancelling() > cancelling

    async def absorbing(awaitable: Awaitable[T]) -> T:
        """Await, absorbing the cancellation this context sent its task when the lease
        was lost (should it land here); any other one is raised."""
        inner = asyncio.ensure_future(awaitable)
        while True:
            try:
                return await asyncio.shield(inner)
            except asyncio.CancelledError:
                if foreign_cancellation() or inner.cancelled():  # not ours, or its own
                    inner.cancel()
                    raise

    renewer = asyncio.create_task(renew())
    try:
        yield lease
    except BaseException as exc:
        stop.set()
        if isinstance(exc, asyncio.CancelledError) and foreign_cancellation():
            raise  # stopped (Ctrl-C), whatever became of the lease
        if isinstance(exc, FencedError) or (
            lost is not None and isinstance(exc, (Exception, asyncio.CancelledError))
        ):
            # Whatever broke -- a fenced write, the cancellation, or what the
            # cancellation broke on its way -- the cause is the take-over.
            raise await absorbing(superseded()) from exc
        raise
    finally:
        stop.set()
        await absorbing(renewer)
        with contextlib.suppress(DurablyError):
            await absorbing(provider.release(manager.lease or lease))
        with contextlib.suppress(Exception):
            await absorbing(held.release_lock())
        foreign_cancellation()  # ours withdrawn, even if the body swallowed it


def _holder(owner: str) -> str:
    """``host:pid`` of a durably owner string, else the string (shortened)."""
    from durably._liveness import OwnerIdentity

    ident = OwnerIdentity.parse(owner)
    if ident is not None:
        return ident.label
    return owner if len(owner) < 80 else owner[:77] + "..."
