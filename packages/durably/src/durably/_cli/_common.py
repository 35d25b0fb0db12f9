"""What every ``durably`` command uses: the configuration, the ``[llm]`` table, escaping.

Stored text (agents' words, errors, ids) is untrusted: whatever a command prints of it
goes through :func:`printable` first.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["UsageError", "cli_config", "dumps", "llm_options", "llm_spec", "printable"]


class UsageError(Exception):
    """A bad combination of command-line arguments (exit status 2)."""


def cli_config(args: argparse.Namespace) -> Any:
    """The configuration: durably.toml (or ``--config``), the environment, ``--store``."""

    from durably.config import load_config

    overrides = {"store": getattr(args, "store", None)}
    return load_config(config_file=getattr(args, "config", None), overrides=overrides)


def _llm_table(args: argparse.Namespace) -> dict[str, Any]:
    """The ``[llm]`` table of durably.toml (``spec`` and the client's options)."""
    path = Path(getattr(args, "config", None) or "durably.toml")
    if not path.is_file():
        return {}
    import tomllib

    table = tomllib.loads(path.read_text()).get("llm", {})
    return dict(table) if isinstance(table, dict) else {}


def llm_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``[llm]`` table without its ``spec``: the client's options and budgets."""
    return {k: v for k, v in _llm_table(args).items() if k != "spec"}


def llm_spec(args: argparse.Namespace) -> str | None:
    """The LLM spec: ``--llm``, else ``DURABLY_LLM``, else ``[llm] spec``; None if none."""
    if getattr(args, "llm", None):
        return str(args.llm)
    env = os.environ.get("DURABLY_LLM")
    if env:
        return env
    spec = _llm_table(args).get("spec")
    return spec if isinstance(spec, str) else None


def printable(text: str) -> str:
    """``text`` with terminal control characters escaped (stored text is untrusted)."""
    from durably._inspect import _printable as escape

    return escape(text)


def dumps(value: object, limit: int | None = None, *, indent: int | None = None) -> str:
    """``value`` as JSON (``repr`` for what JSON cannot say), cut at ``limit`` characters.

    A dict key JSON cannot hold (a tuple) is written as its ``repr``, a set as a sorted
    list, a cycle as ``"..."``: a value a program returned always prints.
    """
    try:
        text = json.dumps(value, default=repr, ensure_ascii=False, indent=indent)
    except (TypeError, ValueError):  # a key JSON cannot hold, a cycle
        text = json.dumps(_jsonable(value, set()), default=repr, ensure_ascii=False, indent=indent)
    return text if limit is None else text[:limit]


def _jsonable(value: object, seen: set[int]) -> object:
    """``value`` with what ``json.dumps`` refuses in containers made sayable."""
    from durably._prompts import stable_repr

    if not isinstance(value, (dict, list, tuple, set, frozenset)):
        return value
    if id(value) in seen:
        return "..."
    seen.add(id(value))
    try:
        if isinstance(value, dict):
            return {
                key
                if key is None or isinstance(key, (str, int, float, bool))
                else stable_repr(key): _jsonable(item, seen)
                for key, item in value.items()
            }
        items = [_jsonable(item, seen) for item in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    finally:
        seen.discard(id(value))
