"""Prompts render values the same in every process.

A resumed run must send the prompts the uninterrupted run sent, and it runs in another
process: one with another string hash seed, so another iteration order of every set of
strings. Values JSON cannot hold (a dict with tuple keys) were rendered with ``repr``,
whose order of a set's items is that iteration order: the prompt after a resume differed
from the original's (a later call made after a crash) or the resume failed on a
journaled call whose prompt digest no longer matched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from durably._prompts import render, stable_repr

VALUES = """{
    "tags": {"red", "green", "blue", "cyan", "pink", "teal", "gold", "plum"},
    "frozen": frozenset({"alpha", "beta", "gamma", "delta", "epsilon"}),
    "pairs": {(1, 2): "pair", 5: "int", None: "none"},
    "nested": [{"k": ({"x", "y", "z", "w"},)}],
}"""


def _render_in_process(seed: int) -> tuple[str, str]:
    code = (
        "import json, sys\n"
        "from durably._prompts import render\n"
        f"value = {VALUES}\n"
        "json_part = {'tags': value['tags'], 'frozen': value['frozen']}\n"
        "print(json.dumps([render(value), render(json_part)]))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    whole, json_part = json.loads(done.stdout)
    return whole, json_part


def test_a_value_renders_the_same_under_every_hash_seed() -> None:
    renders = {_render_in_process(seed) for seed in (1, 2, 3, 4, 5)}
    assert len(renders) == 1, renders
    whole, json_part = renders.pop()
    # the tuple key makes it Python's notation, with every set's items sorted
    assert "'tags': {'blue', 'cyan', 'gold', 'green', 'pink', 'plum', 'red', 'teal'}" in whole
    assert "'frozen': frozenset({'alpha', 'beta', 'delta', 'epsilon', 'gamma'})" in whole
    assert "(1, 2): 'pair'" in whole
    assert "[{'k': ({'w', 'x', 'y', 'z'},)}]" in whole
    # JSON where JSON can hold it, as before
    assert json_part.startswith('{"tags": ["\\"blue\\"", "\\"cyan\\""')


def test_stable_repr_is_repr_where_no_set_is_involved() -> None:
    cyclic_list: list[object] = [1]
    cyclic_list.append(cyclic_list)
    cyclic_dict: dict[str, object] = {}
    cyclic_dict["self"] = cyclic_dict
    cyclic_tuple = (1, [2])
    cyclic_tuple[1].append(cyclic_tuple)
    values: list[object] = [
        {(1, 2): "x", 5: "y", None: "z", 1.5: b"\x00"},
        (1,),
        (),
        [],
        {},
        set(),
        frozenset(),
        [1, (2, [3.25, "q'uote"]), {"k": (None, True)}],
        cyclic_list,
        cyclic_dict,
        cyclic_tuple,
        range(3),
    ]
    for value in values:
        assert stable_repr(value) == repr(value), value


def test_stable_repr_sorts_the_items_of_sets_and_hides_addresses() -> None:
    class Thing:
        pass

    assert stable_repr({3, 1, 2}) == "{1, 2, 3}"
    assert stable_repr(frozenset({"b", "a"})) == "frozenset({'a', 'b'})"
    assert stable_repr({"k": {("b", 1), ("a", 2)}}) == "{'k': {('a', 2), ('b', 1)}}"
    assert " at 0x" not in stable_repr([Thing()])
    assert " at 0x" not in render({(1,): Thing()})


def test_render_falls_back_to_stable_repr_for_keys_json_cannot_hold() -> None:
    assert render({(1, 2): {"b", "a"}}) == "{(1, 2): {'a', 'b'}}"
    assert render({"a": [1, 2]}) == '{"a": [1, 2]}'
