"""Fixtures of the filesystem provider's tests: store paths and child processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import durably
import durably_filesystem

TESTS = Path(__file__).resolve().parent


def _child_env() -> dict[str, str]:
    """The environment for child Pythons: they import durably and durably_filesystem
    from wherever this process found them."""
    paths = [
        str(Path(durably_filesystem.__file__).resolve().parents[1]),
        str(Path(durably.__file__).resolve().parents[1]),
    ]
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


class Driver:
    """A provider in another process (tests/proc_driver.py), driven by JSON lines."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(TESTS / "proc_driver.py"), str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        assert self.recv() == {"ready": True}

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def recv(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the driver process exited (code {self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, **command: Any) -> dict[str, Any]:
        self.send(**command)
        return self.recv()

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment variables for a child ``python`` that imports this provider."""
    return _child_env()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """The store directory (not created: the provider creates it on first write)."""
    return tmp_path / "store"


@pytest.fixture
def driver(root: Path) -> Iterator[Callable[[], Driver]]:
    """Start provider processes on ``root``; they are shut down after the test."""
    started: list[Driver] = []

    def start() -> Driver:
        started.append(Driver(root))
        return started[-1]

    yield start
    for proc in started:
        proc.close()
