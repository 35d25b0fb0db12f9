"""Shared helpers for the cross-package and end-to-end tests: drive `durably` as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
KITCHEN = ROOT / "examples" / "kitchen"
KITCHEN_INPUT = ("I've got chickpeas, a bag of spinach, a can of tomatoes and some rice. "
                 "I'm vegetarian.")
COUNTER = ROOT / "packages" / "durably" / "tests" / "programs"


@dataclass
class Completed:
    code: int
    out: str
    err: str


def durably(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 60) -> Completed:
    """Run the `durably` command in a new process (no terminal, clean DURABLY_* env)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    base.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "durably", *args], env=base, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return Completed(proc.returncode, proc.stdout, proc.stderr)


def show(store: str, execution_id: str, *, subprocess: bool = False,
         config: Path | None = None) -> dict[str, Any]:
    """What `durably show --json` prints (in this process unless ``subprocess``)."""
    if subprocess:
        result = durably("show", execution_id, "--json", "--store", store)
        assert result.code == 0, result.err
        data: dict[str, Any] = json.loads(result.out)
        return data
    import asyncio

    from durably import open_store
    from durably._inspect import describe_execution
    from durably.checkpoint import CheckpointManager
    from durably.config import load_config

    async def describe() -> dict[str, Any] | None:
        settings = load_config(config_file=config, overrides={"store": store}, use_env=False)
        async with open_store(config=settings) as provider:
            return await describe_execution(CheckpointManager(execution_id, provider,
                                                              config=settings))

    found = asyncio.run(describe())
    assert found is not None
    # Exactly what the command prints, parsed back.
    return dict(json.loads(json.dumps(found, ensure_ascii=False)))


@dataclass(frozen=True)
class ProgramCase:
    name: str
    program: Path
    script: Path
    inputs: Sequence[str]

    def run_args(self, store: str, execution_id: str) -> list[str]:
        args = ["run", str(self.program), "--llm", f"scripted:{self.script}?chunk_seed=5",
                "--store", store, "--execution-id", execution_id]
        for text in self.inputs:
            args += ["--input", text]
        return args


PROGRAM_CASES = {
    "kitchen": ProgramCase("kitchen", KITCHEN / "kitchen.py", KITCHEN / "kitchen.scripted.json",
                           [KITCHEN_INPUT]),
    "counter": ProgramCase("counter", COUNTER / "counter.py", COUNTER / "counter.scripted.json",
                           ["forty-two"]),
}


@pytest.fixture
def file_store(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"
