"""Run and resume programs: the Python API behind the ``durably`` command.

::

    result = await durably.run_program("kitchen.py", llm="scripted:kitchen.json",
                                       inputs=["chickpeas and rice; vegetarian"])
    # ... the process is killed; in another one:
    result = await durably.resume_execution(result.execution_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from durably._runtime import Execution, UserIO
from durably.agent import Agent
from durably.checkpoint import CheckpointManager, restore_agents
from durably.config import DurabilityConfig, load_config
from durably.errors import (
    ConfigError,
    DurablyError,
    FencedError,
    LeaseHeldError,
    NotFoundError,
    ProgramChangedError,
)
from durably.storage import META_STATUS, CheckpointProvider, Lease

__all__ = ["Program", "RunResult", "new_execution_id", "resume_execution", "run_program",
           "submit_program"]


@dataclass(frozen=True)
class Program:
    """A program file and the agent classes it defines."""

    path: Path
    digest: str
    module: ModuleType
    agent_classes: tuple[type[Agent], ...]

    @property
    def names(self) -> dict[str, Any]:
        """The names LLM code sees besides ``self``: the program's agent classes."""
        return {cls.__name__: cls for cls in self.agent_classes}

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Program:
        """Import a program file (under a private module name) and find its agents."""
        file = Path(path).resolve()
        try:
            source = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the program: {exc.strerror}",
                              source=str(file)) from exc
        digest = "sha256:" + hashlib.sha256(source).hexdigest()
        name = f"durably_program_{digest[7:19]}"
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise ConfigError("not a Python file", source=str(file))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        classes = tuple(
            value for value in vars(module).values()
            if isinstance(value, type) and issubclass(value, Agent) and value is not Agent
            and value.__module__ == name
        )
        if not classes:
            raise ConfigError("defines no Agent subclass", source=str(file))
        if not any(spec.begin for c in classes for spec in c.playbooks.values()):
            raise ConfigError("no playbook runs at the beginning", source=str(file),
                              fix="Mark one with @playbook(llm=True, begin=True)")
        return cls(file, digest, module, classes)


@dataclass(frozen=True)
class RunResult:
    """How a run (or resume) ended."""

    execution_id: str
    status: str
    """``completed``, ``failed`` or ``already-completed``."""
    result: Any = None
    error: str | None = None


def new_execution_id() -> str:
    """A fresh, store-safe execution id."""
    return uuid.uuid4().hex[:16]


def owner_id() -> str:
    """Who holds leases from this process: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _store(config: DurabilityConfig, store: str | None) -> CheckpointProvider:
    from durably import open_store

    if store is not None:
        config = load_config(overrides={"store": store}) if config is None else config
        from dataclasses import replace

        config = replace(config, store=store)
    return open_store(config=config)


@contextlib.asynccontextmanager
async def _leased(manager: CheckpointManager, ttl: float,
                  on_lost: asyncio.Task[Any] | None = None) -> AsyncIterator[Lease]:
    provider = manager.provider
    if not manager.config.enabled:  # nothing is written, so there is nothing to fence
        yield Lease(manager.execution_id, "durability-disabled", 0, float("inf"))
        return
    lease = await provider.claim(manager.execution_id, owner_id(), ttl=ttl)
    manager.lease = lease
    stop = asyncio.Event()

    async def renew() -> None:
        nonlocal lease
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=ttl / 3)
                return
            except TimeoutError:
                pass
            try:
                lease = await provider.renew(lease, ttl=ttl)
                manager.lease = lease
            except FencedError:
                if on_lost is not None:
                    on_lost.cancel()
                return

    renewer = asyncio.create_task(renew())
    try:
        yield lease
    finally:
        stop.set()
        await renewer
        with contextlib.suppress(DurablyError):
            await provider.release(manager.lease or lease)


async def _drive(execution: Execution, manager: CheckpointManager, *,
                 resume: bool) -> RunResult:
    status, value = await execution.run(resume=resume)
    if status == "completed":
        # Final snapshots, so that `show` sees every agent's final state. A completed
        # execution is never resumed, so these need not be quiet points.
        for task in execution.agents.values():
            await task.snapshot()
        await manager.write_final(execution, "completed", value)
        policy = manager.config.on_completion
        if policy == "prune":
            await manager.prune(manager.config.keep_last or 1)
        elif policy == "delete":
            await manager.provider.delete_execution(manager.execution_id)
        return RunResult(manager.execution_id, "completed", value)
    error = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else str(value)
    if isinstance(value, DurablyError):
        raise value
    with contextlib.suppress(DurablyError):
        await manager.write_final(execution, "failed", error)
    if isinstance(value, BaseException):
        raise value
    return RunResult(manager.execution_id, "failed", error=error)


async def run_program(
    program: str | os.PathLike[str] | Program,
    *,
    llm: str | Any,
    llm_options: dict[str, Any] | None = None,
    store: str | None = None,
    execution_id: str | None = None,
    inputs: Sequence[str] = (),
    interactive: bool = False,
    config: DurabilityConfig | None = None,
    echo: Any = print,
    progress: Any = None,
) -> RunResult:
    """Run a program durably from its beginning.

    Args:
        program: The program file (or a loaded :class:`Program`).
        llm: An LLM spec (``scripted:PATH``, ``openai:MODEL``) or a client object.
        llm_options: Options for the client (the ``[llm]`` table: ``base_url``, ...).
        store: Store URL (default: the configured one).
        execution_id: The new execution's id (default: a random one). Must be unused.
        inputs: Answers to the user's ``Yield("user")``, in order; stored with the
            execution so that a resume needs none.
        interactive: Ask the user on the terminal when the inputs run out.
        config: Configuration (default: :func:`durably.load_config`).
        echo: Called with each line an agent says to the user (None: silent).
        progress: Called with (agent, agent id, call stack) at every step.
    """
    from durably.llm import open_llm

    config = config or load_config()
    prog = program if isinstance(program, Program) else Program.load(program)
    client = open_llm(llm, llm_options) if isinstance(llm, str) else llm
    execution_id = execution_id or new_execution_id()
    provider = _store(config, store)
    async with provider:
        manager = CheckpointManager(execution_id, provider, config=config)
        if await provider.load_latest_checkpoint(execution_id) is not None:
            raise DurablyError(f"execution {execution_id!r} already exists in "
                               f"{provider.describe()}; resume it or pick another id")
        io = UserIO(list(inputs), interactive=interactive, echo=echo)
        execution = Execution(manager, program=prog, llm=client, io=io)
        execution.progress = progress
        execution.header = {"program": str(prog.path), "digest": prog.digest,
                            "llm": getattr(client, "spec", str(llm)), "inputs": list(inputs)}
        async with _leased(manager, config.lease_ttl, asyncio.current_task()):
            return await _drive(execution, manager, resume=False)


async def submit_program(
    program: str | os.PathLike[str] | Program,
    *,
    llm: str,
    store: str | None = None,
    execution_id: str | None = None,
    inputs: Sequence[str] = (),
    config: DurabilityConfig | None = None,
) -> str:
    """Create an execution without running it: a worker (``durably worker``) or
    ``durably resume`` will run it. Returns its id."""
    config = config or load_config()
    prog = program if isinstance(program, Program) else Program.load(program)
    execution_id = execution_id or new_execution_id()
    provider = _store(config, store)
    async with provider:
        manager = CheckpointManager(execution_id, provider, config=config)
        if await provider.load_latest_checkpoint(execution_id) is not None:
            raise DurablyError(f"execution {execution_id!r} already exists")
        execution = Execution(manager, program=prog, llm=None, io=UserIO(list(inputs)))
        execution.header = {"program": str(prog.path), "digest": prog.digest, "llm": llm,
                            "inputs": list(inputs)}
        async with _leased(manager, config.lease_ttl):
            for cls in prog.agent_classes:
                if any(spec.begin for spec in cls.playbooks.values()):
                    await execution.create_agent(cls).snapshot()
    return execution_id


async def resume_execution(
    execution_id: str,
    *,
    store: str | None = None,
    llm: str | Any | None = None,
    llm_options: dict[str, Any] | None = None,
    config: DurabilityConfig | None = None,
    allow_changed_program: bool = False,
    interactive: bool = False,
    echo: Any = print,
    wait: bool = False,
    progress: Any = None,
) -> RunResult:
    """Resume an execution from its latest checkpoint and run it to the end.

    The program and LLM spec recorded in the execution are used unless overridden. If
    another process holds the execution's live lease (it may still be running, or it
    died less than ``lease_ttl`` seconds ago), resuming is refused -- or, with ``wait``,
    postponed until that lease expires.

    Raises:
        NotFoundError: No such execution.
        ProgramChangedError: The program file changed (``allow_changed_program`` overrides).
        LeaseHeldError: Another process still holds the execution's live lease.
    """
    while True:
        try:
            return await _resume_once(execution_id, store=store, llm=llm,
                                      llm_options=llm_options, config=config,
                                      allow_changed_program=allow_changed_program,
                                      interactive=interactive, echo=echo, progress=progress)
        except LeaseHeldError as exc:
            if not wait or exc.expires_at is None:
                raise
            import time

            await asyncio.sleep(max(0.05, exc.expires_at - time.time() + 0.05))


async def _resume_once(execution_id: str, *, store: str | None, llm: str | Any | None,
                       llm_options: dict[str, Any] | None, config: DurabilityConfig | None,
                       allow_changed_program: bool, interactive: bool, echo: Any,
                       progress: Any) -> RunResult:
    from durably.llm import open_llm

    config = config or load_config()
    provider = _store(config, store)
    async with provider:
        manager = CheckpointManager(execution_id, provider, config=config)
        latest = await provider.load_latest_checkpoint(execution_id)
        if latest is None:
            raise NotFoundError(f"no execution {execution_id!r} in {provider.describe()}")
        if latest.metadata.get(META_STATUS) == "completed":
            loaded = await manager.load_execution()
            return RunResult(execution_id, "already-completed", loaded and loaded.result)
        try:
            async with _leased(manager, config.lease_ttl, asyncio.current_task()):
                # Read the state only once the lease is ours: another process may have
                # finished the execution between the check above and the claim.
                loaded = await manager.load_execution()
                assert loaded is not None
                if loaded.status == "completed":
                    return RunResult(execution_id, "already-completed", loaded.result)
                header = loaded.header
                prog = Program.load(header["program"])
                if prog.digest != header.get("digest") and not allow_changed_program:
                    raise ProgramChangedError(
                        f"the program {header['program']} changed since execution "
                        f"{execution_id!r} started; resuming it could replay different code. "
                        "Restore the original file or pass --allow-changed-program")
                spec = llm if llm is not None else header.get("llm")
                client = open_llm(spec, llm_options) if isinstance(spec, str) else spec
                io = UserIO(list(header.get("inputs", [])), interactive=interactive,
                            echo=echo)
                execution = Execution(manager, program=prog, llm=client, io=io)
                execution.progress = progress
                await restore_agents(manager, execution, loaded=loaded)
                return await _drive(execution, manager, resume=True)
        except LeaseHeldError as exc:
            raise LeaseHeldError(
                f"execution {execution_id!r} is running elsewhere (owner {exc.owner}); "
                "its lease must expire before it can be resumed", owner=exc.owner,
                expires_at=exc.expires_at) from exc
