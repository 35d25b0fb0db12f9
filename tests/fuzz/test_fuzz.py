"""The fuzzer's fixed-seed sample: generated multi-agent programs, every one crashed at a
seeded sample of its checkpoints, in its LLM streams and during a resume, and forked at
a sample of its LLM calls; each resumed run must equal the uninterrupted one.

A long campaign checks every crash point: ``uvx nox -s fuzz -- --programs 2000 --seed 1``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from fuzzgen import SHAPES, Chooser, generate
from fuzzharness import Case, Checker, regression_test, shrink

SAMPLE_SEED = 20261204
SAMPLE_PROGRAMS = 100
CRASH_POINTS = 8
FORKS = 3


def check(number: int, directory: Path) -> None:
    generated = generate(Chooser(SAMPLE_SEED + number))
    case = Case.create(generated, directory)
    checker = Checker(case, max_crash_points=CRASH_POINTS, forks=FORKS, seed=SAMPLE_SEED + number)
    report = asyncio.run(checker.check())
    assert report.crash_points >= min(CRASH_POINTS, 1)
    if report.failures:
        small = shrink(generated, directory / "shrink", budget=30)
        pytest.fail(
            f"program seed {SAMPLE_SEED + number}: {report.failures[0]}\n"
            f"smallest failing program found (paste as a regression test):"
            f"{regression_test(small, report.failures[0])}",
            pytrace=False,
        )


@pytest.mark.parametrize("number", range(SAMPLE_PROGRAMS))
def test_resumed_run_equals_uninterrupted_run(number: int, tmp_path: Path) -> None:
    check(number, tmp_path)


def test_the_sample_covers_every_shape(capsys: pytest.CaptureFixture[str]) -> None:
    tally: Counter[str] = Counter()
    for number in range(SAMPLE_PROGRAMS):
        tally.update(set(generate(Chooser(SAMPLE_SEED + number)).shapes))
    with capsys.disabled():
        print(
            "\nfuzz sample, programs per shape: "
            + ", ".join(f"{shape} {tally[shape]}" for shape in SHAPES)
        )
    assert [shape for shape in SHAPES if not tally[shape]] == []


def test_generation_is_deterministic_and_replayable() -> None:
    first = generate(Chooser(7))
    again = generate(Chooser(7))
    replayed = generate(Chooser(prefix=first.choices))
    assert (first.source, first.script, first.inputs) == (again.source, again.script, again.inputs)
    assert (replayed.script, replayed.inputs) == (first.script, first.inputs)
    # Choice 0 everywhere is the simplest program: one agent, one response.
    simplest = generate(Chooser())
    assert simplest.agents == 1
    assert list(simplest.script) == ["Alpha.Main"]
