"""Code objects in checkpoints: functions and classes LLM code defined, modules it imported,
and handles to agents.

The codec encodes them through :func:`encode_fallback` and decodes them through
:func:`decode_fallback`; neither runs stored code. A function or class is stored as the
source of the LLM statement that defined it (only when that statement does nothing else)
and decoded as an inert :class:`FunctionSource`; restoring a frame re-creates it with
:func:`rebind_functions`. A module is stored by name and imported again only when an
execution is restored, never when it is inspected (:class:`ModuleReference`).
"""

from __future__ import annotations

import functools
import sys
import types
from typing import Any

from durably.errors import CorruptObjectError, SerializationError

__all__ = [
    "FunctionSource",
    "ModuleReference",
    "decode_fallback",
    "encode_fallback",
    "rebind_functions",
]


class FunctionSource:
    """A function defined by LLM code, to be re-created from its source on restore."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source


def encode_fallback(value: Any) -> tuple[str, Any] | None:
    from durably.agent import Agent, AgentHandle

    if isinstance(value, AgentHandle):
        return ("durably.agent", [value.id, value.agent_class])
    if isinstance(value, types.ModuleType):
        # LLM code ran `import name`; restoring re-imports the same module by name.
        return ("durably.module", value.__name__)
    if isinstance(value, Agent):
        return ("durably.agent", [value.id, type(value).__name__])
    if isinstance(value, (types.FunctionType, type)):
        source = _defining_statement(value)
        if source is not None:
            return ("durably.function", [value.__name__, source])
    return None


def _defining_statement(value: Any) -> str | None:
    """The source of the LLM statement that defined a function or class, if that statement
    only defines it (``def``, ``class``, or ``name = lambda ...``), so re-running it on
    restore has no other effect."""
    import linecache

    if isinstance(value, types.FunctionType):
        filename = value.__code__.co_filename
    else:
        filename = getattr(value, "__durably_source__", "")
    if not filename.startswith("<llm "):
        return None
    source = "".join(linecache.getlines(filename)).lstrip("\n")
    return source if _only_defines(source) else None


@functools.lru_cache(maxsize=256)
def _only_defines(source: str) -> bool:
    """Whether the statement ``source`` only defines functions or classes (a result of
    the text alone: cached, since every snapshot of a namespace holding the function
    asks again; keyed by the text, never by the file name, which repeats across
    executions)."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    return bool(tree.body) and all(
        (
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and not node.decorator_list
        )
        or (isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda))
        for node in tree.body
    )


class ModuleReference:
    """A module that LLM code imported, named by a checkpoint but not imported here.

    Inspection shows it; it never imports anything. Restoring an execution (after the
    program's fingerprint check) imports the module instead, as the LLM code's ``import``
    statement did.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<module {self.name!r} (not imported)>"


def decode_fallback(tag: str, payload: Any, unresolved: list[str] | None = None) -> Any:
    """Decode the values :func:`encode_fallback` encodes. Never runs stored code: a
    function's source is kept as text; a module is imported only when restoring
    (``unresolved`` is None), never when inspecting."""
    from durably.agent import AgentHandle

    if tag == "durably.agent":
        return AgentHandle(payload[0], payload[1])
    if tag == "durably.function":
        return FunctionSource(payload[0], payload[1])
    if tag == "durably.module":
        if type(payload) is not str or not all(p.isidentifier() for p in payload.split(".")):
            raise CorruptObjectError(f"malformed data: bad module name {payload!r:.80}")
        module = sys.modules.get(payload)
        if module is not None:
            return module
        if unresolved is not None:
            unresolved.append(payload)
            return ModuleReference(payload)
        import importlib

        return importlib.import_module(payload)
    return None


def rebind_functions(namespace: dict[str, Any]) -> None:
    """Re-create the functions LLM code defined, from their source, in their namespace."""
    import linecache
    import textwrap

    for name, value in list(namespace.items()):
        if isinstance(value, FunctionSource):
            previous = namespace.get(value.name)
            source = textwrap.dedent(value.source)
            filename = f"<llm restored {name}>"
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            try:
                exec(compile(source, filename, "exec"), namespace)
            except Exception as exc:
                raise SerializationError(f"{name!r}", f"cannot re-create function: {exc}") from exc
            if value.name == "<lambda>":
                continue  # the statement assigned it to `name` again
            namespace[name] = namespace[value.name]
            if isinstance(namespace[name], type):
                namespace[name].__durably_source__ = filename
            if value.name != name and previous is not None:
                namespace[value.name] = previous
