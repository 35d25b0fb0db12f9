"""Run and resume programs: the Python API behind the ``durably`` command.

::

    result = await durably.run_program("kitchen.py", llm="scripted:kitchen.json",
                                       inputs=["chickpeas and rice; vegetarian"])
    # ... the process is killed; in another one:
    result = await durably.resume_execution(result.execution_id)

This module drives one run, submit or resume: it opens the store and the LLM client,
builds the :class:`~durably._execution.Execution` and writes the final record
(:func:`_drive`). Its parts live beside it: :mod:`durably._program` loads a program file
(:class:`Program`, re-exported here), :mod:`durably._leasing` holds the execution's lease
while it runs, and :mod:`durably._terminal` connects the command line's
:class:`Terminal` (re-exported here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from durably._execution import Execution, UserIO
from durably._leasing import leased
from durably._program import Program
from durably._resume import restore_agents
from durably._terminal import Terminal, TerminalIO, attach
from durably.checkpoint import CheckpointManager
from durably.config import DurabilityConfig, load_config
from durably.errors import (
    DurablyError,
    IncompleteExecutionError,
    LeaseHeldError,
    NotFoundError,
)
from durably.llm import LLMError
from durably.storage import META_STATUS, CheckpointProvider

log = logging.getLogger("durably")

__all__ = [
    "Program",
    "RunResult",
    "Terminal",
    "new_execution_id",
    "resume_execution",
    "run_program",
    "submit_program",
]


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
    """Who holds leases from this process: host, pid, a random part and the identity
    that lets another process check whether this one is alive (see durably._liveness)."""
    from durably._liveness import this_owner

    return this_owner().encode()


def _store(config: DurabilityConfig, store: str | None) -> CheckpointProvider:
    from durably import open_store

    if store is not None:
        config = load_config(overrides={"store": store}) if config is None else config
        from dataclasses import replace

        config = replace(config, store=store)
    return open_store(config=config)


async def _close_llm(client: Any) -> None:
    """Close a client this module opened (an SDK client's connections), if it can be."""
    aclose = getattr(client, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception as exc:  # closing must not hide how the run ended
        log.debug("closing the LLM client failed: %r", exc)


async def _drive(execution: Execution, manager: CheckpointManager, *, resume: bool) -> RunResult:
    status, value = await execution.run(resume=resume)
    if status == "completed":
        # Final snapshots, so that `show` sees every agent's final state. A crash before
        # the final record resumes from them, so only agents at a quiet point get one
        # (after a `Yield("exit")` another agent may still be waiting mid-statement).
        # An agent idle since its latest snapshot, with the same content, keeps that one
        # (the final record names it): writing it again would record nothing new.
        for agent_id, task in execution.agents.items():
            if agent_id in execution.settled:
                await task.snapshot(unless_repeated=True)
        await manager.write_final(execution, "completed", value)
        policy = manager.config.on_completion
        if policy == "prune":
            await manager.prune(manager.config.keep_last or 1)
        elif policy == "delete":
            await manager.provider.delete_execution(manager.execution_id)
        return RunResult(manager.execution_id, "completed", value)
    error = f"{type(value).__name__}: {value}" if isinstance(value, BaseException) else str(value)
    if isinstance(value, (IncompleteExecutionError, LLMError)):
        # Recorded as failed, loudly: never as completed. The history stays resumable
        # (`durably resume` once the cause is fixed: a budget raised, the model changed).
        with contextlib.suppress(DurablyError):
            await manager.write_final(execution, "failed", error)
        raise value
    if isinstance(value, DurablyError):
        raise value
    with contextlib.suppress(DurablyError):
        await manager.write_final(execution, "failed", error)
    if isinstance(value, asyncio.CancelledError):
        # The program's own (see Execution._guard), not a cancellation of this call:
        # raised, the caller would take it for one.
        return RunResult(manager.execution_id, "failed", error=error)
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
    terminal: Terminal | None = None,
) -> RunResult:
    """Run a program durably from its beginning.

    Args:
        program: The program file (or a loaded :class:`Program`).
        llm: An LLM spec (``scripted:PATH``, ``openai:MODEL``) or a client object.
        llm_options: The ``[llm]`` table: the client's options (``base_url``, ...) and the
            runtime's budgets (:class:`durably.llm.LLMLimits`: ``max_calls``, ...).
        store: Store URL (default: the configured one).
        execution_id: The new execution's id (default: a random one). Must be unused.
        inputs: Answers to the user's ``Yield("user")``, in order; stored with the
            execution so that a resume needs none.
        interactive: Ask the user on the terminal when the inputs run out.
        config: Configuration (default: :func:`durably.load_config`).
        echo: Called with each line an agent says to the user (None: silent).
        progress: Called with (agent, agent id, call stack) at every step.
        terminal: The command line's hooks (see :class:`Terminal`).
    """
    from durably.llm import LLMLimits, open_llm

    config = config or load_config()
    prog = (
        program
        if isinstance(program, Program)
        else Program.load(program, llm=llm, llm_options=llm_options)
    )
    limits, client_options = LLMLimits.split(llm_options)
    client = open_llm(llm, client_options) if isinstance(llm, str) else llm
    execution_id = execution_id or new_execution_id()
    provider = _store(config, store)
    async with provider:
        manager = CheckpointManager(execution_id, provider, config=config)
        if await provider.load_latest_checkpoint(execution_id) is not None:
            raise DurablyError(
                f"execution {execution_id!r} already exists in "
                f"{provider.describe()}; resume it or pick another id"
            )
        io = TerminalIO(list(inputs), interactive=interactive, echo=echo, terminal=terminal)
        execution = Execution(manager, program=prog, llm=client, io=io, limits=limits)
        io.execution = execution
        execution.progress = progress
        attach(execution, terminal)
        execution.header = {
            "program": str(prog.path),
            "digest": prog.digest,
            "llm": getattr(client, "spec", str(llm)),
            "inputs": list(inputs),
            **prog.header,
        }
        async with leased(manager, config.lease_ttl, asyncio.current_task()):
            try:
                return await _drive(execution, manager, resume=False)
            finally:
                if isinstance(llm, str):
                    await _close_llm(client)


async def submit_program(
    program: str | os.PathLike[str] | Program,
    *,
    llm: str,
    llm_options: Mapping[str, Any] | None = None,
    store: str | None = None,
    execution_id: str | None = None,
    inputs: Sequence[str] = (),
    config: DurabilityConfig | None = None,
) -> str:
    """Create an execution without running it: a worker (``durably worker``) or
    ``durably resume`` will run it. Returns its id.

    ``llm_options`` (the ``[llm]`` table) are for a program loader that asks the LLM
    while loading (a ``.pb`` is compiled here); the worker's resumes read their own."""
    config = config or load_config()
    prog = (
        program
        if isinstance(program, Program)
        else Program.load(program, llm=llm, llm_options=llm_options)
    )
    execution_id = execution_id or new_execution_id()
    provider = _store(config, store)
    async with provider:
        manager = CheckpointManager(execution_id, provider, config=config)
        if await provider.load_latest_checkpoint(execution_id) is not None:
            raise DurablyError(f"execution {execution_id!r} already exists")
        execution = Execution(manager, program=prog, llm=None, io=UserIO(list(inputs)))
        execution.header = {
            "program": str(prog.path),
            "digest": prog.digest,
            "llm": llm,
            "inputs": list(inputs),
            **prog.header,
        }
        async with leased(manager, config.lease_ttl):
            for task in execution.begin_agents():
                await task.snapshot()
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
    inputs: Sequence[str] = (),
    waiting: Callable[[LeaseHeldError], None] | None = None,
    notice: Callable[[str], None] | None = None,
    terminal: Terminal | None = None,
) -> RunResult:
    """Resume an execution from its latest checkpoint and run it to the end.

    The program and LLM spec recorded in the execution are used unless overridden. If
    the execution's lease holder is provably dead (see ``docs/guides/scaling-out.md``)
    its lease is taken over at once. If it is alive, or runs on another host and the
    store cannot tell, resuming is refused -- or, with ``wait``, postponed until the
    lease is released or expires (then, if the holder finished the execution, this
    returns ``already-completed``).

    Args:
        inputs: More answers to the user's ``Yield("user")``, after those recorded with
            the execution (for an execution that stopped waiting for input).
        waiting: With ``wait``, called with the refusal each time before waiting (about
            once a second): its ``owner`` and ``expires_at`` make a countdown.
        notice: Called with a one-line message when a dead owner's lease is taken over.

    Raises:
        NotFoundError: No such execution.
        ProgramChangedError: The program file changed (``allow_changed_program`` overrides).
        LeaseHeldError: Another process that is (or may be) alive holds the lease; the
            message says who, whether it is alive, when the lease expires and that
            ``--wait`` waits.
        FencedError: Another process took the execution over while this one ran.
    """
    while True:
        try:
            return await _resume_once(
                execution_id,
                store=store,
                llm=llm,
                llm_options=llm_options,
                config=config,
                allow_changed_program=allow_changed_program,
                interactive=interactive,
                echo=echo,
                progress=progress,
                inputs=inputs,
                notice=notice,
                terminal=terminal,
            )
        except LeaseHeldError as exc:
            if not wait:
                raise
            if waiting is not None:
                waiting(exc)
            remaining = 1.0 if exc.expires_at is None else exc.expires_at - time.time()
            # Poll about once a second: the holder may finish (and release) any time.
            await asyncio.sleep(min(1.0, max(0.05, remaining + 0.05)))


async def _resume_once(
    execution_id: str,
    *,
    store: str | None,
    llm: str | Any | None,
    llm_options: dict[str, Any] | None,
    config: DurabilityConfig | None,
    allow_changed_program: bool,
    interactive: bool,
    echo: Any,
    progress: Any,
    inputs: Sequence[str] = (),
    notice: Callable[[str], None] | None = None,
    terminal: Terminal | None = None,
) -> RunResult:
    from durably.llm import LLMLimits, open_llm

    config = config or load_config()
    limits, client_options = LLMLimits.split(llm_options)
    provider = _store(config, store)
    async with provider:
        manager = CheckpointManager(execution_id, provider, config=config)
        latest = await provider.load_latest_checkpoint(execution_id)
        if latest is None:
            raise NotFoundError(f"no execution {execution_id!r} in {provider.describe()}")
        if latest.metadata.get(META_STATUS) == "completed":
            loaded = await manager.load_execution(inert=True)
            return RunResult(execution_id, "already-completed", loaded and loaded.result)
        async with leased(manager, config.lease_ttl, asyncio.current_task(), notice):
            # Read the state only once the lease is ours: another process may have
            # finished the execution between the check above and the claim.
            # Inert until the program's fingerprint is checked: nothing named by the
            # store is imported before that.
            loaded = await manager.load_execution(inert=True)
            assert loaded is not None
            if loaded.status == "completed":
                return RunResult(execution_id, "already-completed", loaded.result)
            header = loaded.header
            prog = Program.load(
                header["program"],
                execution_id=execution_id,
                expected_digest=None if allow_changed_program else header.get("digest"),
                header=header,
            )
            loaded = await manager.resolve(loaded)
            spec = llm if llm is not None else header.get("llm")
            client = open_llm(spec, client_options) if isinstance(spec, str) else spec
            io = TerminalIO(
                [*header.get("inputs", []), *inputs],
                interactive=interactive,
                echo=echo,
                terminal=terminal,
            )
            execution = Execution(manager, program=prog, llm=client, io=io, limits=limits)
            io.execution = execution
            execution.retrying = loaded.status == "failed"
            execution.progress = progress
            attach(execution, terminal)
            await restore_agents(manager, execution, loaded=loaded)
            try:
                return await _drive(execution, manager, resume=True)
            finally:
                if isinstance(spec, str):
                    await _close_llm(client)
