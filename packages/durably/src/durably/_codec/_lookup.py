"""Finding classes for the codec without ever importing: the codec's class registry.

A stored value names its class as ``"module:Qual.Name"``. Decoding resolves that name only
among modules already imported (``sys.modules``: the program file, the libraries it
imported, registered plugins) by plain dictionary lookups, which cannot trigger a lazy
import, and instantiates only the kinds :data:`KIND_CHECKS` allows.
"""

from __future__ import annotations

import enum
import functools
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any, Final

from durably._codec._format import Fail

__all__ = [
    "KIND_CHECKS",
    "class_path",
    "exception_class",
    "lookup_imported",
    "native_attributes",
    "native_init",
    "resolve_class",
]


def lookup_imported(path: str) -> Any:
    """The object named ``"module:Qual.Name"`` if ``module`` is already imported, else None.

    Only dictionary lookups (``sys.modules``, then each ``__dict__``): no import, no module
    ``__getattr__`` (which may import lazily), no descriptor, no code named by ``path``.
    """
    module, _, qualname = path.partition(":")
    obj: Any = sys.modules.get(module)
    if obj is None or not qualname:
        return None
    for part in qualname.split("."):
        namespace = getattr(obj, "__dict__", None)
        if not isinstance(namespace, Mapping):
            return None
        obj = namespace.get(part)
        if obj is None:
            return None
    return obj


def class_path(cls: type) -> str | None:
    """``"module:QualName"`` if importing ``module`` and walking ``QualName`` finds ``cls``."""
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    parts = qualname.split(".")
    if not all(p.isidentifier() and not p.startswith("__") for p in parts):
        return None  # "<locals>", generic aliases like "Model[int]", dunders: not importable
    obj: Any = sys.modules.get(module)
    if obj is None:
        return None
    for part in parts:
        obj = getattr(obj, part, None)
    return f"{module}:{qualname}" if obj is cls else None


def _kind_namedtuple(cls: type) -> bool:
    return issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)


def _kind_pydantic(cls: type) -> bool:
    pyd = sys.modules.get("pydantic")
    base = getattr(pyd, "BaseModel", None) if pyd is not None else None
    return (
        isinstance(base, type)
        and issubclass(cls, base)
        and cls is not base
        and hasattr(cls, "__setstate__")
    )


def _native(method: Any) -> bool:
    """Whether ``method`` is implemented in C (so calling it runs no Python code)."""
    return not hasattr(method, "__code__") and not hasattr(
        getattr(method, "__func__", None), "__code__"
    )


def exception_class(cls: type) -> bool:
    """Whether instances of ``cls`` can be stored: an exception class whose ``__new__`` runs
    no Python code (the decoder makes the instance with it, from the stored ``args``)."""
    return issubclass(cls, BaseException) and _native(cls.__new__)


@functools.lru_cache(maxsize=256)
def native_attributes(cls: Any) -> frozenset[str]:
    """The attributes an exception class keeps in C slots rather than in its ``__dict__``
    (``OSError.filename``, ``StopIteration.value``, ``ImportError.name``, ...): the
    codec stores and restores them beside ``args``."""
    return frozenset(
        name
        for base in cls.__mro__
        if base.__module__ == "builtins"
        for name, attribute in vars(base).items()
        if isinstance(attribute, (types.MemberDescriptorType, types.GetSetDescriptorType))
        and not name.startswith("__")
        and name != "args"
    )


def native_init(cls: type) -> bool:
    """Whether ``cls.__init__`` runs no Python code (the decoder may call it)."""
    return _native(cls.__init__)  # type: ignore[misc]


KIND_CHECKS: Final[dict[str, Callable[[type], bool]]] = {
    "exception": exception_class,
    "dataclass": lambda cls: hasattr(cls, "__dataclass_fields__"),
    "enum": lambda cls: issubclass(cls, enum.Enum),
    "flag": lambda cls: issubclass(cls, enum.Flag),
    "named tuple": _kind_namedtuple,
    "pydantic model": _kind_pydantic,
}


def resolve_class(path: Any, kind: str, *, lenient: bool) -> Any:
    """The already-imported class named ``"module:Qual.Name"``, checked to be of ``kind``.

    Args:
        path: The stored class path.
        kind: A key of :data:`KIND_CHECKS`.
        lenient: Return None for a class that is not imported (inspection), instead of
            failing.

    Raises:
        Fail: A malformed path, a class that is not imported (unless ``lenient``), or an
            object that is not a ``kind`` class.
    """
    module, _, qualname = path.partition(":")
    parts = qualname.split(".")
    if not all(p.isidentifier() for p in module.split(".")) or any(
        not p.isidentifier() or p.startswith("__") for p in parts
    ):
        raise Fail(f"refusing to resolve class path {path!r}")
    obj = lookup_imported(path)
    if obj is None:
        if lenient:
            return None
        if module not in sys.modules:
            raise Fail(
                f"class {path!r} cannot be restored: module {module!r} is not "
                "imported (durably never imports a module named by stored data; "
                "import it in the program file)"
            )
        raise Fail(
            f"class {path!r} not found: module {module!r} has no attribute path {qualname!r}"
        )
    if not isinstance(obj, type) or not KIND_CHECKS[kind](obj):
        raise Fail(f"refusing to instantiate {path!r}: it is not a {kind} class")
    return obj
