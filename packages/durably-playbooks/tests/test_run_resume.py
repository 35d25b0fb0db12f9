"""Playbooks programs run through the `durably` command, and resume exactly after SIGKILL.

The crash test kills the process right after *every* checkpoint the program makes (each
checkpoint independently, in one process, is ``test_crash_points.py``): `durably
run` is killed after its first checkpoint, then `durably resume` is started again and
again until the execution completes, each one killed right after its second checkpoint
(a resume first writes one of its own, when it takes the execution over), or later when
the previous kill made no progress (a checkpoint that only records idle agents). The
result (transcript, agents' states, LLM calls with their prompts and responses, result)
must equal an uninterrupted run's, and the user must have seen each line once, in order.
The chains run on the filesystem, PostgreSQL and Redis (a schema or key prefix of their
own, named in a ``durably.toml`` given with ``--config`` as a user would; skipped without a
server, see ``crashpoints.postgres_url`` and ``redis_url``), and all must end as the
program's uninterrupted run on the filesystem, made once per program.
"""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from crashpoints import postgres_url, redis_url
from test_crash_points import CASES as CRASH_CASES

from helpers import PROGRAMS, durably, show

COMPARED = ("transcript", "agents", "llm_calls", "result")

#: The programs of test_crash_points.py: hello (one agent, BGN asks the user, a .pb compiled
#: by a scripted call, a @playbook in a loop), library (two agents, a public playbook
#: across agents, a @playbook in a while loop), trip (nested playbooks, Yield("user") in
#: the innermost, Yield("call")), cake (Yield("call") continuations in if/else) and quiz
#: (messages between agents, triggers picked in ProcessMessages).
CASES = CRASH_CASES


def run_args(name: str, store: str, execution_id: str, config: Path | None = None) -> list[str]:
    case = CASES[name]
    args = [
        "run",
        str(case.path),
        "--llm",
        f"scripted:{PROGRAMS / case.script}?chunk_seed=3",
        "--store",
        store,
        "--execution-id",
        execution_id,
    ]
    if config is not None:
        args += ["--config", str(config)]
    for text in case.inputs:
        args += ["--input", text]
    return args


@dataclass(frozen=True)
class Store:
    """Where a test's executions are: a store URL and, for PostgreSQL and Redis, the
    ``durably.toml`` naming the test's own schema or key prefix (given to every command
    with ``--config``)."""

    url: str
    config: Path | None = None

    def args(self) -> list[str]:
        return ["--store", self.url, *(["--config", str(self.config)] if self.config else [])]

    def show(self, execution_id: str) -> dict[str, Any]:
        return show(self.url, execution_id, config=self.config)


@pytest.fixture
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store: a directory, a PostgreSQL schema or a Redis key prefix (removed after
    the test)."""
    if request.param == "filesystem":
        yield Store(f"file://{tmp_path}/store")
        return
    if request.param == "redis":
        from durably_redis.testing import delete_prefix, random_prefix

        url = redis_url()
        prefix = random_prefix("durably-pb-chain")
        config = tmp_path / "durably.toml"
        config.write_text(
            f'[durability]\nstore = "{url}"\n\n[durability.redis]\nkey_prefix = "{prefix}"\n'
        )
        try:
            yield Store(url, config)
        finally:
            # The executions were stored under that prefix (not in a store the commands
            # fell back to): deleting it removes their keys.
            deleted = delete_prefix(url, prefix)
        assert deleted, prefix
        return
    import psycopg

    from durably_postgres.testing import drop_schema, random_schema

    url = postgres_url()
    schema = random_schema("durably_pb_chain")
    config = tmp_path / "durably.toml"
    config.write_text(
        f'[durability]\nstore = "{url}"\n\n[durability.postgres]\nschema = "{schema}"\n'
    )
    try:
        yield Store(url, config)
        # The executions are in that schema (not in a store the commands fell back to).
        with psycopg.connect(url, connect_timeout=10) as conn:
            rows = conn.execute(f'SELECT id FROM "{schema}".executions').fetchall()
        assert rows, schema
    finally:
        drop_schema(url, schema)


def said(out: str) -> list[str]:
    return [line for line in out.splitlines() if line and not line.startswith("execution ")]


def test_hello_pb_runs_end_to_end(tmp_path: object) -> None:
    store = f"file://{tmp_path}/store"
    done = durably(*run_args("hello", store, "hello"), cwd=tmp_path)  # type: ignore[arg-type]
    assert done.code == 0, done.err
    assert "Ada, try The Moonstone: we have 2 mysteries and 3 science fiction books." in done.out
    data = show(store, "hello")
    assert data["status"] == "completed"
    assert data["agents"]["Greeter"]["state"]["counts"] == {"mystery": 2, "science fiction": 3}
    # Loading neither made Playbooks' caches in the cwd nor called the LLM beyond the script.
    assert not list(tmp_path.glob(".*cache*"))  # type: ignore[attr-defined]
    assert [call["playbook"] for call in data["llm_calls"]] == ["Welcome", "Welcome"]
    # The compile call is listed apart from the journaled calls (it is in the header).
    compiled = json.loads((PROGRAMS / "hello.scripted.json").read_text())
    assert [(c["agent"], c["playbook"], c["response"]) for c in data["load_llm_calls"]] == [
        ("playbooks-compiler", "Greeter", compiled["playbooks-compiler.Greeter"][0])
    ]
    assert len(data["load_llm_calls"][0]["prompt_sha256"]) == 64


SHOW_AND_MODULES = """\
import sys
from durably.cli import main
code = main(["show", {eid!r}, "--store", {store!r}, *{extra!r}])
print("MODULES", sorted(m for m in sys.modules if m.split(".")[0] in
      ("playbooks", "litellm", "durably_playbooks") or m.startswith("durably_program_")))
sys.exit(code)
"""


def _show_process(store: str, eid: str, *extra: str) -> tuple[str, list[str]]:
    """`durably show` in a new process: its output, and the modules of Playbooks, of
    durably-playbooks and of the program it had imported afterwards."""
    code = SHOW_AND_MODULES.format(eid=eid, store=store, extra=list(extra))
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out, _, modules = proc.stdout.rpartition("MODULES ")
    return out, ast.literal_eval(modules.strip())


def test_show_lists_the_compile_calls_and_imports_nothing(tmp_path: Path) -> None:
    """`durably show` (text and --json) lists a .pb's compile calls, read from the execution
    header as data: it imports neither playbooks nor durably_playbooks nor the program."""
    store = f"file://{tmp_path}/store"
    done = durably(*run_args("hello", store, "hello"), cwd=tmp_path)
    assert done.code == 0, done.err
    text, modules = _show_process(store, "hello")
    assert modules == []
    assert "LLM calls loading the program (before the execution started): 1" in text
    assert "1. playbooks-compiler.Greeter (" in text
    assert "): # Greeter" in text
    as_json, modules = _show_process(store, "hello", "--json")
    assert modules == []
    calls = json.loads(as_json)["load_llm_calls"]
    assert [(c["agent"], c["playbook"]) for c in calls] == [("playbooks-compiler", "Greeter")]
    # A .pbasm makes no compile call: nothing to list.
    library = durably(*run_args("library", store, "library"))
    assert library.code == 0, library.err
    text, _ = _show_process(store, "library")
    assert "loading the program" not in text
    assert show(store, "library")["load_llm_calls"] == []


@pytest.mark.filterwarnings("ignore:the file store")
def test_pbasm_and_pb_give_the_same_run(tmp_path: Path) -> None:
    """The committed .pbasm is what the scripted compile call returns: same execution
    (in this process: see test_crash_points.py)."""
    from dataclasses import replace

    from crashpoints import StoreKind, run

    from durably.config import DurabilityConfig

    pb = CASES["hello"]
    runs = [
        run(
            replace(pb, program=program),
            StoreKind(tmp_path / program),
            DurabilityConfig(),
            record=False,
        )
        for program in ("hello.pb", "hello.pbasm")
    ]
    one, two = runs[0].data, runs[1].data
    assert one["status"] == two["status"] == "completed"
    for key in ("transcript", "agents", "result"):
        assert one[key] == two[key], key
    # Only the .pb made a compile call.
    compiled = [[c[0] for c in r.llm.calls if c[0].startswith("playbooks-compiler.")] for r in runs]
    assert compiled == [["playbooks-compiler.Greeter"], []]


def _progress(store: Store) -> tuple[int, int]:
    """How far the program got: its transcript and its LLM calls' text."""
    data = store.show("chain")
    return len(data["transcript"]), sum(len(c["response"]) for c in data["llm_calls"])


@dataclass(frozen=True)
class Reference:
    """An uninterrupted run through the command: what `show` compares, the lines the user
    saw, and how many checkpoints it wrote."""

    compared: dict[str, object]
    lines: list[str]
    checkpoints: int


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Reference]:
    """Each program's uninterrupted run, made once for the chains of both stores (each run
    pays the `playbooks` import): the chain on PostgreSQL must end as the run on the
    filesystem did."""
    store = Store(f"file://{tmp_path_factory.mktemp('references')}/store")
    made: dict[str, Reference] = {}

    def reference(name: str) -> Reference:
        if name not in made:
            done = durably(*run_args(name, store.url, name))
            assert done.code == 0, done.err
            data = store.show(name)
            assert data["status"] == "completed"
            compared = {key: data[key] for key in COMPARED}
            made[name] = Reference(compared, said(done.out), int(data["checkpoints"]))
        return made[name]

    return reference


#: The programs whose SIGKILL chain also runs on PostgreSQL: one agent (a ``.pb`` compiled
#: at load) and two agents calling each other. Every program runs on the filesystem. The
#: store sits below the Playbooks layer, where the programs differ; the other three
#: programs' chains on PostgreSQL would add ~3 minutes to each playbooks release's session.
#: Redis runs the two-agent program. Only the newest release runs these (any_release).
POSTGRES_CASES = ("hello", "library")


@pytest.mark.parametrize(
    ("store", "name"),
    [("filesystem", name) for name in CASES]
    + [
        pytest.param(kind, name, marks=pytest.mark.any_release)
        for kind, name in [("postgresql", n) for n in POSTGRES_CASES] + [("redis", "library")]
    ],
    indirect=["store"],
)
def test_sigkill_after_every_checkpoint_then_resume(
    name: str, store: Store, references: Callable[[str], Reference]
) -> None:
    reference = references(name)
    crash = {"DURABLY_CRASH_AFTER_CHECKPOINT": "1", "DURABLY_LEASE_TTL": "0.2"}
    first = durably(*run_args(name, store.url, "chain", store.config), env=crash)
    assert first.code == -signal.SIGKILL, first.err
    seen = said(first.out)
    kills = 1
    progress = _progress(store)
    k = 2
    while True:
        crash["DURABLY_CRASH_AFTER_CHECKPOINT"] = str(k)
        step = durably("resume", "chain", "--wait", *store.args(), env=crash)
        seen += said(step.out)
        if step.code == 0:
            break
        assert step.code == -signal.SIGKILL, (kills, step.code, step.err)
        kills += 1
        now = _progress(store)
        # A resume writes checkpoints of its own first (the takeover, idle agents'
        # snapshots): killed there it makes no progress, so the next one dies one later.
        k = 2 if now != progress else k + 1
        progress = now
        assert kills < 100, kills
        assert k < 10, k
    data = store.show("chain")
    assert data["status"] == "completed"
    for key in COMPARED:
        assert data[key] == reference.compared[key], key
    # What the user saw: each line once, in order, across all the processes.
    assert [line for line in seen if not line.startswith("took execution")] == reference.lines
    # Each resume writes a takeover checkpoint, then one of the program's (or more, after
    # a kill that made no progress); the last ones follow the last crashable point.
    assert kills >= reference.checkpoints // 3, (kills, reference.checkpoints)


def test_resume_does_not_import_playbooks(tmp_path: object) -> None:
    """A resume rebuilds the program from the document in the execution header."""
    store = f"file://{tmp_path}/store"
    first = durably(
        *run_args("library", store, "lazy"),
        env={"DURABLY_CRASH_AFTER_CHECKPOINT": "4", "DURABLY_LEASE_TTL": "0.2"},
    )
    assert first.code == -signal.SIGKILL
    code = (
        "import asyncio, sys\n"
        "from durably.runner import resume_execution\n"
        f"r = asyncio.run(resume_execution('lazy', store={store!r}, wait=True, echo=None))\n"
        "assert r.status == 'completed', r\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('playbooks', 'litellm')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_changed_program_is_not_resumed(tmp_path: object) -> None:
    program = tmp_path / "library.pbasm"  # type: ignore[operator]
    program.write_text((PROGRAMS / "library.pbasm").read_text())
    store = f"file://{tmp_path}/store"
    args = run_args("library", store, "changed")
    args[1] = str(program)
    first = durably(*args, env={"DURABLY_CRASH_AFTER_CHECKPOINT": "4"})
    assert first.code == -signal.SIGKILL
    program.write_text(program.read_text().replace("best book", "nicest book"))
    again = durably("resume", "changed", "--store", store)
    assert again.code != 0
    assert "changed since" in again.err
