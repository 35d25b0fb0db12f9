"""A worker stopping kills and reaps its children, and a cancellation never goes missing on
the way: not one that lands as a child's report arrives (``asyncio.wait_for`` on Python
3.11 returned the line and dropped it), not one that lands while a child is reaped or the
attempts are awaited (a second stop while stopping: absorbed, the task then ended as if
nobody had asked). Real tasks, real child processes (their entry point replaced by a few
lines that behave as the test needs)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from durably._worker import _children
from durably._worker._children import run_child
from durably._worker._supervisor import Supervisor
from durably.config import DurabilityConfig, WorkerConfig
from durably.errors import StoreUnavailableError
from durably.storage import Lease
from durably.worker import supervise

REPORTS_THEN_EXITS = (
    "import sys, time; sys.stdin.readline(); sys.stdout.write('p\\n'); sys.stdout.flush(); "
    'time.sleep(0.5); sys.stdout.write(\'r {"outcome": "completed"}\\n\')'
)
"""A child that reports progress, and its result half a second later."""
RUNS_ON = "import sys, time; sys.stdin.readline(); time.sleep(30)"
"""A child that reports nothing and would run for 30 s (it is killed long before)."""
REPORTS_THEN_HANGS = (
    "import sys, time; sys.stdin.readline(); sys.stdout.write('p\\n'); sys.stdout.flush(); "
    "time.sleep(30)"
)
"""A child that reports once, then is silent for 30 s (it is killed long before)."""
OVERLONG_LINE = (
    "import sys, time; sys.stdin.readline(); sys.stdout.write('x' * 100_000); "
    "sys.stdout.flush(); time.sleep(30)"
)
"""A child that writes a line longer than the pipe reader's limit, then runs on."""


class _CancelOnFirstReport(dict[str, asyncio.subprocess.Process]):
    """The attempt's running children: cancels the attempt's task as its child's first
    report reaches the pipe's reader (the data and the cancellation in one turn of the
    event loop, as when the worker stops while a child reports)."""

    def __init__(self) -> None:
        super().__init__()
        self.cancelled = False

    def __setitem__(self, execution_id: str, proc: asyncio.subprocess.Process) -> None:
        super().__setitem__(execution_id, proc)
        task = asyncio.current_task()
        assert task is not None
        assert proc.stdout is not None
        feed = proc.stdout.feed_data

        def fed(data: bytes) -> None:
            feed(data)
            if not self.cancelled and b"\n" in data:  # a whole report: readline returns
                self.cancelled = True
                task.cancel()

        proc.stdout.feed_data = fed  # type: ignore[method-assign]


def _attempt(children: dict[str, asyncio.subprocess.Process]) -> asyncio.Task[Any]:
    return asyncio.create_task(
        run_child(
            "exec-1",
            None,
            config=DurabilityConfig(),
            limits=WorkerConfig(statement_timeout=20.0),
            children=children,
        )
    )


@pytest.mark.asyncio
async def test_a_cancellation_landing_as_a_report_arrives_cancels_the_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_children, "_CHILD_ENTRY", REPORTS_THEN_EXITS)
    children = _CancelOnFirstReport()
    attempt = _attempt(children)
    with pytest.raises(asyncio.CancelledError):  # not lost: the attempt does not go on
        await attempt
    assert children.cancelled
    assert dict(children) == {}, "the child is still listed as running"


@pytest.mark.asyncio
async def test_a_child_silent_for_statement_timeout_is_still_killed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The timeout on a child's reports is what it was (a guard: asyncio.timeout in place
    of asyncio.wait_for): silent past ``statement_timeout`` after its first report, the
    child is killed and the attempt is a failed one that says why."""
    monkeypatch.setattr(_children, "_CHILD_ENTRY", REPORTS_THEN_HANGS)
    children: dict[str, asyncio.subprocess.Process] = {}
    outcome = await run_child(
        "exec-1",
        None,
        config=DurabilityConfig(),
        limits=WorkerConfig(statement_timeout=0.3),
        children=children,
    )
    assert outcome.kind == "error"
    assert "no progress for 0.3 s (statement_timeout)" in outcome.error
    assert children == {}


def _cancel_when_killing(
    monkeypatch: pytest.MonkeyPatch,
) -> list[asyncio.subprocess.Process]:
    """``kill`` in ``_children`` also cancels the task that kills (as if the worker were
    stopped again just then); returns the processes it killed."""
    killed: list[asyncio.subprocess.Process] = []
    real_kill: Callable[[asyncio.subprocess.Process], None] = _children.kill

    def kill_and_cancel(proc: asyncio.subprocess.Process) -> None:
        real_kill(proc)
        killed.append(proc)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()

    monkeypatch.setattr(_children, "kill", kill_and_cancel)
    return killed


@pytest.mark.asyncio
async def test_a_cancellation_while_the_child_is_reaped_is_raised_once_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pipe reader fails (a line over its limit) while the child runs: the child is
    killed, and the attempt cancelled as it waits for it to exit. It ends cancelled, once
    the child is reaped -- not with the reader's error (which the worker would have booked
    as a failed attempt and gone on, cancelled or not)."""
    monkeypatch.setattr(_children, "_CHILD_ENTRY", OVERLONG_LINE)
    killed = _cancel_when_killing(monkeypatch)
    children: dict[str, asyncio.subprocess.Process] = {}
    attempt = _attempt(children)
    with pytest.raises(asyncio.CancelledError):
        await attempt
    assert len(killed) == 1
    assert killed[0].returncode is not None, "the child was not reaped"
    assert children == {}


@pytest.mark.asyncio
async def test_a_worker_cancelled_while_it_stops_its_attempts_ends_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store fails while an attempt runs: the worker stops, killing the attempt's child
    and awaiting the attempt -- and is cancelled meanwhile. It ends cancelled, once the
    attempt has ended and its child is reaped, not with the store's error (which would
    have hidden the cancellation from whoever asked for it)."""
    monkeypatch.setattr(_children, "_CHILD_ENTRY", RUNS_ON)
    seen: list[Supervisor] = []
    started: list[asyncio.subprocess.Process] = []

    async def next_batch(
        self: Supervisor, free: int
    ) -> tuple[list[tuple[str, Lease | None]], bool]:
        if not seen:
            seen.append(self)
            return [("exec-1", None)], True
        while not self.children:  # the attempt's child started
            await asyncio.sleep(0.01)
        started.extend(self.children.values())
        raise StoreUnavailableError("the store went away")

    real_kill_all = Supervisor.kill_all

    def kill_all_and_cancel(self: Supervisor) -> None:
        real_kill_all(self)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # stopped again, as it stops

    monkeypatch.setattr(Supervisor, "next_batch", next_batch)
    monkeypatch.setattr(Supervisor, "kill_all", kill_all_and_cancel)
    worker = asyncio.create_task(
        supervise(
            config=DurabilityConfig(store=f"file://{tmp_path / 'store'}"),
            limits=WorkerConfig(statement_timeout=20.0),
            poll=0.01,
        )
    )
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(worker), timeout=20)
    assert worker.cancelled()
    (sup,) = seen
    assert all(task.done() for task in sup.running.values())
    assert len(started) == 1
    assert started[0].returncode is not None, "the attempt's child was not reaped"
    assert sup.children == {}
