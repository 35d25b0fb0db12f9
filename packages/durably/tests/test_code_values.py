"""Code-like values in checkpoints: names imported from modules, and functions LLM code
defined wherever a restored value holds them (``durably._codeobjects``)."""

from __future__ import annotations

import asyncio
import collections
import json
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
    tag_definitions,
)
from durably.config import DurabilityConfig
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
    rebind_functions(namespace, list(namespace), state)
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
    # Re-created, they can be stored again (the next checkpoint after a resume).
    assert encode_fallback(helper) == ("durably.function", ["helper", define.source])
    assert encode_fallback(alias) == ("durably.function", ["<lambda>", square.source])


def test_a_function_held_only_in_the_state_is_re_created_without_binding_its_name() -> None:
    source = FunctionSource("helper", "def helper(a):\n    return a + 1\n")
    namespace: dict[str, Any] = {"helper": "a string now"}
    state: dict[str, Any] = {"fn": [source]}
    rebind_functions(namespace, list(namespace), state)
    assert state["fn"][0](1) == 2
    assert namespace["helper"] == "a string now"


CALC = '''
from durably import Agent, playbook


class Calc(Agent):
    """Calculates."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- 01:EXE calculate"""
'''


def _script(tmp_path: Any, name: str, body: str) -> str:
    says = "".join(f'await self.Say("user", "{name} {i}")\n' for i in range(6))
    code = f"def helper(a):\n    return {body}\n{says}await self.Return(helper(1))\n"
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"Calc.Main": ["```python\n" + code + "```\n"]}))
    return f"scripted:{path}"


@pytest.mark.asyncio
async def test_executions_in_one_process_keep_their_own_function_sources(tmp_path: Any) -> None:
    """Two executions that define a function at the same place of the same playbook, run
    side by side in one process (a worker's case): each one's checkpoints store its own
    definition. (The statement's source was looked up by a name both executions gave it:
    the later one's replaced the earlier one's, which then stored the other's function.)"""
    from durably import open_store
    from durably.checkpoint import CheckpointManager
    from durably.runner import Program, run_program

    (tmp_path / "calc.py").write_text(CALC)
    program = Program.load(tmp_path / "calc.py")
    config = DurabilityConfig(store=f"file://{tmp_path}/store", snapshot_every=1)
    bodies = {"a": "a + 1", "b": "a * 100"}
    said: list[str] = []
    results = await asyncio.gather(
        *(
            run_program(
                program,
                llm=_script(tmp_path, name, body),
                config=config,
                execution_id=name,
                echo=said.append,
            )
            for name, body in bodies.items()
        )
    )
    assert [r.result for r in results] == [2, 100]
    assert said != sorted(said)  # they ran side by side (or this test proves nothing)
    async with open_store(config=config) as provider:
        for name, body in bodies.items():
            manager = CheckpointManager(name, provider, config=config)
            stored = set()
            async for info in provider.iter_checkpoints(name):
                loaded = await manager.load_execution(info.seq, inert=True)
                assert loaded is not None
                for _, _, _, local_vars in loaded.snapshots.values():
                    if isinstance(local_vars.get("helper"), FunctionSource):
                        stored.add(local_vars["helper"].source)
            assert stored == {f"def helper(a):\n    return {body}"}, name


def _run_statement(source: str, namespace: dict[str, Any], filename: str) -> None:
    exec(compile(source, filename, "exec"), namespace)
    tag_definitions(namespace, filename, source)


def test_a_definition_carries_its_own_statement() -> None:
    namespace: dict[str, Any] = {"__name__": "__durably__"}
    _run_statement("def double(a):\n    return a * 2\n", namespace, "<llm 1000 Main 1>")
    _run_statement("square = lambda x: x * x\n", namespace, "<llm 1000 Main 2>")
    _run_statement("class Box:\n    size = 3\n", namespace, "<llm 1000 Main 3>")
    _run_statement("one = lambda: 1; two = lambda: 2\n", namespace, "<llm 1000 Main 4>")
    _run_statement("def made():\n    return lambda: 5\nlater = made()\n", namespace, "<llm 5>")
    # A class an earlier statement made (not only defining) is not taken for a later one's.
    _run_statement("if True:\n    class Hidden:\n        pass\n", namespace, "<llm 6>")
    _run_statement("def after():\n    return 1\n", namespace, "<llm 7>")
    assert encode_fallback(namespace["double"]) == (
        "durably.function",
        ["double", "def double(a):\n    return a * 2\n"],
    )
    assert encode_fallback(namespace["square"]) == (
        "durably.function",
        ["<lambda>", "square = lambda x: x * x"],
    )
    assert encode_fallback(namespace["Box"]) == (
        "durably.function",
        ["Box", "class Box:\n    size = 3\n"],
    )
    # Two lambdas on one line: each is stored with its own assignment.
    assert encode_fallback(namespace["one"]) == (
        "durably.function",
        ["<lambda>", "one = lambda: 1"],
    )
    assert encode_fallback(namespace["two"]) == (
        "durably.function",
        ["<lambda>", "two = lambda: 2"],
    )
    # A statement that does more than define stores nothing it made.
    assert encode_fallback(namespace["made"]) is None
    assert encode_fallback(namespace["later"]) is None
    assert encode_fallback(namespace["Hidden"]) is None
    assert encode_fallback(namespace["after"]) is not None


def test_a_stored_name_decodes_only_to_a_function_or_class() -> None:
    """A crafted store naming another object a module holds (``os.environ``) is refused:
    inspection would show it (the inspecting process's environment)."""
    for unresolved in ([], None):
        with pytest.raises(CorruptObjectError, match="not a function or class"):
            decode_fallback("durably.global", "os:environ", unresolved)


def test_only_definitions_a_restore_re_creates_the_same_are_stored() -> None:
    from durably._codeobjects import snapshot_globals

    namespace: dict[str, Any] = {"__name__": "__durably__", "factor": 3}
    _run_statement("def plain(x, k=2):\n    return x * k\n", namespace, "<llm 1>")
    _run_statement("def scaled(x, k=factor):\n    return x * k\n", namespace, "<llm 2>")
    _run_statement("class Tally:\n    n = 0\n", namespace, "<llm 3>")
    _run_statement("def marked():\n    return 1\n", namespace, "<llm 4>")
    namespace["marked"].calls = 1
    assert encode_fallback(namespace["plain"]) is not None
    assert encode_fallback(namespace["scaled"]) is None  # the default was factor's value then
    assert encode_fallback(namespace["Tally"]) is not None
    namespace["Tally"].n += 1
    assert encode_fallback(namespace["Tally"]) is None  # re-running the class would lose it
    _run_statement("class Bag:\n    items = []\n", namespace, "<llm 5>")
    assert encode_fallback(namespace["Bag"]) is None  # Bag.items.append(...) would be lost
    assert encode_fallback(namespace["marked"]) is None  # so would it its attribute
    # A snapshot holds one frame's namespace: a function of another frame is not stored.
    token = snapshot_globals.set({"other": "frame"})
    try:
        assert encode_fallback(namespace["plain"]) is None
    finally:
        snapshot_globals.reset(token)
    token = snapshot_globals.set(namespace)
    try:
        assert encode_fallback(namespace["plain"]) is not None
    finally:
        snapshot_globals.reset(token)


def test_a_re_created_definition_keeps_whitespace_lines_of_its_strings() -> None:
    source = FunctionSource("text", 'def text():\n    return """top\n    \nbottom"""\n')
    namespace: dict[str, Any] = {"text": source}
    rebind_functions(namespace, ["text"])
    assert namespace["text"]() == "top\n    \nbottom"


def test_an_older_stored_line_of_several_lambdas_is_refused_on_restore() -> None:
    from durably.errors import SerializationError

    namespace: dict[str, Any] = {
        "two": FunctionSource("<lambda>", "one = lambda: 1; two = lambda: 2")
    }
    with pytest.raises(SerializationError, match="several lambdas"):
        rebind_functions(namespace, ["two"])
