"""The generated-program fuzzer's programs as Playbooks programs (``.pbasm``).

The core's generator (``tests/fuzz/fuzzgen.py``, loaded from the repository, not copied)
writes a multi-agent durably program (``program.py``: agent classes with LLM playbooks and
Python tools) and the scripted LLM responses that drive it; the responses are already
written in Playbooks' interpreter contract (``self.Step``, ``Say``, ``Yield``,
``Return``, ``get_or_create``, ``ProcessMessages``). :func:`to_pbasm` derives the same
program in the Playbooks dialect from that source, mechanically (so the two cannot drift
apart):

* each agent class is an H1 (its docstring the description);
* each LLM playbook an H2 whose signature has the method's parameters (``$x = None``),
  its docstring steps under ``### Steps``, ``public=True`` as ``metadata: public: true``
  and ``begin=True`` as the trigger ``T1:BGN``;
* each Python tool a ``@playbook`` function of the agent's ```python block, without
  ``self`` (Playbooks' Python playbooks see the agent as ``self`` in their namespace),
  with the module's helpers (the tool-run log) at the top of each block.

The same scripted responses run both dialects: :func:`write` writes ``program.pbasm``,
``program.py`` and ``script.json`` side by side.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path
from typing import Any

from helpers import repository_module

#: Where a generated program's tools log their runs ("start Agent.Tool" / "end ...").
TOOL_LOG = "DURABLY_FUZZ_TOOL_LOG"


def _fuzzgen() -> Any:
    """The core's generator module, ``tests/fuzz/fuzzgen.py`` (it imports nothing of
    durably, so it runs on this package's Python too)."""
    return repository_module("fuzzgen", "tests/fuzz/fuzzgen.py")


fuzzgen = _fuzzgen()
Chooser = fuzzgen.Chooser


def generate(chooser: Any, **options: Any) -> Any:
    """The core generator's program, without a second agent that begins: this package's
    crash harness compares the order of lines and LLM calls across agents, which two
    agents running from the start leave to the scheduler (the core's harness compares
    them agent by agent); and without iterators kept across awaits (its runs keep the
    default ``on_unserializable``, which fails on them)."""
    return fuzzgen.generate(chooser, omega=False, iterators=False, **options)


def _playbook_options(node: ast.AsyncFunctionDef) -> dict[str, Any] | None:
    """The keyword options of the method's ``@playbook`` decorator (None: not a playbook)."""
    for deco in node.decorator_list:
        if isinstance(deco, ast.Name) and deco.id == "playbook":
            return {}
        if isinstance(deco, ast.Call) and getattr(deco.func, "id", None) == "playbook":
            return {kw.arg: ast.literal_eval(kw.value) for kw in deco.keywords}
    return None


def _h2(node: ast.AsyncFunctionDef, options: dict[str, Any]) -> str:
    """The PBAsm of an LLM playbook method."""
    args = node.args.args[1:]  # without self
    defaults = [None] * (len(args) - len(node.args.defaults)) + list(node.args.defaults)
    params = ", ".join(
        f"${a.arg}" + ("" if d is None else f" = {ast.unparse(d)}")
        for a, d in zip(args, defaults, strict=True)
    )
    steps = textwrap.dedent(ast.get_docstring(node, clean=False) or "").strip()
    lines = [f"## {node.name}({params})"]
    if options.get("public"):
        lines += ["metadata:", "  public: true", "---"]
    lines.append(f"Playbook {node.name} of a generated program.")
    if options.get("begin"):
        lines += ["### Triggers", "- T1:BGN At the beginning"]
    lines += ["### Steps", *(line.strip() for line in steps.splitlines())]
    return "\n".join(lines)


def _tool(node: ast.AsyncFunctionDef) -> str:
    """A Python tool method as a Playbooks ``@playbook`` function (no ``self`` parameter)."""
    node.args.args = node.args.args[1:]
    return ast.unparse(node)


def to_pbasm(source: str) -> str:
    """The Playbooks program (PBAsm) of a generated durably program's ``source``."""
    tree = ast.parse(source)
    helpers: list[str] = []
    agents: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            h2s: list[str] = []
            tools: list[str] = []
            for item in node.body:
                if not isinstance(item, ast.AsyncFunctionDef):
                    continue
                options = _playbook_options(item)
                if options is None:
                    continue
                if options.get("llm"):
                    h2s.append(_h2(item, options))
                else:
                    tools.append(_tool(item))
            block = "\n\n".join([*helpers, *tools])
            agents.append(
                "\n\n".join(
                    [
                        f"# {node.name}",
                        ast.get_docstring(node) or node.name,
                        f"```python\n{block}\n```",
                        *h2s,
                    ]
                )
            )
        elif isinstance(node, ast.ImportFrom) and node.module == "durably":
            continue
        elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            helpers.append(ast.unparse(node))  # imports, the tool-run log and its helper
    return "\n\n".join(agents) + "\n"


def write(generated: Any, directory: Path) -> tuple[Path, Path, Path]:
    """Write ``program.pbasm``, ``program.py`` and ``script.json`` of ``generated`` into
    ``directory``; return their paths (the ``.pbasm`` first)."""
    program, script = generated.write(directory)
    pbasm = Path(directory) / "program.pbasm"
    pbasm.write_text(to_pbasm(generated.source), encoding="utf-8")
    return pbasm, program, script
