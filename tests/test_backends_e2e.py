"""The end-to-end crash/resume test against the other backends: SIGKILL `durably run`
after checkpoint k, `durably resume` in a new process, compare `show --json` with an
uninterrupted run -- through a `durably.toml` that names the store, as a user would."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from conftest import PROGRAM_CASES, durably, show

CRASH_POINTS = (2, 7, 15, 30)


def _crash_and_resume(config: Path, store: str) -> None:
    case = PROGRAM_CASES["kitchen"]
    args = case.run_args(store, "reference")
    args[args.index("--store") : args.index("--store") + 2] = ["--config", str(config)]
    done = durably(*args)
    assert done.code == 0, done.err
    reference = show(store, "reference", config=config)
    for k in CRASH_POINTS:
        execution_id = f"crash-{k}"
        run_args = [a if a != "reference" else execution_id for a in args]
        first = durably(*run_args, env={"DURABLY_CRASH_AFTER_CHECKPOINT": str(k)})
        assert first.code == -signal.SIGKILL, (k, first.err)
        second = durably("resume", execution_id, "--wait", "--config", str(config))
        assert second.code == 0, (k, second.err)
        data = show(store, execution_id, config=config)
        assert data["status"] == "completed"
        for key in ("transcript", "agents", "llm_calls", "result"):
            assert data[key] == reference[key], (k, key)


def test_crash_and_resume_on_postgres(postgres_config: tuple[Path, str]) -> None:
    config, url = postgres_config
    _crash_and_resume(config, url)


def test_crash_and_resume_on_s3(s3_config: tuple[Path, str]) -> None:
    config, store = s3_config
    _crash_and_resume(config, store)


@pytest.mark.filterwarnings("ignore::durably.errors.DurablyWarning")  # Redis without AOF here
def test_crash_and_resume_on_redis(redis_config: tuple[Path, str]) -> None:
    config, url = redis_config
    _crash_and_resume(config, url)
