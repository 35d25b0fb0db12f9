"""The rest of the command line of issue 18, through the `durably` command as a user runs
it: a tool's exception in the transcript as it happens (piped and in a terminal),
`--debug`, the statuses `ls` and `show` give (`waiting for input`, `crashed`, `failed`,
`completed`), `gc` that deletes no unfinished execution without `--force`, and
`durably init`.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
from test_cli import Terminal, _visible, terminal  # noqa: F401  (the fixture)

from conftest import KITCHEN, KITCHEN_INPUT, ROOT, durably

TOOLFAIL = ROOT / "tests" / "programs" / "toolfail.py"
TOOLFAIL_SCRIPT = ROOT / "tests" / "programs" / "toolfail.scripted.json"
KITCHEN_PROGRAM = KITCHEN / "kitchen.py"
KITCHEN_SCRIPT = KITCHEN / "kitchen.scripted.json"
TOOL_ERROR = (
    'tool error: Librarian(1000).Main: tool:Lookup raised KeyError: "no entry named '
    '\'missing\'" in `entry = await self.Lookup("missing")`'
)
WAITING_AT = 'Concierge(1000) at `answer = await self.Yield("user")`'


def _store(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


def _statuses(store: str) -> dict[str, str]:
    listed = durably("ls", "--json", "--store", store)
    assert listed.code == 0, listed.err
    return {row["execution_id"]: row["status"] for row in json.loads(listed.out)}


def _plain_statuses(store: str) -> dict[str, str]:
    """`ls` as a script reads it: the status column (it may have spaces)."""
    listed = durably("ls", "--store", store)
    assert listed.code == 0, listed.err
    header, *rows = listed.out.splitlines()
    start, end = header.index("STATUS"), header.index("AGENTS")
    return {row.split()[0]: row[start:end].strip() for row in rows}


# ------------------------------------------------------------------ tool errors, --debug


def test_a_tool_exception_is_a_transcript_line_as_it_happens(tmp_path: Path) -> None:
    done = durably(
        "run",
        str(TOOLFAIL),
        "--llm",
        f"scripted:{TOOLFAIL_SCRIPT}",
        "--store",
        _store(tmp_path),
        "--execution-id",
        "lookup",
    )
    assert done.code == 1, done.err
    lines = done.out.splitlines()
    assert lines == ["Librarian: Looking it up...", TOOL_ERROR], done.out
    assert "Traceback" not in done.err


def test_a_tool_exception_is_a_transcript_line_in_a_terminal(
    tmp_path: Path,
    terminal: list[Terminal],  # noqa: F811
) -> None:
    term = Terminal(
        "run",
        str(TOOLFAIL),
        "--llm",
        f"scripted:{TOOLFAIL_SCRIPT}",
        "--store",
        _store(tmp_path),
        "--execution-id",
        "lookup",
    )
    terminal.append(term)
    assert term.finish() == 1, term.text
    shown = _visible(term.text)
    assert "\x1b[" in term.text  # the fancy mode (colours), not the plain one
    _, _, rest = shown.partition("Librarian: Looking it up...")
    assert rest, shown
    assert TOOL_ERROR in rest, shown
    assert "Traceback" not in shown


def test_a_resumed_execution_does_not_repeat_a_tool_error_it_replays(tmp_path: Path) -> None:
    """The transcript shows what happens in this run: a journaled failure replayed on
    resume is not a new one (show lists it, once)."""
    store = _store(tmp_path)
    first = durably(
        "run",
        str(TOOLFAIL),
        "--llm",
        f"scripted:{TOOLFAIL_SCRIPT}",
        "--store",
        store,
        "--execution-id",
        "lookup",
    )
    assert TOOL_ERROR in first.out.splitlines(), first.out
    again = durably("resume", "lookup", "--store", store)
    assert again.code == 1, again.err
    assert "tool error:" not in again.out, again.out
    data = json.loads(durably("show", "lookup", "--json", "--store", store).out)
    assert len(data["tool_errors"]) == 1, data["tool_errors"]


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback_of_a_one_line_error(tmp_path: Path, where: str) -> None:
    program = tmp_path / "broken.py"
    program.write_text("import durably\nLIMIT = {}['limit']\n")
    args = ["run", str(program), "--llm", f"scripted:{KITCHEN_SCRIPT}", "--store", _store(tmp_path)]
    plain = durably(*args)
    assert plain.code == 2, plain.err
    assert "Traceback" not in plain.err
    assert len(plain.err.strip().splitlines()) == 1, plain.err
    debug_args = ["--debug", *args] if where == "before" else [*args[:2], "--debug", *args[2:]]
    debug = durably(*debug_args)
    assert debug.code == 2, debug.err
    assert debug.err.startswith(plain.err.strip().splitlines()[0]), debug.err
    assert "Traceback" in debug.err, debug.err
    assert "LIMIT = {}['limit']" in debug.err.split("Traceback", 1)[1], debug.err


def test_debug_is_in_the_help_of_every_command() -> None:
    for command in ("run", "resume", "ls", "show", "gc", "init", "diff"):
        shown = durably(command, "--help")
        assert shown.code == 0, shown.err
        assert "--debug" in shown.out, (command, shown.out)


# ------------------------------------------------------------------ statuses


def test_an_execution_stopped_for_want_of_input_is_waiting_for_input(tmp_path: Path) -> None:
    store = _store(tmp_path)
    stopped = durably(
        "run",
        str(KITCHEN_PROGRAM),
        "--llm",
        f"scripted:{KITCHEN_SCRIPT}",
        "--store",
        store,
        "--execution-id",
        "ask",
    )
    assert stopped.code == 1, stopped.err
    assert "waits for the user's input, but no input is left" in stopped.err
    assert _statuses(store) == {"ask": "waiting for input"}
    assert _plain_statuses(store) == {"ask": "waiting for input"}
    data = json.loads(durably("show", "ask", "--json", "--store", store).out)
    assert data["status"] == "waiting for input"
    assert data["waiting"] == {
        "agent": "Concierge",
        "id": "1000",
        "statement": 'answer = await self.Yield("user")',
    }
    text = durably("show", "ask", "--store", store).out
    assert text.splitlines()[0] == "execution ask: waiting for input", text
    assert f"  waiting for input: {WAITING_AT}" in text, text
    assert "  answer with: durably resume ask --input TEXT" in text, text
    # An earlier checkpoint is not waiting for anything: it was running then.
    early = json.loads(durably("show", "ask", "--json", "--at", "2", "--store", store).out)
    assert early["waiting"] is None, early["waiting"]
    assert early["status"] == "running", early["status"]
    assert early["lease"] is None
    # Answered, it completes -- and is no longer waiting.
    resumed = durably("resume", "ask", "--input", KITCHEN_INPUT, "--store", store)
    assert resumed.code == 0, resumed.err
    assert _statuses(store) == {"ask": "completed"}


def test_a_prompt_in_a_terminal_is_waiting_for_input_while_its_owner_lives(
    tmp_path: Path,
    terminal: list[Terminal],  # noqa: F811
) -> None:
    store = _store(tmp_path)
    term = Terminal(
        "run",
        str(KITCHEN_PROGRAM),
        "--llm",
        f"scripted:{KITCHEN_SCRIPT}",
        "--store",
        store,
        "--execution-id",
        "live",
    )
    terminal.append(term)
    term.read_until(r"you \(Concierge\)> ")
    data = json.loads(durably("show", "live", "--json", "--store", store).out)
    assert data["status"] == "waiting for input", data["status"]
    assert data["lease"]["liveness"] == "alive", data["lease"]
    assert "answer with" not in durably("show", "live", "--store", store).out
    term.type(b"chickpeas and rice, vegetarian\r")
    assert term.finish() == 0, term.text
    assert _statuses(store) == {"live": "completed"}


def test_ls_and_show_name_each_status_alike(tmp_path: Path) -> None:
    store = _store(tmp_path)
    args = [
        "run",
        str(KITCHEN_PROGRAM),
        "--llm",
        f"scripted:{KITCHEN_SCRIPT}",
        "--store",
        store,
        "--input",
        KITCHEN_INPUT,
    ]
    assert durably(*args, "--execution-id", "done").code == 0
    crashed = durably(
        *args,
        "--execution-id",
        "dead",
        env={"DURABLY_CRASH_AFTER_CHECKPOINT": "5", "DURABLY_LEASE_TTL": "60"},
    )
    assert crashed.code != 0, crashed.err
    assert (
        durably(
            "run",
            str(TOOLFAIL),
            "--llm",
            f"scripted:{TOOLFAIL_SCRIPT}",
            "--store",
            store,
            "--execution-id",
            "bad",
        ).code
        == 1
    )
    assert (
        durably(
            "run",
            str(KITCHEN_PROGRAM),
            "--llm",
            f"scripted:{KITCHEN_SCRIPT}",
            "--store",
            store,
            "--execution-id",
            "ask",
        ).code
        == 1
    )
    expected = {"done": "completed", "dead": "crashed", "bad": "failed", "ask": "waiting for input"}
    assert _statuses(store) == expected
    assert _plain_statuses(store) == expected
    for execution_id, status in expected.items():
        shown = durably("show", execution_id, "--store", store)
        assert shown.out.splitlines()[0] == f"execution {execution_id}: {status}", shown.out
        data = json.loads(durably("show", execution_id, "--json", "--store", store).out)
        assert data["status"] == status


# ------------------------------------------------------------------ gc


def test_gc_deletes_no_unfinished_execution_without_force(tmp_path: Path) -> None:
    store = _store(tmp_path)
    args = [
        "run",
        str(KITCHEN_PROGRAM),
        "--llm",
        f"scripted:{KITCHEN_SCRIPT}",
        "--store",
        store,
        "--input",
        KITCHEN_INPUT,
    ]
    assert durably(*args, "--execution-id", "done").code == 0
    assert (
        durably(
            *args,
            "--execution-id",
            "dead",
            env={"DURABLY_CRASH_AFTER_CHECKPOINT": "5", "DURABLY_LEASE_TTL": "60"},
        ).code
        != 0
    )
    assert (
        durably(
            "run",
            str(KITCHEN_PROGRAM),
            "--llm",
            f"scripted:{KITCHEN_SCRIPT}",
            "--store",
            store,
            "--execution-id",
            "ask",
        ).code
        == 1
    )
    assert _statuses(store) == {"done": "completed", "dead": "crashed", "ask": "waiting for input"}
    # Asked for completed ones, gc leaves the crashed and the waiting one alone.
    gc = durably("gc", "--completed-older-than", "0s", "--yes", "--store", store)
    assert gc.code == 0, gc.err
    assert "deleted 1 execution(s)" in gc.out, gc.out
    assert _statuses(store) == {"dead": "crashed", "ask": "waiting for input"}
    # Unfinished ones only with --force: without it, a usage error and nothing deleted.
    refused = durably("gc", "--unfinished-older-than", "0s", "--yes", "--store", store)
    assert refused.code == 2, refused.err
    assert "--force" in refused.err, refused.err
    assert _statuses(store) == {"dead": "crashed", "ask": "waiting for input"}
    dry = durably("gc", "--unfinished-older-than", "0s", "--force", "--dry-run", "--store", store)
    assert dry.code == 0, dry.err
    assert re.search(
        r"^would delete execution dead \([\d,]+ bytes, crashed\)$", dry.out, flags=re.MULTILINE
    ), dry.out
    assert re.search(
        r"^would delete execution ask \([\d,]+ bytes, stopped\)$", dry.out, flags=re.MULTILINE
    ), dry.out
    assert _statuses(store) == {"dead": "crashed", "ask": "waiting for input"}
    # Not older than an hour: --force deletes nothing younger than AGE.
    young = durably("gc", "--unfinished-older-than", "1h", "--force", "--yes", "--store", store)
    assert young.code == 0, young.err
    assert "deleted 0 execution(s)" in young.out, young.out
    forced = durably("gc", "--unfinished-older-than", "0s", "--force", "--yes", "--store", store)
    assert forced.code == 0, forced.err
    assert "deleted 2 execution(s)" in forced.out, forced.out
    assert _statuses(store) == {}


# ------------------------------------------------------------------ init


def test_init_writes_a_commented_config_and_a_starter_that_runs(tmp_path: Path) -> None:
    from durably._llmtypes import LLMLimits
    from durably.config import DurabilityConfig, WorkerConfig, load_config, load_worker_config

    where = tmp_path / "project"
    done = durably("init", str(where))
    assert done.code == 0, done.err
    names = sorted(p.name for p in where.iterdir())
    assert names == ["durably.toml", "hello.py", "hello.scripted.json"], names
    text = (where / "durably.toml").read_text()
    # Only the LLM is set; every other key is there, commented, with its default.
    assert tomllib.loads(text) == {
        "durability": {},
        "llm": {"spec": "scripted:hello.scripted.json"},
        "worker": {},
    }
    keys = [f for f in DurabilityConfig.__dataclass_fields__ if f not in ("providers", "sources")]
    keys += list(LLMLimits.OPTIONS) + list(WorkerConfig.__dataclass_fields__)
    for key in keys:
        assert re.search(rf"^# {key} = ", text, flags=re.MULTILINE), key
    # Uncommented, every value is the default.
    (tmp_path / "all.toml").write_text(re.sub(r"^# ([a-z_]+ = )", r"\1", text, flags=re.MULTILINE))
    config = load_config(config_file=tmp_path / "all.toml", use_env=False)
    for key in DurabilityConfig.__dataclass_fields__:
        if key not in ("providers", "sources"):
            assert getattr(config, key) == getattr(DurabilityConfig(), key), key
    assert load_worker_config(config_file=tmp_path / "all.toml", use_env=False) == WorkerConfig()
    llm = tomllib.loads((tmp_path / "all.toml").read_text())["llm"]
    assert LLMLimits.split(llm)[0] == LLMLimits()
    # `durably run hello.py` in that directory runs out of the box.
    run = durably("run", "hello.py", "--execution-id", "first", cwd=where)
    assert run.code == 0, run.err
    assert run.out.splitlines() == [
        "Greeter: Hello! I am a durable agent: every await I make is a checkpoint.",
        "Greeter: The word durably has 7 letters.",
    ], run.out
    assert "result: 7" in run.err, run.err
    assert json.loads(durably("ls", "--json", cwd=where).out)[0]["status"] == "completed"


def test_init_overwrites_nothing(tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_text("# mine\n")
    refused = durably("init", str(tmp_path))
    assert refused.code == 2, refused.err
    assert "hello.py" in refused.err, refused.err
    assert "already exist" in refused.err, refused.err
    assert "Traceback" not in refused.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hello.py"]
    assert (tmp_path / "hello.py").read_text() == "# mine\n"
    fresh = tmp_path / "fresh"
    assert durably("init", str(fresh)).code == 0
    before = {p.name: p.read_text() for p in fresh.iterdir()}
    again = durably("init", str(fresh))
    assert again.code == 2, again.err
    assert {p.name: p.read_text() for p in fresh.iterdir()} == before


def test_a_yield_that_was_answered_is_not_waiting_for_input(tmp_path: Path) -> None:
    """Killed right after the response that answered `Yield("user")` wrote its end (a
    delta with no journal entry, whose last statement is that Yield): not waiting."""
    import asyncio

    from durably import open_store
    from durably._events import waiting_for_input
    from durably.checkpoint import CheckpointManager
    from durably.config import load_config

    store = _store(tmp_path)
    args = ["run", str(KITCHEN_PROGRAM), "--llm", f"scripted:{KITCHEN_SCRIPT}", "--store", store]
    assert (
        durably(
            *args,
            "--input",
            KITCHEN_INPUT,
            "--execution-id",
            "answered",
            env={"DURABLY_CRASH_AFTER_CHECKPOINT": "9"},
        ).code
        != 0
    )
    assert durably(*args, "--execution-id", "asking").code == 1
    points = json.loads(durably("history", "answered", "--json", "--store", store).out)
    assert points[-1]["operations"] == ["llm:GatherPreferences done"], points[-1]
    assert points[-1]["statement"] == 'answer = await self.Yield("user")'

    async def waiting(execution_id: str) -> object:
        config = load_config(overrides={"store": store}, use_env=False)
        async with open_store(config=config) as provider:
            return await waiting_for_input(CheckpointManager(execution_id, provider))

    assert asyncio.run(waiting("answered")) is None
    assert asyncio.run(waiting("asking")) == {
        "agent": "Concierge",
        "id": "1000",
        "statement": 'answer = await self.Yield("user")',
    }
