"""Kill it, resume it, at once (issue 13), on every backend, with real processes.

* SIGKILL `durably run`, then `durably resume` right away -- no ``--wait``, the default
  ``lease_ttl`` of 30 s -- succeeds and equals an uninterrupted run: the dead owner's
  lease is taken over (same host: pid + start time; filesystem and PostgreSQL also by
  their owner lock, from any host).
* From another "host" (``DURABLY_MACHINE_ID``): PostgreSQL still takes over at once (the
  dead session freed its advisory lock); S3 and Redis refuse with a message that says
  who, for how long and ``--wait``, and ``--wait`` takes over within ``lease_ttl`` plus
  a heartbeat.
* A paused owner (SIGSTOP) is taken over after its lease expired; once continued
  (SIGCONT) it is fenced: it stops with exit status 3 and a one-line message, writes
  nothing, and the result equals the uninterrupted run.
* Two `durably resume` at once after a crash, ten rounds: one winner, a clean loser.
* `durably ls` says ``crashed`` right after the kill.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import PROGRAM_CASES, default_ctrl_c, durably, show

COMPARED = ("transcript", "agents", "llm_calls", "result")
CASE = PROGRAM_CASES["counter"]
DEFAULT_TTL = "30"
BACKENDS = ["file", "postgres", "s3", "redis"]
MEASURED: dict[str, float] = {}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """(name, durably.toml, store URL) -- the toml leaves ``lease_ttl`` at its default."""
    name = request.param
    if name == "file":
        store = f"file://{tmp_path / 'store'}"
        config = tmp_path / "durably.toml"
        config.write_text(f'[durability]\nstore = "{store}"\n')
        yield name, config, store
        return
    config, store = request.getfixturevalue(f"{name}_config")
    text = config.read_text().replace("lease_ttl = 1\n", "")
    config.write_text(text)
    yield name, config, store


def _run_args(config: Path, execution_id: str, *, delay: float = 0.0) -> list[str]:
    args = CASE.run_args("unused", execution_id)
    args[args.index("--store") : args.index("--store") + 2] = ["--config", str(config)]
    if delay:
        llm = args.index("--llm") + 1
        args[llm] += f"&delay={delay}"
    return args


def _unpaced_llm() -> list[str]:
    """``--llm`` with the reference run's LLM: the same script, without the ``delay`` a run
    started with ``_run_args(..., delay=...)`` recorded. That delay paces the run so that a
    signal or a waiter lands mid-run; the process that continues it afterwards needs no
    pacing (and would otherwise sleep through every remaining chunk)."""
    llm = CASE.run_args("unused", "unused")
    return ["--llm", llm[llm.index("--llm") + 1]]


def _reference(config: Path, store: str) -> dict[str, object]:
    done = durably(*_run_args(config, "reference"))
    assert done.code == 0, done.err
    data = show(store, "reference", config=config)
    return {key: data[key] for key in COMPARED}


def _crash(config: Path, execution_id: str, *, after: int = 3, ttl: str = DEFAULT_TTL) -> None:
    first = durably(
        *_run_args(config, execution_id),
        env={"DURABLY_CRASH_AFTER_CHECKPOINT": str(after), "DURABLY_LEASE_TTL": ttl},
    )
    assert first.code == -signal.SIGKILL, first.err


def _assert_equal(
    config: Path, store: str, execution_id: str, reference: dict[str, object]
) -> None:
    data = show(store, execution_id, config=config)
    assert data["status"] == "completed"
    for key in COMPARED:
        assert data[key] == reference[key], key


def _ls_status(config: Path, execution_id: str) -> str:
    listed = durably("ls", "--json", "--config", str(config))
    assert listed.code == 0, listed.err
    rows = {row["execution_id"]: row for row in json.loads(listed.out)}
    return str(rows[execution_id]["status"])


def _list_in_process(config: Path) -> tuple[dict[str, str], float]:
    """What `durably ls` lists, timed without the start-up: neither the interpreter's nor
    the store client's (S3's is made at the first request: loading botocore's service
    model took most of a second beside other tests). (statuses, s)"""
    import asyncio

    from durably import open_store
    from durably._inspect import list_executions
    from durably.config import load_config

    async def listing() -> tuple[dict[str, str], float]:
        settings = load_config(config_file=config, use_env=False)
        async with open_store(config=settings) as provider:
            await provider.get_lease("warm-up")  # the client made and connected
            started = time.monotonic()
            rows = await list_executions(provider)
            return {r["execution_id"]: r["status"] for r in rows}, time.monotonic() - started

    return asyncio.run(listing())


def test_sigkill_then_resume_at_once(backend: tuple[str, Path, str]) -> None:
    name, config, store = backend
    reference = _reference(config, store)
    _crash(config, "killed")
    killed_at = time.monotonic()
    listed, took = _list_in_process(config)
    assert listed["killed"] == "crashed", listed
    assert took < 1.0, f"listing took {took:.2f} s"
    status = _ls_status(config, "killed")
    assert status == "crashed", status
    shown = durably("show", "killed", "--config", str(config))
    assert shown.code == 0, shown.err
    assert "crashed" in shown.out.splitlines()[0]
    assert "dead" in shown.out
    assert "resume it with: durably resume killed" in shown.out
    started = time.monotonic()
    resumed = durably(
        "resume", "killed", "--config", str(config), env={"DURABLY_LEASE_TTL": DEFAULT_TTL}
    )
    MEASURED[name] = time.monotonic() - killed_at
    resume_took = time.monotonic() - started
    assert resumed.code == 0, resumed.err
    assert "took execution killed over from" in resumed.err, resumed.err
    # The lease had ~30 s to go: only a take-over can have been this fast.
    assert resume_took < 15
    _assert_equal(config, store, "killed", reference)
    print(
        f"\n{name}: listed as crashed {took * 1000:.0f} ms after the kill (in process); "
        f"`durably resume` (start-up, take-over, the rest of the run) {resume_took:.2f} s; "
        f"kill -> ls -> show -> resumed {MEASURED[name]:.2f} s"
    )


OTHER_HOST_TTL = 8


def test_resume_from_another_host(backend: tuple[str, Path, str]) -> None:
    """PostgreSQL and the filesystem see a dead owner from anywhere (owner lock); S3 and
    Redis see other hosts' owners by lease expiry only."""
    name, config, store = backend
    reference = _reference(config, store)
    elsewhere = {"DURABLY_MACHINE_ID": "another-machine"}
    if name in ("file", "postgres"):
        _crash(config, "far")
        resumed = durably("resume", "far", "--config", str(config), env=elsewhere)
        assert resumed.code == 0, resumed.err
        assert "owner lock is free" in resumed.err, resumed.err
    else:
        # Long enough that the refusal (a new process, boto3 imported) comes before the
        # expiry on a loaded machine.
        _crash(config, "far", ttl=str(OTHER_HOST_TTL))
        killed_at = time.monotonic()
        refused = durably("resume", "far", "--config", str(config), env=elsewhere)
        assert refused.code == 2, refused.err
        assert "Traceback" not in refused.err, refused.err
        lines = [line for line in refused.err.splitlines() if line.startswith("durably:")]
        assert len(lines) == 1, refused.err
        message = lines[0]
        assert "another host" in message, message
        assert "--wait" in message, message
        assert "expires in" in message, message
        waited = durably("resume", "far", "--wait", "--config", str(config), env=elsewhere)
        took = time.monotonic() - killed_at
        assert waited.code == 0, waited.err
        # lease_ttl + one heartbeat of polling (1 s) + process start-up slack
        assert took < OTHER_HOST_TTL + 1 + 4, took
        print(
            f"\n{name}: another host took over {took:.2f} s after the kill "
            f"(lease_ttl {OTHER_HOST_TTL} s)"
        )
    _assert_equal(config, store, "far", reference)


def test_a_paused_owner_is_fenced_when_it_continues(backend: tuple[str, Path, str]) -> None:
    _, config, store = backend
    reference = _reference(config, store)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    env["DURABLY_LEASE_TTL"] = "10"  # long enough to check the refusal under load
    owner = subprocess.Popen(
        [sys.executable, "-m", "durably", *_run_args(config, "paused", delay=0.05)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listed = durably("ls", "--json", "--config", str(config))
            rows = {r["execution_id"]: r for r in json.loads(listed.out or "[]")}
            if rows.get("paused", {}).get("checkpoints", 0) >= 3:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the owner never got going")
        owner.send_signal(signal.SIGSTOP)
        assert _ls_status(config, "paused") in ("running", "stale")
        refused = durably("resume", "paused", "--config", str(config))
        assert refused.code == 2, refused.err
        assert "alive" in refused.err, refused.err
        assert "--wait" in refused.err, refused.err
        taken = durably(
            "resume",
            "paused",
            "--wait",
            *_unpaced_llm(),
            "--config",
            str(config),
            env={"DURABLY_LEASE_TTL": "1.5"},
        )
        assert taken.code == 0, taken.err
        _assert_equal(config, store, "paused", reference)
    finally:
        owner.send_signal(signal.SIGCONT)
        _, err = owner.communicate(timeout=60)
    assert owner.returncode == 3, (owner.returncode, err)
    assert "Traceback" not in err, err
    assert "was taken over by" in err, err
    assert "wrote nothing after the take-over" in err, err
    # Nothing it did after being continued is durable.
    _assert_equal(config, store, "paused", reference)


@pytest.mark.parametrize("backend", ["file", "postgres"], indirect=True)
@pytest.mark.parametrize("wait", [False, True], ids=["no-wait", "wait"])
def test_two_resumers_at_once(backend: tuple[str, Path, str], wait: bool) -> None:
    _, config, store = backend
    reference = _reference(config, store)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    for round_ in range(10):
        execution_id = f"twice-{round_}"
        _crash(config, execution_id, after=2 + round_)
        args = [
            sys.executable,
            "-m",
            "durably",
            "resume",
            execution_id,
            "--config",
            str(config),
            *(["--wait"] if wait else []),
        ]
        procs = [
            subprocess.Popen(
                args,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(2)
        ]
        results = [(p, *p.communicate(timeout=60)) for p in procs]
        for _, _, err in results:
            assert "Traceback" not in err, err
        ran = [r for r in results if r[0].returncode == 0 and "already completed" not in r[2]]
        assert len(ran) == 1, [(p.returncode, e) for p, _, e in results]
        (loser,) = [r for r in results if r is not ran[0]]
        proc, out, err = loser
        if proc.returncode == 0:
            assert "already completed" in err, err
            assert out == "", out
        else:
            assert not wait, err
            assert proc.returncode == 2, err
            lines = err.strip().splitlines()
            assert len(lines) == 1, err
            assert "running in another process" in lines[0], err
        _assert_equal(config, store, execution_id, reference)


def test_ctrl_c_names_the_execution_and_it_resumes(file_store: str, tmp_path: Path) -> None:
    config = tmp_path / "durably.toml"
    config.write_text(f'[durability]\nstore = "{file_store}"\n')
    reference = _reference(config, file_store)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    run = subprocess.Popen(
        [sys.executable, "-m", "durably", *_run_args(config, "interrupted", delay=0.05)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=default_ctrl_c,
    )
    try:
        deadline = time.monotonic() + 30
        while durably("show", "interrupted", "--config", str(config)).code != 0:
            assert time.monotonic() < deadline, "the run never wrote a checkpoint"
            time.sleep(0.1)
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=30)
    finally:
        run.kill()
    assert run.returncode == 130, err
    assert "interrupted; resume with: durably resume interrupted" in err, err
    assert "Traceback" not in err, err
    assert _ls_status(config, "interrupted") == "stopped"
    resumed = durably("resume", "interrupted", *_unpaced_llm(), "--config", str(config))
    assert resumed.code == 0, resumed.err
    _assert_equal(config, file_store, "interrupted", reference)


def test_resume_input_continues_an_execution_that_waited_for_the_user(
    file_store: str,
    tmp_path: Path,
) -> None:
    config = tmp_path / "durably.toml"
    config.write_text(f'[durability]\nstore = "{file_store}"\n')
    reference = _reference(config, file_store)
    args = _run_args(config, "asked")
    del args[args.index("--input") : args.index("--input") + 2]
    first = durably(*args)
    assert first.code == 1, first.err
    assert "no input is left" in first.err
    resumed = durably("resume", "asked", "--input", CASE.inputs[0], "--config", str(config))
    assert resumed.code == 0, resumed.err
    _assert_equal(config, file_store, "asked", reference)


def test_wait_counts_down_on_a_terminal_and_takes_over_when_the_owner_dies(
    file_store: str,
    tmp_path: Path,
) -> None:
    """`resume --wait` on a terminal shows who it waits for and a countdown; when the
    owner dies meanwhile it takes over within about a second -- not at lease expiry."""
    import pty
    import re

    config = tmp_path / "durably.toml"
    config.write_text(f'[durability]\nstore = "{file_store}"\n')
    reference = _reference(config, file_store)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    env["DURABLY_LEASE_TTL"] = "60"
    owner = subprocess.Popen(
        [sys.executable, "-m", "durably", *_run_args(config, "waited", delay=0.05)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    master, slave = pty.openpty()
    waiter = None
    try:
        deadline = time.monotonic() + 30
        while durably("show", "waited", "--config", str(config)).code != 0:
            assert time.monotonic() < deadline, "the owner never wrote a checkpoint"
            time.sleep(0.1)
        waiter = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "durably",
                "resume",
                "waited",
                "--wait",
                *_unpaced_llm(),
                "--config",
                str(config),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=slave,
            stdin=subprocess.DEVNULL,
        )
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 20
        while seen.count(b"lease expires in") < 2:
            assert time.monotonic() < deadline, seen
            seen += os.read(master, 4096)
        owner.kill()
        owner.wait()
        killed_at = time.monotonic()
        out, _ = waiter.communicate(timeout=30)
        took = time.monotonic() - killed_at
    finally:
        owner.kill()
        owner.wait()
        if waiter is not None:
            waiter.kill()
            waiter.wait()
        os.close(master)
    assert waiter.returncode == 0
    text = seen.decode(errors="replace")
    assert "\r\x1b[K" in text, text
    assert re.search(rf"waiting for \S+:{owner.pid} \(alive\)", text), text
    left = [int(n) for n in re.findall(r"lease expires in (\d+) s", text)]
    assert left == sorted(left, reverse=True), left
    assert 0 < left[-1] <= 60, left
    assert took < 10, f"the waiter took {took:.1f} s to notice its owner died"
    assert out, "the waiter ran the rest of the execution"
    _assert_equal(config, file_store, "waited", reference)
