"""Group commit for providers: writes that queued while one was in flight go out together.

A provider whose backend can make several writes durable at the cost of one -- one
transaction carrying the checkpoints of many executions, one pipeline -- hands each write
to a :class:`GroupCommitter` instead of running it itself:

- **Nothing else pending** (a lone execution, or no write in flight): the write runs at
  once, in the caller's task, through ``flush_one`` -- no added hop, no added delay.
- **A write is in flight**: the new one queues. When the flush in flight returns, a
  background task takes everything that queued meanwhile (up to ``max_batch``) and hands
  it to ``flush_many`` as one batch; what queues during that flush forms the next batch.

A caller resumes only once its own write's flush returned -- so only after the backend
made it durable, never before -- with its own result or its own exception: ``flush_many``
returns one outcome per item, and a batch that fails as a whole fails each of its items.
A cancelled caller still waits for the flush its write is part of (the write may commit;
what the caller does next -- releasing a lease -- must come after it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from durably.errors import StoreError

__all__ = ["GroupCommitter", "outlasting_cancellation"]

I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")


async def outlasting_cancellation(future: asyncio.Future[R]) -> R:
    """Await ``future``; if the caller is cancelled meanwhile, still wait for it to end.

    For work that cannot be taken back once started (a write that may commit, a thread
    working under the caller's locks): the caller must not go on -- release its locks or
    lease -- while it still runs. Then re-raises the cancellation.
    """
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({future})
        if not future.cancelled():
            future.exception()  # retrieved: the caller was cancelled, it cannot see it
        raise


class GroupCommitter(Generic[I, R]):
    """Runs writes one at a time when alone, in batches when they pile up.

    Args:
        flush_one: Makes one item durable; returns its result or raises its error.
        flush_many: Makes several items durable together; returns, in order, each item's
            result or the exception that item fails with. If it raises, every item of
            the batch fails with that exception.
        max_batch: Items per batch at most (the rest wait for the next batch).
    """

    def __init__(
        self,
        flush_one: Callable[[I], Awaitable[R]],
        flush_many: Callable[[list[I]], Awaitable[Sequence[R | BaseException]]],
        *,
        max_batch: int = 256,
    ) -> None:
        self._flush_one = flush_one
        self._flush_many = flush_many
        self._max_batch = max(1, max_batch)
        self._queue: list[tuple[I, asyncio.Future[R]]] = []
        self._busy = False
        self._drainer: asyncio.Task[None] | None = None
        self.batches = 0
        """Batches of more than one item flushed so far (for tests and benchmarks)."""
        self.largest_batch = 0
        """The largest batch flushed so far."""

    @property
    def pending(self) -> int:
        """Items queued for the next batch (not counting the flush in flight)."""
        return len(self._queue)

    async def submit(self, item: I) -> R:
        """Make ``item`` durable, alone or with others; its result once flushed."""
        if not self._busy and not self._queue:
            self._busy = True
            try:
                # In a task of its own: a cancelled caller waits until the write's outcome
                # is settled (a statement cut mid-flight may still commit on the server).
                flush = asyncio.ensure_future(self._flush_one(item))
                return await outlasting_cancellation(flush)
            finally:
                self._busy = False
                self._start_draining()
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        self._start_draining()
        return await outlasting_cancellation(future)

    def _start_draining(self) -> None:
        if self._queue and not self._busy:
            self._busy = True
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._flush(batch)
        finally:
            self._busy = False
            self._drainer = None
            self._start_draining()  # queued after a failure that ended the loop

    async def _flush(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        outcomes: Sequence[R | BaseException]
        try:
            if len(items) == 1:
                outcomes = [await self._flush_one(items[0])]
            else:
                self.batches += 1
                self.largest_batch = max(self.largest_batch, len(items))
                outcomes = await self._flush_many(items)
        except BaseException as exc:  # every item fails with it
            outcomes = [exc] * len(items)
            if not isinstance(exc, Exception):
                self._settle(batch, outcomes)
                raise
        self._settle(batch, outcomes)

    @staticmethod
    def _settle(
        batch: list[tuple[I, asyncio.Future[R]]], outcomes: Sequence[R | BaseException]
    ) -> None:
        if len(outcomes) != len(batch):  # a flush_many that broke its contract
            error = StoreError(
                f"a group commit reported {len(outcomes)} outcomes for {len(batch)} writes; "
                "their outcome is unknown"
            )
            outcomes = [error] * len(batch)
        for (_item, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, asyncio.CancelledError):
                future.cancel()
            elif isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def wait_idle(self) -> None:
        """Wait until no batch is in flight or queued (before closing the backend)."""
        while self._drainer is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._drainer)
