"""The seed's Python API, as documented in docs/guides/durable-execution.md.

"Resume Flow": an executor runs ``x = 10``, a Say, ``y = 20`` and a Say; the process is
killed (SIGKILL) right after the first Say's checkpoint; a second process resumes and ends
with ``x == 10`` and ``y == 20`` without repeating the first Say.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SEED_FLOW = textwrap.dedent('''
    import asyncio, sys
    from durably import (Agent, CheckpointManager, FilesystemCheckpointProvider,
                         RecoveryCoordinator, StreamingPythonExecutor)

    class Assistant(Agent):
        """Talks to the user."""

    RESPONSE = (
        "x = 10\\n"
        "await self.Say('user', f'x is {x}')\\n"
        "y = 20\\n"
        "await self.Say('user', f'y is {y}')\\n"
    )

    async def first(root):
        provider = FilesystemCheckpointProvider(root)
        manager = CheckpointManager(execution_id="seed-flow", provider=provider)
        agent = manager.attach(Assistant)
        executor = StreamingPythonExecutor(agent)
        executor.set_llm_response(RESPONSE)
        await executor.finish()

    async def second(root):
        provider = FilesystemCheckpointProvider(root)
        manager = CheckpointManager(execution_id="seed-flow", provider=provider)
        coordinator = RecoveryCoordinator(manager)
        assert await coordinator.can_recover()
        agent = manager.attach(Assistant)
        checkpoint = await manager.get_latest_checkpoint()
        executor = await StreamingPythonExecutor.resume_from_checkpoint(agent, checkpoint)
        await executor.finish()
        print("namespace", executor.namespace["x"], executor.namespace["y"])

    asyncio.run({"first": first, "second": second}[sys.argv[1]](sys.argv[2]))
''')


def _python(
    script: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=full, timeout=60
    )


def test_resume_flow_across_a_sigkill(tmp_path: Path) -> None:
    script = tmp_path / "seed_flow.py"
    script.write_text(SEED_FLOW)
    root = str(tmp_path / "store")
    # checkpoint 1: the agent's initial snapshot; checkpoint 2: the first Say, journaled
    killed = _python(script, "first", root, env={"DURABLY_CRASH_AFTER_CHECKPOINT": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert killed.stdout.splitlines() == ["Assistant: x is 10"]
    resumed = _python(script, "second", root)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.splitlines() == ["Assistant: y is 20", "namespace 10 20"]


@pytest.mark.asyncio
async def test_resume_snippet_and_checkpoint_contents(tmp_path: Path) -> None:
    """The seed's "Resume" snippet, and what a checkpoint shows."""
    from durably import (
        Agent,
        CheckpointManager,
        FilesystemCheckpointProvider,
        RecoveryCoordinator,
        StreamingPythonExecutor,
    )

    class Planner(Agent):
        """Plans."""

    said: list[str] = []
    manager = CheckpointManager(
        execution_id="exec-123", provider=FilesystemCheckpointProvider(tmp_path)
    )
    agent = manager.attach(Planner, echo=said.append)
    executor = StreamingPythonExecutor(agent)
    response = (
        'await self.Step("Main:01:QUE")\nplan = ["a", "b"]\n'
        'self.state.count = len(plan)\nawait self.Say("user", "ok")\n'
        "after = 1\nawait self.Say('user', f'{after} more')\n"
    )
    cut = response.index("after")
    await executor.add_chunk(response[:cut])
    await executor.add_chunk("af")  # not durable: no await completed since it arrived

    checkpoint = await manager.get_latest_checkpoint()
    assert checkpoint is not None
    assert checkpoint.namespace == {"plan": ["a", "b"]}
    assert checkpoint.execution_state["state"] == {"count": 2}
    assert checkpoint.execution_state["call_stack"] == ["Main:01"]
    assert checkpoint.metadata["llm_response"].startswith('await self.Step("Main:01:QUE")')
    assert len(checkpoint.metadata["executed_statements"]) == 4
    assert checkpoint.metadata["counter"] == checkpoint.seq
    assert checkpoint.metadata["timestamp"] > 0

    # The "Resume" snippet, in a fresh manager as a new process would do it.
    manager2 = CheckpointManager(
        execution_id="exec-123", provider=FilesystemCheckpointProvider(tmp_path)
    )
    coordinator = RecoveryCoordinator(manager2)
    if await coordinator.can_recover():
        checkpoint = await manager2.get_latest_checkpoint()
        resumed_agent = manager2.attach(Planner, echo=said.append)
        executor2 = await StreamingPythonExecutor.resume_from_checkpoint(resumed_agent, checkpoint)
        # Text that arrived after the last checkpoint was not durable: stream the rest
        # of the response from where the checkpoint ends.
        assert executor2.llm_response == response[:cut]
        await executor2.add_chunk(response[len(executor2.llm_response) :])
        await executor2.finish()
    assert said == ["Planner: ok", "Planner: 1 more"]
    assert executor2.namespace == {"plan": ["a", "b"], "after": 1}
    assert resumed_agent.state.count == 2


@pytest.mark.asyncio
async def test_can_recover_is_false_without_checkpoints(tmp_path: Path) -> None:
    from durably import CheckpointManager, FilesystemCheckpointProvider, RecoveryCoordinator

    manager = CheckpointManager("nothing", FilesystemCheckpointProvider(tmp_path))
    assert not await RecoveryCoordinator(manager).can_recover()
    assert await manager.get_latest_checkpoint() is None


@pytest.mark.asyncio
async def test_resume_from_a_checkpoint_that_is_not_the_latest_is_refused(
    tmp_path: Path,
) -> None:
    from durably import (
        Agent,
        CheckpointManager,
        DurablyError,
        FilesystemCheckpointProvider,
        StreamingPythonExecutor,
    )

    class Writer(Agent):
        """Writes."""

    manager = CheckpointManager("older", FilesystemCheckpointProvider(tmp_path))
    executor = StreamingPythonExecutor(manager.attach(Writer, echo=None))
    await executor.add_chunk('await self.Step("Main:01:EXE")\n')
    old = await manager.get_latest_checkpoint()
    await executor.add_chunk('await self.Step("Main:02:EXE")\n')
    fresh = CheckpointManager("older", FilesystemCheckpointProvider(tmp_path))
    with pytest.raises(DurablyError, match=r"not the latest.*fork"):
        await StreamingPythonExecutor.resume_from_checkpoint(fresh.attach(Writer), old)
