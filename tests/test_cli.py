"""The command line a person enjoys (issue 18), through the `durably` command as a user runs
it: in a pseudo-terminal for what a person sees (the live status line, the input prompt on
its own line, the transcript with what the user typed, Ctrl-C's message), through pipes for
what scripts see (plain text, no control codes), and each item of the issue's "Why": no
traceback for a broken program, a tool's exception in `show --json`, `diff` between a fork
and its original, `--version`, `demo --store`, a broken pipe exits 0 quietly.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import KITCHEN, KITCHEN_INPUT, ROOT, default_ctrl_c, durably

PROGRAMS = ROOT / "tests" / "programs"
TOOLFAIL = PROGRAMS / "toolfail.py"
TOOLFAIL_SCRIPT = PROGRAMS / "toolfail.scripted.json"
KITCHEN_PROGRAM = KITCHEN / "kitchen.py"
KITCHEN_SCRIPT = KITCHEN / "kitchen.scripted.json"
ESCAPE = "\x1b"


def _store(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


def _kitchen(store: str, execution_id: str, *extra: str) -> None:
    done = durably(
        "run",
        str(KITCHEN_PROGRAM),
        "--llm",
        f"scripted:{KITCHEN_SCRIPT}",
        "--input",
        KITCHEN_INPUT,
        "--store",
        store,
        "--execution-id",
        execution_id,
        *extra,
    )
    assert done.code == 0, done.err


@pytest.fixture(scope="module")
def kitchen_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store with one completed kitchen run, ``k1``."""
    store = f"file://{tmp_path_factory.mktemp('kitchen') / 'store'}"
    _kitchen(store, "k1")
    return store


# ------------------------------------------------------------------ a pseudo-terminal


class Terminal:
    """`durably` in a pseudo-terminal that is its controlling terminal (so that Ctrl-C
    typed there interrupts it, as in a shell): what a person sees, bytes and all."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        import fcntl
        import pty
        import termios

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, b"\x28\x00\xa0\x00\x00\x00\x00\x00")  # 40x160
        # The size is the terminal's (40x160, above), not COLUMNS/LINES: rich prefers those,
        # and pytest-xdist's workers set them to 80x24.
        dropped = {"NO_COLOR", "COLUMNS", "LINES"}
        base = {
            k: v for k, v in os.environ.items() if not k.startswith("DURABLY_") and k not in dropped
        }
        base.update({"TERM": "xterm-256color", **(env or {})})

        def controlling_terminal() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            default_ctrl_c()

        self.process = subprocess.Popen(
            [sys.executable, "-m", "durably", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=base,
            preexec_fn=controlling_terminal,
        )
        os.close(slave)
        self.seen = b""

    def read_until(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, _visible(self.text)):
            assert time.monotonic() < deadline, f"never saw {pattern!r} in {self.text!r}"
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536)
                except OSError:  # the process ended and closed the terminal
                    assert re.search(pattern, _visible(self.text)), self.text
        return self.text

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def finish(self, timeout: float = 60) -> int:
        """Read what the process writes until it ends (a full terminal would block it)."""
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.1)
            chunk = b""
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # the process ended and closed the terminal
                    chunk = b""
                self.seen += chunk
            if not chunk and self.process.poll() is not None:
                return self.process.returncode
            assert time.monotonic() < deadline, f"still running: {self.text[-2000:]!r}"

    @property
    def text(self) -> str:
        return self.seen.decode(errors="replace")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        term.close()


def _visible(text: str) -> str:
    """What the terminal shows, roughly: colour codes removed (cursor movements kept)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_a_run_in_a_terminal_shows_a_status_line_a_prompt_of_its_own_and_the_answer(
    tmp_path: Path,
    terminal: list[Terminal],
) -> None:
    term = Terminal(
        "run",
        str(KITCHEN_PROGRAM),
        "--llm",
        f"scripted:{KITCHEN_SCRIPT}?delay=0.01",
        "--store",
        _store(tmp_path),
        "--execution-id",
        "chat",
    )
    terminal.append(term)
    # The live status line: a spinner, the agent and its call stack, the LLM call, the
    # checkpoints written, the elapsed time -- redrawn in place.
    term.read_until(r"Concierge\(1000\) Main:0\d.*LLM call \d.*checkpoints")
    status = _visible(term.text)
    assert re.search(r"[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] ", status), status
    assert re.search(r"\d+\.\d s", status), status
    # The question, then the prompt at the start of a line of its own (the status line
    # was taken down first: nothing of it is left on the prompt's line).
    term.read_until(r"you \(Concierge\)> ")
    before_prompt = _visible(term.text).rsplit("you (Concierge)> ", 1)[0]
    last_line = re.split(r"\r\n|\n|\r|\x1b\[2K", before_prompt)[-1]
    assert re.fullmatch(r"(\x1b\[[0-9;]*[A-Za-z?]*|\x1b\[\?25[hl])*", last_line), repr(
        before_prompt[-300:]
    )
    assert "Concierge: What ingredients do you have on hand?" in _visible(term.text)
    term.type(b"chickpeas and rice, vegetarian\r")
    assert term.finish() == 0, term.text
    shown = _visible(term.text)
    # What the user typed is in the transcript, after the question and before the answer.
    after = shown.split("you (Concierge)> chickpeas and rice, vegetarian", 1)
    assert len(after) == 2, shown
    assert "Concierge: Our chef suggests" in after[1], shown
    assert "Traceback" not in shown
    # ... and in `show --json`.
    data = json.loads(durably("show", "chat", "--json", "--store", _store(tmp_path)).out)
    assert data["status"] == "completed"
    assert data["inputs"] == [
        {"agent": "Concierge", "id": "1000", "number": 0, "text": "chickpeas and rice, vegetarian"}
    ]


def test_ctrl_c_in_a_terminal_prints_its_own_line_naming_the_execution(
    tmp_path: Path,
    terminal: list[Terminal],
) -> None:
    store = _store(tmp_path)
    term = Terminal(
        "run",
        str(KITCHEN_PROGRAM),
        "--llm",
        f"scripted:{KITCHEN_SCRIPT}?delay=0.05",
        "--input",
        KITCHEN_INPUT,
        "--store",
        store,
        "--execution-id",
        "stopme",
    )
    terminal.append(term)
    term.read_until(r"Concierge: Welcome")
    term.read_until(r"LLM call \d")  # the status line is up
    term.type(b"\x03")  # Ctrl-C, as typed: the terminal sends SIGINT
    assert term.finish() == 130, term.text
    shown = _visible(term.text)
    message = "interrupted; resume with: durably resume stopme"
    assert message in shown, shown
    # On a line of its own: it starts a line (after a newline, or a cleared line) and
    # ends one.
    before, _, after = shown.rpartition(message)
    assert re.search(r"(\r\n|\n|\r\x1b\[2K|\x1b\[2K\r?)(durably: )?$", before), repr(before[-80:])
    assert after.strip() == "", repr(after)
    assert "Traceback" not in shown
    assert "KeyboardInterrupt" not in shown
    listed = json.loads(durably("ls", "--json", "--store", store).out)
    assert [row["status"] for row in listed] == ["stopped"], listed
    # The recorded LLM paces its chunks (delay=0.05, for the Ctrl-C to land mid-run); the
    # same script without the pacing finishes the rest in seconds, not ~20 s of sleeps.
    resumed = durably("resume", "stopme", "--llm", f"scripted:{KITCHEN_SCRIPT}", "--store", store)
    assert resumed.code == 0, resumed.err


def test_plain_output_without_a_terminal_or_with_no_color(
    kitchen_store: str,
    terminal: list[Terminal],
) -> None:
    for args in (["ls"], ["show", "k1"], ["history", "k1"], ["diff", "k1@3", "k1"]):
        piped = durably(*args, "--store", kitchen_store)
        assert piped.code == 0, piped.err
        assert ESCAPE not in piped.out + piped.err, args
        term = Terminal(*args, "--store", kitchen_store, env={"NO_COLOR": "1"})
        terminal.append(term)
        assert term.finish() == 0, term.text
        assert ESCAPE not in term.text, (args, term.text)
        # The same text (but for how long ago things happened: time passed in between).
        assert _ago(term.text.replace("\r\n", "\n")) == _ago(piped.out), args
    # A terminal without NO_COLOR gets colours and tables.
    for args, needle in (
        (["show", "k1"], "Our chef suggests"),
        (["history", "k1"], "Chef(1001)"),
        (["diff", "k1@3", "k1"], "in common"),
    ):
        term = Terminal(*args, "--store", kitchen_store)
        terminal.append(term)
        assert term.finish() == 0, term.text
        assert ESCAPE in term.text, args
        assert needle in _visible(term.text), (args, term.text)
        assert "Traceback" not in term.text
    term = Terminal("ls", "--store", kitchen_store)
    terminal.append(term)
    assert term.finish() == 0
    assert ESCAPE in term.text
    assert "k1" in term.text
    assert "completed" in term.text


def _ago(text: str) -> str:
    return re.sub(r"\d+ (s|min|h|d) ago", "... ago", text)


def test_a_run_through_pipes_prints_the_transcript_with_the_given_answers(
    tmp_path: Path,
) -> None:
    done = durably(
        "run",
        str(KITCHEN_PROGRAM),
        "--llm",
        f"scripted:{KITCHEN_SCRIPT}",
        "--input",
        KITCHEN_INPUT,
        "--store",
        _store(tmp_path),
    )
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    asked = next(i for i, line in enumerate(lines) if "What ingredients" in line)
    assert lines[asked + 1] == f"you: {KITCHEN_INPUT}", lines
    assert ESCAPE not in done.out + done.err


# ------------------------------------------------------------------ errors, not tracebacks


@pytest.mark.parametrize(
    ("source", "needles"),
    [
        (
            "import not_a_module_anywhere\n",
            [
                "line 1: import not_a_module_anywhere",
                "ModuleNotFoundError",
                "No module named 'not_a_module_anywhere'",
            ],
        ),
        (
            "from durably import Agent\n\n\nclass A(Agent):\n    def f(self:\n        pass\n",
            ["does not compile (line 5)", "def f(self:"],
        ),
        (
            "from durably import Agent\n\nLIMIT = {}['limit']\n",
            ["line 3: LIMIT = {}['limit']", "KeyError: 'limit'"],
        ),
    ],
)
def test_a_broken_program_is_one_line_naming_the_file_and_line(
    tmp_path: Path,
    source: str,
    needles: list[str],
) -> None:
    program = tmp_path / "broken.py"
    program.write_text(source)
    done = durably(
        "run",
        str(program),
        "--llm",
        f"scripted:{KITCHEN_SCRIPT}",
        "--store",
        _store(tmp_path),
        "--input",
        "x",
    )
    assert done.code == 2, done.err
    assert "Traceback" not in done.err
    lines = done.err.strip().splitlines()
    assert len(lines) == 1, done.err  # and no execution was announced: none was started
    assert lines[0].startswith("durably: error: "), lines
    assert str(program) in lines[0], lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert json.loads(durably("ls", "--json", "--store", _store(tmp_path)).out) == []
    debug = durably(
        "run",
        str(program),
        "--llm",
        f"scripted:{KITCHEN_SCRIPT}",
        "--store",
        _store(tmp_path),
        "--input",
        "x",
        env={"DURABLY_DEBUG": "1"},
    )
    assert "Traceback" in debug.err


@pytest.mark.parametrize(
    "args",
    [
        ["show", "k1"],
        ["show", "k1", "--json"],
        ["history", "k1"],
        ["history", "k1", "--json"],
        ["diff", "k1@2", "k1"],
        ["diff", "k1", "1", "9"],
        ["ls"],
    ],
)
def test_a_reader_that_goes_away_is_exit_0_without_a_word(
    kitchen_store: str, args: list[str]
) -> None:
    """`durably show ... | head`: the pipe's reader is gone before anything is written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    read, write = os.pipe()
    os.close(read)  # the reader went away (head read its lines and exited)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "durably", *args, "--store", kitchen_store],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    finally:
        os.close(write)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr


def test_a_python_tool_exception_is_in_show_and_the_failure_message(tmp_path: Path) -> None:
    store = _store(tmp_path)
    done = durably(
        "run",
        str(TOOLFAIL),
        "--llm",
        f"scripted:{TOOLFAIL_SCRIPT}",
        "--store",
        store,
        "--execution-id",
        "lookup",
    )
    assert done.code == 1, done.err
    assert "Traceback" not in done.err
    (line,) = [x for x in done.err.splitlines() if x.startswith("durably:")]
    assert "no response #2" in line, line
    assert "tool:Lookup raised KeyError" in line, line
    data = json.loads(durably("show", "lookup", "--json", "--store", store).out)
    assert data["status"] == "failed"
    assert data["tool_errors"] == [
        {
            "agent": "Librarian",
            "id": "1000",
            "playbook": "Main",
            "operation": "tool:Lookup",
            "type": "KeyError",
            "message": "\"no entry named 'missing'\"",
            "statement": 'entry = await self.Lookup("missing")',
        }
    ]
    text = durably("show", "lookup", "--store", store).out
    assert (
        'tool error: Librarian(1000).Main: tool:Lookup raised KeyError: "no entry named '
        '\'missing\'" in `entry = await self.Lookup("missing")`'
    ) in text, text
    listed = json.loads(durably("ls", "--json", "--store", store).out)
    assert listed[0]["status"] == "failed"


# ------------------------------------------------------------------ inspect and compare


def test_history_names_agents_times_operations_and_statements(kitchen_store: str) -> None:
    points = json.loads(durably("history", "k1", "--json", "--store", kitchen_store).out)
    assert {p["agent_class"] for p in points if p["agent"]} == {"Concierge", "Chef"}
    assert all(p["created_at"] > 0 for p in points)
    operations = [op for p in points for op in p["operations"]]
    for op in ("say", "yield", "create", "llm:Main", "llm:SuggestDish done"):
        assert op in operations, (op, operations)
    assert points[-1]["operations"] == ["final (completed)"]
    said = [p for p in points if "say" in p["operations"] and p["agent_class"] == "Concierge"]
    assert said[0]["statement"].startswith('await self.Say("user"'), said[0]
    text = durably("history", "k1", "--store", kitchen_store).out
    header, *rows = text.splitlines()
    assert header.split()[:4] == ["SEQ", "TIME", "AGO", "AGENT"], header
    assert re.search(
        r"^\s+\d+ \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d .* ago Concierge\(1000\) ", rows[1]
    ), rows[1]
    assert any("Chef(1001)" in row and "llm:SuggestDish" in row for row in rows), text


def test_diff_compares_a_fork_with_its_original_and_two_executions(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _kitchen(store, "original")
    _kitchen(store, "again")
    forked = durably(
        "fork", "original", "--at-llm-call", "3", "--execution-id", "branch", "--store", store
    )
    assert forked.code == 0, forked.err

    same = durably("diff", "original", "again", "--store", store)
    assert same.code == 0, same.err
    assert "no difference in state, transcript, inputs, LLM calls or result" in same.out

    done = durably("diff", "original", "branch", "--json", "--store", store)
    assert done.code == 0, done.err
    data = json.loads(done.out)
    assert data["b"]["forked_from"].startswith("original@"), data["b"]
    assert data["a"]["status"] == "completed"
    # Every LLM call the branch holds is one of the original's; the rest are the
    # original's only. Likewise the transcript: the branch's is the original's beginning.
    views = {
        name: json.loads(durably("show", name, "--json", "--store", store).out)
        for name in ("original", "branch")
    }
    held = len(views["branch"]["llm_calls"])
    assert held >= 1
    assert data["llm_calls"]["common"] == held
    assert data["llm_calls"]["b"] == []
    assert len(data["llm_calls"]["a"]) == len(views["original"]["llm_calls"]) - held
    said = len(views["branch"]["transcript"])
    assert data["transcript"]["common"] == said >= 2
    assert data["transcript"]["b"] == []
    assert data["transcript"]["a"] == [
        {"agent": t["agent"], "text": t["text"]} for t in views["original"]["transcript"][said:]
    ]
    assert data["result"] is None
    assert data["a"]["status"] == "completed"
    text = durably("diff", "original", "branch", "--store", store).out
    assert "+++ branch@" in text, text
    assert "forked from original@" in text, text
    assert f"LLM calls: {held} in common" in text, text
    assert "- Concierge: Our chef suggests" in text, text

    # Two checkpoints of one execution, and the old form (what was journaled between).
    seq = int(data["b"]["forked_from"].split("@")[1])
    points = json.loads(
        durably("diff", f"original@{seq}", "branch", "--json", "--store", store).out
    )
    assert points["transcript"]["a"] == points["transcript"]["b"] == []
    assert points["llm_calls"]["a"] == points["llm_calls"]["b"] == []
    old = durably("diff", "original", "1", "9", "--store", store)
    assert old.code == 0, old.err
    assert old.out.startswith("original: checkpoint 1 -> 9")
    bad = durably("diff", "original@x", "branch", "--store", store)
    assert bad.code == 2, bad.err
    assert "EXECUTION@CHECKPOINT" in bad.err, bad.err
    missing = durably("diff", "original", "nope", "--store", store)
    assert missing.code == 2, missing.err
    assert "nope" in missing.err, missing.err


# ------------------------------------------------------------------ basics


def test_version_names_the_distributions_and_providers() -> None:
    for flag in ("--version", "-V"):
        done = durably(flag)
        assert done.code == 0, done.err
        first, *rest = done.out.splitlines()
        assert re.fullmatch(r"durably \d+\.\d+\.\d+\S* \(Python 3\.\d+\.\d+\S*\)", first), first
        assert any(line.strip().startswith("durably-filesystem ") for line in rest), done.out
        assert "file:// (durably-filesystem" in done.out


def test_llm_help_lists_the_clients() -> None:
    for command in ("run", "resume", "submit"):
        done = durably(command, "--help")
        text = " ".join(done.out.split())
        for prefix in (
            "scripted:PATH",
            "delay=SECONDS",
            "openai:MODEL",
            "azure-openai:DEPLOYMENT",
            "anthropic:MODEL",
        ):
            assert prefix in text, (command, prefix, text)


def test_demo_uses_the_given_or_configured_store(tmp_path: Path) -> None:
    store = _store(tmp_path)
    done = durably("demo", "--store", store, timeout=120)
    assert done.code == 0, done.out + done.err
    assert "indistinguishable" in done.out
    assert f"store: {store}" in done.out
    rows = json.loads(durably("ls", "--json", "--store", store).out)
    names = sorted(row["execution_id"] for row in rows)
    assert len(names) == 2, rows
    assert all(row["status"] == "completed" for row in rows), rows
    assert names[0].startswith("demo-"), names
    assert names[0].endswith("-crashed"), names
    # DURABLY_STORE (as durably.toml would) is honoured too, next to the first demo's.
    again = durably("demo", env={"DURABLY_STORE": store}, cwd=tmp_path, timeout=120)
    assert again.code == 0, again.out + again.err
    assert len(json.loads(durably("ls", "--json", "--store", store).out)) == 4
