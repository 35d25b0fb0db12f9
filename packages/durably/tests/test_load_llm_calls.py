"""LLM calls a program loader made before the execution existed (a ``.pb``'s compile step):
listed by the loader in the header entry ``load_llm_calls`` (``durably._loaders``), shown by
``show`` and ``show --json`` generically, read as inert data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from durably import CheckpointManager
from durably._execution import Execution, UserIO
from durably._inspect import describe_execution, render_show, without_measurements
from durably._loaders import LOAD_LLM_CALLS
from durably.llm import open_llm
from durably.runner import Program

from memstore import MemoryStore

HERE = Path(__file__).parent
EID = "loaded"

COMPILE = {
    "agent": "playbooks-compiler",
    "playbook": "Greeter",
    "prompt_sha256": "ab" * 32,
    "response": "\n# Greeter\nThe compiled program\n",
    "usage": {"model": "m", "prompt_tokens": 7, "completion_tokens": 3, "finish": "stop"},
}


async def run_with_header(store: MemoryStore, extra: dict[str, Any]) -> CheckpointManager:
    """The counter program, run with ``extra`` in its execution header (as a loader's
    ``Program.header`` entries are)."""
    from durably.runner import _drive

    manager = CheckpointManager(EID, store)
    program = Program.load(HERE / "programs/counter.py")
    execution = Execution(
        manager,
        program=program,
        llm=open_llm(f"scripted:{HERE / 'programs/counter.scripted.json'}"),
        io=UserIO(["x"], echo=None),
    )
    execution.header = {"program": str(program.path), "digest": program.digest, **extra}
    result = await _drive(execution, manager, resume=False)
    assert result.status == "completed"
    return manager


@pytest.mark.asyncio
async def test_show_lists_the_loader_llm_calls() -> None:
    manager = await run_with_header(MemoryStore(), {LOAD_LLM_CALLS: [COMPILE]})
    data = await describe_execution(manager)
    assert data is not None
    assert data["load_llm_calls"] == [COMPILE]
    # Not numbered or counted with the journaled calls (a resume never asks them again).
    assert COMPILE["response"] not in [c["response"] for c in data["llm_calls"]]
    assert data["usage"]["calls"] == len(data["llm_calls"])
    text = render_show(data)
    assert "LLM calls loading the program (before the execution started): 1" in text
    assert "1. playbooks-compiler.Greeter (32 chars, prompt sha256 abababababab): # Greeter" in (
        text
    )
    # Usage is a measurement: left out when two runs are compared.
    assert without_measurements(data)["load_llm_calls"] == [
        {k: v for k, v in COMPILE.items() if k != "usage"}
    ]


@pytest.mark.asyncio
async def test_an_execution_without_loader_calls_shows_none() -> None:
    manager = await run_with_header(MemoryStore(), {})
    data = await describe_execution(manager)
    assert data is not None
    assert data["load_llm_calls"] == []
    assert "loading the program" not in render_show(data)


@pytest.mark.asyncio
async def test_a_malformed_entry_is_shown_as_such_and_nothing_is_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stored data is never trusted: a crafted entry is shown as malformed, not dropped and
    not an error; showing never asks a program loader (nothing the store names is run)."""
    entries = [COMPILE, "junk", {"agent": 1, "playbook": "P", "response": "x"}]
    manager = await run_with_header(
        MemoryStore(), {LOAD_LLM_CALLS: entries, "program": "/nowhere/evil.pb"}
    )

    def refuse(path: Path) -> None:
        raise AssertionError(f"show asked for a program loader for {path}")

    monkeypatch.setattr("durably._loaders.program_loader_for", refuse)
    data = await describe_execution(manager)
    assert data is not None
    calls = data["load_llm_calls"]
    assert calls[0] == COMPILE
    assert calls[1] == {"malformed": "'junk'"}
    assert "malformed" in calls[2]
    assert "'agent': 1" in calls[2]["malformed"]
    text = render_show(data)
    assert "2. malformed entry: 'junk'" in text
    assert "3. malformed entry: {'agent': 1" in text
