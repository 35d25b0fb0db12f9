"""Shared helpers: loading a module of the repository's own tests (the end-to-end helpers of
``tests/conftest.py`` -- run ``durably`` in a new process, ``show --json`` -- and the
fuzzer's generator), under a module name of its own."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from durably_playbooks._parsecache import CACHE_ENV

HERE = Path(__file__).resolve().parent
PROGRAMS = HERE / "programs"
ROOT = HERE.parents[2]


def repository_module(name: str, path: str) -> Any:
    """The module at ``path`` of the repository (``tests/...``), loaded once as ``name``."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _e2e() -> Any:
    return repository_module("durably_e2e_conftest", "tests/conftest.py")


LOADING_TIMEOUT = 240.0
"""Seconds for a command that loads a Playbooks program (``run``, ``submit``, a worker
running one): it imports ``playbooks`` (about 20 s of CPU time; 45-110 s of wall time was
seen at load 5-8 on 2 cores). Commands that only resume import no ``playbooks``."""

_LOADING = ("run", "submit", "worker")


def durably(*args: str, timeout: float | None = None, **kwargs: Any) -> Any:
    """The end-to-end helper of ``tests/conftest.py``, with :data:`LOADING_TIMEOUT` for
    the commands that load a program (the core's 60 s for the others), unless given."""
    if timeout is None:
        timeout = LOADING_TIMEOUT if args and args[0] in _LOADING else 60.0
    # The session's parse cache (conftest.py): the core's helper drops DURABLY_* variables.
    cache = os.environ.get(CACHE_ENV)
    if cache is not None:
        kwargs["env"] = {CACHE_ENV: cache, **(kwargs.get("env") or {})}
    return _e2e().durably(*args, timeout=timeout, **kwargs)


show = _e2e().show
