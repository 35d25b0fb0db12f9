"""A command that ends with :class:`asyncio.CancelledError` says why truthfully.

The lease's watchdog never gets there (its cancellation becomes a ``FencedError``: exit 3,
see ``test_leasing_cancellation.py``), nor does Ctrl-C (``asyncio.run`` makes it a
``KeyboardInterrupt``: 130). What does is a cancellation from within -- the program, a
library, a store call that ended cancelled by itself: the run stopped, exit 1, and the
message says so instead of blaming a lost lease. Only a take-over in the chain (the
cancellation broke the unwinding of a ``FencedError``) is a lost lease: exit 3.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

import pytest

import durably.cli
from durably.cli import main
from durably.errors import fenced
from durably.storage import Lease


async def _a_call_that_ended_cancelled() -> None:
    """What a store call or a library that ends cancelled by itself does to its caller:
    the caller's task was not cancelled, yet it gets :class:`asyncio.CancelledError`."""
    call = asyncio.get_running_loop().create_future()
    call.cancel()
    await call


async def _the_task_cancelled_from_within() -> None:
    """Code in the command's task (the program, a library) cancels that task."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)


@pytest.mark.parametrize("cancel", [_a_call_that_ended_cancelled, _the_task_cancelled_from_within])
def test_a_command_cancelled_from_within_is_not_reported_as_a_lost_lease(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    cancel: Callable[[], Awaitable[None]],
) -> None:
    async def resume(args: argparse.Namespace) -> int:
        args.started_execution = args.execution_id
        await cancel()
        return 0

    monkeypatch.setattr(durably.cli, "_resume", resume)
    code = main(["resume", "run-1"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "lease" not in err, err
    (line,) = err.splitlines()
    assert line.startswith("durably: stopped: execution run-1 was cancelled from within"), err
    assert "asyncio.CancelledError" in line, err
    assert line.endswith("resume with: durably resume run-1"), err


def test_a_cancellation_that_broke_a_take_over_still_reports_the_lost_lease(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lease was lost (FencedError), and a store call cancelled by itself while the
    run unwound: the take-over is what stopped it (exit 3, naming the new holder)."""

    async def resume(args: argparse.Namespace) -> int:
        args.started_execution = args.execution_id
        lease = Lease("run-1", "this-host:1", 1, 0.0)
        try:
            raise fenced(lease, "running the execution", taken_over_by="other-host:42")
        finally:
            await _a_call_that_ended_cancelled()

    monkeypatch.setattr(durably.cli, "_resume", resume)
    code = main(["resume", "run-1"])
    err = capsys.readouterr().err
    assert code == 3, err
    (line,) = err.splitlines()
    assert line.startswith("durably: stopped: "), err
    assert "other-host:42" in line, err
