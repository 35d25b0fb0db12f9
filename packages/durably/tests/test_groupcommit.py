"""The group committer (``durably._groupcommit``): alone at once, batched when piled up,
each caller resumed only after its own flush, with its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from durably._groupcommit import GroupCommitter
from durably.errors import StoreError


class Backend:
    """Records flushes; a flush waits for ``gate`` (open by default)."""

    def __init__(self) -> None:
        self.flushes: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.durable: set[int] = set()
        self.tasks: list[asyncio.Task[object] | None] = []

    async def one(self, item: int) -> int:
        self.flushes.append([item])
        self.tasks.append(asyncio.current_task())
        await self.gate.wait()
        if item < 0:
            raise ValueError(f"bad {item}")
        self.durable.add(item)
        return item * 10

    async def many(self, items: list[int]) -> Sequence[int | BaseException]:
        self.flushes.append(list(items))
        await self.gate.wait()
        self.durable.update(i for i in items if i >= 0)
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def _queued(
    committer: GroupCommitter[int, int], backend: Backend, items: list[int]
) -> tuple[asyncio.Task[int], list[asyncio.Task[int]]]:
    """Item 0 in flight (held at the gate), ``items`` queued behind it."""
    backend.gate.clear()
    first = asyncio.create_task(committer.submit(0))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(committer.submit(i)) for i in items]
    await asyncio.sleep(0)
    return first, rest


@pytest.mark.asyncio
async def test_a_lone_write_runs_at_once() -> None:
    backend = Backend()
    committer = GroupCommitter(backend.one, backend.many)
    assert await committer.submit(1) == 10
    assert await committer.submit(2) == 20
    assert backend.flushes == [[1], [2]]
    assert committer.batches == 0


@pytest.mark.asyncio
async def test_a_cancelled_lone_write_returns_only_once_its_flush_ended() -> None:
    """A write cut mid-flight may still commit on the server: the cancelled caller must
    not go on (release its lease) before the flush's outcome is settled."""
    backend = Backend()
    committer = GroupCommitter(backend.one, backend.many)
    backend.gate.clear()
    caller = asyncio.create_task(committer.submit(3))
    for _ in range(100):
        if backend.flushes:
            break
        await asyncio.sleep(0)
    assert backend.flushes == [[3]]
    caller.cancel()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not caller.done()  # still waiting for the flush it started
    backend.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert backend.durable == {3}  # the flush ran to its end
    assert await committer.submit(4) == 40  # and the committer is free again


@pytest.mark.asyncio
async def test_a_batch_reported_with_the_wrong_number_of_outcomes_fails_every_write() -> None:
    """A flush_many that breaks its contract must not leave callers waiting forever."""
    backend = Backend()

    async def short(items: list[int]) -> Sequence[int | BaseException]:
        await backend.many(items)
        return [items[0] * 10]  # one outcome for several writes

    committer = GroupCommitter(backend.one, short)
    first, rest = await _queued(committer, backend, [1, 2, 3])
    backend.gate.set()
    assert await first == 0
    outcomes = await asyncio.wait_for(asyncio.gather(*rest, return_exceptions=True), 5)
    assert all(isinstance(o, StoreError) and "outcome is unknown" in str(o) for o in outcomes)


@pytest.mark.asyncio
async def test_writes_queued_during_a_flush_go_out_together() -> None:
    backend = Backend()
    committer = GroupCommitter(backend.one, backend.many, max_batch=3)
    first, rest = await _queued(committer, backend, [1, 2, 3, 4, 5])
    await asyncio.sleep(0.01)
    assert committer.pending == 5
    assert not any(task.done() for task in rest)  # nobody acknowledged before the flush
    backend.gate.set()
    assert await asyncio.gather(first, *rest) == [0, 10, 20, 30, 40, 50]
    assert backend.flushes == [[0], [1, 2, 3], [4, 5]]
    assert (committer.batches, committer.largest_batch) == (2, 3)


@pytest.mark.asyncio
async def test_an_item_fails_alone_and_a_failed_batch_fails_each_item() -> None:
    backend = Backend()
    committer = GroupCommitter(backend.one, backend.many)
    first, (good, bad) = await _queued(committer, backend, [1, -1])
    backend.gate.set()
    assert await first == 0
    assert await good == 10
    with pytest.raises(ValueError, match="bad -1"):
        await bad

    async def broken(items: list[int]) -> Sequence[int | BaseException]:
        raise RuntimeError("lost")

    committer = GroupCommitter(backend.one, broken)
    first, others = await _queued(committer, backend, [1, 2])
    backend.gate.set()
    assert await first == 0
    for task in others:
        with pytest.raises(RuntimeError, match="lost"):
            await task


@pytest.mark.asyncio
async def test_a_cancelled_caller_waits_for_its_flush() -> None:
    backend = Backend()
    committer = GroupCommitter(backend.one, backend.many)
    first, (second, third) = await _queued(committer, backend, [1, 2])
    second.cancel()
    await asyncio.sleep(0.01)
    assert not second.done()  # still waiting: its write may commit
    backend.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await second
    assert 1 in backend.durable
    assert await third == 20
    assert await first == 0
    await committer.wait_idle()
