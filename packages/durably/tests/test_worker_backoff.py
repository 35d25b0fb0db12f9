"""A failed attempt is retried after ``backoff`` seconds, doubled for each further failure
up to ``max_backoff``; after ``max_attempts`` failures the execution is marked failed."""

from __future__ import annotations

import time

import pytest

from durably._worker._supervisor import Supervisor
from durably.config import DurabilityConfig, WorkerConfig

from memstore import MemoryStore


@pytest.mark.asyncio
async def test_the_delay_doubles_up_to_max_backoff_then_the_execution_is_marked_failed() -> None:
    limits = WorkerConfig(max_attempts=6, backoff=2.0, max_backoff=10.0)
    supervisor = Supervisor(MemoryStore(), DurabilityConfig(), limits, concurrency=1)
    marked: list[tuple[str, str]] = []

    async def mark_failed(execution_id: str, reason: str) -> None:
        marked.append((execution_id, reason))

    supervisor._mark_failed = mark_failed  # type: ignore[method-assign]
    delays = []
    for attempt in range(1, 6):
        before = time.monotonic()
        await supervisor._failed_attempt("run-1", f"boom {attempt}")
        after = time.monotonic()
        entry = supervisor.attempts["run-1"]
        assert entry.failures == attempt
        assert supervisor.held_back("run-1")
        # not_before = monotonic() at the call + delay
        delays.append((round(entry.not_before - after, 1), round(entry.not_before - before, 1)))
        assert not marked
    assert [low for low, _ in delays] == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert [high for _, high in delays] == [2.0, 4.0, 8.0, 10.0, 10.0]

    await supervisor._failed_attempt("run-1", "boom 6")
    assert marked == [("run-1", "gave up after 6 failed attempt(s); the last one: boom 6")]
    assert supervisor.summary.failed["run-1"] == marked[0][1]
    assert supervisor.summary.attempts["run-1"] == 6
