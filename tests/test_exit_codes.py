"""Every failure is one line with the right exit status (issue 15, item 7), through the
`durably` command as a user runs it (statuses: README "Exit status", `durably --help`).

* 0 only for a completed execution: LLM code raising ``SystemExit(0)`` or a
  ``BaseException``, or assigning ``self.state = 5``, is a failed execution: 1, and
  ``ls`` says ``failed``.
* 2 for usage and configuration errors, each a one-line message naming the file, key or
  argument, never a traceback: the inputs the adversarial probe found.
* A store URL that does not parse as its scheme is an error, never a local directory.
* (3 for a lost lease is checked in ``tests/test_takeover.py``.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import ROOT, durably

PROBE = ROOT / "tests" / "programs" / "probe.py"
SCRIPT = ROOT / "tests" / "programs" / "probe.scripted.json"


def _one_line_error(err: str) -> str:
    lines = [
        line for line in err.splitlines() if line.strip() and not line.startswith("execution ")
    ]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("durably: "), err
    return lines[0]


def test_help_lists_the_exit_statuses() -> None:
    shown = durably("--help")
    assert shown.code == 0
    for line in (
        "0    success",
        "1    the execution failed",
        "2    usage or configuration",
        "3    the lease was lost",
        "130  interrupted",
    ):
        assert line in shown.out, shown.out


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("sysexit", "SystemExit: 0"),
        ("baseexc", "BaseException: out of the blue"),
        ("state5", ""),
    ],
)
def test_what_llm_code_raises_is_a_failed_execution(
    tmp_path: Path, answer: str, reason: str
) -> None:
    store = f"file://{tmp_path / 'store'}"
    done = durably(
        "run",
        str(PROBE),
        "--llm",
        f"scripted:{SCRIPT}",
        "--store",
        store,
        "--execution-id",
        answer,
        "--input",
        answer,
    )
    assert done.code == 1, done.err
    line = _one_line_error(done.err)
    assert f"execution {answer} failed" in line, line
    assert reason in line, line
    listed = durably("ls", "--json", "--store", store)
    (row,) = json.loads(listed.out)
    assert row["status"] == "failed", row
    assert reason in row["reason"], row


def _config(tmp_path: Path, text: bytes) -> Path:
    path = tmp_path / "durably.toml"
    path.write_bytes(text)
    return path


@pytest.mark.parametrize(
    ("toml", "needles"),
    [
        (
            b"[durability]\ndurability = 5\n",
            ["durably.toml", "durability.durability", "unknown key"],
        ),
        (b"durability = 5\n", ["durably.toml", "'durability'", "must be a table"]),
        (b'[durability]\nstore = "caf\xe9"\n', ["durably.toml", "not UTF-8", "UTF-8"]),
        (b"[durability]\nlease_ttl = 1e400\n", ["durably.toml", "durability.lease_ttl"]),
        (
            b"[durability]\nblob_threshold = 1\n",
            ["durably.toml", "durability.blob_threshold", "at least 256"],
        ),
        (b"[worker]\nmax_attempts = 0\n", ["durably.toml", "worker.max_attempts"]),
        (b"[wroker]\n", ["durably.toml", "wroker", "Known tables"]),
    ],
    ids=[
        "key-as-table",
        "table-as-int",
        "not-utf8",
        "lease-ttl-inf",
        "blob-threshold",
        "max-attempts",
        "unknown-table",
    ],
)
def test_bad_configuration_is_status_2_naming_the_key(
    tmp_path: Path, toml: bytes, needles: list[str]
) -> None:
    config = _config(tmp_path, toml)
    command = ["worker", "--once"] if b"[worker]" in toml else ["ls"]
    done = durably(*command, "--config", str(config), cwd=tmp_path)
    assert done.code == 2, done.err
    line = _one_line_error(done.err)
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize(
    "url", ["postgresql:/postgres@127.0.0.1/db", "s3:bucket/prefix", "redis:/localhost:6379"]
)
def test_a_mistyped_store_url_is_never_a_local_directory(tmp_path: Path, url: str) -> None:
    done = durably("ls", "--store", url, cwd=tmp_path)
    assert done.code == 2, done.err
    line = _one_line_error(done.err)
    assert "two slashes" in line, line
    assert list(tmp_path.iterdir()) == []  # no directory was created


def test_an_unparsable_store_url_is_status_2_without_the_password(tmp_path: Path) -> None:
    done = durably("ls", "--store", "postgresql://u:s3cr3t@[::1", cwd=tmp_path)
    assert done.code == 2, done.err
    line = _one_line_error(done.err)
    assert "store URL" in line, line
    assert "s3cr3t" not in done.err, done.err


@pytest.fixture
def failed_store(tmp_path: Path) -> str:
    store = f"file://{tmp_path / 'store'}"
    done = durably(
        "run",
        str(PROBE),
        "--llm",
        f"scripted:{SCRIPT}",
        "--store",
        store,
        "--execution-id",
        "done",
        "--input",
        "ok",
    )
    assert done.code == 0, done.err
    return store


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["fork", "done", "--at", "-1"], "-1"),
        (["diff", "done", "20", "5"], "A < B"),
        (["show", "../../etc"], "execution id"),
        (["show", "a b"], "execution id"),
        (["show", "nosuch"], "nosuch"),
        (["gc"], "--keep-last"),
        (["gc", "--keep-last", "0"], "--keep-last"),
        (["worker", "--poll", "0"], "--poll"),
    ],
    ids=[
        "fork-at-negative",
        "diff-reversed",
        "hostile-id",
        "id-with-space",
        "unknown-id",
        "gc-nothing",
        "gc-keep-0",
        "worker-poll-0",
    ],
)
def test_usage_errors_are_status_2(failed_store: str, args: list[str], needle: str) -> None:
    done = durably(*args, "--store", failed_store)
    assert done.code == 2, (args, done.err)
    line = _one_line_error(done.err)
    assert needle in line, line


@pytest.mark.parametrize("spec", ["?chunk_seed=abc", "bad-json"])
def test_a_bad_llm_argument_is_status_2_naming_it(tmp_path: Path, spec: str) -> None:
    if spec == "bad-json":
        script = tmp_path / "bad.json"
        script.write_bytes(b"\xff\xfe")
        llm = f"scripted:{script}"
    else:
        llm = f"scripted:{SCRIPT}{spec}"
    done = durably(
        "run", str(PROBE), "--llm", llm, "--store", f"file://{tmp_path / 'store'}", "--input", "ok"
    )
    assert done.code == 2, done.err
    line = _one_line_error(done.err)
    assert "--llm" in line or "chunk_seed" in line or "bad.json" in line, line
