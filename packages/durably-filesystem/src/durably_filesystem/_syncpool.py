"""Durable writes off the event loop, so that concurrent executions share disk flushes.

Every execution has its own log file, so one ``fdatasync`` can never cover the
checkpoints of several executions. But ext4 (and XFS, btrfs) merge the flushes that
different threads request at the same time into one journal commit: on the benchmark
VM one thread does ~4,300 ``write + fdatasync`` per second, 8 threads ~24,000 and 16
threads ~36,000. Run on the event loop, the flushes of a process's executions are
issued one after the other and none of that sharing happens.

:func:`run_durable_all` runs many durable writes at once, one pool thread each, whatever
else the process does: the files of a batch of blobs, flushed together.

:func:`run_durable` runs a small durable write -- a log append and its
``fdatasync``, a lease file, a new directory entry -- in a process-wide pool of
:data:`SYNC_THREADS` threads *when other executions of the process could use the wait*
(the process holds leases on more than one execution, or another durable write is in
flight in the pool); otherwise it runs it inline, as before, where a thread hop would
only add latency (a lone execution saving its checkpoints one after the other). Either
way the caller resumes only after the write -- and its flush -- returned: a checkpoint
is never acknowledged before it is durable.

A save (or a lease write) holds the execution's mutex and ``flock`` across the call, so
the thread works on state nobody else touches (the other writes -- a new directory, a
blob, an open-index entry -- only touch paths, and are idempotent). If the caller is
cancelled, it still waits for the thread (like :func:`durably_filesystem._log.blocking`),
and :meth:`durably_filesystem._store.FileStore.aclose` waits for writes in flight before
it closes their files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar

__all__ = ["SYNC_THREADS", "lease_claimed", "lease_released", "run_durable", "run_durable_all"]

P = ParamSpec("P")
R = TypeVar("R")

SYNC_THREADS = 16
"""Threads of the process-wide pool, started as needed. On the benchmark VM, flush
throughput grows up to ~16 concurrent ``fdatasync`` calls and falls slowly beyond."""

_lock = threading.Lock()
_jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
_threads = 0
_in_flight = 0
"""Writes submitted to the pool and not finished (all event loops of the process)."""
_leased: set[tuple[str, str]] = set()
"""(store root, execution id) of the executions this process holds a lease on."""


class _Completions:
    """Finished writes of one event loop, handed back in batches: one wake-up of the
    loop (``call_soon_threadsafe``) for every write that finished meanwhile."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.done: list[tuple[asyncio.Future[Any], bool, Any]] = []

    def add(self, future: asyncio.Future[Any], ok: bool, value: Any) -> None:
        with self.lock:
            first = not self.done
            self.done.append((future, ok, value))
        if first:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                self.loop.call_soon_threadsafe(self.deliver)

    def deliver(self) -> None:
        with self.lock:
            done, self.done = self.done, []
        for future, ok, value in done:
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


_completions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Completions] = (
    weakref.WeakKeyDictionary()
)
_Job = tuple[
    _Completions, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]
]


def _work() -> None:
    global _in_flight
    while True:
        completions, future, fn, args, kwargs = _jobs.get()
        try:
            ok, value = True, fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller
            ok, value = False, exc
        with _lock:
            _in_flight -= 1
        completions.add(future, ok, value)
        del completions, future, fn, args, kwargs, value


def lease_claimed(root: str, execution_id: str) -> None:
    """This process now holds a lease on the execution (it is running here)."""
    with _lock:
        _leased.add((root, execution_id))


def lease_released(root: str, execution_id: str) -> None:
    """This process no longer runs the execution (released, or closed its store)."""
    with _lock:
        _leased.discard((root, execution_id))


def _after_fork_in_child() -> None:
    # the parent's threads do not exist in a forked child, nor do its executions
    global _lock, _jobs, _threads, _in_flight
    _lock = threading.Lock()
    _jobs = queue.SimpleQueue()
    _threads = 0
    _in_flight = 0
    _leased.clear()
    _completions.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _offload() -> bool:
    """Whether a write should go to the pool: other executions could use the wait.

    Yes while this process runs more than one execution (holds leases on several) or
    another write is in the pool (its flush can be shared). A lone execution writes
    inline, as before: a thread hop would only add to its latency, and the other
    agents of the same execution do not run during its saves (so a crash right after
    a checkpoint leaves them where they were).
    """
    return _in_flight > 0 or len(_leased) > 1


class _Store(Protocol):
    fsync: bool
    pending: set[asyncio.Future[Any]]


async def outlast_cancel(future: asyncio.Future[R]) -> R:
    """Await ``future``, the result of work in a thread; if the caller is cancelled, wait
    until the work ended anyway, then re-raise the cancellation.

    The thread cannot be stopped and works under the caller's locks: returning early would
    release them while it still runs.
    """
    await _settled([future])
    return future.result()


async def run_durable(
    store: _Store,
    fn: Callable[P, R],
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """Run the blocking durable write ``fn(*args, **kwargs)`` inline or in the pool.

    ``store`` is the calling store or execution state: its ``fsync`` option (without
    it nothing is flushed, so nothing can be shared: always inline) and its set of
    writes in flight (see ``FileStore.aclose``). Returns once ``fn`` returned, even if
    the caller is cancelled meanwhile.
    """
    if not store.fsync or not _offload():
        return fn(*args, **kwargs)
    return await outlast_cancel(_submit(store, fn, args, kwargs))


async def run_durable_all(
    store: _Store, calls: Sequence[tuple[Callable[..., R], tuple[Any, ...]]]
) -> list[R | BaseException]:
    """Run many blocking durable writes ``fn(*args)`` at once, each in a pool thread.

    Their flushes are issued together, so the filesystem commits them together (one
    journal commit for many files on ext4) instead of one after the other. Without
    ``store.fsync`` (nothing to share) or for one call they run inline. Returns once
    every call returned -- even if the caller is cancelled meanwhile -- with, for each
    call in order, its result or the exception it raised (the caller cleans up after
    the calls that succeeded).
    """
    if not store.fsync or len(calls) < 2:
        inline: list[R | BaseException] = []
        for fn, args in calls:
            try:
                inline.append(fn(*args))
            except Exception as exc:  # handed to the caller, like the pool's outcomes
                inline.append(exc)
        return inline
    futures: list[asyncio.Future[R]] = [_submit(store, fn, args, {}) for fn, args in calls]
    await _settled(futures)
    outcomes: list[R | BaseException] = []
    for future in futures:
        error = future.exception()
        outcomes.append(future.result() if error is None else error)
    return outcomes


def _submit(
    store: _Store, fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> asyncio.Future[R]:
    """Hand ``fn(*args, **kwargs)`` to a pool thread (starting one if every thread is
    busy and there are fewer than :data:`SYNC_THREADS`); its future, on this loop."""
    global _threads, _in_flight
    loop = asyncio.get_running_loop()
    completions = _completions.get(loop)
    if completions is None:
        completions = _completions[loop] = _Completions(loop)
    future: asyncio.Future[R] = loop.create_future()
    with _lock:
        _in_flight += 1
        start = _threads < SYNC_THREADS and _in_flight > _threads
        if start:
            _threads += 1
    if start:
        try:
            threading.Thread(target=_work, name="durably-fs-sync", daemon=True).start()
        except BaseException:
            with _lock:
                _threads -= 1
                _in_flight -= 1
            raise
    _jobs.put((completions, future, fn, args, kwargs))
    store.pending.add(future)
    future.add_done_callback(store.pending.discard)
    return future


async def _settled(futures: Sequence[asyncio.Future[Any]]) -> None:
    """Wait until every future is done; if the caller is cancelled, wait anyway (the
    threads cannot be stopped and work under the caller's locks), then re-raise."""
    try:
        if len(futures) == 1:
            await asyncio.shield(futures[0])
        else:
            await asyncio.shield(asyncio.gather(*futures, return_exceptions=True))
    except asyncio.CancelledError:
        while not all(future.done() for future in futures):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([f for f in futures if not f.done()])
        for future in futures:
            if not future.cancelled():
                future.exception()  # retrieved: the caller was cancelled, it cannot see it
        raise
    except Exception:  # the caller reads each future's outcome
        pass
