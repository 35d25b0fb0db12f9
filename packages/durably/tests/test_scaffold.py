"""``durably new-provider``: the skeleton it writes starts red, with clause messages."""

from __future__ import annotations

import ast
import os
import tomllib
from pathlib import Path

import pytest

from durably._scaffold import HINTS, provider_methods, write_skeleton
from durably.cli import main
from durably.errors import ConfigError
from durably.storage import CheckpointProvider


def test_every_abstract_provider_method_has_a_hint() -> None:
    abstract = {name for name in CheckpointProvider.__abstractmethods__ if name != "from_url"}
    assert {name for name, _ in provider_methods()} == abstract
    assert set(HINTS) == abstract
    for clauses, hint in HINTS.values():
        assert clauses.startswith("C")
        assert hint


def test_the_skeleton_files(tmp_path: Path) -> None:
    target = tmp_path / "durably-gizmo"
    written = write_skeleton("gizmo", target)
    assert sorted(p.relative_to(target).as_posix() for p in written) == [
        "README.md",
        "pyproject.toml",
        "src/durably_gizmo/__init__.py",
        "src/durably_gizmo/_provider.py",
        "src/durably_gizmo/py.typed",
        "tests/test_conformance.py",
    ]
    project = tomllib.loads((target / "pyproject.toml").read_text())
    assert project["project"]["name"] == "durably-gizmo"
    assert project["project"]["dependencies"] == ["durably>=0.1,<0.2"]
    assert any(
        dep.startswith("durably-conformance>=0.1,<0.2")
        for dep in project["project"]["optional-dependencies"]["test"]
    )
    assert project["project"]["entry-points"]["durably.providers"] == {
        "gizmo": "durably_gizmo:GizmoProvider.from_url"
    }
    assert project["tool"]["pytest"]["ini_options"]["asyncio_mode"] == "strict"
    # the provider methods, in the contract's order, each raising NotImplementedError
    tree = ast.parse((target / "src/durably_gizmo/_provider.py").read_text())
    cls = next(
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name == "GizmoProvider"
    )
    methods = [node for node in cls.body if isinstance(node, ast.AsyncFunctionDef)]
    assert [m.name for m in methods] == [name for name, _ in provider_methods()]
    for method in methods:
        raised = method.body[-1]
        assert isinstance(raised, ast.Raise)
        assert isinstance(raised.exc, ast.Call)
        assert ast.unparse(raised.exc.func) == "NotImplementedError"


def test_an_invalid_name_or_a_used_directory_is_refused(tmp_path: Path) -> None:
    for bad in ("Gizmo", "1st", "with-dash", "", "class"):
        with pytest.raises(ConfigError, match="invalid provider name"):
            write_skeleton(bad, tmp_path / "x")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an empty directory"):
        write_skeleton("gizmo", tmp_path / "used")
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path / "used")) == ["keep.txt"]


def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-provider", "gizmo", "--dir", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "src" / "durably_gizmo" / "_provider.py").is_file()
    assert "tests/test_conformance.py" in capsys.readouterr().out
    assert main(["new-provider", "Bad-Name", "--dir", str(tmp_path / "other")]) == 2
    assert "invalid provider name" in capsys.readouterr().err
