"""The goals of issue 19, collected across the benchmark scripts.

Each ``bench_*.py`` script calls :func:`record` where it computes a number that one of the
goals below is about. When the environment variable ``DURABLY_BENCH_GOALS`` names a file,
every record is appended to it as one JSON line; ``uvx nox -s bench`` sets it, runs every
script, then runs this module (``python benchmarks/_goals.py FILE``), which prints one table
with every goal, its measured value and whether it is met. A goal no script measured (e.g.
PostgreSQL was down) is listed as "not measured", never as met.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass

ENV = "DURABLY_BENCH_GOALS"

GOALS: dict[int, str] = {
    1: "per-await overhead ≤ 1.3× the storage primitive, every shape and state size",
    2: "fixed cost of an execution with a 100 KB state ≤ 3 ms (filesystem, PostgreSQL)",
    3: "group commit: 100 concurrent executions ≥ 8× (filesystem) / ≥ 5× (PostgreSQL) "
    "the checkpoints/s of one",
    4: "peers: overhead per step ≥ 4× lower than LangGraph, ≥ 5× lower than DBOS",
    5: "resume of 10,000 awaits in-process < 200 ms",
    6: "workers drain a queue exactly once, none lost; claim latency flat as it drains",
}
"""Issue 19's goals, by number (the issue states each in full)."""


@dataclass(frozen=True)
class Record:
    """One measurement against one goal."""

    goal: int
    case: str
    measured: str
    target: str
    met: bool
    script: str


def record(goal: int, case: str, measured: str, target: str, met: bool) -> None:
    """Append one measurement to the file named by ``DURABLY_BENCH_GOALS`` (if set).

    Args:
        goal: The goal's number in :data:`GOALS`.
        case: What was measured (store, shape, state, peer...).
        measured: The measured value as printed (e.g. ``"1.83×"``, ``"28.1 ms"``).
        target: The goal's bound as printed (e.g. ``"≤ 1.3×"``).
        met: Whether the measured median meets the bound.
    """
    if goal not in GOALS:
        raise ValueError(f"unknown goal {goal}")
    path = os.environ.get(ENV)
    if not path:
        return
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "?"
    line = json.dumps(asdict(Record(goal, case, measured, target, bool(met), script)))
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


def read(path: str) -> list[Record]:
    """The records of one run (a missing file: none)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as file:
        return [Record(**json.loads(line)) for line in file if line.strip()]


def rows(records: list[Record]) -> list[list[str]]:
    """The goals table: every goal, each measurement of it, or "not measured"."""
    out: list[list[str]] = []
    for goal, text in GOALS.items():
        mine = [r for r in records if r.goal == goal]
        if not mine:
            out.append([str(goal), text, "–", "–", "–", "not measured"])
            continue
        for r in mine:
            out.append([str(goal), r.case, r.measured, r.target, r.script, _verdict(r)])
    return out


def _verdict(r: Record) -> str:
    return "met" if r.met else "not met"


def summary(records: list[Record]) -> str:
    """One line: per goal, met (every measurement met), not met, or not measured."""
    parts = []
    for goal in GOALS:
        mine = [r for r in records if r.goal == goal]
        if not mine:
            state = "not measured"
        elif all(r.met for r in mine):
            state = "met"
        else:
            state = f"not met (met in {sum(r.met for r in mine)} of {len(mine)} cases)"
        parts.append(f"goal {goal}: {state}")
    return "; ".join(parts)


def main(argv: list[str]) -> int:
    """Print the goals table of a run: ``python benchmarks/_goals.py FILE``."""
    if len(argv) != 1:
        print("usage: python benchmarks/_goals.py FILE", file=sys.stderr)
        return 2
    import _common as c  # the table printer of every script (imports durably)

    records = read(argv[0])
    c.table(
        ["goal", "case", "measured (median)", "target", "script", "met?"],
        rows(records),
        title="## Goals of issue 19 (this run)",
    )
    print(f"\n{summary(records)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
