"""Regression tests: programs of the shapes that once resumed silently wrong.

``programs/assembly.py``: a public tool that runs LLM playbooks of its own agent while it
serves a request. Issue 12's three classes, in one two-agent program (``programs/relay.py``):
a public LLM playbook of another agent called mid-response, whose work (a tool in
``while True: try ... except ValueError: break``, a ``Yield("call")``) the crash
interrupts; a message answered from ``ProcessMessages`` while the sender waits in
``Yield("agent ...")``; and the begin playbook's ``Return`` value, when the crash comes
right after it. Checked at every checkpoint, in streams, during a resume and at every
fork point, with snapshots after every statement and with the default cadence, with and
without retention pruning. ``programs/values.py``: LLM code that keeps values of many
kinds across awaits (names imported from modules, patterns, exceptions, functions it
defined held in containers and in the state), which a resume once failed on or lost.
``programs/gather.py``: LLM code that awaits an agent's operations concurrently
(``asyncio.gather``, ``create_task``), which a resume once answered in
another order (a public tool run twice, a wrong result); now refused in every run alike.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from fuzzgen import Generated
from fuzzharness import Case, Checker

PROGRAMS = Path(__file__).parent / "programs"


def program(name: str, snapshot_every: int, keep_last: int) -> Generated:
    return Generated(
        source=(PROGRAMS / f"{name}.py").read_text(encoding="utf-8"),
        script=json.loads((PROGRAMS / f"{name}.scripted.json").read_text(encoding="utf-8")),
        inputs=["the ledger is right"] if name == "values" else [],
        shapes=Counter(),
        choices=[],
        snapshot_every=snapshot_every,
        keep_last=keep_last,
        exits=False,
        agents=2,
    )


RESULTS = {
    "relay": {
        "topic": "tides",
        "found": ["shelf 1", "shelf 2", "shelf 3"],
        "summary": "shelf 1 is about the moon and the tides",
    },
    "assembly": 304,
    "values": [
        [2, 5, 8],
        "bad word x",
        1,
        2.0,
        9,
        10,
        "[Errno 2] No such file or directory: '/nonexistent/values'",
    ],
    "gather": {"r1": "ConcurrentAwaitError", "r2": [13, 21], "r3": 32},
}


@pytest.mark.parametrize("name", list(RESULTS))
@pytest.mark.parametrize(("snapshot_every", "keep_last"), [(1, 0), (16, 0), (4, 3)])
def test_cross_agent_program_resumes_exactly_at_every_point(
    name: str,
    snapshot_every: int,
    keep_last: int,
    tmp_path: Path,
) -> None:
    case = Case.create(program(name, snapshot_every, keep_last), tmp_path)
    checker = Checker(case, stream_crashes=10, double_crashes=10, real_crash_points=5)
    report = asyncio.run(checker.check(stop_at_first=False))
    assert report.crash_points > 15
    assert [str(f) for f in report.failures] == []
    base = checker.baseline
    assert base is not None
    assert base.view is not None
    assert base.view["result"] == RESULTS[name]
