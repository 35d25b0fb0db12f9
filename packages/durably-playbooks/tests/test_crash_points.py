"""Crash after every checkpoint k of each program, independently, and resume: the result
must equal the uninterrupted run's (see ``crashpoints.py`` for how, in one process).

Three durability settings, as the core's ``test_resume_points.py``: a snapshot after
every statement that awaited, the default (every 16), and frequent snapshots with
retention pruning all but what resume needs. A crash of a resumed run (a second crash)
is checked at one point of each resume. ``test_run_resume.py`` does the same with real
processes and SIGKILL (a chain of kills through the ``durably`` command).
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Collection
from pathlib import Path

import pytest
from crashpoints import (
    COMPARED,
    Case,
    Outcome,
    Point,
    PostgresStores,
    StoreKind,
    differences,
    postgres_url,
    resume,
    run,
    write_script,
)

from durably.config import DurabilityConfig

CASES = {
    # one agent, BGN asks the user; a .pb compiled by a scripted call; a @playbook in a loop
    "hello": Case("hello.pb", "hello.scripted.json", ("I'm Ada and I love a good mystery.",)),
    # two agents, a public playbook across agents, a @playbook in a while loop
    "library": Case("library.pbasm", "library.scripted.json", ("Bees",)),
    # A -> B -> C nested LLM playbooks, Yield("user") in C, a Yield("call") in B between
    # its calls of C, return values used by the outer statements, a sync @playbook
    "trip": Case("trip.pbasm", "trip.scripted.json", ("  Lighthouse ", "three of us")),
    # Yield("call") continuations: an else branch with awaits after a continuation, a
    # Yield("call") inside an if branch (the rest of the response is not run)
    "cake": Case("cake.pbasm", "cake.scripted.json", ("Lemon please, for 24 guests",)),
    # messages between agents (Say to an agent, Yield("agent X")), ProcessMessages whose
    # LLM code picks the trigger (LogTrigger) and runs the matching playbook, a
    # Yield("call") in ProcessMessages, an LLM playbook calling a Python one
    "quiz": Case("quiz.pbasm", "quiz.scripted.json", ("I think it is Mars",)),
}

# (snapshot_every, keep_last)
CONFIGS = {"every-1": (1, 0), "default": (16, 0), "pruned": (4, 2)}


def config(name: str) -> DurabilityConfig:
    every, keep = CONFIGS[name]
    # A short lease: the copy of a store holds the lease of this (live) process.
    return DurabilityConfig(snapshot_every=every, keep_last=keep, lease_ttl=0.2)


class SecondCrash:
    """Copies the store of a resumed run at its ``j``-th checkpoint (its first is the
    takeover's): a crash of the resumed process there."""

    def __init__(self, stores: StoreKind, point: Point) -> None:
        self.stores, self.point = stores, point
        self.j = 2 + point.k % 3
        self.written = 0
        self.copy: Point | None = None

    def __call__(self, recorder: object) -> None:
        self.written += 1
        if self.written == self.j:
            name = f"{self.point.store}-then-{self.j}"
            self.stores.copy(self.point.store, name)
            self.copy = Point(self.j, name, 0, 0, False)


def check_every_point(
    case: Case,
    settings: DurabilityConfig,
    base: Path,
    *,
    stores: StoreKind | None = None,
    sample: int | None = None,
    seed: int = 0,
    only: Collection[int] = (),
) -> Outcome:
    """Resume after each checkpoint of the uninterrupted run (or after ``sample`` of them,
    drawn with ``seed``, or after the checkpoints numbered ``only``); crash each resumed
    run once more (at its 2nd, 3rd or 4th checkpoint) and resume that too."""
    stores = stores or StoreKind(base)
    reference = run(case, stores, settings)
    assert reference.status == "completed"
    assert reference.data["status"] == "completed"
    # Every checkpoint but the completion record (written after the final snapshots; seqs
    # count from 0, and pruning leaves fewer checkpoints stored than were written).
    assert len(reference.points) == int(reference.data["latest_seq"])
    failures: dict[int, list[str]] = {}
    seconds: list[tuple[Point, Point]] = []
    points = reference.points
    if sample is not None and sample < len(points):
        points = sorted(random.Random(seed).sample(points, sample), key=lambda p: p.k)
    if only:
        points = [p for p in points if p.k in only]
    for point in points:
        second = SecondCrash(stores, point)
        resumed = resume(case, stores, point.store, settings, record=second)
        found = differences(reference, point, resumed)
        if found:
            failures[point.k] = found
        if second.copy is not None:
            seconds.append((point, second.copy))
    # Resumed last: a copy holds the lease of this live process until it expires
    # (lease_ttl after the copy was taken), and a resume waits for that.
    for point, twice in seconds:
        final = resume(case, stores, twice.store, settings)
        where = f"after a second crash at its checkpoint {twice.k}"
        if final.status != "completed":
            failures.setdefault(point.k, []).append(f"{where}: {final.status}")
        for key in COMPARED:
            if final.data[key] != reference.data[key]:
                failures.setdefault(point.k, []).append(f"{where}: {key} differs")
    assert not failures, failures
    # Most resumed runs were crashed a second time.
    assert len(seconds) >= len(points) // 2, len(seconds)
    return reference


@pytest.mark.filterwarnings("ignore:the file store")
@pytest.mark.parametrize(
    "setting",
    # A snapshot after every operation crosses the Playbooks layer at every point; the
    # other settings vary only durably's cadence and retention (any_release).
    [s if s == "every-1" else pytest.param(s, marks=pytest.mark.any_release) for s in CONFIGS],
)
@pytest.mark.parametrize("name", list(CASES))
def test_crash_after_every_checkpoint_resumes_exactly(
    name: str, setting: str, tmp_path: Path
) -> None:
    reference = check_every_point(CASES[name], config(setting), tmp_path)
    assert len(reference.points) >= 8
    # Some of the checkpoints are written while an LLM response streams in (the points
    # DURABLY_CRASH_IN_LLM_CALL aims at), some between calls.
    assert any(p.streaming for p in reference.points)
    assert any(not p.streaming for p in reference.points)


@pytest.mark.filterwarnings("ignore:the file store")
def test_the_harness_sees_a_resume_that_differs(tmp_path: Path) -> None:
    """The comparison fails when the resumed run does something else: the same program
    resumed with an LLM whose responses say other words after the crash point."""
    case = CASES["library"]
    settings = config("default")
    stores = StoreKind(tmp_path)
    reference = run(case, stores, settings)
    script = write_script(
        case, tmp_path / "other.json", lambda r: r.replace("recommends", "suggests")
    )
    # A point before the last response of Librarian.Main started.
    point = next(p for p in reference.points if p.calls == 1)
    resumed = resume(case, stores, point.store, settings, script=script)
    found = differences(reference, point, resumed)
    assert "show: transcript differs" in found
    assert any(item.startswith("the user saw") for item in found)


@pytest.mark.any_release
@pytest.mark.parametrize("name", ["library"])
def test_crash_after_every_checkpoint_on_postgresql(name: str) -> None:
    """The same, on the PostgreSQL store: a fresh schema per store copy, dropped after."""
    stores = PostgresStores(postgres_url(), f"durably_pb_{secrets.token_hex(4)}")
    try:
        reference = check_every_point(CASES[name], config("default"), Path(), stores=stores)
    finally:
        stores.close()
    assert len(reference.points) >= 8
