"""Supervised workers (issue 15, item 3), with real processes, on every backend
(filesystem, PostgreSQL -- where the worker claims through ``claim_next``, the CLAIM_NEXT
capability -- Redis and S3):

* a worker with a corrupt execution, an execution whose LLM code calls ``os._exit(1)`` and
  one that loops forever, queued beside 10 healthy ones, completes the 10 healthy ones;
  the ``os._exit`` and the looping ones end ``failed`` with their reason after
  ``max_attempts`` attempts, the corrupt one is skipped and ``durably ls`` shows it
  ``damaged`` with the error (nothing is written to it, so restoring the damaged object
  repairs it);
* ``durably resume`` continues each of the three once its cause is fixed;
* ``cpu_limit`` (``RLIMIT_CPU`` in the attempt's process) ends a looping attempt too, and
  ``memory_limit`` (``RLIMIT_AS``) turns a runaway allocation into a ``MemoryError``.

The program is ``tests/programs/probe.py``: its LLM code does what the execution's one
input says (``ok``, ``exit``, ``loop``), unless ``PROBE_FIXED`` is set.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, durably

pytestmark = pytest.mark.filterwarnings("ignore::durably.errors.DurablyWarning")  # Redis, no AOF

PROBE = ROOT / "tests" / "programs" / "probe.py"
LLM = f"scripted:{ROOT / 'tests' / 'programs' / 'probe.scripted.json'}"
HEALTHY = [f"ok-{n:02d}" for n in range(10)]


class Backdoor:
    """Corrupts and restores a checkpoint's stored bytes behind the provider's back."""

    def __init__(self, config: Path) -> None:
        import tomllib

        settings = tomllib.loads(config.read_text())["durability"]
        store: str = settings["store"]
        if store.startswith("file://"):
            from durably_filesystem.testing import FilesystemBackdoor

            self.door: Any = FilesystemBackdoor(store.removeprefix("file://"))
        elif store.startswith("postgresql://"):
            from durably_postgres.testing import PostgresBackdoor

            self.door = PostgresBackdoor(store, settings["postgres"]["schema"])
        elif store.startswith("redis://"):
            from durably_redis.testing import RedisBackdoor

            self.door = RedisBackdoor(store, settings["redis"]["key_prefix"])
        else:
            from durably_s3.testing import S3Backdoor

            bucket, _, prefix = store.removeprefix("s3://").partition("/")
            self.door = S3Backdoor(bucket, prefix, endpoint_url=settings["s3"]["endpoint_url"])

    def read(self, execution_id: str, seq: int) -> bytes:
        data: bytes = asyncio.run(self.door.read_checkpoint(execution_id, seq))
        return data

    def corrupt(self, execution_id: str, seq: int) -> None:
        asyncio.run(self.door.corrupt_checkpoint(execution_id, seq))

    def write(self, execution_id: str, seq: int, raw: bytes) -> None:
        asyncio.run(self.door.write_checkpoint(execution_id, seq, raw))


WORKER_TABLE = "[worker]\nstatement_timeout = 4\nmax_attempts = 2\nbackoff = 0.2\nmax_backoff = 1\n"


@pytest.fixture(params=["file", "postgres", "redis", "s3"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, Backdoor]]:
    """(a durably.toml naming the store, with a ``[worker]`` table; a backdoor)."""
    config = tmp_path / "durably.toml"
    cleanup: list[Callable[[], None]] = []
    if request.param == "file":
        config.write_text(f'[durability]\nstore = "file://{tmp_path / "store"}"\nlease_ttl = 2\n')
    elif request.param == "postgres":
        from durably_postgres.testing import drop_schema, random_schema, server_or_skip

        server = server_or_skip()
        schema = random_schema("durably_supervised")
        cleanup.append(lambda: drop_schema(server.url, schema))
        config.write_text(
            f'[durability]\nstore = "{server.url}"\nlease_ttl = 2\n'
            f'[durability.postgres]\nschema = "{schema}"\n'
        )
    else:  # the shared fixtures of conftest.py (they clean up after themselves)
        written, _ = request.getfixturevalue(f"{request.param}_config")
        assert written == config
    config.write_text(config.read_text() + WORKER_TABLE)
    try:
        yield config, Backdoor(config)
    finally:
        for undo in cleanup:
            undo()


def _submit(config: Path, execution_id: str, answer: str) -> None:
    done = durably(
        "submit",
        str(PROBE),
        "--llm",
        LLM,
        "--config",
        str(config),
        "--execution-id",
        execution_id,
        "--input",
        answer,
    )
    assert done.code == 0, done.err


def _ls(config: Path) -> dict[str, dict[str, Any]]:
    listed = durably("ls", "--json", "--config", str(config))
    assert listed.code == 0, listed.err
    return {row["execution_id"]: row for row in json.loads(listed.out)}


def test_bad_executions_never_stop_the_healthy_ones(setup: tuple[Path, Backdoor]) -> None:
    config, backdoor = setup
    _submit(config, "bad-exit", "exit")
    _submit(config, "bad-loop", "loop")
    _submit(config, "bad-corrupt", "ok")
    for execution_id in HEALTHY:
        _submit(config, execution_id, execution_id)
    original = backdoor.read("bad-corrupt", 0)
    backdoor.corrupt("bad-corrupt", 0)

    worker = durably(
        "worker",
        "--once",
        "--poll",
        "0.2",
        "--concurrency",
        "3",
        "--config",
        str(config),
        timeout=240,
    )
    # Some executions failed or were damaged: a documented 1, never 0, never a crash.
    assert worker.code == 1, worker.err
    assert "Traceback" not in worker.err, worker.err
    assert "10 completed, 2 failed, 1 damaged" in worker.err, worker.err

    rows = _ls(config)
    for execution_id in HEALTHY:
        assert rows[execution_id]["status"] == "completed", rows[execution_id]
    assert rows["bad-exit"]["status"] == "failed", rows["bad-exit"]
    assert "gave up after 2 failed attempt(s)" in rows["bad-exit"]["reason"]
    assert "exited with status 1" in rows["bad-exit"]["reason"]
    assert rows["bad-loop"]["status"] == "failed", rows["bad-loop"]
    assert "statement_timeout" in rows["bad-loop"]["reason"]
    assert rows["bad-corrupt"]["status"] == "damaged", rows["bad-corrupt"]
    assert "checkpoint 0 of execution 'bad-corrupt'" in rows["bad-corrupt"]["reason"]
    assert "checksum" in rows["bad-corrupt"]["reason"]
    text = durably("ls", "--config", str(config))
    assert "statement_timeout" in text.out, text.out  # the reason is in the table too

    # Another worker finds nothing to do: failed executions are not retried forever.
    again = durably("worker", "--once", "--poll", "0.2", "--config", str(config), timeout=120)
    assert "0 completed, 0 failed" in again.err, again.err

    # Once the cause is fixed, `durably resume` continues each of them.
    for execution_id in ("bad-exit", "bad-loop"):
        fixed = durably(
            "resume", execution_id, "--config", str(config), env={"PROBE_FIXED": "1"}, timeout=120
        )
        assert fixed.code == 0, fixed.err
        assert f"did {execution_id.removeprefix('bad-')}" in fixed.out + fixed.err
    broken = durably("resume", "bad-corrupt", "--config", str(config))
    assert broken.code == 2, broken.err
    assert "checksum" in broken.err, broken.err
    backdoor.write("bad-corrupt", 0, original)  # restored from a backup
    repaired = durably("resume", "bad-corrupt", "--config", str(config), timeout=120)
    assert repaired.code == 0, repaired.err
    rows = _ls(config)
    assert {row["status"] for row in rows.values()} == {"completed"}, rows


def test_cpu_limit_ends_a_looping_attempt(tmp_path: Path) -> None:
    store = f"file://{tmp_path / 'store'}"
    config = tmp_path / "durably.toml"
    config.write_text(
        f'[durability]\nstore = "{store}"\nlease_ttl = 2\n[worker]\n'
        "statement_timeout = 0\nmax_attempts = 1\ncpu_limit = 1\n"
    )
    _submit(config, "spin", "loop")
    _submit(config, "fine", "fine")
    worker = durably("worker", "--once", "--poll", "0.2", "--config", str(config), timeout=120)
    assert worker.code == 1, worker.err
    rows = _ls(config)
    assert rows["fine"]["status"] == "completed", rows
    assert rows["spin"]["status"] == "failed", rows
    assert "SIGXCPU" in rows["spin"]["reason"], rows["spin"]
    assert "cpu_limit" in rows["spin"]["reason"], rows["spin"]


def test_worker_options_are_checked(tmp_path: Path) -> None:
    """Bad limits are usage errors (exit 2) naming the option, before any work."""
    store = f"file://{tmp_path / 'store'}"
    for args, needle in (
        (["--max-attempts", "0"], "max_attempts"),
        (["--statement-timeout", "-1"], "statement_timeout"),
        (["--memory-limit", "lots"], "memory_limit"),
        (["--cpu-limit", "nan"], "cpu_limit"),
        (["--concurrency", "0"], "--concurrency"),
    ):
        done = durably("worker", "--once", "--store", store, *args)
        assert done.code == 2, (args, done.err)
        assert needle in done.err, (args, done.err)
        assert "Traceback" not in done.err, done.err
    assert not os.path.exists(tmp_path / "store" / "executions")


def test_memory_limit_turns_a_runaway_allocation_into_a_memory_error(tmp_path: Path) -> None:
    """``memory_limit`` (``RLIMIT_AS`` in the attempt's process): LLM code asking for
    3 GB gets a ``MemoryError``, which the program sees and recovers from (its LLM's
    next response), instead of the worker's machine swapping or the OOM killer."""
    store = f"file://{tmp_path / 'store'}"
    config = tmp_path / "durably.toml"
    config.write_text(
        f'[durability]\nstore = "{store}"\n[worker]\nmemory_limit = "1GiB"\nmax_attempts = 1\n'
    )
    _submit(config, "hog", "big:3000000000")
    worker = durably("worker", "--once", "--poll", "0.2", "--config", str(config), timeout=120)
    assert worker.code == 0, worker.err
    shown = durably("show", "hog", "--json", "--config", str(config))
    data = json.loads(shown.out)
    assert data["result"] == "recovered", data["result"]
    assert "MemoryError" in json.dumps(data)  # what the LLM was told


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_an_attempt_dies_with_its_worker(tmp_path: Path) -> None:
    """SIGKILL the worker while an attempt spins: the attempt's process goes too (no
    orphan keeps running LLM code), and the next worker takes the execution over."""
    import signal
    import subprocess
    import sys
    import time

    config = tmp_path / "durably.toml"
    config.write_text(
        f'[durability]\nstore = "file://{tmp_path / "store"}"\nlease_ttl = 1\n'
        "[worker]\nstatement_timeout = 0\nmax_attempts = 5\n"
    )
    _submit(config, "spin", "loop")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "durably", "worker", "--poll", "0.2", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    attempt = None
    try:
        deadline = time.monotonic() + 30
        while not (children := _children(worker.pid)):
            assert time.monotonic() < deadline, "the worker never started an attempt"
            time.sleep(0.1)
        (attempt,) = children
        time.sleep(1)  # inside the loop by now
        assert _alive(attempt)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        deadline = time.monotonic() + 10
        while _alive(attempt):
            assert time.monotonic() < deadline, "the attempt outlived its worker"
            time.sleep(0.1)
    finally:
        worker.kill()
        worker.wait()
        if attempt is not None and _alive(attempt):
            os.kill(attempt, signal.SIGKILL)  # the test failed: leave no spinning process
    # The cause fixed, the next worker takes the execution over (the lease expired).
    again = durably(
        "worker",
        "--once",
        "--poll",
        "0.2",
        "--config",
        str(config),
        env={"PROBE_FIXED": "1"},
        timeout=120,
    )
    assert again.code == 0, again.err
    assert _ls(config)["spin"]["status"] == "completed"
