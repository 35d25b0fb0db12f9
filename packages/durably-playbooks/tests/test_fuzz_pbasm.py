"""The generated-program fuzzer's programs, run as Playbooks programs (``pbfuzz.py``).

Each seed's multi-agent program is written twice -- ``program.pbasm`` (Playbooks) and
``program.py`` (durably's native agents) -- with the same scripted responses. The
``.pbasm`` is crashed after every checkpoint of its uninterrupted run and resumed (and
most resumed runs crashed once more and resumed again), as ``test_crash_points.py`` does
for the committed programs: transcript, states, LLM calls, prompts, result, what the
user saw and the tools' completed runs must equal the uninterrupted run's, and no LLM
call is asked again from its beginning. Then the two dialects are compared: the same
responses must show the user the same lines and leave the same transcript, agent states
and result.

A fixed sample runs by default: 8 programs, each crashed at a seeded sample of 10 of its
checkpoints. A longer campaign: ``DURABLY_PB_FUZZ_PROGRAMS=200`` (programs),
``DURABLY_PB_FUZZ_CRASH_POINTS=0`` (every checkpoint), ``DURABLY_PB_FUZZ_SEED`` (another
series). A program that fails is added to ``REGRESSIONS`` by its generator choices.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pbfuzz
import pytest
from crashpoints import TOOL_LOG, Case, StoreKind, differences, resume, run
from test_crash_points import check_every_point

from durably.config import DurabilityConfig

SAMPLE_SEED = int(os.environ.get("DURABLY_PB_FUZZ_SEED", "20261205"))
SAMPLE_PROGRAMS = int(os.environ.get("DURABLY_PB_FUZZ_PROGRAMS", "8"))
#: Crash points per program (a seeded sample of its checkpoints); 0: every checkpoint (a
#: resume takes about a second, and a program has 10-200 checkpoints).
CRASH_POINTS = int(os.environ.get("DURABLY_PB_FUZZ_CRASH_POINTS", "10"))

#: Programs the fuzzer found failing: (generator seed, max_llm_calls, the checkpoints to
#: crash after). Each must pass.
REGRESSIONS: dict[str, tuple[int, int, tuple[int, ...]]] = {
    # Checkpoint 21 is the first snapshot of Gamma, created by a tool (Forward) that the
    # streaming response of Alpha.Pub2 #1 runs; none of that response was durable yet, so
    # the resume asks for it anew. The harness took "a chunk had arrived" for "durable".
    "new-agent-snapshot-mid-stream": (20261206, 8, (20, 21, 22)),
}


def user_visible(outcome: Any) -> dict[str, Any]:
    """What a dialect must not change: the lines the user saw, the transcript, the agents'
    state variables and the result."""
    return {
        "said": outcome.said,
        "transcript": outcome.data["transcript"],
        "states": {name: a["state"] for name, a in outcome.data["agents"].items()},
        "result": outcome.result,
    }


def check(
    generated: Any,
    directory: Path,
    monkeypatch: pytest.MonkeyPatch,
    seed: int = 0,
    only: tuple[int, ...] = (),
) -> None:
    """Crash the ``.pbasm`` of ``generated`` after every checkpoint, resume, compare; then
    compare it with the same program in durably's own dialect."""
    pbasm, native, script = pbfuzz.write(generated, directory)
    monkeypatch.setenv(TOOL_LOG, str(directory / "tools.log"))
    settings = DurabilityConfig(
        snapshot_every=generated.snapshot_every, keep_last=generated.keep_last, lease_ttl=0.2
    )
    inputs = tuple(generated.inputs)
    case = Case(str(pbasm), str(script), inputs)
    reference = check_every_point(
        case,
        settings,
        directory / "pbasm",
        sample=None if only or not CRASH_POINTS else CRASH_POINTS,
        seed=seed,
        only=only,
    )
    assert any(line.startswith("end ") for line in reference.tools) or not re.search(
        r"await self\.(Bump|Echo|Take|Fail|Announce|Twice)\(", str(generated.script)
    ), "the tools log their runs"
    other = run(Case(str(native), str(script), inputs), StoreKind(directory / "py"), settings)
    assert other.status == "completed", other.result
    assert user_visible(reference) == user_visible(other)
    assert other.tools == reference.tools


@pytest.mark.filterwarnings("ignore:the file store")
@pytest.mark.parametrize("number", range(SAMPLE_PROGRAMS))
def test_generated_pbasm_resumes_exactly_and_matches_the_native_dialect(
    number: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = SAMPLE_SEED + number
    check(pbfuzz.generate(pbfuzz.Chooser(seed)), tmp_path, monkeypatch, seed)


@pytest.mark.filterwarnings("ignore:the file store")
@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_regression(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed, max_llm_calls, points = REGRESSIONS[name]
    generated = pbfuzz.generate(pbfuzz.Chooser(seed), max_llm_calls=max_llm_calls)
    check(generated, tmp_path, monkeypatch, seed, points)


@pytest.mark.filterwarnings("ignore:the file store")
def test_the_harness_sees_a_tool_run_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A completed tool run that a resumed run did again (here: an extra line in its log)
    is a difference; the same resume without it is none."""
    generated = pbfuzz.generate(pbfuzz.Chooser(20261205))
    pbasm, _, script = pbfuzz.write(generated, tmp_path)
    monkeypatch.setenv(TOOL_LOG, str(tmp_path / "tools.log"))
    case = Case(str(pbasm), str(script), tuple(generated.inputs))
    stores = StoreKind(tmp_path / "store")
    settings = DurabilityConfig(lease_ttl=0.2)
    reference = run(case, stores, settings)
    ran = [line for line in reference.tools if line.startswith("end ")]
    assert ran, "the program runs a tool"
    point = reference.points[-1]
    resumed = resume(case, stores, point.store, settings)
    assert differences(reference, point, resumed) == []
    resumed.tools.append(ran[0])
    assert any(f.startswith("completed tool runs") for f in differences(reference, point, resumed))
