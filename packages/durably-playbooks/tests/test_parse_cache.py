"""The parse cache (:mod:`durably_playbooks._parsecache`): a program parsed before loads
without importing ``playbooks``, into the same document; a damaged, foreign or stale entry
is never used; the cache can be turned off and never fails a load."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from durably_playbooks import _parsecache
from durably_playbooks._parsecache import CACHE_ENV, cached

from helpers import PROGRAMS

LOAD = """\
import json, sys
from pathlib import Path
from durably_playbooks import load_program
program = load_program(Path({path!r}))
print(json.dumps(program.header["playbooks"], sort_keys=True))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("playbooks", "litellm")))
"""


def _load_in_a_new_process(path: Path, cache: str) -> tuple[str, list[str]]:
    env = {**os.environ, CACHE_ENV: cache}
    proc = subprocess.run(
        [sys.executable, "-c", LOAD.format(path=str(path))],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    document, modules = proc.stdout.strip().splitlines()[-2:]
    return document, ast.literal_eval(modules)


def test_a_program_parsed_before_loads_without_importing_playbooks(tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    first, imported = _load_in_a_new_process(PROGRAMS / "library.pbasm", cache)
    assert "playbooks" in imported
    second, imported = _load_in_a_new_process(PROGRAMS / "library.pbasm", cache)
    assert imported == []
    assert second == first
    # Turned off, the same load parses again.
    third, imported = _load_in_a_new_process(PROGRAMS / "library.pbasm", "off")
    assert "playbooks" in imported
    assert third == first


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _counting(value: object) -> tuple[list[int], object]:
    calls: list[int] = []

    def compute() -> object:
        calls.append(1)
        return value

    return calls, compute


def test_a_hit_returns_what_was_stored_and_a_new_input_or_release_misses(cache: Path) -> None:
    calls, compute = _counting({"a": [1, "x"]})
    assert cached("f", "text", "0.7.4", compute, load=dict) == {"a": [1, "x"]}
    assert cached("f", "text", "0.7.4", compute, load=dict) == {"a": [1, "x"]}
    assert len(calls) == 1
    cached("f", "text!", "0.7.4", compute, load=dict)
    cached("f", "text", "0.7.3", compute, load=dict)
    cached("g", "text", "0.7.4", compute, load=dict)
    assert len(calls) == 4


@pytest.mark.parametrize(
    "damage",
    [
        lambda entry: "{not json",
        lambda entry: json.dumps({**entry, "value": {"a": [2, "x"]}}),  # checksum fails
        lambda entry: json.dumps({**entry, "key": "0" * 64}),  # another key's entry
        lambda entry: json.dumps([1, 2]),
        lambda entry: "",
    ],
    ids=["not-json", "value-changed", "other-key", "not-an-entry", "empty"],
)
def test_a_damaged_entry_is_ignored_and_rewritten(cache: Path, damage: object) -> None:
    calls, compute = _counting({"a": [1, "x"]})
    cached("f", "text", "0.7.4", compute, load=dict)
    (entry_file,) = cache.glob("*.json")
    entry = json.loads(entry_file.read_text())
    entry_file.write_text(damage(entry))  # type: ignore[operator]
    assert cached("f", "text", "0.7.4", compute, load=dict) == {"a": [1, "x"]}
    assert len(calls) == 2
    assert json.loads(entry_file.read_text()) == entry  # rewritten whole
    assert cached("f", "text", "0.7.4", compute, load=dict) == {"a": [1, "x"]}
    assert len(calls) == 2


def test_off_stores_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls, compute = _counting("v")
    assert cached("f", "t", "1", compute, load=str) == "v"
    assert cached("f", "t", "1", compute, load=str) == "v"
    assert len(calls) == 2
    assert list(tmp_path.rglob("*")) == []


def test_the_default_place_is_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert _parsecache.cache_dir() == Path("/somewhere/durably/playbooks")


def test_a_cache_that_cannot_be_written_never_fails_the_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocker / "cache"))  # below a file: cannot be made
    calls, compute = _counting(["v"])
    assert cached("f", "t", "1", compute, load=list) == ["v"]
    assert cached("f", "t", "1", compute, load=list) == ["v"]
    assert len(calls) == 2


def test_a_value_json_would_change_is_not_stored(cache: Path) -> None:
    calls, compute = _counting({1: "int key"})
    assert cached("f", "t", "1", compute, load=dict) == {1: "int key"}
    assert cached("f", "t", "1", compute, load=dict) == {1: "int key"}
    assert len(calls) == 2
    assert not cache.exists() or list(cache.glob("*.json")) == []


def test_an_error_is_not_stored(cache: Path) -> None:
    def fail() -> object:
        raise ValueError("cannot parse")

    with pytest.raises(ValueError, match="cannot parse"):
        cached("f", "t", "1", fail, load=dict)
    assert not cache.exists() or list(cache.glob("*.json")) == []


def test_a_hit_keeps_the_types_and_key_order_of_what_was_computed(cache: Path) -> None:
    # A dict's order reaches the program's document and its digest: cold and warm loads
    # must give the same bytes.
    value = {"zeta": 1, "alpha": {"y": True, "b": 1.5}, "mid": [None, "s"]}
    calls, compute = _counting(value)
    cold = cached("f", "t", "1", compute, load=dict)
    warm = cached("f", "t", "1", compute, load=dict)
    assert len(calls) == 1
    assert json.dumps(warm) == json.dumps(cold) == json.dumps(value)
    assert type(warm["alpha"]["y"]) is bool
    assert type(warm["alpha"]["b"]) is float


@pytest.mark.parametrize(
    "value", [{"a": (1, 2)}, [1, 2.0, True], {"k": {"x": 1}}], ids=["tuple", "mixed", "nested"]
)
def test_values_json_keeps_are_stored(cache: Path, value: object) -> None:
    calls, compute = _counting(value)
    cached("f", "t", "1", compute, load=lambda v: v)
    cached("f", "t", "1", compute, load=lambda v: v)
    assert len(calls) == 1


def test_a_file_changed_while_it_is_parsed_leaves_no_wrong_entry(
    cache: Path, tmp_path: Path
) -> None:
    from durably_playbooks import _pb

    program = tmp_path / "p.pb"
    program.write_text("# A\nfirst\n")
    real = _pb._read_program

    def edit_then_read(path: Path) -> tuple[str, bool]:
        # An editor saves between the cache's read (the key) and Playbooks' own read.
        path.write_text("# A\nsecond\n")
        return real(path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_pb, "_read_program", edit_then_read)
        text, _ = _pb.read_program(program)
    assert "second" in text  # what Playbooks read, but not stored as the text of "first"
    program.write_text("# A\nfirst\n")
    assert "first" in _pb.read_program(program)[0]
    program.write_text("# A\nsecond\n")
    assert "second" in _pb.read_program(program)[0]


def test_a_path_playbooks_would_glob_is_not_cached(cache: Path, tmp_path: Path) -> None:
    from durably_playbooks import _pb

    program = tmp_path / "p[1].pb"
    program.write_text("# A\nfirst\n")
    calls: list[Path] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_pb, "_read_program", lambda path: calls.append(path) or ("x", False))
        _pb.read_program(program)
        _pb.read_program(program)
    assert len(calls) == 2
