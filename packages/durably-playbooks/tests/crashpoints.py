"""Crash after checkpoint k, for every k, in one process (``playbooks`` is imported once).

The uninterrupted run records the store as it is right after each checkpoint becomes
durable: the core's crash injector (``durably._faults.CrashInjector``, what
``DURABLY_CRASH_AFTER_CHECKPOINT`` uses to SIGKILL a process) is replaced by one that
copies the store instead, and notes what the user had been shown and which LLM calls had
been made by then. Each copy is then exactly what a process killed at that checkpoint
leaves behind (nothing else is written in between: the copy is taken under the
checkpoint write lock). ``durably resume`` of each copy runs in this process with a fresh
LLM client, and must give the uninterrupted run's transcript, agents' states, LLM calls
(prompt digests and responses, as ``durably show`` lists them), the prompts the LLM was
sent, and result; the user must have seen every line once, in order; no LLM call the
killed run had completed is asked again from its beginning.

A store is a directory (``file://``) or a PostgreSQL schema; :class:`StoreKind` copies one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from durably._faults import CrashInjector
from durably.config import DurabilityConfig
from durably.llm import ScriptedLLM, open_llm
from durably.runner import resume_execution, run_program
from durably_playbooks._program import COMPILER_AGENT as COMPILER

from helpers import PROGRAMS

#: What ``durably show --json`` reports that must not change with a crash.
COMPARED = ("transcript", "agents", "llm_calls", "result")
EXECUTION = "crash"
#: The file a program's tools log their runs to, when this variable names one: lines
#: ``start Agent.Tool`` and ``end Agent.Tool`` (the generated programs of ``pbfuzz.py``).
TOOL_LOG = "DURABLY_FUZZ_TOOL_LOG"


def _tool_runs() -> list[str]:
    """The lines of the tool log so far (none without one)."""
    path = os.environ.get(TOOL_LOG)
    if not path or not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as log:
        return log.read().splitlines()


@dataclass(frozen=True)
class Case:
    program: str
    script: str
    inputs: tuple[str, ...]

    @property
    def path(self) -> Path:
        return PROGRAMS / self.program

    def llm(self, chunk_seed: int = 3, script: Path | None = None) -> ScriptedLLM:
        client = open_llm(f"scripted:{script or PROGRAMS / self.script}?chunk_seed={chunk_seed}")
        assert isinstance(client, ScriptedLLM)
        return client


class StoreKind:
    """Where the executions of a test are stored (one store per name), and how to copy a
    store as it is: here a directory per name (``file://``)."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def url(self, name: str) -> str:
        return f"file://{self.base / name}"

    def settings(self, config: DurabilityConfig, name: str) -> DurabilityConfig:
        # No fdatasync: what is checked is a process crash, not a power cut (the SIGKILL
        # tests of test_run_resume.py run with it).
        return replace(config, providers={**config.providers, "file": {"fsync": False}})

    def copy(self, source: str, target: str) -> None:
        shutil.copytree(self.base / source, self.base / target)

    def show(self, name: str) -> dict[str, Any]:
        """What ``durably show --json`` prints for the execution in store ``name``."""
        from durably import open_store
        from durably._inspect import describe_execution, without_measurements
        from durably.checkpoint import CheckpointManager

        settings = self.settings(replace(DurabilityConfig(), store=self.url(name)), name)

        async def describe() -> dict[str, Any] | None:
            async with open_store(config=settings) as provider:
                return await describe_execution(
                    CheckpointManager(EXECUTION, provider, config=settings)
                )

        found = asyncio.run(describe())
        assert found is not None
        data: dict[str, Any] = without_measurements(found)
        return data


def postgres_url() -> str:
    """The test server's URL (``DURABLY_TEST_POSTGRES_URL``, else the local one), or skip
    the test -- a failure under ``DURABLY_REQUIRE_POSTGRES=1``. (Not durably-postgres'
    ``server_or_skip``: that one can start a throwaway cluster and needs
    durably-conformance, which this package's environment does not install.)"""
    import psycopg
    import pytest

    from durably_postgres.testing import ENV_REQUIRE, ENV_URL, LOCAL_URL

    url = os.environ.get(ENV_URL) or LOCAL_URL
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(f"{ENV_REQUIRE}=1 but PostgreSQL at {url} does not answer: {exc}")
        pytest.skip(f"no PostgreSQL server at {url}: {exc}")
    return url


def redis_url() -> str:
    """The test Redis server's URL (``DURABLY_TEST_REDIS_URL``, else the local one), or
    skip the test -- a failure under ``DURABLY_REQUIRE_REDIS=1`` (as :func:`postgres_url`;
    durably-redis' ``server_or_skip`` needs durably-conformance, not installed here)."""
    import pytest
    import redis

    from durably_redis.testing import ENV_REQUIRE, ENV_URL, LOCAL_URL

    url = os.environ.get(ENV_URL) or LOCAL_URL
    try:
        client = redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        if os.environ.get(ENV_REQUIRE) == "1":
            pytest.fail(f"{ENV_REQUIRE}=1 but Redis at {url} does not answer: {exc}")
        pytest.skip(f"no Redis server at {url}: {exc}")
    return url


class PostgresStores(StoreKind):
    """One PostgreSQL schema per name; a copy is taken in one REPEATABLE READ transaction
    (tables, rows and the two sequences of durably-postgres' schema)."""

    TABLES = ("schema_version", "executions", "checkpoints", "blobs")
    SEQUENCES = ("epochs", "versions")

    def __init__(self, server: str, prefix: str) -> None:
        import psycopg

        self.server, self.prefix = server, prefix
        self.conn = psycopg.connect(server, autocommit=True, connect_timeout=10)
        self.schemas: set[str] = set()

    def schema(self, name: str) -> str:
        return f"{self.prefix}_{name.replace('-', '_')}"

    def url(self, name: str) -> str:
        return self.server

    def settings(self, config: DurabilityConfig, name: str) -> DurabilityConfig:
        self.schemas.add(self.schema(name))
        return replace(
            config, providers={**config.providers, "postgres": {"schema": self.schema(name)}}
        )

    def copy(self, source: str, target: str) -> None:
        s, t = self.schema(source), self.schema(target)
        self.schemas.add(t)
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            self.conn.execute(f'CREATE SCHEMA "{t}"')
            for seq in self.SEQUENCES:
                row = self.conn.execute(f'SELECT last_value, is_called FROM "{s}".{seq}').fetchone()
                assert row is not None
                self.conn.execute(f'CREATE SEQUENCE "{t}".{seq} AS bigint')
                self.conn.execute("SELECT setval(%s, %s, %s)", (f'"{t}".{seq}', row[0], row[1]))
            for table in self.TABLES:
                self.conn.execute(f'CREATE TABLE "{t}".{table} (LIKE "{s}".{table} INCLUDING ALL)')
                self.conn.execute(f'INSERT INTO "{t}".{table} SELECT * FROM "{s}".{table}')

    def close(self) -> None:
        for schema in sorted(self.schemas):
            self.conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        self.conn.close()


@dataclass
class Point:
    """The store right after one checkpoint of the uninterrupted run."""

    k: int
    store: str
    said: int
    """How many lines the user had been shown."""
    calls: int
    """How many LLM calls had been started (``ScriptedLLM.calls``)."""
    streaming: bool
    """An LLM response was streaming in (what ``DURABLY_CRASH_IN_LLM_CALL`` aims at)."""
    started: frozenset[tuple[str, int]] = frozenset()
    """The LLM calls some of whose text was durable: a chunk had arrived before a
    checkpoint of the calling agent was written (another agent's checkpoint carries none
    of it)."""
    tools: int = 0
    """How many lines the run had written to the tool log (see :data:`TOOL_LOG`)."""


@dataclass
class Outcome:
    status: str
    result: Any
    said: list[str]
    data: dict[str, Any]
    llm: ScriptedLLM
    prompts: list[tuple[str, str, int, Any]]
    points: list[Point] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)
    """The lines this run wrote to the tool log (see :data:`TOOL_LOG`)."""


class _Recorder(CrashInjector):
    on_checkpoint: Callable[[_Recorder], None] | None = None
    writer: str | None = None
    """The class of the agent that wrote the last checkpoint (None: not an agent's)."""

    def checkpoint_written(self) -> None:
        super().checkpoint_written()
        # The caller is CheckpointManager.write(execution, agent_id, ...): whose checkpoint
        # it is decides which LLM text it made durable (an agent's own chunks only).
        caller = sys._getframe(1).f_locals
        task = getattr(caller.get("execution"), "agents", {}).get(caller.get("agent_id"))
        self.writer = task.agent_class.__name__ if task is not None else None
        if self.on_checkpoint is not None:
            self.on_checkpoint(self)


@contextlib.contextmanager
def _recording(callback: Callable[[_Recorder], None]) -> Iterator[None]:
    """Every CheckpointManager made inside gets a recorder calling ``callback`` right
    after each checkpoint it writes is durable."""
    original = CrashInjector.__dict__["from_env"]

    def from_env(cls: type, environ: Any = None) -> _Recorder:
        recorder = _Recorder(None, None)
        recorder.on_checkpoint = callback
        return recorder

    CrashInjector.from_env = classmethod(from_env)  # type: ignore[method-assign,assignment,arg-type]
    try:
        yield
    finally:
        CrashInjector.from_env = original  # type: ignore[method-assign]


def _recorded(
    client: ScriptedLLM, arrived: set[tuple[str, int]] | None = None
) -> list[tuple[str, str, int, Any]]:
    """Record the prompts the client is sent (and, in ``arrived``, the calls of which a
    chunk arrived)."""
    prompts: list[tuple[str, str, int, Any]] = []
    original = client.stream

    async def stream(messages: Any, **kwargs: Any) -> Any:
        prompts.append((kwargs["agent"], kwargs["playbook"], kwargs["call"], messages))
        async for item in original(messages, **kwargs):
            if arrived is not None:
                arrived.add((f"{kwargs['agent']}.{kwargs['playbook']}", kwargs["call"]))
            yield item

    client.stream = stream  # type: ignore[method-assign]
    return prompts


def run(
    case: Case,
    stores: StoreKind,
    config: DurabilityConfig,
    *,
    record: bool = True,
    chunk_seed: int = 3,
    script: Path | None = None,
) -> Outcome:
    """The uninterrupted run; with ``record``, a copy of the store after each checkpoint
    (``script``: another scripted LLM file than the case's)."""
    store = "reference"
    said: list[str] = []
    client = case.llm(chunk_seed, script)
    arrived: set[tuple[str, int]] = set()
    prompts = _recorded(client, arrived)
    points: list[Point] = []
    logged = len(_tool_runs())

    durable: set[tuple[str, int]] = set()

    def copy(recorder: _Recorder) -> None:
        k = len(points) + 1
        name = f"after-{k}"
        stores.copy(store, name)
        _, streaming = recorder.llm_probe()
        tools = len(_tool_runs()) - logged
        # A compile call is recorded in the header, which the first checkpoint carries.
        durable.update(c for c in arrived if c[0].split(".")[0] in (recorder.writer, COMPILER))
        points.append(
            Point(k, name, len(said), len(client.calls), streaming, frozenset(durable), tools)
        )

    with _recording(copy) if record else contextlib.nullcontext():
        result = asyncio.run(
            run_program(
                case.path,
                llm=client,
                store=stores.url(store),
                execution_id=EXECUTION,
                inputs=list(case.inputs),
                echo=said.append,
                config=stores.settings(config, store),
            )
        )
    data = stores.show(store)
    tools = _tool_runs()[logged:]
    return Outcome(result.status, result.result, said, data, client, prompts, points, tools)


def resume(
    case: Case,
    stores: StoreKind,
    store: str,
    config: DurabilityConfig,
    *,
    script: Path | None = None,
    record: Callable[[_Recorder], None] | None = None,
) -> Outcome:
    """``durably resume`` of the execution in ``store``, in this process, with a new LLM
    client (the killed process's is gone)."""
    said: list[str] = []
    client = case.llm(script=script)
    prompts = _recorded(client)
    logged = len(_tool_runs())
    with _recording(record) if record is not None else contextlib.nullcontext():
        result = asyncio.run(
            resume_execution(
                EXECUTION,
                store=stores.url(store),
                llm=client,
                echo=said.append,
                wait=True,
                config=stores.settings(config, store),
            )
        )
    data = stores.show(store)
    tools = _tool_runs()[logged:]
    return Outcome(result.status, result.result, said, data, client, prompts, tools=tools)


def differences(reference: Outcome, point: Point, resumed: Outcome) -> list[str]:
    """How the run resumed after ``point`` differs from the uninterrupted one (empty: none)."""
    found: list[str] = []
    if resumed.status != "completed":
        found.append(f"status {resumed.status}")
    if resumed.result != reference.result:
        found.append(f"result {resumed.result!r} != {reference.result!r}")
    for key in COMPARED:
        if resumed.data[key] != reference.data[key]:
            found.append(f"show: {key} differs")
    if reference.said[: point.said] + resumed.said != reference.said:
        found.append(f"the user saw {reference.said[: point.said] + resumed.said}")
    # Every prompt the resumed run sent is byte-identical to the uninterrupted run's.
    by_call = {(a, p, n): m for a, p, n, m in reference.prompts}
    for agent, playbook, number, messages in resumed.prompts:
        if by_call.get((agent, playbook, number)) != messages:
            found.append(f"prompt of {agent}.{playbook} call {number} differs")
    # No LLM call is asked again from its beginning: a call cut off by the crash is
    # continued after its journaled start (a call made with a prefix is not fresh). A call
    # none of whose text was durable when the process died is asked anew: another agent's
    # checkpoint can fall after the start of a call and before its agent's next one (the
    # first snapshot of an agent the call's code is creating, say).
    before = [c for c in reference.llm.calls[: point.calls] if (c[0], c[1]) in point.started]
    fresh = [(c[0], c[1]) for c in before + resumed.llm.calls if not c[2]]
    expected = [(c[0], c[1]) for c in reference.llm.calls]
    if sorted(fresh) != sorted(expected):
        found.append(f"fresh LLM calls {sorted(fresh)} != {sorted(expected)}")
    # No tool run that completed before the crash runs again, and none is lost (one in
    # flight at the crash runs again and completes once).
    done = _completed(reference.tools[: point.tools]) + _completed(resumed.tools)
    if done != _completed(reference.tools):
        found.append(f"completed tool runs {dict(done)} != {dict(_completed(reference.tools))}")
    return found


def _completed(lines: list[str]) -> Counter[str]:
    """Tool runs that completed, by tool, in lines of the tool log."""
    return Counter(line.split(" ", 1)[1] for line in lines if line.startswith("end "))


def write_script(case: Case, target: Path, change: Callable[[str], str]) -> Path:
    """A copy of the case's script with every response changed by ``change``."""
    data = json.loads((PROGRAMS / case.script).read_text())
    changed = {key: [change(r) for r in responses] for key, responses in data.items()}
    target.write_text(json.dumps(changed))
    return target
