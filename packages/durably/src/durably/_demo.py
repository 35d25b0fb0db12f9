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
ANSWER = "I've got chickpeas, a bag of spinach, a can of tomatoes and some rice. I'm vegetarian."
COMPARED = ("transcript", "agents", "llm_calls", "result")


async def _child(*args: str, env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "durably",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


async def _describe(config: Any, execution_id: str) -> dict[str, Any]:
    from durably import open_store
    from durably._inspect import describe_execution, without_measurements
    from durably.checkpoint import CheckpointManager

    async with open_store(config=config) as provider:
        data = await describe_execution(CheckpointManager(execution_id, provider, config=config))
    assert data is not None
    # Timings and reported usage are measurements, not the run (see without_measurements).
    data = without_measurements(data)
    return {key: data[key] for key in COMPARED}


def _say(text: str = "") -> None:
    print(text, flush=True)


async def run_demo(
    *, keep: bool = False, config: Any = None, config_file: str | None = None
) -> int:
    """Run the demo in a temporary store, or in ``config``'s store (with execution ids of
    its own, ``demo-XXXXXXXX-reference`` and ``demo-XXXXXXXX-crashed``)."""
    from durably._redact import redact
    from durably.config import load_config
    from durably.runner import new_execution_id, run_program

    root = None if config is not None else Path(tempfile.mkdtemp(prefix="durably-demo-"))
    if root is not None:
        config = load_config(overrides={"store": f"file://{root / 'store'}"}, use_env=False)
        names = ("reference", "crashed")
    else:
        tag = new_execution_id()[:8]
        names = (f"demo-{tag}-reference", f"demo-{tag}-crashed")
    reference_id, crashed_id = names
    store = config.store
    llm = f"scripted:{SCRIPT}?chunk_seed=7"
    # The children use this store (and durably.toml, for its provider's options); no
    # inherited fault injection, no other LLM.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DURABLY_CRASH", "DURABLY_LLM", "DURABLY_FAULT"))
    }
    if root is not None:
        env = {k: v for k, v in env.items() if not k.startswith("DURABLY_")}
    where = ["--store", store] + (["--config", config_file] if config_file else [])
    try:
        _say("durably demo: a concierge agent and a chef agent plan dinner with a scripted LLM.")
        _say(f"store: {redact(store)}\n")
        _say("1. An uninterrupted run, for reference:")
        await run_program(
            PROGRAM,
            llm=llm,
            execution_id=reference_id,
            inputs=[ANSWER],
            config=config,
            echo=lambda s: _say("   " + s),
        )
        _say(
            "\n2. The same program in a child process that kills itself (SIGKILL) in the "
            "middle of its 3rd LLM call:"
        )
        code, out = await _child(
            "run",
            str(PROGRAM),
            "--llm",
            llm,
            *where,
            "--execution-id",
            crashed_id,
            "--input",
            ANSWER,
            env={**env, "DURABLY_CRASH_IN_LLM_CALL": "3"},
        )
        for line in out.splitlines():
            _say("   " + line)
        killed = code in (-signal.SIGKILL, 128 + signal.SIGKILL)
        _say(f"   ... process ended with status {code}{' (killed by SIGKILL)' if killed else ''}")
        if not killed:
            _say("the child was not killed; the demo cannot go on")
            return 1
        _say(
            "\n3. A new process resumes it from the store at once (its owner is provably "
            "dead, so its 30-second lease is taken over): it restores the agents, finishes "
            "the rest of the 3rd LLM response, then goes on with the 4th call:"
        )
        code, out = await _child("resume", crashed_id, *where, env=env)
        for line in out.splitlines():
            _say("   " + line)
        if code != 0:
            _say(f"   resume failed with status {code}")
            return 1
        reference = await _describe(config, reference_id)
        resumed = await _describe(config, crashed_id)
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
        _say(
            "\nThe resumed run is indistinguishable from the uninterrupted one."
            if same
            else "\nThe runs differ: this is a bug, please report it."
        )
        return 0 if same else 1
    finally:
        if root is None:
            _say(
                f"(executions {reference_id} and {crashed_id} are in {redact(store)}; "
                "`durably ls` lists them)"
            )
        elif keep:
            _say(f"(store kept in {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)
