"""The README's quick start works as written: run, `kill -9`, `durably resume` at once.

The shell block is taken from README.md verbatim and run with bash (the store is pointed
at a temporary directory with ``DURABLY_STORE``); the resumed execution must equal an
uninterrupted run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, durably, show

COMPARED = ("transcript", "agents", "llm_calls", "result")


def _quick_start_block() -> str:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL)
    (block,) = [b for b in blocks if "kill -9" in b]
    return block


def test_the_readme_kill_then_resume_block_works_as_written(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    block = _quick_start_block()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    env["DURABLY_STORE"] = store
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-e", "-c", block],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"^kitchen-1\s+crashed\b", done.stdout, flags=re.MULTILINE), done.stdout
    assert "took execution kitchen-1 over from" in done.stderr, done.stderr
    assert "execution kitchen-1: completed" in done.stdout, done.stdout
    # ... and it equals a run that was never killed.
    args = [
        "run",
        "examples/kitchen/kitchen.py",
        "--llm",
        "scripted:examples/kitchen/kitchen.scripted.json",
        "--input",
        "Chickpeas, spinach, tomatoes and rice. I'm vegetarian.",
        "--execution-id",
        "reference",
        "--store",
        store,
    ]
    reference = durably(*args, cwd=ROOT)
    assert reference.code == 0, reference.err
    killed, whole = show(store, "kitchen-1"), show(store, "reference")
    for key in COMPARED:
        assert killed[key] == whole[key], key
