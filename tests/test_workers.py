"""`durably worker` on several processes: SIGKILL workers at random moments; every
execution completes exactly once, with the uninterrupted run's result, and no two workers
ever held the same execution at once (checked from the stored checkpoints' owners)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durably import open_store
from durably.checkpoint import META_EPOCH, META_KIND, META_OWNER
from durably.config import load_config
from durably.storage import META_STATUS

from conftest import PROGRAM_CASES, durably, show

EXECUTIONS = 20


def _worker(where: list[str]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    env["DURABLY_LEASE_TTL"] = "1"
    return subprocess.Popen(
        [sys.executable, "-m", "durably", "worker", *where, "--concurrency", "3", "--poll", "0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def _audit(store: str, config_file: Path | None) -> dict[str, Any]:
    """Per execution: finals written, and the owners' epochs along the sequence."""
    config = load_config(config_file=config_file, overrides={"store": store}, use_env=False)
    report: dict[str, Any] = {}
    async with open_store(config=config) as provider:
        async for execution in provider.iter_executions():
            epochs: list[tuple[int, str]] = []
            finals = 0
            status = None
            async for info in provider.iter_checkpoints(execution.execution_id):
                if META_EPOCH in info.metadata:
                    epochs.append((int(info.metadata[META_EPOCH]), info.metadata[META_OWNER]))
                finals += info.metadata.get(META_KIND) == "final"
                status = info.metadata.get(META_STATUS)
            report[execution.execution_id] = {"epochs": epochs, "finals": finals, "status": status}
    return report


def run_workers_with_kills(
    store: str, where: list[str], config: Path | None, ids: list[str], *, seconds: float = 90
) -> int:
    """Run three workers; now and then SIGKILL one that is working, start another.

    A kill waits until the workers made progress since the last one (a checkpoint
    written under a lease), and hits the longest-running worker: on a loaded machine a
    freshly started worker may not have claimed anything yet, and a kill on a fixed clock
    would only ever hit workers still starting up.
    """
    rng = random.Random(20261126)
    workers = [_worker(where) for _ in range(3)]
    kills = 0
    progress_at_kill = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.2, 0.6))
            report = asyncio.run(_audit(store, config))
            if all(report.get(i, {}).get("status") == "completed" for i in ids):
                break
            progress = sum(len(entry["epochs"]) for entry in report.values())
            if kills < 12 and progress > progress_at_kill:
                victim = 0  # the list is kept oldest first
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait()
                kills += 1
                progress_at_kill = progress
                workers.pop(victim)
                workers.append(_worker(where))
        else:
            pytest.fail("executions did not all complete in time")
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    return kills


def check_store_after_workers(
    store: str, config: Path | None, ids: list[str], reference: dict[str, Any]
) -> None:
    report = asyncio.run(_audit(store, config))
    taken_over = [i for i in ids if len({owner for _, owner in report[i]["epochs"]}) > 2]
    # submit, then at least two workers: some executions were taken over mid-run
    assert taken_over, "no execution changed worker: the kills missed every execution"
    for execution_id in ids:
        entry = report[execution_id]
        assert entry["status"] == "completed", execution_id
        assert entry["finals"] == 1, execution_id  # completed exactly once
        epochs = [epoch for epoch, _ in entry["epochs"]]
        # Owners never overlapped: along the sequence the epoch never goes back, and each
        # epoch belongs to one owner.
        assert epochs == sorted(epochs), execution_id
        owners: dict[int, set[str]] = {}
        for epoch, owner in entry["epochs"]:
            owners.setdefault(epoch, set()).add(owner)
        assert all(len(o) == 1 for o in owners.values()), execution_id
        data = show(store, execution_id, config=config)
        for key in ("transcript", "agents", "llm_calls", "result"):
            assert data[key] == reference[key], (execution_id, key)


@pytest.fixture(params=["file", "postgres"])
def store_where(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, list[str], Path | None]]:
    """(store URL, the command-line options that select it, the config file if any)."""
    if request.param == "file":
        store = f"file://{tmp_path}/store"
        yield store, ["--store", store], None
        return
    from durably_postgres.testing import drop_schema, random_schema, server_or_skip

    server = server_or_skip()
    schema = random_schema("durably_workers")
    config = tmp_path / "durably.toml"
    config.write_text(
        f'[durability]\nstore = "{server.url}"\n[durability.postgres]\nschema = "{schema}"\n'
    )
    yield server.url, ["--config", str(config)], config
    drop_schema(server.url, schema)


def test_three_workers_twenty_executions_random_sigkills(
    store_where: tuple[str, list[str], Path | None],
) -> None:
    store, where, config = store_where
    case = PROGRAM_CASES["counter"]
    llm = f"scripted:{case.script}?chunk_seed=5&delay=0.002"
    done = durably(
        "run",
        str(case.program),
        "--llm",
        llm,
        *where,
        "--execution-id",
        "reference",
        "--input",
        case.inputs[0],
    )
    assert done.code == 0, done.err
    reference = show(store, "reference", config=config)
    ids = [f"job-{n:02d}" for n in range(EXECUTIONS)]
    for execution_id in ids:
        submitted = durably(
            "submit",
            str(case.program),
            "--llm",
            llm,
            *where,
            "--execution-id",
            execution_id,
            "--input",
            case.inputs[0],
        )
        assert submitted.code == 0, submitted.err
    kills = run_workers_with_kills(store, where, config, ids)
    assert kills >= 1
    check_store_after_workers(store, config, ids, reference)
