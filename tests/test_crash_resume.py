"""The seed's promise, end to end: SIGKILL `durably run` right after checkpoint k, resume
it with `durably resume` in a new process, and the result is indistinguishable from an
uninterrupted run -- for every k.

Compared through `durably show --json`: the transcript, every agent's state, the result,
and the sequence of LLM calls (prompts and responses). A scripted LLM that is asked twice
for the same response would change `llm_calls`; the resumed process's stdout shows only
what the killed one had not said yet.
"""

from __future__ import annotations

import signal

import pytest

from conftest import PROGRAM_CASES, ProgramCase, durably, show

COMPARED = ("transcript", "agents", "llm_calls", "result")


def _reference(case: ProgramCase, store: str) -> tuple[dict[str, object], int, list[str]]:
    done = durably(*case.run_args(store, "reference"))
    assert done.code == 0, done.err
    data = show(store, "reference", subprocess=True)
    assert data["status"] == "completed"
    return {key: data[key] for key in COMPARED}, int(data["checkpoints"]), done.out.splitlines()


@pytest.mark.parametrize("name", list(PROGRAM_CASES))
def test_sigkill_after_every_checkpoint_then_resume(name: str, tmp_path: object) -> None:
    case = PROGRAM_CASES[name]
    store = f"file://{tmp_path}/store"
    reference, checkpoints, said = _reference(case, store)
    # After every checkpoint but the last, the completion marker (crashing after it leaves
    # nothing to resume); the final snapshots before it are crash points like any other.
    assert checkpoints > 10
    killed = 0
    for k in range(1, checkpoints):
        execution_id = f"crash-{k}"
        first = durably(
            *case.run_args(store, execution_id),
            env={"DURABLY_CRASH_AFTER_CHECKPOINT": str(k), "DURABLY_LEASE_TTL": "0.2"},
        )
        assert first.code == -signal.SIGKILL, (k, first.code, first.err)
        killed += 1
        second = durably("resume", execution_id, "--wait", "--store", store)
        assert second.code == 0, (k, second.err)
        data = show(store, execution_id)
        assert data["status"] == "completed", k
        for key in COMPARED:
            assert data[key] == reference[key], (k, key)
        # What the user saw: each line once, in order, across the two processes.
        assert first.out.splitlines() + second.out.splitlines() == said, k
    assert killed >= 20


def test_resuming_a_completed_execution_says_so(file_store: str) -> None:
    case = PROGRAM_CASES["counter"]
    assert durably(*case.run_args(file_store, "done")).code == 0
    again = durably("resume", "done", "--store", file_store)
    assert again.code == 0
    assert "already completed" in again.err


def test_resuming_an_unknown_execution_exits_2(file_store: str) -> None:
    missing = durably("resume", "nope", "--store", file_store)
    assert missing.code == 2
    assert "no execution 'nope'" in missing.err


def test_a_killed_owner_does_not_block_resume(file_store: str) -> None:
    """A SIGKILLed owner's lease, 60 s from expiry, is taken over at once (issue 13)."""
    case = PROGRAM_CASES["counter"]
    first = durably(
        *case.run_args(file_store, "leased"),
        env={"DURABLY_CRASH_AFTER_CHECKPOINT": "3", "DURABLY_LEASE_TTL": "60"},
    )
    assert first.code == -signal.SIGKILL
    resumed = durably("resume", "leased", "--store", file_store)
    assert resumed.code == 0, resumed.err
    assert "took execution leased over from" in resumed.err
    assert show(file_store, "leased")["status"] == "completed"


def test_resume_is_refused_while_the_owner_holds_a_live_lease(file_store: str) -> None:
    """A live owner still blocks resume: exit 2, saying who, that it is alive, when its
    lease expires and that --wait waits."""
    import os
    import subprocess
    import sys
    import time

    case = PROGRAM_CASES["counter"]
    args = case.run_args(file_store, "leased")
    args[args.index("--llm") + 1] += "&delay=0.05"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    env["DURABLY_LEASE_TTL"] = "60"
    owner = subprocess.Popen(
        [sys.executable, "-m", "durably", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while durably("show", "leased", "--store", file_store).code != 0:
            assert time.monotonic() < deadline, "the owner never wrote a checkpoint"
            time.sleep(0.1)
        refused = durably("resume", "leased", "--store", file_store)
        assert owner.poll() is None, "the owner finished before the refusal was checked"
    finally:
        owner.kill()
        owner.communicate()
    assert refused.code == 2, refused.err
    assert "running in another process" in refused.err
    assert f"process {owner.pid} is running on this host" in refused.err
    assert "expires in" in refused.err
    assert "durably resume leased --wait" in refused.err
