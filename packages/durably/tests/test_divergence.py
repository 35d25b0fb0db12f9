"""A divergence on replay names the LLM statement that asked for the other operation.

The statement comes from the LLM response the agent's frame is reading; that response's
op index may be 0 (an agent whose first operation is its first LLM call), which must name
the statement like any other index.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from durably._execution import Execution, UserIO
from durably._resume import restore_agents
from durably.checkpoint import CheckpointManager
from durably.config import DurabilityConfig
from durably.errors import DivergenceError
from durably.llm import open_llm
from durably.runner import Program

from memstore import MemoryStore

TICKER = Path(__file__).parent / "programs/ticker.py"


class Crash(BaseException):
    """Stands for the process dying right after a checkpoint became durable."""


class CrashingStore(MemoryStore):
    def __init__(self, crash_at: int) -> None:
        super().__init__()
        self.crash_at: int | None = crash_at

    async def _save(self, *args: Any, **kwargs: Any) -> Any:
        info = await super()._save(*args, **kwargs)
        if self.saves == self.crash_at:
            self.crash_at = None
            raise Crash(f"after checkpoint {self.saves}")
        return info


def _execution(store: MemoryStore) -> Execution:
    manager = CheckpointManager("ticks", store, config=DurabilityConfig(snapshot_every=1))
    return Execution(
        manager,
        program=Program.load(TICKER),
        llm=open_llm(f"scripted:{TICKER.with_suffix('.scripted.json')}"),
        io=UserIO([], echo=None),
    )


@pytest.mark.asyncio
async def test_a_divergence_in_the_first_llm_response_names_its_statement() -> None:
    store = CrashingStore(crash_at=4)  # the snapshot, then Step, Tick and Say of tick 0
    status, _ = await _execution(store).run()
    assert status == "failed"

    execution = _execution(store)
    await restore_agents(execution.manager, execution)
    task = execution.agents["1000"]
    # The agent's first operation is its first LLM call: the response has op index 0.
    assert 0 in task.journal.replay_llm
    tick = next(entry for entry in task.journal.replay.values() if entry.kind == "tick")
    tick.key = "another digest"  # as if the code now asked for another tick

    status, error = await execution.run(resume=True)

    assert status == "failed"
    assert isinstance(error, DivergenceError), error
    assert f"replay diverged at operation {tick.index} in statement 'for i in range(3):" in str(
        error
    )
