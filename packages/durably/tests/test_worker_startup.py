"""A worker's child reports its first progress once the execution's history is loaded:
starting the interpreter, importing the store's client, connecting, claiming and reading
the history are the child's start-up, which the worker bounds by ``_STARTUP`` (60 s), not
by ``statement_timeout``. Found in CI: on a loaded machine the S3 client's import alone
took longer than a 4 s ``statement_timeout``, and healthy executions were killed and
failed with "no progress" before they had run a statement."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from durably._plugins import get_hooks, reset_hooks
from durably._worker import _children
from durably._worker._children import _child_run, run_child
from durably.config import DurabilityConfig, WorkerConfig
from durably.hookspecs import hookimpl
from durably.runner import submit_program

PROGRAMS = Path(__file__).parent / "programs"


class Events(list[str]):
    """What happened, in order: the child's reports and the hooks of its resume."""

    def write(self, data: bytes) -> int:  # the child's report channel
        self.extend(f"report {line}" for line in data.decode().splitlines())
        return len(data)

    def flush(self) -> None:
        pass

    @hookimpl(tryfirst=True)  # before the child's own, which reports
    def durably_before_recover(self, execution_id: str, seq: int) -> None:
        self.append("history loaded")


@pytest.fixture
def events() -> Iterator[Events]:
    reset_hooks()  # the child registers its own hook implementation, once per process
    seen = Events()
    get_hooks().register(seen, name="test-events")
    yield seen
    reset_hooks()


@pytest.mark.asyncio
async def test_the_first_report_comes_once_the_history_is_loaded(
    tmp_path: Path, events: Events
) -> None:
    config = DurabilityConfig(store=f"file://{tmp_path / 'store'}")
    execution_id = await submit_program(
        PROGRAMS / "counter.py",
        llm=f"scripted:{PROGRAMS / 'counter.scripted.json'}",
        inputs=["forty-two"],
        config=config,
        execution_id="job",
    )
    job: dict[str, Any] = {
        "execution_id": execution_id,
        "config": {**asdict(config), "sources": list(config.sources)},
        "handoff": None,
    }
    outcome = await _child_run(job, events)
    assert outcome.kind == "completed", outcome
    assert "history loaded" in events, events
    first_report = next(i for i, event in enumerate(events) if event.startswith("report p"))
    assert events.index("history loaded") < first_report, events


@pytest.mark.asyncio
async def test_a_child_that_never_starts_is_killed_after_the_start_up_allowance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Silent from the start: killed once the start-up allowance (not the shorter
    statement_timeout) is over, and the attempt's reason says it did not start."""
    monkeypatch.setattr(
        _children, "_CHILD_ENTRY", "import sys, time; sys.stdin.readline(); time.sleep(30)"
    )
    monkeypatch.setattr(_children, "_STARTUP", 1.0)
    start = time.monotonic()
    outcome = await run_child(
        "exec-1",
        None,
        config=DurabilityConfig(),
        limits=WorkerConfig(statement_timeout=0.2),
        children={},
    )
    took = time.monotonic() - start
    assert outcome.kind == "error"
    assert "did not start within 1 s" in outcome.error, outcome.error
    assert "statement_timeout" not in outcome.error, outcome.error
    assert 1.0 <= took < 20, took  # the allowance, not the 0.2 s statement_timeout
