"""The core's structure, as ``docs/design/architecture.md`` describes it, kept by tests.

* The imports of the core's modules have no cycle (module-level and function-local
  imports alike; ``if TYPE_CHECKING:`` blocks are not imports at run time).
* Only the ``_journal`` package reads or writes the checkpoint documents' short keys.
* No class of the core is above 250 lines of code and no module above 600, the codec's
  parts excepted (see "sizes" below for what a line of code is).
* A new durable operation is one ``op`` of the agent's task: a toy one, added the way the
  architecture page says, is journaled once and replayed at every crash point.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from durably._execution import Execution, UserIO
from durably._resume import restore_agents
from durably.checkpoint import CheckpointManager
from durably.config import DurabilityConfig
from durably.llm import open_llm
from durably.runner import Program

from memstore import MemoryStore

SRC = Path(__file__).resolve().parents[1] / "src"
CORE = SRC / "durably"
TICKER = Path(__file__).parent / "programs/ticker.py"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in CORE.rglob("*.py")}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                inside.update(id(n) for n in ast.walk(child))
    return inside


def import_graph() -> dict[str, set[str]]:
    """Module -> the core modules it imports (at any depth of its code, at run time)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0]
                    base = f"{anchor}.{base}" if base else anchor
                # `from pkg import mod` imports the module; `from mod import name` the module
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in targets:
                if not target.startswith("durably"):
                    continue
                found = resolve(target)
                if found is not None and found != name:
                    graph[name].add(found)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_core_imports_have_no_cycle() -> None:
    graph = import_graph()
    assert "durably.checkpoint" in graph["durably._seed"]  # the walk sees imports
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_checkpoint_module_does_not_import_the_runtime() -> None:
    graph = import_graph()
    runtime = {
        "durably._runtime",
        "durably._execution",
        "durably._executor",
        "durably._llmloop",
        "durably._seed",
        "durably.agent",
    }
    assert not graph["durably.checkpoint"] & runtime


# The short keys of the checkpoint documents (see the _journal package). Other modules with
# short keys of their own: the codec's node tags, the owner records of _liveness.
_KEYS = "i|k|d|r|e|n|x|p|m|t|f|s|u|a"
_KEY_USE = re.compile(rf'\[\s*"({_KEYS})"\s*\]|\.get\(\s*"({_KEYS})"|[{{,]\s*"({_KEYS})"\s*:')
_DOCUMENT_FORMAT = "durably/_journal/"
_OWN_FORMATS = (_DOCUMENT_FORMAT, "durably/_codec/", "durably/_liveness.py")
_NOT_DOCUMENTS = {
    ("durably/timetravel.py", '"a": inputs_a'),  # the two sides of a diff
    ("durably/timetravel.py", 'result["a"]'),
}


def test_only_the_journal_module_touches_the_document_keys() -> None:
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(_OWN_FORMATS):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if _KEY_USE.search(line) and not any(
                rel == file and text in line for file, text in _NOT_DOCUMENTS
            ):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == []


def test_every_exemption_is_still_needed() -> None:
    """An exemption that matches no line any more is dropped, not kept to hide a new one."""
    for file, text in _NOT_DOCUMENTS:
        lines = (SRC / file).read_text().splitlines()
        assert any(text in line and _KEY_USE.search(line) for line in lines), (file, text)


def test_the_document_keys_have_one_home() -> None:
    """The exemption above is where the keys are: the ``_journal`` package reads and
    writes them (so the grep is not vacuous), and every exempt path exists."""
    for own in _OWN_FORMATS:
        assert (SRC / own).exists(), own
    home = [
        path.relative_to(SRC).as_posix()
        for path in sorted(CORE.rglob("*.py"))
        if path.relative_to(SRC).as_posix().startswith(_DOCUMENT_FORMAT)
        and _KEY_USE.search(path.read_text())
    ]
    assert "durably/_journal/_records.py" in home


def test_the_key_pattern_catches_a_document_read() -> None:
    assert _KEY_USE.search('seq = doc["i"]')
    assert _KEY_USE.search('delta.get("x")')
    assert _KEY_USE.search('{"i": index, "k": kind}')
    assert not _KEY_USE.search('doc["items"]')


# ------------------------------------------------------------------------- sizes
#
# What is measured is *lines of code*: every line of the file that is not blank and not
# part of a docstring. Docstrings are the string literals that stand alone as statements
# (those of modules, classes and functions, and the attribute docstrings that follow an
# assignment); comments are code here, and so is every line of a multi-line signature,
# call or literal. A class counts from its first decorator to its last line, nested
# classes and functions included. Documenting a contract heavily (as ``storage`` does)
# must not be what pushes a class over; code is.

CLASS_LIMIT = 250
MODULE_LIMIT = 600
# The codec's parts are exempt (issue 17): its encoder and decoder are hot paths kept
# whole on purpose (see docs/design/architecture.md, "Sizes").
_SIZE_EXEMPT = ("durably/_codec/",)


def code_lines(source: str) -> tuple[int, dict[str, int]]:
    """(lines of code of the module, lines of code of each class by qualified name)."""
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docstrings.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    lines = source.splitlines()

    def count(first: int, last: int) -> int:
        return sum(
            1
            for number in range(first, last + 1)
            if lines[number - 1].strip() and number not in docstrings
        )

    classes: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, ast.ClassDef):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                name = f"{prefix}{child.name}"
                classes[name] = count(first, child.end_lineno or child.lineno)
                name += "."
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}.<locals>."
            visit(child, name)

    visit(tree, "")
    return count(1, len(lines)), classes


def _measured() -> list[tuple[str, int, dict[str, int]]]:
    found = []
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if not rel.startswith(_SIZE_EXEMPT):
            found.append((rel, *code_lines(path.read_text())))
    return found


def test_no_class_of_the_core_is_above_the_limit() -> None:
    """A class above the limit does several jobs: split it along a seam (see
    docs/design/architecture.md for how the big ones were split)."""
    measured = _measured()
    assert any(classes for _rel, _module, classes in measured)  # the walk sees classes
    offenders = [
        f"{rel}: class {name} has {size} lines of code (limit {CLASS_LIMIT})"
        for rel, _module, classes in measured
        for name, size in classes.items()
        if size > CLASS_LIMIT
    ]
    assert offenders == []


def test_no_module_of_the_core_is_above_the_limit() -> None:
    measured = _measured()
    assert len(measured) > 40  # the walk sees the core
    offenders = [
        f"{rel} has {size} lines of code (limit {MODULE_LIMIT})"
        for rel, size, _classes in measured
        if size > MODULE_LIMIT
    ]
    assert offenders == []


def test_lines_of_code_count_code_and_comments_but_not_docstrings() -> None:
    source = '''"""A module docstring
over two lines."""

import os  # a comment on code


class Outer:
    """A class docstring."""

    limit: int = 3
    """An attribute docstring."""

    # a comment line counts

    @staticmethod
    def call(
        value: int,
    ) -> int:
        """A method docstring."""

        class Inner:
            pass

        return value
'''
    module, classes = code_lines(source)
    assert module == 11
    assert classes == {"Outer": 10, "Outer.call.<locals>.Inner": 2}


class Crash(BaseException):
    """Stands for the process dying right after a checkpoint became durable."""


class CrashingStore(MemoryStore):
    def __init__(self, crash_at: int | None = None) -> None:
        super().__init__()
        self.crash_at = crash_at

    async def _save(self, *args: Any, **kwargs: Any) -> Any:
        info = await super()._save(*args, **kwargs)
        if self.saves == self.crash_at:
            self.crash_at = None
            raise Crash(f"after checkpoint {self.saves}")
        return info


async def run_ticker(
    store: CrashingStore, *, resume: bool = False
) -> tuple[str, Any, list[str], dict[str, Any]]:
    manager = CheckpointManager("ticks", store, config=DurabilityConfig(snapshot_every=1))
    said: list[str] = []
    execution = Execution(
        manager,
        program=Program.load(TICKER),
        llm=open_llm(f"scripted:{TICKER.with_suffix('.scripted.json')}"),
        io=UserIO([], echo=said.append),
    )
    if resume:
        await restore_agents(manager, execution)
    status, value = await execution.run(resume=resume)
    state = dict(execution.agents["1000"].agent.state.to_dict())
    return status, value, said, state


def _ticks(said: list[str]) -> list[str]:
    return [line.split(": ", 1)[1] for line in said]


@pytest.mark.asyncio
async def test_a_toy_durable_operation_is_journaled_once_and_replayed() -> None:
    probe = CrashingStore()
    status, value, said, _ = await run_ticker(probe)
    assert status == "completed"
    assert len(set(value)) == 3  # live values differ at every call
    assert probe.saves > 4
    for k in range(1, probe.saves + 1):
        store = CrashingStore(crash_at=k)
        first = await run_ticker(store)
        assert first[0] == "failed"
        status, value, said, state = await run_ticker(store, resume=True)
        assert status == "completed", (k, value)
        said = [line.removeprefix("Ticker: ") for line in first[2] + said]
        # Every tick said once, and a tick said before the crash kept its value: the
        # operation was answered from the journal, never run again.
        assert [line.split(":")[0] for line in said] == ["tick 0", "tick 1", "tick 2"], k
        assert [str(t) for t in value] == _ticks(said), k
        assert state["ticks"] == value


def test_every_public_error_is_exported_from_the_package_root() -> None:
    """A user catches durably's errors as ``durably.X``: every exception class that
    ``durably.errors`` lists is there too (``OwnerLockLostError`` and
    ``CorruptHistoryError`` were once missing)."""
    import durably
    import durably.errors

    errors = {
        name
        for name in durably.errors.__all__
        if isinstance(getattr(durably.errors, name), type)
        and issubclass(getattr(durably.errors, name), (Exception, Warning))
    }
    assert errors - set(durably.__all__) == set()
    for name in errors:
        assert getattr(durably, name) is getattr(durably.errors, name)
