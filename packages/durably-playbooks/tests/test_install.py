"""What a user gets from ``pip install "durably[playbooks]"`` on Python 3.12+: a ``durably``
command that runs ``hello.pb`` end to end (the quick start of the README and of
``docs/guides/playbooks.md``), from wheels built from this repository into a fresh venv --
not the repository's editable sources this suite otherwise runs against."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from durably_playbooks import _pb

from helpers import PROGRAMS, ROOT

HELLO_INPUT = "I'm Ada and I love a good mystery."


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DURABLY_", "VIRTUAL_ENV"))}
    env["DURABLY_PLAYBOOKS_CACHE"] = "off"  # the installed playbooks parses, nothing cached
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv to build the wheels")
def test_pip_install_the_extra_then_run_hello_pb(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    for package in ("durably", "durably-filesystem", "durably-playbooks"):
        built = _run(
            "uv", "build", "--wheel", "--python", sys.executable, "--out-dir", dist,
            ROOT / "packages" / package,
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
    venv = tmp_path / "venv"
    made = _run("uv", "venv", "--python", sys.executable, venv)
    assert made.returncode == 0, made.stderr
    # The three distributions from the wheels just built, named by their files (never from
    # an index, where a package of the same name could win); the extra brings playbooks
    # (from the index or uv's cache): the release this session tests, so each bound is
    # installed.
    wheels = {
        name: next(dist.glob(f"{name.replace('-', '_')}-*.whl")).as_uri()
        for name in ("durably", "durably-filesystem", "durably-playbooks")
    }
    installed = _run(
        *("uv", "pip", "install", "--python", venv / "bin" / "python"),
        f"durably[playbooks] @ {wheels['durably']}",
        *(f"{name} @ {uri}" for name, uri in wheels.items() if name != "durably"),
        f"playbooks=={_pb.playbooks_version()}",
    )
    assert installed.returncode == 0, installed.stderr
    work = tmp_path / "work"  # not the repository: nothing of it is on the path
    work.mkdir()
    shutil.copy(PROGRAMS / "hello.pb", work / "hello.pb")
    shutil.copy(PROGRAMS / "hello.scripted.json", work / "hello.json")
    durably = venv / "bin" / "durably"
    done = _run(
        *(durably, "run", "hello.pb", "--llm", "scripted:hello.json"),
        *("--input", HELLO_INPUT, "--execution-id", "hello-1"),
        cwd=work,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), done.stderr
    assert done.stdout.splitlines()[-1] == (
        "Greeter: Ada, try The Moonstone: we have 2 mysteries and 3 science fiction books."
    )
    shown = _run(durably, "show", "hello-1", cwd=work)
    assert shown.returncode == 0, shown.stderr
    assert "completed" in shown.stdout
    # It ran the installed wheels, in the default store of the working directory.
    where = _run(
        venv / "bin" / "python",
        "-c",
        "import durably, durably_playbooks; print(durably.__file__, durably_playbooks.__file__)",
        cwd=work,
    )
    assert where.returncode == 0, where.stderr
    assert all(path.startswith(str(venv)) for path in where.stdout.split()), where.stdout
    assert (work / ".durably").is_dir()
