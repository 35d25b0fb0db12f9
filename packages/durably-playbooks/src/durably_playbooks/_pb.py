"""The only module that imports ``playbooks``: every name of it this package uses is here.

Importing any ``playbooks`` submodule imports ``playbooks/__init__`` and through it litellm
(~10 s on a busy machine), so this module is imported only when a ``.pb``/``.pbasm`` file is
*loaded* for a new run: a resumed execution is rebuilt from the program document recorded
in its header and never imports ``playbooks``. A new run of a text parsed before does not
import it either: every parse result is cached on disk by the digest of its input and of
the installed release (:mod:`durably_playbooks._parsecache`; ``DURABLY_PLAYBOOKS_CACHE=off``
turns that off).

Names used (at the pinned version, by every test that loads a ``.pb``/``.pbasm``):
``playbooks.compilation.loader.Loader.read_program_files``,
``playbooks.compilation.markdown_to_ast.markdown_to_ast``,
``playbooks.compilation.parse_utils.parse_metadata_and_description``,
``playbooks.agents.agent_builder.AgentBuilder.parse_agent_header``,
``playbooks.playbook.llm_playbook.LLMPlaybook.from_h2`` (``name``, ``signature``,
``description``, ``metadata``, ``triggers.triggers[*].trigger/is_begin/
trigger_instruction()``, ``step_collection``, ``execution_mode``, ``markdown``),
``playbooks.core.constants.SYSTEM_PROMPT_DELIMITER`` and the prompt files
``prompts/interpreter_run.txt`` and ``prompts/preprocess_playbooks.txt``.
"""

from __future__ import annotations

import importlib.util
import os
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from durably_playbooks._parsecache import cached
from durably_playbooks.errors import UnsupportedPlaybooksFeature

__all__ = [
    "REQUIREMENT",
    "SUPPORTED",
    "check_version",
    "compiler_prompt",
    "interpreter_prompt",
    "parse_compiled",
    "playbooks_version",
    "read_program",
    "split_agents",
    "system_prompt_delimiter",
]

#: The versions of playbooks this package is tested with, oldest first: the nox session
#: ``playbooks`` runs the whole suite with each. ``pyproject.toml`` pins the same range.
SUPPORTED = ("0.7.3", "0.7.4")
#: That range as a requirement (``pyproject.toml``'s; a test checks they agree).
REQUIREMENT = "playbooks>=0.7.3,<0.7.5"


def _quiet_environment() -> None:
    """Before importing playbooks: no network fetch of litellm's cost map, no LLM cache
    directory created in the cwd, no tracing."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("PLAYBOOKS_LLM_CACHE__ENABLED", "false")
    os.environ.setdefault("PLAYBOOKS_LANGFUSE__ENABLED", "false")


def playbooks_version() -> str:
    """The installed playbooks version (without importing it)."""
    return importlib_metadata.version("playbooks")


def check_version() -> str:
    """The installed playbooks version, or :class:`UnsupportedPlaybooksFeature` when it is
    not one this package is tested with (its prompts and parser differ between releases,
    even patch releases)."""
    version = playbooks_version()
    if version not in SUPPORTED:
        raise UnsupportedPlaybooksFeature(
            f"playbooks {version} is installed; durably-playbooks supports playbooks "
            f"{' and '.join(SUPPORTED)} (the versions it is tested with)",
            feature="playbooks-version",
            fix=f"pip install '{REQUIREMENT}'",
        )
    return version


def _prompt_file(name: str) -> str:
    """A prompt file of the installed playbooks, found without importing the package."""
    spec = importlib.util.find_spec("playbooks")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'playbooks'", name="playbooks")
    package = Path(next(iter(spec.submodule_search_locations)))
    return (package / "prompts" / name).read_text(encoding="utf-8")


def interpreter_prompt() -> str:
    """Playbooks' interpreter contract (the system prompt of every playbook call)."""
    return _prompt_file("interpreter_run.txt")


def compiler_prompt() -> str:
    """Playbooks' compiler prompt (``{{PLAYBOOKS}}`` is the agent's markdown)."""
    return _prompt_file("preprocess_playbooks.txt")


def system_prompt_delimiter() -> str:
    """Where Playbooks splits a prompt into its system and user parts."""
    return cached("system_prompt_delimiter", "", playbooks_version(), _delimiter, load=str)


def _delimiter() -> str:
    _quiet_environment()
    from playbooks.core.constants import SYSTEM_PROMPT_DELIMITER

    delimiter: str = SYSTEM_PROMPT_DELIMITER
    return delimiter


def read_program(path: Path) -> tuple[str, bool]:
    """The program's text (shebang stripped, ``!import`` inlined) and whether it is
    compiled (PBAsm), as Playbooks' own loader reads it."""

    def text() -> str:
        return path.read_text(encoding="utf-8", errors="surrogateescape")

    if any(char in str(path) for char in "*?["):
        return _read_program(path)  # Playbooks' loader globs: the text read may be another's
    key = path.name + "\0" + text()
    found = cached(
        "read_program",
        key,
        playbooks_version(),
        lambda: _read_program(path),
        load=list,
        keep=lambda: path.name + "\0" + text() == key,  # not changed while it was read
    )
    return found[0], found[1]


def _read_program(path: Path) -> tuple[str, bool]:
    _quiet_environment()
    from playbooks.compilation.loader import Loader

    files = Loader.read_program_files([str(path)])
    texts = [content for _, content, _ in files]
    compiled = all(is_compiled for _, _, is_compiled in files)
    return "\n".join(texts), compiled


def split_agents(text: str) -> list[tuple[str, str]]:
    """The H1 sections of a ``.pb`` as (agent header, markdown), the way Playbooks'
    compiler splits a program into one compile call per agent."""
    return cached(
        "split_agents",
        text,
        playbooks_version(),
        lambda: _split_agents(text),
        load=lambda stored: [(name, markdown) for name, markdown in stored],
    )


def _split_agents(text: str) -> list[tuple[str, str]]:
    _quiet_environment()
    from playbooks.compilation.markdown_to_ast import markdown_to_ast

    agents: list[tuple[str, str]] = []
    for child in markdown_to_ast(text).get("children", []):
        if child["type"] == "h1":
            agents.append((child.get("text", "").strip(), child.get("markdown", "") + "\n"))
        elif agents:
            name, content = agents[-1]
            agents[-1] = (name, content + child.get("markdown", "") + "\n")
    return agents


def parse_compiled(text: str) -> list[dict[str, Any]]:
    """Parse PBAsm with Playbooks' parser into plain dicts (one per H1), see
    :mod:`durably_playbooks._document` for the shape."""
    return cached(
        "parse_compiled", text, playbooks_version(), lambda: _parse_compiled(text), load=list
    )


def _parse_compiled(text: str) -> list[dict[str, Any]]:
    _quiet_environment()
    from playbooks.agents.agent_builder import AgentBuilder
    from playbooks.compilation.markdown_to_ast import markdown_to_ast
    from playbooks.compilation.parse_utils import parse_metadata_and_description
    from playbooks.playbook.llm_playbook import LLMPlaybook

    agents: list[dict[str, Any]] = []
    for h1 in markdown_to_ast(text).get("children", []):
        if h1.get("type") != "h1":
            continue
        name, kind = AgentBuilder.parse_agent_header(h1.get("text", ""))
        paragraphs = [
            child.get("text", "").strip()
            for child in h1.get("children", [])
            if child.get("type") in ("paragraph", "hr") and child.get("text", "").strip()
        ]
        metadata, description = parse_metadata_and_description("\n".join(paragraphs).strip())
        playbooks: list[dict[str, Any]] = []
        python_blocks: list[str] = []
        other_blocks: list[str] = []
        for child in h1.get("children", []):
            if child.get("type") == "h2":
                pb = LLMPlaybook.from_h2(child)
                triggers = pb.triggers.triggers if pb.triggers is not None else []
                playbooks.append(
                    {
                        "name": pb.name,
                        "signature": pb.signature,
                        "description": pb.description or "",
                        "metadata": dict(pb.metadata or {}),
                        "triggers": [
                            {
                                "text": t.trigger,
                                "begin": bool(t.is_begin),
                                "instruction": t.trigger_instruction(),
                            }
                            for t in triggers
                        ],
                        "has_steps": pb.step_collection is not None,
                        "mode": str(pb.execution_mode.value),
                        "markdown": _without_public_json(pb.markdown),
                    }
                )
            elif child.get("type") == "code-block":
                language = (child.get("language") or "").strip()
                if language == "python":
                    python_blocks.append(child.get("text", ""))
                elif language != "public.json":
                    other_blocks.append(language or "(none)")
        agents.append(
            {
                "name": name,
                "kind": kind,
                "description": description,
                "metadata": dict(metadata or {}),
                "playbooks": playbooks,
                "python": python_blocks,
                "other_blocks": other_blocks,
            }
        )
    return agents


def _without_public_json(markdown: str) -> str:
    """A playbook's markdown without a trailing ```public.json block (Playbooks' compiler
    appends it to the agent's last H2; it only feeds descriptions)."""
    start = markdown.find("```public.json")
    text = markdown[:start] if start >= 0 else markdown
    return text.strip("\n")
