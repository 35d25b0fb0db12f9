"""Code-like values in checkpoints: names imported from modules, and functions LLM code
defined wherever a restored value holds them (``durably._codeobjects``)."""

from __future__ import annotations

import collections
import math
import random
import subprocess
import sys
from typing import Any

import pytest

from durably._codec import ValueCodec
from durably._codeobjects import (
    FunctionSource,
    ModuleReference,
    decode_fallback,
    encode_fallback,
    rebind_functions,
)
from durably.errors import CorruptObjectError

CODEC = ValueCodec(encode_fallback=encode_fallback, decode_fallback=decode_fallback)


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (math.sqrt, "math:sqrt"),
        (len, "builtins:len"),
        (dict, "builtins:dict"),
        (collections.Counter, "collections:Counter"),
        (random.randint, "random:randint"),  # a module-level bound method
        (collections.OrderedDict.fromkeys, None),  # a method of a class: not a module's name
        ("text".upper, None),
        (lambda: 1, None),  # defined here, not by LLM code, and no module's name
    ],
)
def test_names_imported_from_modules_are_stored_by_module_and_name(value: Any, path: Any) -> None:
    encoded = encode_fallback(value)
    assert encoded == (("durably.global", path) if path is not None else None)
    if path is not None:
        out = CODEC.decode_value(CODEC.encode_value([value, value]))
        assert out[0] is value
        assert out[1] is value


def test_inspection_never_imports_the_module_a_stored_name_names() -> None:
    script = (
        "import sys\n"
        "from durably._codeobjects import decode_fallback\n"
        "unresolved = []\n"
        "value = decode_fallback('durably.global', 'xml.sax.saxutils:escape', unresolved)\n"
        "assert 'xml.sax.saxutils' not in sys.modules, 'imported'\n"
        "print(repr(value), unresolved)\n"
        "restored = decode_fallback('durably.global', 'xml.sax.saxutils:escape')\n"
        "print(restored('<a>'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [
        "<xml.sax.saxutils.escape (not imported)> ['xml.sax.saxutils:escape']",
        "&lt;a&gt;",
    ]
    assert repr(ModuleReference("json")) == "<module 'json' (not imported)>"


@pytest.mark.parametrize("payload", [5, "math", "math:__import__", "../x:y", "os:sys;rm", "m:a..b"])
def test_a_malformed_stored_name_is_a_typed_error(payload: Any) -> None:
    with pytest.raises(CorruptObjectError):
        decode_fallback("durably.global", payload, [])


def test_functions_are_re_created_wherever_the_restored_values_hold_them() -> None:
    define = FunctionSource("helper", "def helper(a):\n    return a * factor\n")
    square = FunctionSource("<lambda>", "square = lambda x: x * x\n")
    namespace: dict[str, Any] = {
        "factor": 3,
        "helper": define,
        "alias": square,
        "handlers": {"h": define, "fns": [square, (define, square)]},
        "kept": {define},
    }
    state: dict[str, Any] = {"fn": define, "table": collections.deque([square])}
    rebind_functions(namespace, state)
    helper, alias = namespace["helper"], namespace["alias"]
    assert helper(2) == 6
    assert alias(3) == 9
    assert helper.__globals__ is namespace  # frame variables are its globals, as before
    handlers = namespace["handlers"]
    assert handlers["h"] is helper
    assert handlers["fns"][0] is alias
    assert handlers["fns"][1] == (helper, alias)
    assert namespace["kept"] == {helper}
    assert state["fn"] is helper
    assert state["table"][0] is alias
    assert "square" not in namespace  # re-creating the lambda bound no name
    namespace["factor"] = 10
    assert state["fn"](2) == 20


def test_a_function_held_only_in_the_state_is_re_created_without_binding_its_name() -> None:
    source = FunctionSource("helper", "def helper(a):\n    return a + 1\n")
    namespace: dict[str, Any] = {"helper": "a string now"}
    state: dict[str, Any] = {"fn": [source]}
    rebind_functions(namespace, state)
    assert state["fn"][0](1) == 2
    assert namespace["helper"] == "a string now"
