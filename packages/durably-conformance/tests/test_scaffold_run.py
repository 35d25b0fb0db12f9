"""``durably new-provider``'s skeleton, run through the conformance suite: it starts red
with clause messages (here, where ``durably-conformance`` is installed; the skeleton's
files themselves are tested in ``packages/durably/tests/test_scaffold.py``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from durably._scaffold import write_skeleton


def test_the_generated_conformance_run_starts_red_with_clause_messages(tmp_path: Path) -> None:
    target = tmp_path / "durably-gizmo"
    write_skeleton("gizmo", target)
    env = {**os.environ, "PYTHONPATH": str(target / "src")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "c01 or c15 or c17",
            "-rf",
        ],
        cwd=target,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out  # 1: tests failed (2 would be a collection error)
    summary = out.strip().splitlines()[-1]
    assert re.search(r"\b\d+ failed\b", summary), out
    assert "error" not in summary, out
    assert "durably conformance clause C1" in out
    assert "C1. Load returns what was saved" in out
    assert "GizmoProvider._save is not written yet" in out
    assert "conformance clauses C1, C2, C5" in out
