"""What the group-commit crash tests share (``test_group_commit.py`` on the filesystem,
``test_pg_group_commit.py`` on PostgreSQL): a child process that runs many executions
and reports each acknowledged checkpoint on stdout, SIGKILLed mid-way; then every
execution resumed and compared with an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import PROGRAM_CASES, durably

COMPARED = ("transcript", "agents", "llm_calls", "result")
CASE = PROGRAM_CASES["counter"]
EXECUTIONS = 100
KILL_AT = 1 / 3
"""Kill the child once this share of all the checkpoints it will write was reported."""


async def run_all(ids: list[str], **where: Any) -> None:
    """In the child: run the counter program as ``ids``, all at once (``where``: the
    ``store=`` or ``config=`` of run_program); ``ready`` before, ``all done`` after."""
    import asyncio

    from durably.runner import run_program

    os.write(1, b"ready\n")
    await asyncio.gather(
        *(
            run_program(
                str(CASE.program),
                llm=f"scripted:{CASE.script}?chunk_seed=5",
                execution_id=execution_id,
                inputs=list(CASE.inputs),
                echo=None,
                **where,
            )
            for execution_id in ids
        )
    )
    os.write(1, b"all done\n")


async def resume_all(ids: list[str], **where: Any) -> None:
    """In the second child: resume ``ids`` at once (their owner was SIGKILLed: taken over
    at once); print each one's status."""
    import asyncio

    from durably.runner import resume_execution

    results = await asyncio.gather(
        *(resume_execution(execution_id, echo=None, **where) for execution_id in ids)
    )
    for result in results:
        print(f"resumed {result.execution_id} {result.status}", flush=True)


def child_env() -> dict[str, str]:
    """The environment of a child process: no DURABLY_* settings, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_and_kill(argv: list[str], target: int, cwd: Path) -> list[str]:
    """Start ``argv`` (which prints ``ready``, then a line per acknowledged checkpoint),
    SIGKILL it once ``target`` lines came; its complete lines (a line the kill cut off
    has no newline: it was not acknowledged)."""
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, env=child_env(), cwd=cwd)
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == b"ready\n"
        seen: list[bytes] = []
        while len(seen) < target:
            line = child.stdout.readline()
            assert line, "the child exited before the kill"
            assert line != b"all done\n", "the child finished before the kill"
            seen.append(line)
    finally:
        child.send_signal(signal.SIGKILL)
        rest = child.stdout.read()
        child.stdout.close()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return (b"".join(seen) + rest).decode().split("\n")[:-1]


def resume_and_compare(
    script: str,
    options: list[str],
    ids: list[str],
    cwd: Path,
    reference: dict[str, Any],
    show_one: Callable[[str], dict[str, Any]],
    *,
    timeout: float,
) -> None:
    """Resume ``ids``: the first with ``durably resume ID *options``, the others at once
    in one process (``python script resume STORE ID...``, STORE the last item of
    ``options``); each must then equal ``reference``.

    Args:
        script: The test file, whose ``resume`` mode resumes executions concurrently.
        options: The ``durably resume`` options naming the store (``["--store", URL]``,
            ``["--wait", "--config", PATH]``); the last is what ``script`` takes.
        ids: The executions to resume.
        cwd: The children's working directory.
        reference: The uninterrupted run's ``COMPARED`` fields.
        show_one: ``durably show --json`` of one execution.
        timeout: Seconds the concurrent resume may take.
    """
    first, *others = ids
    resumed = durably("resume", first, *options)
    assert resumed.code == 0, resumed.err
    again = subprocess.run(
        [sys.executable, script, "resume", options[-1], *others],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    statuses = dict(line.split()[1:] for line in again.stdout.splitlines())
    assert set(statuses) == set(others)
    assert set(statuses.values()) <= {"completed", "already-completed"}, statuses
    for execution_id in ids:
        data = show_one(execution_id)
        assert data["status"] == "completed", execution_id
        for key in COMPARED:
            assert data[key] == reference[key], (execution_id, key)
