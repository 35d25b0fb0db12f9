"""A worker's claim passes to its attempt's child with no window in between.

``durably worker`` on PostgreSQL claims an execution with ``claim_next`` and hands the
lease to the child process that runs the attempt. If the child gave the worker's lease
back (``release``) and then claimed anew, another worker's ``claim_next`` could take the
execution in between: its own child then found it held and ended ``busy`` -- an attempt
(a process start) wasted. ``benchmarks/bench_workers.py`` counted 53 such attempts for
40 executions drained by 8 workers. The child now takes the handed-off lease over
(``take_over``, conditional on that lease still being current): at no moment of the
attempt can another worker claim the execution.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from durably import open_store
from durably.config import DurabilityConfig, WorkerConfig
from durably.runner import submit_program
from durably.storage import META_STATUS
from durably_postgres._client import PostgresClient

PROGRAM = '''\
from durably import Agent, playbook


class Job(Agent):
    """You do one small job."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:RET the answer"""
'''

RESPONSE = '```python\nawait self.Step("Main:01:RET")\nawait self.Return(42)\n```\n'


@pytest.mark.asyncio
async def test_no_other_worker_can_claim_between_handoff_and_the_attempts_claim(
    pg_url: str, pg_schema: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from durably._worker._children import _child_run

    program = tmp_path / "job.py"
    program.write_text(PROGRAM)
    script = tmp_path / "job.scripted.json"
    script.write_text(json.dumps({"Job.Main": [RESPONSE]}))
    config = DurabilityConfig(store=pg_url, providers={"postgres": {"schema": pg_schema}})
    await submit_program(program, llm=f"scripted:{script}", execution_id="job", config=config)

    async with open_store(config=config) as worker, open_store(config=config) as other:
        handoff = await worker.claim_next("a-worker", ttl=30.0)  # type: ignore[attr-defined]
        assert handoff is not None
        assert handoff.execution_id == "job"

        # After every statement the attempt sends, another worker tries to claim.
        steals: list[str] = []
        intruder_db = other._db  # type: ignore[attr-defined]
        run = PostgresClient.run

        async def spied(self: PostgresClient, what: str, name: str, *a: Any, **k: Any) -> Any:
            rows = await run(self, what, name, *a, **k)
            if self is not intruder_db:
                stolen = await other.claim_next("another-worker", ttl=30.0)  # type: ignore[attr-defined]
                if stolen is not None:
                    steals.append(f"after {name}")
                    await other.release(stolen)
            return rows

        monkeypatch.setattr(PostgresClient, "run", spied)
        job = {
            "execution_id": "job",
            "config": {**asdict(config), "sources": list(config.sources)},
            "handoff": [handoff.owner, handoff.epoch, handoff.expires_at],
            "cpu_limit": WorkerConfig().cpu_limit,
            "memory_limit": WorkerConfig().memory_limit,
            "parent": 0,
        }
        outcome = await _child_run(job, io.BytesIO())
        monkeypatch.undo()

        assert outcome.kind == "completed", outcome
        assert steals == [], f"another worker could claim the execution: {steals}"
        latest = await worker.load_latest_checkpoint("job")
        assert latest is not None
        assert latest.metadata[META_STATUS] == "completed"
