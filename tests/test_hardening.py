"""Hardening, on every backend, through the `durably` command as a user runs it:

* a crafted checkpoint naming a module (a canary that records being imported) never makes
  `show`, `show --json`, `history`, `diff` or `ls` import it;
* a checkpoint deleted from the middle of the history, or replaced by another, is a
  "history is damaged" error naming it for `show`, `history`, `diff`, `fork` and `resume`,
  and `resume` says nothing twice;
* `resume` checks the program's fingerprint before importing the program.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import PROGRAM_CASES, durably

CANARY = "durably_canary_hardening"
pytestmark = pytest.mark.filterwarnings("ignore::durably.errors.DurablyWarning")  # Redis, no AOF


def _provider_call(config: Path, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``work(provider)`` against the store ``config`` names (in this process)."""
    from durably import open_store
    from durably.config import load_config

    async def main() -> Any:
        settings = load_config(config_file=config, use_env=False)
        async with open_store(config=settings) as provider:
            return await work(provider)

    return asyncio.run(main())


def _crashed_counter(config: Path, store: str, execution_id: str, after: int = 15) -> None:
    """Start the counter program and SIGKILL it after checkpoint ``after``."""
    args = PROGRAM_CASES["counter"].run_args(store, execution_id)
    args[args.index("--store") : args.index("--store") + 2] = ["--config", str(config)]
    result = durably(*args, env={"DURABLY_CRASH_AFTER_CHECKPOINT": str(after)})
    assert result.code == -signal.SIGKILL, result.err


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _rewrite(provider: Any, execution_id: str, seq: int, data: bytes) -> None:
    """Replace checkpoint ``seq``'s document and re-link the next one to it, the way
    someone with write access to the store can (the chain is not a signature)."""
    from durably.checkpoint import META_PREV

    old = await provider.load_checkpoint(execution_id, seq)
    await provider.save_checkpoint(execution_id, seq, data, metadata=old.metadata, mode="overwrite")
    following = await provider.load_checkpoint(execution_id, seq + 1)
    await provider.save_checkpoint(
        execution_id,
        seq + 1,
        following.data,
        metadata={**following.metadata, META_PREV: _digest(data)},
        mode="overwrite",
    )


def test_inspection_never_imports_a_module_a_crafted_checkpoint_names(
    backend: tuple[Path, str], tmp_path: Path
) -> None:
    config, store = backend
    _crashed_counter(config, store, "crafted")

    async def craft(provider: Any) -> None:
        stored = await provider.load_checkpoint("crafted", 0)  # the first snapshot
        doc = json.loads(stored.data)
        state = doc["roots"].setdefault("state", ["d"])
        assert state[0] == "d"
        state += [
            "evil_module",
            ["x", "durably.module", CANARY],
            "evil_submodule",
            ["x", "durably.module", f"{CANARY}.sub"],
            "evil_class",
            ["D", f"{CANARY}:Thing", "x", 1],
            "evil_enum",
            ["E", f"{CANARY}:Color", "RED"],
            "evil_tuple",
            ["N", f"{CANARY}:Pair", 1, 2],
            "evil_name",
            ["x", "durably.global", f"{CANARY}.sub:run"],
            "evil_exception",
            ["X", f"{CANARY}:Failure", ["t", "boom"]],
        ]
        data = json.dumps(doc, separators=(",", ":")).encode("ascii")
        await _rewrite(provider, "crafted", 0, data)

    _provider_call(config, craft)
    canary_dir = tmp_path / "canary"
    (canary_dir / CANARY).mkdir(parents=True)
    marker = tmp_path / "imported"
    (canary_dir / CANARY / "__init__.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported\\n')\n"
    )
    (canary_dir / CANARY / "sub.py").write_text(
        f"open({str(marker)!r}, 'a').write('sub imported\\n')\n"
    )
    env = {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(canary_dir), os.environ.get("PYTHONPATH")]))
    }
    common = ["--config", str(config)]
    outputs = {}
    for command in (
        ["show", "crafted"],
        ["show", "crafted", "--json"],
        ["show", "crafted", "--at", "3"],
        ["history", "crafted"],
        ["history", "crafted", "--json"],
        ["diff", "crafted", "0", "5"],
        ["diff", "crafted", "0", "5", "--json"],
        ["ls"],
    ):
        result = durably(*command, *common, env=env)
        assert result.code == 0, (command, result.err)
        assert not marker.exists(), f"{command} imported the canary"
        outputs[" ".join(command)] = result.out
    shown = json.loads(outputs["show crafted --json"])
    state = next(iter(shown["agents"].values()))["state"]
    assert "not imported" in state["evil_module"]
    assert "not imported" in state["evil_class"]
    assert "not imported" in state["evil_name"]
    assert "not imported" in state["evil_exception"]
    assert "not imported" in outputs["show crafted"]
    # The canary works: importing it does leave the marker (so the checks above can fail).
    subprocess.run(
        [sys.executable, "-c", f"import {CANARY}.sub"], check=True, env={**os.environ, **env}
    )
    assert marker.read_text() == "imported\nsub imported\n"


def _expect_damaged(result: Any, seqs: str) -> None:
    assert result.code == 2, result.err
    assert "is damaged" in result.err, result.err
    assert seqs in result.err, result.err
    assert "Traceback" not in result.err, result.err


def test_a_checkpoint_missing_from_the_middle_is_detected(backend: tuple[Path, str]) -> None:
    from durably.storage import META_BASE

    config, store = backend
    _crashed_counter(config, store, "gap")

    async def delete_middle(provider: Any) -> tuple[int, int]:
        latest = await provider.load_latest_checkpoint("gap")
        base = int(latest.metadata[META_BASE])
        middle = (base + latest.seq) // 2
        assert base < middle < latest.seq, (base, latest.seq)
        assert await provider.delete_checkpoint("gap", middle)
        return middle, latest.seq

    middle, last = _provider_call(config, delete_middle)
    common = ["--config", str(config)]
    missing = f"checkpoint {middle} is missing"
    for command in (
        ["show", "gap"],
        ["show", "gap", "--json"],
        ["history", "gap"],
        ["diff", "gap", str(middle - 1), str(last)],
        ["fork", "gap", "--at", str(last), "--execution-id", "gap-fork"],
    ):
        _expect_damaged(durably(*command, *common), missing)
    resumed = durably("resume", "gap", *common)
    _expect_damaged(resumed, missing)
    assert "Counter:" not in resumed.out  # nothing said (again)

    async def after(provider: Any) -> tuple[int, Any]:
        latest = await provider.load_latest_checkpoint("gap")
        return latest.seq, await provider.load_latest_checkpoint("gap-fork")

    assert _provider_call(config, after) == (last, None)  # nothing written, no fork
    # What comes before the gap is intact and can still be shown.
    before = durably("show", "gap", "--at", str(middle - 1), *common)
    assert before.code == 0, before.err


def test_a_replaced_checkpoint_is_detected(backend: tuple[Path, str]) -> None:
    config, store = backend
    _crashed_counter(config, store, "replaced", after=12)

    async def replace(provider: Any) -> int:
        latest = await provider.load_latest_checkpoint("replaced")
        target = latest.seq - 3
        earlier = await provider.load_checkpoint("replaced", target - 1)
        await provider.save_checkpoint(
            "replaced", target, earlier.data, metadata=earlier.metadata, mode="overwrite"
        )
        return target

    target = _provider_call(config, replace)
    common = ["--config", str(config)]
    follows = f"checkpoints {target}-{target + 1} do not follow"
    for command in (["show", "replaced"], ["history", "replaced"], ["resume", "replaced"]):
        _expect_damaged(durably(*command, *common), follows)


def test_resume_checks_the_fingerprint_before_importing_the_program(
    tmp_path: Path, file_store: str
) -> None:
    case = PROGRAM_CASES["counter"]
    program = tmp_path / "counter.py"
    program.write_text(case.program.read_text())
    args = case.run_args(file_store, "changed")
    args[1] = str(program)
    first = durably(*args, env={"DURABLY_CRASH_AFTER_CHECKPOINT": "5"})
    assert first.code == -signal.SIGKILL, first.err
    marker = tmp_path / "ran"
    original = program.read_text()
    for appended in (f"\nopen({str(marker)!r}, 'w').write('ran')\n", "\ndef broken(:\n"):
        program.write_text(original + appended)
        result = durably("resume", "changed", "--store", file_store)
        assert result.code == 2, result.err
        assert "changed since execution 'changed' started" in result.err, result.err
        assert "Traceback" not in result.err
        assert not marker.exists(), "the changed program ran"
    # A syntax error with --allow-changed-program: a one-line error naming the line.
    forced = durably("resume", "changed", "--store", file_store, "--allow-changed-program")
    assert forced.code == 2, forced.err
    assert "does not compile (line" in forced.err, forced.err
    assert "Traceback" not in forced.err
    program.write_text(original)
    done = durably("resume", "changed", "--store", file_store)
    assert done.code == 0, done.err
