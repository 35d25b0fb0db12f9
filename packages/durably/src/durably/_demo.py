"""``durably demo``: crash a bundled program in the middle of its 3rd LLM call, resume it
in a new process, and show that the result equals an uninterrupted run's."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

DEMO = Path(__file__).parent / "demo"
PROGRAM = DEMO / "kitchen.py"
SCRIPT = DEMO / "kitchen.scripted.json"
ANSWER = ("I've got chickpeas, a bag of spinach, a can of tomatoes and some rice. "
          "I'm vegetarian.")
COMPARED = ("transcript", "agents", "llm_calls", "result")


async def _child(*args: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "durably", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


async def _describe(store: str, execution_id: str) -> dict[str, Any]:
    from durably import open_store
    from durably._inspect import describe_execution
    from durably.checkpoint import CheckpointManager
    from durably.config import load_config

    config = load_config(overrides={"store": store}, use_env=False)
    async with open_store(config=config) as provider:
        data = await describe_execution(CheckpointManager(execution_id, provider, config=config))
    assert data is not None
    return {key: data[key] for key in COMPARED}


def _say(text: str = "") -> None:
    print(text, flush=True)


async def run_demo(*, keep: bool = False) -> int:
    from durably.runner import run_program

    root = Path(tempfile.mkdtemp(prefix="durably-demo-"))
    store = f"file://{root / 'store'}"
    llm = f"scripted:{SCRIPT}?chunk_seed=7"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    try:
        _say("durably demo: a concierge agent and a chef agent plan dinner with a scripted LLM.")
        _say(f"store: {store}\n")
        _say("1. An uninterrupted run, for reference:")
        from durably.config import load_config

        config = load_config(overrides={"store": store}, use_env=False)
        await run_program(PROGRAM, llm=llm, store=store, execution_id="reference",
                          inputs=[ANSWER], config=config, echo=lambda s: _say("   " + s))
        _say("\n2. The same program in a child process that kills itself (SIGKILL) in the "
             "middle of its 3rd LLM call:")
        code, out = await _child("run", str(PROGRAM), "--llm", llm, "--store", store,
                                 "--execution-id", "crashed", "--input", ANSWER,
                                 env={**env, "DURABLY_CRASH_IN_LLM_CALL": "3"})
        for line in out.splitlines():
            _say("   " + line)
        killed = code in (-signal.SIGKILL, 128 + signal.SIGKILL)
        _say(f"   ... process ended with status {code}"
             f"{' (killed by SIGKILL)' if killed else ''}")
        if not killed:
            _say("the child was not killed; the demo cannot go on")
            return 1
        _say("\n3. A new process resumes it from the store at once (its owner is provably "
             "dead, so its 30-second lease is taken over): it restores the agents, finishes "
             "the rest of the 3rd LLM response, then goes on with the 4th call:")
        code, out = await _child("resume", "crashed", "--store", store, env=env)
        for line in out.splitlines():
            _say("   " + line)
        if code != 0:
            _say(f"   resume failed with status {code}")
            return 1
        reference = await _describe(store, "reference")
        resumed = await _describe(store, "crashed")
        _say("\n4. Uninterrupted vs crashed-and-resumed:")
        same = True
        for key in COMPARED:
            equal = reference[key] == resumed[key]
            same = same and equal
            value = reference[key]
            if key == "transcript":
                detail = f"{len(value)} lines said to the user"
            elif key == "agents":
                detail = "state and call stack of " + ", ".join(value)
            elif key == "llm_calls":
                detail = f"{len(value)} LLM calls: prompts and responses"
            else:
                detail = json.dumps(value)
            _say(f"   {key:<11} {'identical' if equal else 'DIFFERENT'}  ({detail})")
        _say("\nThe resumed run is indistinguishable from the uninterrupted one." if same
             else "\nThe runs differ: this is a bug, please report it.")
        return 0 if same else 1
    finally:
        if keep:
            _say(f"(store kept in {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)
