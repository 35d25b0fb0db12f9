"""Shared helpers: the end-to-end helpers of the repository's ``tests/conftest.py`` (run
``durably`` in a new process, ``show --json``), loaded under another module name."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROGRAMS = HERE / "programs"
ROOT = HERE.parents[2]


def _e2e() -> Any:
    name = "durably_e2e_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "conftest.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


durably = _e2e().durably
show = _e2e().show
