"""Code objects in checkpoints: functions and classes LLM code defined, modules it imported,
and handles to agents.

The codec encodes them through :func:`encode_fallback` and decodes them through
:func:`decode_fallback`; neither runs stored code. A function or class is stored as the
source of the LLM statement that defined it (only when that statement does nothing else)
and decoded as an inert :class:`FunctionSource`; restoring a frame re-creates it with
:func:`rebind_functions`. A module is stored by name, and a function or class that a
module defines (``from math import sqrt``, ``key=len``) by ``"module:QualName"``; both are
imported again only when an execution is restored, never when it is inspected
(:class:`ModuleReference`).
"""

from __future__ import annotations

import functools
import sys
import types
from collections import deque
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from durably._codec._lookup import lookup_imported
from durably.errors import CorruptObjectError, SerializationError

__all__ = [
    "FunctionSource",
    "ModuleReference",
    "decode_fallback",
    "encode_fallback",
    "rebind_functions",
    "tag_definitions",
]


class FunctionSource:
    """A function defined by LLM code, to be re-created from its source on restore."""

    decoded = 0
    """How many this process decoded (none: restoring has nothing to re-create)."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        FunctionSource.decoded += 1

    def __repr__(self) -> str:
        return f"<function {self.name} (defined by LLM code)>"


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
    if isinstance(value, _GLOBAL_TYPES):
        path = _global_path(value)
        if path is not None:
            # LLM code ran `from module import name` (or used a builtin as a value).
            return ("durably.global", path)
    return None


_GLOBAL_TYPES = (types.FunctionType, types.BuiltinFunctionType, types.MethodType, type)
"""What a ``durably.global`` may name."""


def _global_path(value: Any) -> str | None:
    """``"module:QualName"`` under which an imported module holds ``value`` itself (by its
    qualified name, or by its plain name for a module-level alias such as
    ``random.randint``), or None."""
    module = getattr(value, "__module__", None)
    if not isinstance(module, str) or module == "__main__" or module not in sys.modules:
        return None
    for name in (getattr(value, "__qualname__", None), getattr(value, "__name__", None)):
        path = f"{module}:{name}"
        if isinstance(name, str) and _valid_path(path) and lookup_imported(path) is value:
            return path
    return None


def _valid_path(path: Any) -> bool:
    module, _, qualname = path.partition(":") if type(path) is str else ("", "", "")
    return all(p.isidentifier() for p in module.split(".")) and all(
        p.isidentifier() and not p.startswith("__") for p in qualname.split(".")
    )


snapshot_globals: ContextVar[dict[str, Any] | None] = ContextVar("snapshot_globals", default=None)
"""While a snapshot is encoded: the namespace of the frame it holds (an empty dict when it
holds none). A function is stored only if that namespace is its globals, the namespace a
restore re-creates it in; one a nested or finished frame defined is not."""


def _defining_statement(value: Any) -> str | None:
    """The source of the LLM statement that defined a function or class, if that statement
    only defines it (``def``, ``class``, or ``name = lambda ...``), so re-running it on
    restore has no other effect: what :func:`tag_definitions` put on it. None if re-running
    it would not give the same object: other globals than the snapshot's frame, attributes
    set on the function, a class whose attributes changed since."""
    own = vars(value)
    source = own.get("__durably_source__")
    if type(source) is not str:
        return None
    namespace = snapshot_globals.get()
    if isinstance(value, types.FunctionType):
        if set(own) != {"__durably_source__"}:
            return None  # f.attribute = ...: re-creating it would lose it
        functions = [value]
    else:
        if own.get("__durably_vars__") != _class_vars(value):
            return None  # Class.attribute changed (or was added) since it was defined
        if not all(_fixed(v) for k, v in own.items() if not (k[:2] == "__" == k[-2:])):
            return None  # a list in the class body may have changed in place
        functions = [v for v in own.values() if isinstance(v, types.FunctionType)]
    if namespace is not None and any(f.__globals__ is not namespace for f in functions):
        return None
    return source


def _fixed(value: Any) -> bool:
    """Whether a class attribute is one re-running the class gives again as it is now: a
    method, or an immutable value (never a container that may have changed in place)."""
    if isinstance(value, (types.FunctionType, str, int, float, bool, bytes, type(None))):
        return True
    if isinstance(value, (staticmethod, classmethod)):
        return isinstance(value.__func__, types.FunctionType)
    if isinstance(value, (tuple, frozenset)):
        return all(_fixed(item) for item in value)
    return False


def _class_vars(cls: type) -> dict[str, int]:
    """What a class holds, by identity (``id``: the class keeps each object alive)."""
    return {k: id(v) for k, v in vars(cls).items() if not k.startswith("__durably_")}


def tag_definitions(namespace: dict[str, Any], filename: str, source: str) -> None:
    """Put its own source on each function and class that the LLM statement ``source``
    (run as ``filename``) just bound to a name, if the statement only defines them
    (``def``, ``class``, ``name = lambda ...``), so a checkpoint can store them.

    Only the names the statement binds are looked at: a class another statement made (in
    an ``if`` block, say) is never taken for this one's. The source is kept on the object
    itself, never looked up by ``filename``: file names repeat across executions (two
    executions running in one process may run different code as the same statement of
    the same playbook).
    """
    for name, own in _definitions(source.lstrip("\n")):
        value = namespace.get(name)
        if isinstance(value, types.FunctionType):
            if value.__code__.co_filename == filename:
                value.__durably_source__ = own  # type: ignore[attr-defined]
        elif isinstance(value, type) and value.__module__ == "__durably__":
            value.__durably_source__ = own  # type: ignore[attr-defined]
            value.__durably_vars__ = _class_vars(value)  # type: ignore[attr-defined]


def _constant_defaults(node: Any) -> bool:
    """Whether a definition's default values are constants: re-running it gives the same
    ones (``def f(x, k=factor)`` would take ``factor`` as it is then)."""
    import ast

    arguments = getattr(node, "args", None)
    if not isinstance(arguments, ast.arguments):
        return True  # a class: its body is checked by what it holds (_class_vars)
    defaults = [*arguments.defaults, *(d for d in arguments.kw_defaults if d is not None)]
    return all(isinstance(d, ast.Constant) for d in defaults)


@functools.lru_cache(maxsize=256)
def _definitions(source: str) -> tuple[tuple[str, str], ...]:
    """``(name, source to re-create it from)`` for each name the statement ``source``
    binds, if it only defines functions or classes (none otherwise): the whole statement
    for a ``def`` or ``class``, its own assignment for a ``name = lambda ...``. A result
    of the text alone, so cached (keyed by the text, never by a file name, which repeats
    across executions)."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ()
    found: list[tuple[str, str]] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.decorator_list or not _constant_defaults(node):
                return ()
            found.append((node.name, source))
        elif (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Lambda)
            and _constant_defaults(node.value)
        ):
            own = ast.get_source_segment(source, node) or source
            found.extend((t.id, own) for t in node.targets if isinstance(t, ast.Name))
        else:
            return ()
    return tuple(found)


class ModuleReference:
    """A module that LLM code imported (or a function or class of one, ``name`` then being
    ``"module:QualName"``), named by a checkpoint but not imported here.

    Inspection shows it; it never imports anything. Restoring an execution (after the
    program's fingerprint check) imports the module instead, as the LLM code's ``import``
    statement did.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        if ":" in self.name:
            return f"<{self.name.replace(':', '.')} (not imported)>"
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
    if tag == "durably.global":
        if not _valid_path(payload) or ":" not in payload:
            raise CorruptObjectError(f"malformed data: bad global name {payload!r:.80}")
        value = lookup_imported(payload)
        if value is None and unresolved is not None:
            unresolved.append(payload)
            return ModuleReference(payload)
        if value is None:
            value = _import_global(payload)
        if not isinstance(value, _GLOBAL_TYPES):
            # Only what the encoder stores this way: never another object a module holds
            # (os.environ, shown by inspection, would print the inspecting process's).
            raise CorruptObjectError(f"malformed data: {payload!r:.80} is not a function or class")
        return value
    return None


def _import_global(path: str) -> Any:
    """Restoring only: import the module and take the name, as ``from module import name``."""
    import importlib

    module, _, qualname = path.partition(":")
    value: Any = importlib.import_module(module)
    for part in qualname.split("."):
        value = getattr(value, part)
    return value


def rebind_functions(namespace: dict[str, Any], restored: Iterable[str], *others: Any) -> None:
    """Re-create the functions and classes LLM code defined, from their source, with
    ``namespace`` (the frame's) as their globals, wherever a restored value holds one:
    a ``restored`` name of the frame, an item of a list or dict, the agent's state
    (``others``). Nothing else of the namespace is walked (``self`` leads to the runtime).

    Each stored definition is re-created once, so two places that held the same function
    hold the same function again (``handlers["double"] is double``). Re-running a definition binds
    nothing else: the names its statement defines keep their restored values.
    """
    if FunctionSource.decoded == 0:
        return  # nothing in this process ever decoded one: skip the walks
    made: dict[int, Any] = {}

    def make(source: FunctionSource) -> Any:
        function = made.get(id(source))
        if function is None:
            function = made[id(source)] = _recreate(source, namespace)
        return function

    seen: dict[int, Any] = {}
    for name in restored:
        value = namespace.get(name)
        if isinstance(value, FunctionSource):
            namespace[name] = make(value)
        else:
            replaced = _swap(value, make, seen)
            if replaced is not value:
                namespace[name] = replaced
    for other in others:
        _swap(other, make, seen)


def _recreate(value: FunctionSource, namespace: dict[str, Any]) -> Any:
    import ast
    import linecache

    source = value.source  # a top-level statement: never indented (no dedent, which
    # would also blank whitespace-only lines inside its string literals)
    filename = f"<llm restored {value.name}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    try:
        tree = ast.parse(source, filename)
        if value.name == "<lambda>":
            lambdas = [n.value for n in tree.body if isinstance(n, ast.Assign)]
            if len(lambdas) != 1:  # stored by an older release with its whole line
                raise ValueError("the stored statement holds several lambdas")
            expression = ast.Expression(body=lambdas[0])
            function = eval(compile(expression, filename, "eval"), namespace)
            function.__durably_source__ = source
            return function
        defined = [
            n.name
            for n in tree.body
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        ]
        before = {name: namespace.get(name, _MISSING) for name in defined}
        exec(compile(tree, filename, "exec"), namespace)
        function = namespace[value.name]
        for name, previous in before.items():
            if previous is _MISSING:
                namespace.pop(name, None)
            else:
                namespace[name] = previous
    except Exception as exc:
        raise SerializationError(f"{value.name!r}", f"cannot re-create function: {exc}") from exc
    function.__durably_source__ = source
    if isinstance(function, type):
        function.__durably_vars__ = _class_vars(function)  # type: ignore[attr-defined]
    return function


_MISSING = object()
_ATOMS = (str, int, float, bool, bytes, type(None))


def _swap(value: Any, make: Callable[[FunctionSource], Any], seen: dict[int, Any]) -> Any:
    """``value`` with every :class:`FunctionSource` inside it replaced by ``make``'s
    function: lists, dicts, deques, sets and objects' attributes in place, tuples and
    frozensets rebuilt (returned)."""
    if isinstance(value, FunctionSource):
        return make(value)
    if isinstance(value, (_ATOMS, types.ModuleType | type)):
        return value
    key = id(value)
    if key in seen:
        return seen[key]
    seen[key] = value
    if isinstance(value, (list, deque)):
        for i, item in enumerate(value):
            new = _swap(item, make, seen)
            if new is not item:
                value[i] = new
    elif isinstance(value, dict):
        items = [(_swap(k, make, seen), _swap(v, make, seen)) for k, v in value.items()]
        if any(k is not old for (k, _), old in zip(items, value, strict=True)):
            value.clear()  # a function as a key: the dict again, in its order
            value.update(items)
        else:
            for (k, new), old in zip(items, value.values(), strict=True):
                if new is not old:
                    value[k] = new
    elif isinstance(value, (tuple, set, frozenset)):
        items = [_swap(item, make, seen) for item in value]
        if any(new is not old for new, old in zip(items, value, strict=True)):
            if isinstance(value, set):
                value.clear()
                value.update(items)
            else:
                fields = getattr(type(value), "_fields", None)
                rebuilt = type(value)(*items) if fields is not None else type(value)(items)
                seen[key] = rebuilt
                return rebuilt
    else:
        attributes = getattr(value, "__dict__", None)
        if type(attributes) is dict:
            _swap(attributes, make, seen)
    return value
