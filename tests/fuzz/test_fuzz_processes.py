"""A sample of generated programs through the real `durably` command: SIGKILL after a
checkpoint, `durably resume` in a new process, on every backend (filesystem, S3 on a moto
server, PostgreSQL, Redis). The in-process fuzzer (test_fuzz.py) covers many more programs
and every crash point; this checks that nothing it relies on differs in real processes
against real stores.

Agents run concurrently in real processes, so checkpoints of two agents may interleave in
another order from run to run: each agent's transcript and LLM calls are compared in
order, per agent.
"""

from __future__ import annotations

import json
import random
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from conftest import durably, show
from fuzzgen import Chooser, Generated, generate

SEED = 4242
PROGRAMS = 2
CRASH_POINTS = 3


def sample_programs() -> list[Generated]:
    """The first programs of the seed with two or three agents (small ones: processes are
    slow to start)."""
    found = []
    seed = SEED
    while len(found) < PROGRAMS:
        generated = generate(Chooser(seed), max_llm_calls=6)
        if generated.agents >= 2 and not generated.exits:
            found.append(generated)
        seed += 1
    return found


def per_agent(view: dict[str, Any]) -> dict[str, Any]:
    transcript: dict[str, list[str]] = {}
    for item in view["transcript"]:
        transcript.setdefault(item["id"], []).append(item["text"])
    calls: dict[str, list[Any]] = {}
    for item in view["llm_calls"]:
        calls.setdefault(item["id"], []).append(
            (item["playbook"], item["prompt"], item["response"])
        )
    return {
        "status": view["status"],
        "result": view["result"],
        "agents": view["agents"],
        "transcript": transcript,
        "llm_calls": calls,
    }


def tool_runs(log: Path, event: str) -> Counter[str]:
    if not log.exists():
        return Counter()
    return Counter(
        name
        for kind, name in (line.split() for line in log.read_text().splitlines())
        if kind == event
    )


def crash_and_resume(
    generated: Generated, folder: Path, store_args: list[str], store: str, config: Path | None
) -> None:
    program, script = generated.write(folder)
    run = ["run", str(program), "--llm", f"scripted:{script}?chunk_seed=3", *store_args]
    for text in generated.inputs:
        run += ["--input", text]
    log = folder / "reference.log"
    done = durably(*run, "--execution-id", "reference", env={"DURABLY_FUZZ_TOOL_LOG": str(log)})
    assert done.code == 0, done.err
    reference = show(store, "reference", config=config)
    expected = per_agent(reference)
    expected_runs = tool_runs(log, "start")
    total = int(reference["checkpoints"])
    rng = random.Random(total)
    # Any checkpoint but the completion marker (after it, nothing is left to resume).
    for k in sorted(rng.sample(range(1, total), CRASH_POINTS)):
        execution_id = f"crash-{k}"
        first_log, second_log = folder / f"{k}-first.log", folder / f"{k}-second.log"
        first = durably(
            *run,
            "--execution-id",
            execution_id,
            env={"DURABLY_CRASH_AFTER_CHECKPOINT": str(k), "DURABLY_FUZZ_TOOL_LOG": str(first_log)},
        )
        assert first.code == -signal.SIGKILL, (k, first.err)
        second = durably(
            "resume",
            execution_id,
            "--wait",
            *store_args,
            env={"DURABLY_FUZZ_TOOL_LOG": str(second_log)},
        )
        assert second.code == 0, (k, second.err)
        resumed = per_agent(show(store, execution_id, config=config))
        for key in expected:
            assert resumed[key] == expected[key], (k, key, json.dumps(resumed[key])[:500])
        # A tool whose call completed in the killed process never runs again.
        runs = tool_runs(first_log, "end") + tool_runs(second_log, "start")
        assert runs == expected_runs, k


@pytest.mark.parametrize("number", range(PROGRAMS))
def test_generated_program_on_filesystem(number: int, tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    config = tmp_path / "durably.toml"
    config.write_text("[durability]\nlease_ttl = 0.5\n")
    crash_and_resume(
        sample_programs()[number],
        tmp_path,
        ["--config", str(config), "--store", store],
        store,
        None,
    )


@pytest.mark.parametrize("number", range(PROGRAMS))
def test_generated_program_on_postgres(
    number: int, tmp_path: Path, postgres_config: tuple[Path, str]
) -> None:
    config, url = postgres_config
    crash_and_resume(sample_programs()[number], tmp_path, ["--config", str(config)], url, config)


@pytest.mark.parametrize("number", range(PROGRAMS))
def test_generated_program_on_s3(number: int, tmp_path: Path, s3_config: tuple[Path, str]) -> None:
    config, store = s3_config
    crash_and_resume(sample_programs()[number], tmp_path, ["--config", str(config)], store, config)


@pytest.mark.filterwarnings("ignore::durably.errors.DurablyWarning")  # Redis without AOF here
@pytest.mark.parametrize("number", range(PROGRAMS))
def test_generated_program_on_redis(
    number: int, tmp_path: Path, redis_config: tuple[Path, str]
) -> None:
    config, url = redis_config
    crash_and_resume(sample_programs()[number], tmp_path, ["--config", str(config)], url, config)
