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
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from durably._execution import Execution, UserIO
from durably._resume import restore_agents
from durably.agent import Agent
from durably.checkpoint import CheckpointManager
from durably.config import DurabilityConfig, load_config
from durably.errors import (
    ConfigError,
    DurablyError,
    FencedError,
    IncompleteExecutionError,
    LeaseHeldError,
    NotFoundError,
    ProgramChangedError,
)
from durably.llm import LLMError
from durably.storage import META_STATUS, CheckpointProvider, Lease

log = logging.getLogger("durably")
T = TypeVar("T")

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
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        expected_digest: str | None = None,
        execution_id: str | None = None,
    ) -> Program:
        """Import a program file (under a private module name) and find its agents.

        The file is read once; its digest is computed from those bytes and, with
        ``expected_digest``, checked *before* anything of it runs, and the very bytes that
        were checked are compiled and executed (no second read).

        Args:
            path: The program file.
            expected_digest: The fingerprint the file must have (``sha256:<hex>``, as
                recorded when an execution started). A different file is never imported.
            execution_id: The execution it is loaded for (named in the error).

        Raises:
            ProgramChangedError: The file's digest is not ``expected_digest``.
            ConfigError: The file cannot be read, does not compile (the message names the
                line), or defines no agent that begins.
        """
        file = Path(path).resolve()
        try:
            source = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the program: {exc.strerror}", source=str(file)) from exc
        digest = "sha256:" + hashlib.sha256(source).hexdigest()
        if expected_digest is not None and digest != expected_digest:
            whose = f"execution {execution_id!r}" if execution_id else "the execution"
            raise ProgramChangedError(
                f"the program {file} changed since {whose} started; resuming it could "
                "replay different code. Restore the original file or pass "
                "--allow-changed-program"
            )
        name = f"durably_program_{digest[7:19]}"
        try:
            code = compile(source, str(file), "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
            reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
            text = (exc.text or "").strip() if isinstance(exc, SyntaxError) else ""
            shown = f": {text[:120]}" if text else ""
            raise ConfigError(
                f"the program does not compile{where}: {reason}{shown}",
                source=str(file),
                fix="Fix the program file",
            ) from None
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise ConfigError("not a Python file", source=str(file))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            exec(code, module.__dict__)
        except Exception as exc:
            del sys.modules[name]
            raise _load_error(file, exc) from exc
        except BaseException:
            del sys.modules[name]
            raise
        classes = tuple(
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, Agent)
            and value is not Agent
            and value.__module__ == name
        )
        if not classes:
            raise ConfigError("defines no Agent subclass", source=str(file))
        if not any(spec.begin for c in classes for spec in c.playbooks.values()):
            raise ConfigError(
                "no playbook runs at the beginning",
                source=str(file),
                fix="Mark one with @playbook(llm=True, begin=True)",
            )
        return cls(file, digest, module, classes)


def _load_error(file: Path, exc: Exception) -> ConfigError:
    """What importing a program raised, as one line: the program's line that raised (the
    innermost one in the file), the exception and the offending source line."""
    import traceback

    where = ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(file)]
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:  # an imported module's
        where = f" ({exc.filename}, line {exc.lineno})"
    elif frames:
        line = (frames[-1].line or "").strip()
        where = f" (line {frames[-1].lineno}{f': {line[:120]}' if line else ''})"
    reason = "".join(traceback.format_exception_only(exc)).strip().splitlines()[-1]
    return ConfigError(
        f"the program raised while loading{where}: {reason}",
        source=str(file),
        fix="Fix the program file or install what it imports",
    )


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


@contextlib.asynccontextmanager
async def _leased(
    manager: CheckpointManager,
    ttl: float,
    on_lost: asyncio.Task[Any] | None = None,
    notice: Callable[[str], None] | None = None,
) -> AsyncIterator[Lease]:
    """Hold the execution's lease (and owner lock) while the body runs.

    The claim takes a provably dead owner's lease over at once (see durably._liveness).
    A heartbeat renews the lease every third of ``ttl``; if a renewal finds the lease
    superseded (this process was paused or cut off and another one took over),
    ``on_lost`` is cancelled and the body ends with :class:`FencedError`, as it does when
    a checkpoint write is fenced.
    """
    from durably._liveness import acquire_lease

    provider = manager.provider
    if not manager.config.enabled:  # nothing is written, so there is nothing to fence
        yield Lease(manager.execution_id, "durability-disabled", 0, float("inf"))
        return
    held = await acquire_lease(provider, manager.execution_id, ttl)
    lease = held.lease
    manager.lease = lease
    if held.took_over is not None and notice is not None:
        notice(
            f"took execution {manager.execution_id} over from "
            f"{held.took_over.owner_label}: {held.took_over.reason}"
        )
    stop = asyncio.Event()
    lost: FencedError | None = None

    async def renew() -> None:
        nonlocal lease, lost
        interval = ttl / 3
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval)
                return
            except TimeoutError:
                pass
            try:
                lease = await provider.renew(lease, ttl=ttl)
                manager.lease = lease
                interval = ttl / 3
            except FencedError as exc:
                lost = exc
                # Not once the body ended (it is awaiting this task in `finally`).
                if on_lost is not None and not stop.is_set():
                    on_lost.cancel()
                return
            except DurablyError as exc:  # a transient store error: retry sooner
                log.warning(
                    "renewing the lease on execution %s failed (%s); retrying",
                    manager.execution_id,
                    exc,
                )
                interval = max(0.05, min(interval, ttl / 10))

    async def superseded() -> FencedError:
        holder = "another process"
        with contextlib.suppress(DurablyError):
            current = await provider.get_lease(manager.execution_id)
            if current is not None and current.epoch != lease.epoch:
                holder = f"{_holder(current.owner)} (epoch {current.epoch})"
        return FencedError(
            f"execution {manager.execution_id!r} was taken over by {holder} while this "
            f"process was paused or cut off past its lease (epoch {lease.epoch}); this "
            "process stopped and wrote nothing after the take-over"
        )

    async def absorbing(awaitable: Awaitable[T]) -> T:
        """Await, absorbing the one cancellation this context may have sent its task
        when the lease was lost (it can land on any await after the body ended)."""
        inner = asyncio.ensure_future(awaitable)
        while True:
            try:
                return await asyncio.shield(inner)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if lost is None or task is None or not task.cancelling():
                    inner.cancel()
                    raise
                task.uncancel()

    renewer = asyncio.create_task(renew())
    try:
        yield lease
    except BaseException as exc:
        stop.set()
        if isinstance(exc, FencedError) or (
            lost is not None and isinstance(exc, (Exception, asyncio.CancelledError))
        ):
            # Whatever broke -- a fenced write, the cancellation, or what the
            # cancellation broke on its way -- the cause is the take-over.
            raise await absorbing(superseded()) from exc
        raise
    finally:
        stop.set()
        await absorbing(renewer)
        with contextlib.suppress(DurablyError):
            await absorbing(provider.release(manager.lease or lease))
        with contextlib.suppress(Exception):
            await absorbing(held.release_lock())


def _holder(owner: str) -> str:
    """``host:pid`` of a durably owner string, else the string (shortened)."""
    from durably._liveness import OwnerIdentity

    ident = OwnerIdentity.parse(owner)
    if ident is not None:
        return ident.label
    return owner if len(owner) < 80 else owner[:77] + "..."


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
        for agent_id, task in execution.agents.items():
            if agent_id in execution.settled:
                await task.snapshot()
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
    if isinstance(value, BaseException):
        raise value
    return RunResult(manager.execution_id, "failed", error=error)


@dataclass
class Terminal:
    """How a command line talks with the person at the terminal while a program runs (all
    optional): the ``durably`` command's live status and prompt.

    Attributes:
        ask: Awaited for the user's answer when the given inputs ran out (interactive
            runs), with the asking agent's class and id, instead of ``input("> ")``.
        heard: Called with (agent class, agent id, text) when a given ``--input`` answer
            is consumed live (not on replay), so that the transcript shows it.
        watch: Called once with the :class:`Execution` before it runs (a status line
            reads its counters).
        tool_failed: Called when a Python tool raised and its failure was journaled (live,
            not on replay), with ``{"agent", "id", "playbook", "operation", "type",
            "message", "statement"}`` -- what ``durably show`` lists as tool errors.
    """

    ask: Callable[[str, str], Awaitable[str]] | None = None
    heard: Callable[[str, str, str], None] | None = None
    watch: Callable[[Any], None] | None = None
    tool_failed: Callable[[dict[str, Any]], None] | None = None


def _attach(execution: Execution, terminal: Terminal | None) -> None:
    """Connect a :class:`Terminal` to the execution before it runs: its status line
    (``watch``) and the tool failures it journals live (``tool_failed``).

    A tool failure is seen where it is journaled: the execution's ``write_delta`` (wrapped
    on this instance only) gets the journal entries about to become durable, and an entry
    with an ``error`` is a tool that raised. Replay writes no delta, so a resumed
    execution shows only the failures of its own run.
    """
    if terminal is None:
        return
    if terminal.watch is not None:
        terminal.watch(execution)
    failed = terminal.tool_failed
    if failed is None:
        return
    write_delta = execution.write_delta

    async def write_and_tell(task: Any, entries: list[Any]) -> None:
        # Told before the write, as an agent's words are echoed before their entry is
        # committed: a crash right after the checkpoint is durable loses no line (the
        # resumed run replays the failure silently).
        for entry in entries:
            if getattr(entry, "error", None) is None:
                continue
            error = [*entry.error, "", ""]
            frame = task.frames[-1] if task.frames else None
            lines = _statement(task, frame).strip().splitlines()
            with contextlib.suppress(Exception):  # what the terminal does is not the run's
                failed(
                    {
                        "agent": task.agent_class.__name__,
                        "id": task.agent_id,
                        "playbook": frame.playbook if frame is not None else None,
                        "operation": entry.kind,
                        "type": str(error[0]),
                        "message": str(error[1]),
                        "statement": lines[0] if lines else None,
                    }
                )
        await write_delta(task, entries)

    execution.write_delta = write_and_tell  # type: ignore[method-assign]


def _statement(task: Any, frame: Any) -> str:
    """The statement of the LLM response ``frame`` is running (that called the tool)."""
    if frame is None or frame.current is None or frame.llm_index is None:
        return ""
    entry = task.journal.open_llm.get(frame.llm_index)
    return "" if entry is None else str(entry.text[frame.current[0] : frame.current[1]])


class _TerminalIO(UserIO):
    """A :class:`UserIO` that asks and echoes through a :class:`Terminal`."""

    def __init__(
        self, inputs: list[str], *, interactive: bool, echo: Any, terminal: Terminal | None
    ) -> None:
        super().__init__(inputs, interactive=interactive, echo=echo)
        self.terminal = terminal or Terminal()
        self.execution: Execution | None = None

    async def ask(self, agent: str, agent_id: str) -> str:
        if self.consumed < len(self.inputs):
            text = self.inputs[self.consumed]
            if self.terminal.heard is not None:
                self.terminal.heard(agent, agent_id, text)
            return text
        await self._waiting(agent_id)
        if self.interactive and self.terminal.ask is not None:
            return await self.terminal.ask(agent, agent_id)
        return await super().ask(agent, agent_id)

    async def _waiting(self, agent_id: str) -> None:
        """No given answer is left: make the LLM text that arrived durable (a delta with
        no journal entry, as the runtime writes for text it must keep), so that the store
        shows the agent at its ``Yield("user")`` -- ``durably ls`` says ``waiting for
        input`` (see :func:`durably._events.waiting_for_input`)."""
        task = self.execution.agents.get(agent_id) if self.execution is not None else None
        if task is not None:
            await task.write_delta([])


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
    prog = program if isinstance(program, Program) else Program.load(program)
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
        io = _TerminalIO(list(inputs), interactive=interactive, echo=echo, terminal=terminal)
        execution = Execution(manager, program=prog, llm=client, io=io, limits=limits)
        io.execution = execution
        execution.progress = progress
        _attach(execution, terminal)
        execution.header = {
            "program": str(prog.path),
            "digest": prog.digest,
            "llm": getattr(client, "spec", str(llm)),
            "inputs": list(inputs),
        }
        async with _leased(manager, config.lease_ttl, asyncio.current_task()):
            try:
                return await _drive(execution, manager, resume=False)
            finally:
                if isinstance(llm, str):
                    await _close_llm(client)


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
        execution.header = {
            "program": str(prog.path),
            "digest": prog.digest,
            "llm": llm,
            "inputs": list(inputs),
        }
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
        async with _leased(manager, config.lease_ttl, asyncio.current_task(), notice):
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
            )
            loaded = await manager.resolve(loaded)
            spec = llm if llm is not None else header.get("llm")
            client = open_llm(spec, client_options) if isinstance(spec, str) else spec
            io = _TerminalIO(
                [*header.get("inputs", []), *inputs],
                interactive=interactive,
                echo=echo,
                terminal=terminal,
            )
            execution = Execution(manager, program=prog, llm=client, io=io, limits=limits)
            io.execution = execution
            execution.retrying = loaded.status == "failed"
            execution.progress = progress
            _attach(execution, terminal)
            await restore_agents(manager, execution, loaded=loaded)
            try:
                return await _drive(execution, manager, resume=True)
            finally:
                if isinstance(spec, str):
                    await _close_llm(client)
