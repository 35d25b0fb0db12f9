"""``durably init [DIR]``: a commented ``durably.toml`` and a starter program that
``durably run`` runs out of the box (its LLM is scripted: no API key, no network).

The configuration file lists every key of ``[durability]``, ``[llm]`` and ``[worker]``
with its default, commented out; only ``[llm] spec`` is set, to the starter's scripted
responses. The defaults are read from the configuration classes themselves, so the file
cannot fall behind them (``tests/test_cli.py`` checks that every key is there).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from durably.errors import ConfigError

__all__ = ["PROGRAM", "SCRIPT", "render_config", "write_starter"]

PROGRAM = "hello.py"
SCRIPT = "hello.scripted.json"

_PROGRAM_TEXT = '''\
"""A starter durably program: one agent whose LLM playbook greets the user, calls a
Python tool and returns what it found. Every await is a checkpoint: kill the run at any
moment and `durably resume ID` continues it where it stopped.

    durably run hello.py                 # the LLM of durably.toml: scripted responses
    durably run hello.py --llm openai:gpt-4o-mini   # or a real model
"""

from durably import Agent, playbook


class Greeter(Agent):
    """You are a friendly assistant who likes counting letters."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE Greet the user
        - 02:EXE Count the letters of the word "durably" with LetterCount
        - 03:EXE Tell the user how many letters it has
        - 04:RET Return the count"""

    @playbook
    async def LetterCount(self, word: str) -> int:
        """How many letters ``word`` has (a Python tool the LLM calls)."""
        return sum(1 for char in word if char.isalpha())
'''

_RESPONSE = "\n".join(
    [
        "```python",
        'await self.Step("Main:01:EXE")',
        'await self.Say("user", "Hello! I am a durable agent: every await I make is a '
        'checkpoint.")',
        'await self.Step("Main:02:EXE")',
        'count = await self.LetterCount("durably")',
        'await self.Step("Main:03:EXE")',
        'await self.Say("user", f"The word durably has {count} letters.")',
        'await self.Step("Main:04:RET")',
        "await self.Return(count)",
        "```",
    ]
)

_SCRIPT: dict[str, list[str]] = {"Greeter.Main": [_RESPONSE]}

_COMMENTS: dict[str, str] = {
    "enabled": "checkpoint at all (false: programs run without durability)",
    "store": 'where executions live: "file://DIR", "s3://bucket/prefix", '
    '"postgresql://user@host/db", "redis://host:6379/0"',
    "compression_level": "zstd level 1-22 for stored objects; 0: no compression",
    "compression_threshold": "objects smaller than this many bytes are stored uncompressed",
    "blob_threshold": "values whose encoding exceeds this many bytes are stored once, as blobs",
    "max_checkpoint_size": "a larger checkpoint fails with CheckpointTooLargeError",
    "max_execution_size": "bytes one execution may store (0: no limit)",
    "keep_last": "keep only the last N checkpoints while an execution runs (0: all)",
    "on_completion": '"keep", "prune" (to keep_last, at least 1) or "delete" a completed '
    "execution's checkpoints",
    "on_unserializable": '"error" fails the checkpoint, "replay" waits with snapshots while '
    'a frame variable cannot be stored, "skip" leaves the variable out',
    "allow_pickle": "pickle values the codec does not know (needs DURABLY_PICKLE_KEY)",
    "lease_ttl": "seconds an execution's lease lasts without renewal",
    "snapshot_every": "operations journaled between two snapshots of an agent",
    "max_calls": "LLM calls one execution may make (0: no limit)",
    "max_calls_per_playbook_run": "LLM calls one playbook run may make (0: no limit)",
    "max_tokens": "tokens one execution may use, as providers report them (0: no limit)",
    "max_continuations": "times a response cut off by a dropped stream is continued",
    "statement_timeout": "seconds an attempt may go without progress (0: no limit)",
    "max_attempts": "failed attempts before an execution is marked failed",
    "backoff": "seconds before the second attempt, doubled for each further one",
    "max_backoff": "the longest wait between two attempts",
    "cpu_limit": "CPU seconds one attempt may use, RLIMIT_CPU (0: no limit)",
    "memory_limit": 'address space one attempt may map, RLIMIT_AS, e.g. "2GiB" (0: no limit)',
}


def _toml(value: Any) -> str:
    if value is None:
        return "0"  # a budget that is off
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))


def _keys(cls: type) -> list[tuple[str, Any]]:
    skip = {"providers", "sources"}
    return [(f.name, f.default) for f in dataclasses.fields(cls) if f.name not in skip]


def render_config() -> str:
    """The commented ``durably.toml``: every key with its default, commented out, and
    ``[llm] spec`` set to the starter's scripted responses."""
    from durably._llmtypes import LLMLimits
    from durably.config import DurabilityConfig, WorkerConfig

    lines = [
        "# durably.toml -- written by `durably init`. Every key is shown with its",
        "# default, commented out; uncomment a line to change it. DURABLY_STORE and",
        "# DURABLY_LLM override store and spec; docs/guides/configuration.md has the rest.",
        "",
        "[durability]",
    ]

    def table(keys: list[tuple[str, Any]]) -> None:
        for name, default in keys:
            lines.append(f"# {_COMMENTS.get(name, name)}")
            lines.append(f"# {name} = {_toml(default)}")

    table(_keys(DurabilityConfig))
    lines += [
        "",
        "# A provider's own options go in a sub-table named by its scheme:",
        "#   [durability.s3]",
        '#   region = "eu-west-1"',
        "",
        "[llm]",
        "# the LLM of `durably run` when --llm is not given: scripted responses here,",
        '# "openai:MODEL", "anthropic:MODEL", ... (docs/guides/llm.md)',
        f'spec = "scripted:{SCRIPT}"',
    ]
    table([(name, getattr(LLMLimits, name)) for name in LLMLimits.OPTIONS])
    lines += ["", "# How `durably worker` supervises the executions it runs.", "[worker]"]
    table(_keys(WorkerConfig))
    return "\n".join(lines) + "\n"


def write_starter(directory: str | Path) -> list[Path]:
    """Write ``durably.toml``, the starter program and its scripted responses into
    ``directory`` (created if needed); returns the paths written.

    Raises:
        ConfigError: One of the files exists already (nothing is written then), or the
            directory cannot be written.
    """
    where = Path(directory)
    files = {
        where / "durably.toml": render_config(),
        where / PROGRAM: _PROGRAM_TEXT,
        where / SCRIPT: json.dumps(_SCRIPT, indent=1, ensure_ascii=False) + "\n",
    }
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise ConfigError(
            f"{', '.join(existing)} already exist{'s' if len(existing) == 1 else ''}"
            "; durably init overwrites nothing",
            fix="Move the file(s) away or pick another directory: durably init DIR",
        )
    try:
        where.mkdir(parents=True, exist_ok=True)
        for path, text in files.items():
            with path.open("x", encoding="utf-8") as out:  # never over a file made meanwhile
                out.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot write the starter files: {exc}", source=str(where)) from exc
    return list(files)
