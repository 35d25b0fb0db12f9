"""The worker's children: one process per attempt, and the protocol between them.

The worker never runs an execution in its own process. :func:`run_child` starts
``python -c`` of :func:`child_main` (with :func:`asyncio.create_subprocess_exec`, in a
session of its own), writes the job on the child's stdin and reads its reports:

* the job: one JSON line -- ``execution_id``, ``config`` (the ``[durability]`` settings),
  ``handoff`` (``[owner, epoch, expires_at]`` of a lease the worker claimed, or null),
  ``cpu_limit``, ``memory_limit``, ``parent`` (the worker's pid);
* ``p``: progress (the history loaded, the agents restored, a step, a checkpoint), at
  most every :data:`_PROGRESS_EVERY` seconds. The first one says the execution is loaded:
  until it arrives the child is starting (the interpreter, the imports, the store's client
  and connection, the claim, reading the history), which gets at least :data:`_STARTUP`
  seconds whatever ``statement_timeout`` is;
* ``r {json}``: the result, an :class:`Outcome` (``outcome``, ``error``), then the child
  exits.

The child applies the limits to itself before anything else runs (``RLIMIT_CPU``,
``RLIMIT_AS``), dies with the worker (``PR_SET_PDEATHSIG`` on Linux, end-of-file on its
stdin everywhere: exit status :data:`EXIT_ORPHANED`) and writes whatever the program
prints to stderr, keeping the original stdout for its reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from durably._worker._scan import DAMAGE
from durably.config import DurabilityConfig, WorkerConfig
from durably.errors import FencedError, LeaseHeldError
from durably.storage import META_STATUS, Lease

__all__ = [
    "EXIT_ORPHANED",
    "Outcome",
    "child_main",
    "describe_death",
    "kill",
    "run_child",
    "to_the_end",
]

T = TypeVar("T")

EXIT_ORPHANED = 70
"""A child's exit status when its worker died (it stops at once)."""
_CHILD_ENTRY = "from durably._worker._children import child_main; child_main()"
_PROGRESS_EVERY = 0.25
"""A child reports progress at most this often (seconds)."""
_STARTUP = 60.0
"""Seconds a child has to report for the first time, when ``statement_timeout`` is
shorter: starting the interpreter, importing the store's client (aiobotocore alone takes
seconds on a loaded machine), connecting, claiming and loading the history are not a
statement that makes no progress."""


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, as its child reported it (or as its death tells)."""

    kind: str
    """``completed``, ``failed`` (the program failed; recorded), ``already-completed``,
    ``busy`` (someone else holds it), ``damaged``, ``error`` (counts as a failed
    attempt)."""
    error: str = ""


# ---------------------------------------------------------------------- the worker's side


async def run_child(
    execution_id: str,
    handoff: Lease | None,
    *,
    config: DurabilityConfig,
    limits: WorkerConfig,
    children: dict[str, asyncio.subprocess.Process],
) -> Outcome:
    """Run one attempt at ``execution_id`` in a child process and wait for its outcome.

    The child gets its job as one JSON line on stdin (the execution, the configuration,
    the lease to hand off, the limits, the worker's pid) and keeps stdin open as its
    lifeline. It reports ``p`` once the history is loaded, then at every step and
    checkpoint, and ``r {json}`` (the :class:`Outcome`) at the end. An attempt silent for
    ``statement_timeout`` (before the first report, while it starts, opens the store and
    loads: at least :data:`_STARTUP` seconds) is killed with its process group; a child
    that dies without a result is a failed attempt whose reason says how it died.

    Args:
        execution_id: The execution to resume.
        handoff: The lease the worker claimed for it (``CLAIM_NEXT``), taken over by the
            child's claim (no window for another worker); None when the worker scanned.
        config: The ``[durability]`` settings the child runs with.
        limits: The ``[worker]`` settings (timeout, CPU and memory limits).
        children: The running children, by execution: the process is in it while it
            runs (so that the worker can kill it when it stops).
    """
    job = {
        "execution_id": execution_id,
        "config": {**asdict(config), "sources": list(config.sources)},
        "handoff": None if handoff is None else [handoff.owner, handoff.epoch, handoff.expires_at],
        "cpu_limit": limits.cpu_limit,
        "memory_limit": limits.memory_limit,
        "parent": os.getpid(),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD_ENTRY,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    children[execution_id] = proc
    assert proc.stdin is not None
    assert proc.stdout is not None
    result: dict[str, Any] | None = None
    timed_out: float | None = None  # the limit it ran into
    started = False  # the child reported once (the history is loaded)
    try:
        proc.stdin.write(json.dumps(job, default=str).encode() + b"\n")
        await proc.stdin.drain()
        timeout = limits.statement_timeout or None
        while True:
            limit = timeout if started or timeout is None else max(timeout, _STARTUP)
            try:
                # Not asyncio.wait_for: on Python 3.11 it returns the line if a
                # cancellation lands as the line arrives, and the cancellation is lost
                # (CPython gh-86296; 3.12 rewrote wait_for on asyncio.timeout).
                async with asyncio.timeout(limit):
                    line = await proc.stdout.readline()
            except TimeoutError:
                timed_out = limit
                kill(proc)
                break
            if not line:
                break
            started = True
            if line.startswith(b"r "):
                with contextlib.suppress(ValueError):
                    result = json.loads(line[2:])
        returncode = await proc.wait()
    finally:
        try:
            await _reap(proc)
        finally:
            with contextlib.suppress(Exception):
                proc.stdin.close()
            children.pop(execution_id, None)
    if timed_out is not None and not started:
        return Outcome(
            "error",
            f"it did not start within {timed_out:g} s (importing, opening the store and "
            "loading the history): its process was killed",
        )
    if timed_out is not None:
        return Outcome(
            "error",
            f"no progress for {timed_out:g} s (statement_timeout): its process was killed",
        )
    if result is not None:
        return Outcome(str(result.get("outcome", "error")), str(result.get("error", "")))
    return Outcome("error", describe_death(returncode, limits.cpu_limit))


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Kill a child that still runs and wait until it is gone, even if the attempt is
    cancelled meanwhile (a worker stopping, then stopped again): that cancellation is
    raised once the child is reaped, never absorbed."""
    if proc.returncode is not None:
        return
    kill(proc)
    with contextlib.suppress(Exception):  # the wait's own trouble: it was SIGKILLed
        await to_the_end(proc.wait())


async def to_the_end(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable`` to its end even if the task is cancelled meanwhile (cleanup
    that must finish, in a ``finally``), then raise that cancellation: it is deferred,
    not lost.

    Only the task's cancellation is deferred; ``awaitable`` is never cancelled by it (if
    it ends cancelled by itself, that is raised). The task is cancelled as often as it was
    asked to be (``Task.cancelling()`` counts every request): this raises one
    :class:`asyncio.CancelledError` for them, as any coroutine does, and withdraws none
    (``uncancel``): whoever asked, an ``asyncio.timeout`` or a ``TaskGroup`` included,
    sees its cancellation through, on Python 3.11 as on 3.12+.

    Raises:
        asyncio.CancelledError: The task was cancelled while it waited (raised once
            ``awaitable`` ended; its result or error is dropped).
    """
    inner = asyncio.ensure_future(awaitable)
    cancelled: asyncio.CancelledError | None = None
    while not inner.done():
        try:
            await asyncio.wait((inner,))  # neither cancels inner nor raises its error
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is not None:
        if not inner.cancelled():
            inner.exception()  # retrieved (not logged as never retrieved), and dropped
        raise cancelled
    return inner.result()


def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL a child and its process group (whatever LLM code started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_death(returncode: int, cpu_limit: float) -> str:
    """Why a child that reported no result ended (its signal, with the likely cause)."""
    if returncode < 0:
        name = _signal_name(-returncode)
        if name == "SIGXCPU" or (name == "SIGKILL" and cpu_limit):
            hint = (
                f" (CPU limit: cpu_limit = {cpu_limit:g} s)"
                if name == "SIGXCPU"
                else (" (the CPU limit's hard stop, or the out-of-memory killer)")
            )
        elif name == "SIGKILL":
            hint = " (the out-of-memory killer, or another process)"
        elif name == "SIGSEGV":
            hint = " (a segmentation fault)"
        else:
            hint = ""
        return f"its process was killed by {name}{hint}"
    return f"its process exited with status {returncode} without reporting a result"


# ---------------------------------------------------------------------- the child's side


def child_main() -> None:
    """Entry point of an attempt's child process (see :func:`run_child`).

    Reads its job (one JSON line) from stdin, keeps stdin open as the lifeline to the
    worker, reports progress (``p``) and its result (``r {json}``) on the original
    stdout; whatever the program prints goes to stderr.
    """
    channel = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    job = json.loads(sys.stdin.buffer.readline())
    _die_with_parent(int(job["parent"]))
    _apply_limits(float(job.get("cpu_limit") or 0), int(job.get("memory_limit") or 0))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from durably._redact import redact_logs

    redact_logs()
    try:
        outcome = asyncio.run(_child_run(job, channel))
    except BaseException as exc:  # SystemExit or BaseException from LLM code
        raw = dict(job["config"])
        raw["sources"] = tuple(raw.get("sources", ()))
        outcome = asyncio.run(
            _after_exception(DurabilityConfig(**raw), str(job["execution_id"]), exc)
        )
    channel.write(
        b"r " + json.dumps({"outcome": outcome.kind, "error": outcome.error}).encode() + b"\n"
    )
    channel.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


async def _after_exception(
    config: DurabilityConfig, execution_id: str, exc: BaseException
) -> Outcome:
    """An attempt that raised: ``failed`` if the run recorded the execution as failed
    (what LLM code raised ends the program), else a failed attempt (retried)."""
    from durably import open_store
    from durably._redact import redact

    error = redact(f"{type(exc).__name__}: {exc}")
    with contextlib.suppress(Exception):
        async with open_store(config=config) as provider:
            latest = await provider.load_latest_checkpoint(execution_id)
            if latest is not None and latest.metadata.get(META_STATUS) == "failed":
                return Outcome("failed", error)
    return Outcome("error", error)


def _die_with_parent(parent: int) -> None:
    """Exit as soon as the worker is gone: the kernel's parent-death signal where there
    is one, and end-of-file on stdin (the worker holds its end) everywhere."""
    import threading

    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(EXIT_ORPHANED)

    def watch() -> None:
        with contextlib.suppress(Exception):
            while sys.stdin.buffer.read(4096):
                pass
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="durably-lifeline", daemon=True).start()


def _apply_limits(cpu_limit: float, memory_limit: int) -> None:
    """``RLIMIT_CPU`` (SIGXCPU at the limit, SIGKILL a second later) and ``RLIMIT_AS``,
    where the platform has them."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return
    if cpu_limit:
        soft = max(1, math.ceil(cpu_limit))
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
    if memory_limit:
        with contextlib.suppress(ValueError, OSError, AttributeError):
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))


async def _child_run(job: dict[str, Any], channel: Any) -> Outcome:
    from durably._liveness import HANDOFF
    from durably._plugins import get_hooks
    from durably._redact import redact
    from durably.hookspecs import hookimpl
    from durably.runner import resume_execution

    execution_id = str(job["execution_id"])
    raw = dict(job["config"])
    raw["sources"] = tuple(raw.get("sources", ()))
    config = DurabilityConfig(**raw)
    # No report yet: until the history is loaded (the first report), the child is starting,
    # which the worker bounds by _STARTUP, not by statement_timeout.
    last = 0.0

    def progress(*_args: Any) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= _PROGRESS_EVERY:
            last = now
            with contextlib.suppress(OSError):
                channel.write(b"p\n")

    class _Progress:
        @hookimpl
        def durably_after_checkpoint(self, execution_id: str, info: Any) -> None:
            progress()

        @hookimpl
        def durably_before_recover(self, execution_id: str, seq: int) -> None:
            progress()  # the history is loaded

        @hookimpl
        def durably_after_recover(self, execution_id: str, seq: int, replayed: int) -> None:
            progress()  # the agents are restored

    get_hooks().register(_Progress(), name="durably-worker-progress")
    handoff = job.get("handoff")
    if handoff is not None:
        # The worker claimed it for us (CLAIM_NEXT): our claim takes that lease over
        # (conditional on it being current), so that no other worker can claim it in
        # between, as it could if we gave it back and claimed anew.
        owner, epoch, expires_at = handoff
        HANDOFF.set(Lease(execution_id, owner, int(epoch), float(expires_at)))
    try:
        result = await resume_execution(execution_id, config=config, echo=None, progress=progress)
    except (LeaseHeldError, FencedError) as exc:
        return Outcome("busy", redact(str(exc)))
    except DAMAGE as exc:
        return Outcome("damaged", redact(str(exc)))
    except Exception as exc:
        return await _after_exception(config, execution_id, exc)
    finally:
        await _release_unused_handoff(config)
    if result.status in ("completed", "already-completed"):
        return Outcome("completed")
    return Outcome("failed", redact(result.error or "failed"))


async def _release_unused_handoff(config: DurabilityConfig) -> None:
    """Give the worker's lease back if the attempt ended before its claim used it (a
    damaged or deleted execution, a failure while loading, durability off): else nobody
    -- not another worker, not ``durably resume`` -- could claim it until it expired."""
    from durably import open_store
    from durably._liveness import HANDOFF

    unused = HANDOFF.get()
    if unused is None:
        return
    HANDOFF.set(None)
    with contextlib.suppress(Exception):  # best effort: the lease expires anyway
        async with open_store(config=config) as provider:
            await provider.release(unused)
