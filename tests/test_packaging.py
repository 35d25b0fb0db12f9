"""What users get from `pip install`: light imports, the default store, the extras."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

HEAVY = (
    "boto3",
    "botocore",
    "aiobotocore",
    "psycopg",
    "psycopg_pool",
    "redis",
    "openai",
    "anthropic",
    "httpx",
    "httpx2",
    "rich",
    "zstandard",
    "durably_s3",
    "durably_postgres",
    "durably_redis",
)


def test_import_durably_imports_no_backend_or_llm_library() -> None:
    code = f"import sys, durably; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_opening_the_default_store_does_not_import_other_backends() -> None:
    code = (
        "import sys, durably; durably.open_store('file:///tmp/durably-light'); "
        f"print([m for m in {HEAVY[:-4]!r} if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_extras_name_the_sibling_providers() -> None:
    meta = tomllib.loads((ROOT / "packages/durably/pyproject.toml").read_text())["project"]
    assert "durably-filesystem==0.1.0" in meta["dependencies"]
    assert meta["optional-dependencies"]["s3"] == ["durably-s3==0.1.0"]
    assert meta["optional-dependencies"]["postgres"] == ["durably-postgres==0.1.0"]
    assert meta["optional-dependencies"]["redis"] == ["durably-redis==0.1.0"]


def test_the_kitchen_example_is_the_demo_itself_not_a_copy() -> None:
    bundled = ROOT / "packages/durably/src/durably/demo"
    for name in ("kitchen.py", "kitchen.scripted.json"):
        example = ROOT / "examples/kitchen" / name
        assert example.is_symlink()
        assert example.resolve() == (bundled / name).resolve()


@pytest.mark.skipif(
    subprocess.run(["uv", "--version"], capture_output=True).returncode != 0,
    reason="needs uv to build wheels",
)
def test_pip_install_durably_alone_gives_a_working_filesystem_default(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    for package in ("durably", "durably-filesystem"):
        subprocess.run(
            ["uv", "build", "--wheel", "--out-dir", str(dist), str(ROOT / "packages" / package)],
            check=True,
            capture_output=True,
        )
    venv = tmp_path / "venv"
    subprocess.run(
        ["uv", "venv", "--python", sys.executable, str(venv)], check=True, capture_output=True
    )
    python = venv / "bin" / "python"
    # Only `durably` is named; the filesystem provider comes with it. Dependencies from
    # PyPI (pluggy, zstandard) come from uv's cache or the index.
    subprocess.run(
        ["uv", "pip", "install", "--python", str(python), "--find-links", str(dist), "durably"],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "work"
    work.mkdir()
    code = (
        "import asyncio, durably\n"
        "async def main():\n"
        "    async with durably.open_store() as store:\n"
        "        await store.save_checkpoint('e1', 0, b'hello')\n"
        "        print(type(store).__module__, (await store.load_latest_checkpoint('e1')).data)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([str(python), "-c", code], cwd=work, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["durably_filesystem._provider", "b'hello'"]
    assert (work / ".durably").is_dir()
    cli = subprocess.run(
        [str(venv / "bin" / "durably"), "ls"], cwd=work, capture_output=True, text=True
    )
    assert cli.returncode == 0, cli.stderr
    assert "e1" in cli.stdout


def _minimum(requires_python: str) -> tuple[int, int]:
    assert requires_python.startswith(">="), requires_python
    major, minor = requires_python[2:].split(".")[:2]
    return int(major), int(minor)


def test_classifiers_requires_python_and_ci_agree() -> None:
    """Every distribution claims exactly the Pythons CI tests from its minimum up: the
    GitHub matrix, and the newer ones the nox `compat` sessions run on one machine."""
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    matrix_line = next(line for line in workflow.splitlines() if "python: [" in line)
    tested = [tuple(map(int, v.split("."))) for v in matrix_line.split("[")[1].split('"')[1::2]]
    noxfile = (ROOT / "noxfile.py").read_text()
    assert 'NEWER_PYTHONS = ["3.12", "3.13"]' in noxfile
    assert tested == [(3, 11), (3, 12), (3, 13)]
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        minimum = _minimum(project["requires-python"])
        claimed = sorted(
            tuple(map(int, c.rsplit(" :: ", 1)[1].split(".")))
            for c in project["classifiers"]
            if c.startswith("Programming Language :: Python :: 3.")
        )
        assert claimed == [v for v in tested if v >= minimum], pyproject


@pytest.mark.skipif(
    subprocess.run(["uv", "--version"], capture_output=True).returncode != 0,
    reason="needs uv to build wheels",
)
def test_the_conformance_kit_works_from_wheels_alone(tmp_path: Path) -> None:
    """A third-party author's set-up: durably and durably-conformance from built wheels in
    a fresh venv, a provider outside this repository (a copy of the example), and a
    failing clause explained by its text (shipped in the wheel, not read from docs/)."""
    dist = tmp_path / "dist"
    for package in ("durably", "durably-filesystem", "durably-conformance"):
        subprocess.run(
            ["uv", "build", "--wheel", "--out-dir", str(dist), str(ROOT / "packages" / package)],
            check=True,
            capture_output=True,
        )
    venv = tmp_path / "venv"
    subprocess.run(
        ["uv", "venv", "--python", sys.executable, str(venv)], check=True, capture_output=True
    )
    python = venv / "bin" / "python"
    subprocess.run(
        [
            *("uv", "pip", "install", "--python", str(python)),
            *("--find-links", str(dist), "durably-conformance"),
        ],
        check=True,
        capture_output=True,
    )
    provider = tmp_path / "provider"
    shutil.copytree(ROOT / "examples" / "memory_provider", provider)
    work = tmp_path / "work"  # not the repository: nothing of it is on the path
    work.mkdir()

    def suite() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(provider / "tests")],
            cwd=work,
            env={**os.environ, "PYTHONPATH": str(provider / "src")},
            capture_output=True,
            text=True,
        )

    passing = suite()
    assert passing.returncode == 0, passing.stdout[-3000:]
    source = provider / "src" / "durably_memory" / "__init__.py"
    text = source.read_text()
    guard = 'if mode == "create" and current is not None:'
    assert guard in text
    source.write_text(text.replace(guard, 'if mode == "create" and current is None and False:'))
    failing = suite()
    assert failing.returncode == 1, failing.stdout[-3000:]
    failed = [line for line in failing.stdout.splitlines() if line.startswith("FAILED ")]
    assert failed, failing.stdout[-3000:]
    # A create that overwrites breaks C5 and, with it, C8 (concurrent creates: one wins).
    assert {line.split("::test_")[1][:3] for line in failed} == {"c05", "c08"}, failed
    # The clause's own words, from the wheel (docs/spec/conformance.md is not there).
    assert "C5. Write mode" in failing.stdout
    assert 'With `mode="create"` (the default) a write of an existing' in failing.stdout.replace(
        "\n", " "
    ).replace("  ", " ")
