"""`durably history`, `durably fork`, `durably diff`, `durably submit` and `durably worker`
on Playbooks executions, through the real command.

A fork copies the execution header, so the forked execution is rebuilt from the recorded
program document (no compile, no ``playbooks`` import) and lists the original's compile
calls; `submit` compiles a `.pb` once, and the worker's resumes never do.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
from test_run_resume import COMPARED, run_args

from helpers import PROGRAMS, durably, show

HELLO_INPUT = "I'm Ada and I love a good mystery."
KILLED_AT = (12,)


def _completed(name: str, tmp: Path) -> tuple[str, dict[str, Any]]:
    """A store holding an uninterrupted run of ``name`` (execution ``original``), and what
    `show` says of it. Shared by the tests of a module: each run pays the `playbooks`
    import (10-20 s here)."""
    store = f"file://{tmp}/store"
    done = durably(*run_args(name, store, "original"))
    assert done.code == 0, done.err
    return store, show(store, "original")


@pytest.fixture(scope="module")
def hello_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    return _completed("hello", tmp_path_factory.mktemp("hello"))


@pytest.fixture(scope="module")
def library_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    return _completed("library", tmp_path_factory.mktemp("library"))


def _alternative_hello(tmp_path: Path) -> Path:
    """hello's script without its compile response (a forked run that compiled again
    would fail: the scripted client has no answer for it), whose second response
    recommends the last book of the shelf instead of the first."""
    script = json.loads((PROGRAMS / "hello.scripted.json").read_text())
    del script["playbooks-compiler.Greeter"]
    second = script["Greeter.Welcome"][1]
    assert "first = books[0]" in second
    script["Greeter.Welcome"][1] = second.replace("first = books[0]", "first = books[-1]")
    path = tmp_path / "hello.other.json"
    path.write_text(json.dumps(script))
    return path


def test_fork_a_pb_execution_and_resume_it_with_another_llm(
    hello_run: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    store, original = hello_run
    forked = durably("fork", "original", "--at-llm-call", "1", "--execution-id", "branch",
                     "--store", store)  # fmt: skip
    assert forked.code == 0, forked.err
    assert forked.out.strip() == "branch"
    # The fork is the original up to its first response: the compile call comes along.
    branch = show(store, "branch")
    assert branch["load_llm_calls"] == original["load_llm_calls"]
    assert len(branch["load_llm_calls"]) == 1
    assert branch["transcript"] == original["transcript"][:1]
    script = _alternative_hello(tmp_path)
    resumed = durably(
        "resume", "branch", "--wait", "--llm", f"scripted:{script}?chunk_seed=1", "--store", store
    )
    assert resumed.code == 0, resumed.err
    assert "Ada, try The Daughter of Time: we have 2 mysteries" in resumed.out
    branch = show(store, "branch")
    assert branch["status"] == "completed"
    assert [c["playbook"] for c in branch["llm_calls"]] == ["Welcome", "Welcome"]
    assert branch["llm_calls"][0] == original["llm_calls"][0]
    assert branch["llm_calls"][1]["prompt"] == original["llm_calls"][1]["prompt"]
    assert branch["llm_calls"][1]["response"] != original["llm_calls"][1]["response"]
    assert branch["transcript"][:-1] == original["transcript"][:-1]
    # diff names the one line and the one response that differ.
    diff = durably("diff", "original", "branch", "--json", "--store", store)
    assert diff.code == 0, diff.err
    data = json.loads(diff.out)
    assert [line["text"] for line in data["transcript"]["a"]] == [
        "Ada, try The Moonstone: we have 2 mysteries and 3 science fiction books."
    ]
    assert [line["text"] for line in data["transcript"]["b"]] == [
        "Ada, try The Daughter of Time: we have 2 mysteries and 3 science fiction books."
    ]
    assert data["llm_calls"]["common"] == 1
    assert data["llm_calls"]["same_prompt_other_response"] == 1
    # The original is untouched.
    assert show(store, "original") == original


def test_history_of_a_two_agent_execution(library_run: tuple[str, dict[str, Any]]) -> None:
    """`durably history` lists every checkpoint of library.pbasm, by agent, with the LLM
    calls, the tool call, the lines said and the statements the LLM code was at."""
    store, original = library_run
    listing = durably("history", "original", "--json", "--store", store)
    assert listing.code == 0, listing.err
    points = json.loads(listing.out)
    assert [p["seq"] for p in points] == list(range(original["latest_seq"] + 1))
    assert {p["agent_class"] for p in points if p["agent"]} == {"Librarian", "Archivist"}
    counts = [p["llm_calls"] for p in points]
    assert counts == sorted(counts)
    assert counts[-1] == len(original["llm_calls"]) == 3
    operations = [op for p in points for op in p["operations"]]
    for op in ("say", "yield", "create", "llm:Main", "llm:FindBook"):
        assert op in operations, (op, operations)
    assert points[-1]["operations"] == ["final (completed)"]
    said = [p for p in points if "say" in p["operations"] and p["agent_class"] == "Librarian"]
    assert said[0]["statement"].startswith('await self.Say("user", "Hello!'), said[0]
    text = durably("history", "original", "--store", store)
    assert text.code == 0, text.err
    assert any("Archivist(1001)" in row and "llm:FindBook" in row for row in text.out.splitlines())


def test_fork_a_two_agent_execution_at_checkpoints_then_resume(
    library_run: tuple[str, dict[str, Any]],
) -> None:
    """library.pbasm forked at checkpoints of both agents (before the cross-agent call,
    while the callee runs, after its reply) and resumed with the same script: each fork
    ends as the original did."""
    store, original = library_run
    last = original["latest_seq"]
    assert last > 20, last
    for k in (0, 4, 9, 13, 18, 20, last - 2):
        new = f"fork-{k}"
        forked = durably("fork", "original", "--at", str(k), "--execution-id", new,
                         "--store", store)  # fmt: skip
        assert forked.code == 0, (k, forked.err)
        resumed = durably("resume", new, "--wait", "--store", store)
        assert resumed.code == 0, (k, resumed.err)
        data = show(store, new)
        assert data["status"] == "completed", k
        for key in COMPARED:
            assert data[key] == original[key], (k, key)
    # The final checkpoint cannot be forked from: nothing is left to run.
    refused = durably("fork", "original", "--at", str(last), "--store", store)
    assert refused.code != 0
    assert "nothing left to run" in refused.err


@pytest.mark.filterwarnings("ignore")
def test_submit_a_pb_then_a_worker_runs_it(
    hello_run: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    """`submit` compiles the .pb (its compile call is listed) and creates the execution;
    `worker --once` runs it to the end as `durably run` would."""
    store = f"file://{tmp_path}/store"
    script = f"scripted:{PROGRAMS / 'hello.scripted.json'}?chunk_seed=3"
    submitted = durably(
        "submit", str(PROGRAMS / "hello.pb"), "--llm", script, "--input", HELLO_INPUT,
        "--execution-id", "queued", "--store", store,
    )  # fmt: skip
    assert submitted.code == 0, submitted.err
    assert submitted.out.strip() == "queued"
    queued = show(store, "queued")
    assert queued["status"] == "stopped"  # created, its lease released: a worker's to take
    assert len(queued["load_llm_calls"]) == 1
    assert queued["llm_calls"] == []
    worker = durably("worker", "--once", "--poll", "0.1", "--store", store)
    assert worker.code == 0, worker.err
    assert "1 completed, 0 failed" in worker.err + worker.out
    data = show(store, "queued")
    expected = hello_run[1]
    assert data["status"] == "completed"
    for key in (*COMPARED, "load_llm_calls"):
        assert data[key] == expected[key], key


def test_a_worker_resumes_a_killed_pbasm_run(
    library_run: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    """library.pbasm killed after checkpoint 12 (the archivist serving the librarian's
    call: two agents mid-run); `worker --once` finds it crashed and finishes it. (One kill:
    each process pays the `playbooks` import; every point is test_crash_points.py's.)"""
    store = f"file://{tmp_path}/store"
    for k in KILLED_AT:
        eid = f"killed-{k}"
        crash = {"DURABLY_CRASH_AFTER_CHECKPOINT": str(k), "DURABLY_LEASE_TTL": "0.2"}
        killed = durably(*run_args("library", store, eid), env=crash)
        assert killed.code == -signal.SIGKILL, (k, killed.err)
        assert show(store, eid)["status"] == "crashed", k
    worker = durably("worker", "--once", "--poll", "0.1", "--store", store)
    assert worker.code == 0, worker.err
    expected = library_run[1]
    for k in KILLED_AT:
        data = show(store, f"killed-{k}")
        assert data["status"] == "completed", k
        for key in COMPARED:
            assert data[key] == expected[key], (k, key)
