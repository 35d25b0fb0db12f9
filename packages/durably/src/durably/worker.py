"""``durably worker``: resume orphaned executions, on any number of machines.

A worker repeatedly looks for executions that are not finished and whose lease has
expired (or was released, or never existed: a submitted execution, or whose owner is
provably dead: see ``docs/guides/scaling-out.md``) and resumes each one to the end.
Claims are atomic in every provider, so of several workers exactly one runs an
execution; checkpoint writes are fenced by the lease's epoch, so a worker that was only
paused (not dead) and lost its lease cannot make a write durable after a takeover.

**Supervision.** Every attempt runs in a child process (``python -c`` of this module's
:func:`_child_main`, started with :func:`asyncio.create_subprocess_exec`), never in the
worker's own process. ``os._exit``, a segfault, the OOM killer or an infinite loop end
that attempt only; the worker counts the failure against the execution, waits an
exponentially growing delay before the next attempt, and after ``max_attempts`` failures
writes a final ``failed`` record with the reason (``durably ls`` shows it; ``durably
resume`` still continues it once the cause is fixed). The child applies the
``[worker]`` limits to itself before anything else runs (``RLIMIT_CPU``, ``RLIMIT_AS``)
and dies with the worker (``PR_SET_PDEATHSIG`` on Linux, and end-of-file on the pipe it
was given its job on, everywhere). ``statement_timeout`` is an inactivity limit: the
child reports every step and every checkpoint it writes on a pipe; an attempt that
reports nothing for that long is killed (with its process group). Loading and restoring
the execution report too; the first report (after the interpreter started and imported
what it needs) may take up to 60 s whatever ``statement_timeout`` says.

**Damage.** An execution whose checkpoints cannot be read (``CorruptObjectError``,
``CorruptHistoryError``, ``UnsupportedFormatError``) is reported once and skipped; it
never stops the worker or the other executions. Nothing is written to it (a ``failed``
record would chain onto the damage, and restoring the damaged object from a backup would
then no longer repair it); the worker looks at it again after :data:`DAMAGED_RECHECK`
seconds, so a repaired execution is picked up without restarting workers.

**Finding work.** Providers that declare :attr:`~durably.storage.Capability.CLAIM_NEXT`
(PostgreSQL: ``FOR NO KEY UPDATE SKIP LOCKED`` on a partial index of unfinished
executions) hand out executions one claim at a time: an idle worker costs one query per
poll however many executions are finished. Providers that declare
:attr:`~durably.storage.Capability.OPEN_INDEX` (filesystem, S3, Redis) list only their
open executions (an index maintained as checkpoints are written); the worker reads the
latest checkpoint of each and drops a stale entry (a finished execution still listed
after a crash) with ``forget_if_finished``. With the others the worker lists executions
and reads the latest checkpoint of each one it has not seen finished at its current
``updated_at`` (a finished execution is read once, then only listed).
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from durably._liveness import inspect_owner
from durably.config import DurabilityConfig, WorkerConfig, load_config
from durably.errors import (
    CorruptObjectError,
    DurablyError,
    FencedError,
    LeaseHeldError,
    NotFoundError,
    UnsupportedFormatError,
)
from durably.storage import META_STATUS, Capability, CheckpointProvider, ClaimsNext, Lease

__all__ = ["WorkerSummary", "find_resumable", "run_worker", "supervise"]

log = logging.getLogger("durably.worker")

DAMAGE = (CorruptObjectError, UnsupportedFormatError)
"""What makes an execution *damaged*: it is reported and skipped (no attempt is counted;
see :data:`DAMAGED_RECHECK`)."""
FINISHED = ("completed", "failed")
DAMAGED_RECHECK = 300.0
"""Seconds before a worker looks again at an execution it found damaged."""
EXIT_ORPHANED = 70
"""A child's exit status when its worker died (it stops at once)."""
_CHILD_ENTRY = "from durably.worker import _child_main; _child_main()"
_PROGRESS_EVERY = 0.25
"""A child reports progress at most this often (seconds)."""
_STARTUP = 60.0
"""Seconds a child has to report for the first time (interpreter start and imports, on a
loaded machine), when ``statement_timeout`` is shorter."""


@dataclass
class ScanState:
    """What a scanning worker remembers between polls.

    Attributes:
        finished: Executions seen finished (or damaged), by the ``updated_at`` they had
            then: not read again until they change.
        damaged: Damaged executions, with the error (reported once).
    """

    finished: dict[str, float] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)


async def find_resumable(
    provider: CheckpointProvider,
    *,
    limit: int = 100,
    state: ScanState | None = None,
    on_damaged: Callable[[str, BaseException], None] | None = None,
    skip: Callable[[str], bool] | None = None,
) -> list[str]:
    """Executions that are not finished and that no live owner holds a lease on (a scan).

    With :attr:`~durably.storage.Capability.OPEN_INDEX` only the open executions are
    listed (and stale entries dropped); otherwise every execution is listed.

    Args:
        provider: The store.
        limit: Return at most this many.
        state: Remembered between calls: finished and damaged executions are then read
            once, not at every call (only while their ``updated_at`` stays the same).
        on_damaged: Called once per damaged execution (its checkpoints cannot be read);
            damaged executions are skipped, never returned and never raised.
        skip: Executions the caller does not want (not read, not returned).
    """
    state = state if state is not None else ScanState()
    now = time.time()
    found: list[str] = []
    indexed = Capability.OPEN_INDEX in provider.capabilities
    source = provider.iter_open_executions() if indexed else provider.iter_executions()
    async for execution in source:
        execution_id = execution.execution_id
        if skip is not None and skip(execution_id):
            continue
        stamp = execution.updated_at
        if stamp is not None and state.finished.get(execution_id) == stamp:
            continue
        try:
            latest = await provider.load_latest_checkpoint(execution_id)
            if latest is None:
                if indexed:
                    await _forget(provider, execution_id)
                continue
            if latest.metadata.get(META_STATUS) in FINISHED:
                if indexed:
                    await _forget(provider, execution_id)
                elif stamp is not None:
                    state.finished[execution_id] = stamp
                continue
            lease = await provider.get_lease(execution_id)
            if lease is not None and lease.expires_at > now and not lease.released:
                # A live lease: still resumable at once if its owner is provably dead.
                owner = await inspect_owner(provider, execution_id, lease=lease)
                if owner.liveness != "dead" or Capability.TAKEOVER not in provider.capabilities:
                    continue
        except DAMAGE as exc:
            if execution_id not in state.damaged:
                state.damaged[execution_id] = str(exc)
                if on_damaged is not None:
                    on_damaged(execution_id, exc)
            if stamp is not None:
                state.finished[execution_id] = stamp
            continue
        except NotFoundError:
            continue  # deleted while we looked
        found.append(execution_id)
        if len(found) >= limit:
            break
    return found


async def _forget(provider: CheckpointProvider, execution_id: str) -> None:
    """Drop a stale open-index entry; a failure only means it is looked at again."""
    try:
        await provider.forget_if_finished(execution_id)
    except DurablyError as exc:
        log.debug("could not drop the stale open-index entry of %s: %s", execution_id, exc)


@dataclass
class _Attempts:
    failures: int = 0
    not_before: float = 0.0
    """``time.monotonic()`` before which the execution is not attempted again."""
    last_error: str = ""


@dataclass
class WorkerSummary:
    """What a worker did (``run_worker`` returns :attr:`finished`)."""

    completed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    """Executions that ended ``failed`` in this worker: the program failed, or the worker
    gave up after ``max_attempts`` (with the reason)."""
    damaged: dict[str, str] = field(default_factory=dict)
    """Executions skipped because their checkpoints cannot be read (with the error)."""
    attempts: dict[str, int] = field(default_factory=dict)
    """Failed attempts, by execution."""

    @property
    def finished(self) -> int:
        """Executions brought to an end (completed or failed)."""
        return len(self.completed) + len(self.failed)


@dataclass(frozen=True)
class _Outcome:
    kind: str
    """``completed``, ``failed`` (the program failed; recorded), ``already-completed``,
    ``busy`` (someone else holds it), ``damaged``, ``error`` (counts as a failed
    attempt)."""
    error: str = ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _describe_death(returncode: int, cpu_limit: float) -> str:
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


class _Supervisor:
    def __init__(
        self,
        provider: CheckpointProvider,
        config: DurabilityConfig,
        limits: WorkerConfig,
        concurrency: int,
    ) -> None:
        from durably._liveness import this_owner

        self.provider = provider
        self.config = config
        self.limits = limits
        self.concurrency = concurrency
        self.summary = WorkerSummary()
        self.attempts: dict[str, _Attempts] = {}
        self.running: dict[str, asyncio.Task[None]] = {}
        self.children: dict[str, asyncio.subprocess.Process] = {}
        self.scan = ScanState()
        self.damaged_since: dict[str, float] = {}
        """Damaged executions, by when (``time.monotonic()``) they were last found so."""
        self.owner = this_owner().encode()
        self.claims = (
            isinstance(provider, ClaimsNext) and Capability.CLAIM_NEXT in provider.capabilities
        )

    # ----------------------------------------------------------------- bookkeeping

    def held_back(self, execution_id: str) -> bool:
        """Found damaged a short while ago, or waiting for its backoff.

        Failed executions need no holding back: their ``failed`` record keeps every
        worker away until someone resumes them. A damaged one is looked at again after
        :data:`DAMAGED_RECHECK` seconds (or ``max_backoff``, if longer), so that
        restoring the damaged object repairs it without restarting workers.
        """
        now = time.monotonic()
        since = self.damaged_since.get(execution_id)
        if since is not None and now - since < max(DAMAGED_RECHECK, self.limits.max_backoff):
            return True
        entry = self.attempts.get(execution_id)
        return entry is not None and entry.not_before > now

    def waiting(self) -> bool:
        """Some execution waits for its backoff (a ``--once`` worker waits for it)."""
        now = time.monotonic()
        return any(
            a.not_before > now
            for e, a in self.attempts.items()
            if e not in self.summary.failed and e not in self.summary.damaged
        )

    def damaged(self, execution_id: str, exc: BaseException | str) -> None:
        """Set a damaged execution aside (reported once, while the error stays the same)."""
        self.damaged_since[execution_id] = time.monotonic()
        self.attempts.pop(execution_id, None)
        if self.summary.damaged.get(execution_id) != str(exc):
            self.summary.damaged[execution_id] = str(exc)
            log.error("execution %s is damaged and is skipped: %s", execution_id, exc)

    # ----------------------------------------------------------------- finding work

    async def next_batch(self, free: int) -> tuple[list[tuple[str, Lease | None]], bool]:
        """Up to ``free`` executions to start (with the lease claimed for them, if any),
        and whether any was found (damaged and backing-off executions do not count: a
        ``--once`` worker ends when only they are left)."""
        if self.claims:
            return await self._claim_batch(free)
        found = await find_resumable(
            self.provider,
            limit=free,
            state=self.scan,
            on_damaged=self.damaged,
            skip=lambda e: e in self.running or self.held_back(e),
        )
        return [(e, None) for e in found], bool(found)

    async def _claim_batch(self, free: int) -> tuple[list[tuple[str, Lease | None]], bool]:
        assert isinstance(self.provider, ClaimsNext)
        batch: list[tuple[str, Lease | None]] = []
        # Held-back executions come back from the index too: give each back at once
        # (released, so that other workers may run them) and claim the next one.
        budget = free + len(self.summary.damaged) + len(self.attempts) + 1
        ttl = max(self.config.lease_ttl, 10.0)
        for _ in range(budget):
            if len(batch) >= free:
                break
            lease = await self.provider.claim_next(self.owner, ttl=ttl)
            if lease is None:
                break
            execution_id = lease.execution_id
            if (
                execution_id in self.running
                or self.held_back(execution_id)
                or any(e == execution_id for e, _ in batch)
            ):
                await self.provider.release(lease)
                continue
            batch.append((execution_id, lease))
        # Held-back executions do not count as work found (a ``--once`` worker ends when
        # only they are left), as with the scan.
        return batch, bool(batch)

    # ----------------------------------------------------------------- attempts

    async def attempt(self, execution_id: str, handoff: Lease | None) -> None:
        try:
            outcome = await self._run_child(execution_id, handoff)
        except Exception as exc:  # the worker's own trouble (spawning, the pipe)
            outcome = _Outcome("error", f"could not run the attempt: {exc}")
        if outcome.kind in ("completed", "already-completed"):
            self.attempts.pop(execution_id, None)
            self.damaged_since.pop(execution_id, None)
            self.summary.damaged.pop(execution_id, None)  # repaired since
            self.summary.completed.append(execution_id)
            log.info("execution %s: completed", execution_id)
        elif outcome.kind == "failed":
            self.attempts.pop(execution_id, None)
            self.summary.failed[execution_id] = outcome.error
            log.warning("execution %s: failed: %s", execution_id, outcome.error)
        elif outcome.kind == "busy":
            log.info("execution %s: %s", execution_id, outcome.error or "taken by another worker")
        elif outcome.kind == "damaged":
            self.damaged(execution_id, outcome.error)
        else:
            await self._failed_attempt(execution_id, outcome.error)

    async def _failed_attempt(self, execution_id: str, reason: str) -> None:
        entry = self.attempts.setdefault(execution_id, _Attempts())
        entry.failures += 1
        entry.last_error = reason
        self.summary.attempts[execution_id] = entry.failures
        limit = self.limits.max_attempts
        if entry.failures < limit:
            delay = min(self.limits.max_backoff, self.limits.backoff * 2 ** (entry.failures - 1))
            entry.not_before = time.monotonic() + delay
            log.warning(
                "execution %s: attempt %d of %d failed: %s; next attempt in %.1f s",
                execution_id,
                entry.failures,
                limit,
                reason,
                delay,
            )
            return
        why = f"gave up after {entry.failures} failed attempt(s); the last one: {reason}"
        log.error("execution %s: %s", execution_id, why)
        try:
            await self._mark_failed(execution_id, why)
        except LeaseHeldError:
            entry.failures -= 1  # someone else runs it now: not ours to mark
            entry.not_before = time.monotonic() + self.limits.backoff
            return
        except DAMAGE as exc:
            self.damaged(execution_id, exc)
            return
        except DurablyError as exc:
            log.error("execution %s: could not be marked failed: %s", execution_id, exc)
            entry.not_before = time.monotonic() + self.limits.max_backoff
            return
        self.summary.failed[execution_id] = why

    async def _mark_failed(self, execution_id: str, reason: str) -> None:
        from durably._liveness import acquire_lease
        from durably.checkpoint import CheckpointManager

        manager = CheckpointManager(execution_id, self.provider, config=self.config)
        held = await acquire_lease(self.provider, execution_id, self.config.lease_ttl)
        try:
            manager.lease = held.lease
            await manager.mark_failed(reason)
        finally:
            with contextlib.suppress(DurablyError):
                await self.provider.release(manager.lease or held.lease)
            with contextlib.suppress(Exception):
                await held.release_lock()

    async def _run_child(self, execution_id: str, handoff: Lease | None) -> _Outcome:
        job = {
            "execution_id": execution_id,
            "config": {**asdict(self.config), "sources": list(self.config.sources)},
            "handoff": None
            if handoff is None
            else [handoff.owner, handoff.epoch, handoff.expires_at],
            "cpu_limit": self.limits.cpu_limit,
            "memory_limit": self.limits.memory_limit,
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
        self.children[execution_id] = proc
        assert proc.stdin is not None
        assert proc.stdout is not None
        result: dict[str, Any] | None = None
        timed_out = False
        try:
            proc.stdin.write(json.dumps(job, default=str).encode() + b"\n")
            await proc.stdin.drain()
            timeout = self.limits.statement_timeout or None
            first = True
            while True:
                limit = max(timeout, _STARTUP) if first and timeout is not None else timeout
                first = False
                try:
                    line = await asyncio.wait_for(proc.stdout.readline(), limit)
                except TimeoutError:
                    timed_out = True
                    _kill(proc)
                    break
                if not line:
                    break
                if line.startswith(b"r "):
                    with contextlib.suppress(ValueError):
                        result = json.loads(line[2:])
            returncode = await proc.wait()
        finally:
            if proc.returncode is None:
                _kill(proc)
                with contextlib.suppress(BaseException):
                    await asyncio.shield(proc.wait())
            with contextlib.suppress(Exception):
                proc.stdin.close()
            self.children.pop(execution_id, None)
        if timed_out:
            return _Outcome(
                "error",
                f"no progress for {self.limits.statement_timeout:g} s "
                "(statement_timeout): its process was killed",
            )
        if result is not None:
            return _Outcome(str(result.get("outcome", "error")), str(result.get("error", "")))
        return _Outcome("error", _describe_death(returncode, self.limits.cpu_limit))

    def kill_all(self) -> None:
        for proc in list(self.children.values()):
            _kill(proc)


def _kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL a child and its process group (whatever LLM code started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def supervise(
    *,
    store: str | None = None,
    concurrency: int = 4,
    poll: float = 1.0,
    once: bool = False,
    config: DurabilityConfig | None = None,
    limits: WorkerConfig | None = None,
) -> WorkerSummary:
    """Run executions in supervised child processes until stopped (or, with ``once``,
    until no resumable execution is left, backoffs included).

    Args:
        store: Store URL (default: the configured one).
        concurrency: Executions run at once (child processes).
        poll: Seconds between looks for work.
        once: Return when nothing is running and nothing is left to run.
        config: The ``[durability]`` settings (default: :func:`~durably.load_config`).
        limits: The ``[worker]`` settings (default: :func:`~durably.config.load_worker_config`).

    Returns:
        What the worker did.
    """
    from durably import open_store
    from durably.config import load_worker_config

    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    if not (math.isfinite(poll) and poll > 0):
        raise ValueError("poll must be a positive number of seconds")
    config = config or load_config(overrides={"store": store})
    limits = limits or load_worker_config()
    async with open_store(config=config) as provider:
        sup = _Supervisor(provider, config, limits, concurrency)
        try:
            while True:
                for execution_id, task in list(sup.running.items()):
                    if task.done():
                        del sup.running[execution_id]
                        task.result()  # a bug in the supervisor itself is not hidden
                free = concurrency - len(sup.running)
                seen = False
                if free > 0:
                    batch, seen = await sup.next_batch(free)
                    for execution_id, lease in batch:
                        sup.running[execution_id] = asyncio.create_task(
                            sup.attempt(execution_id, lease)
                        )
                if once and not sup.running and not seen and not sup.waiting():
                    return sup.summary
                await _sleep_or_finish(poll, sup.running)
        finally:
            sup.kill_all()
            for task in sup.running.values():
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*sup.running.values(), return_exceptions=True)


async def _sleep_or_finish(poll: float, running: dict[str, asyncio.Task[None]]) -> None:
    """Sleep ``poll`` seconds, or less if an attempt ends (its slot is free again)."""
    if not running:
        await asyncio.sleep(poll)
        return
    await asyncio.wait(list(running.values()), timeout=poll, return_when=asyncio.FIRST_COMPLETED)


async def run_worker(
    *,
    store: str | None = None,
    concurrency: int = 4,
    poll: float = 1.0,
    once: bool = False,
    config: DurabilityConfig | None = None,
    limits: WorkerConfig | None = None,
    echo: Any = None,
) -> int:
    """Resume orphaned executions until stopped (or, with ``once``, until none is left).

    See :func:`supervise` (``echo`` is accepted for compatibility and unused: what
    agents say is not shown by workers).

    Returns:
        How many executions this worker brought to an end.
    """
    summary = await supervise(
        store=store, concurrency=concurrency, poll=poll, once=once, config=config, limits=limits
    )
    return summary.finished


# ---------------------------------------------------------------------- the child


def _child_main() -> None:
    """Entry point of an attempt's child process (see the module docstring).

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
) -> _Outcome:
    """An attempt that raised: ``failed`` if the run recorded the execution as failed
    (what LLM code raised ends the program), else a failed attempt (retried)."""
    from durably import open_store
    from durably._redact import redact

    error = redact(f"{type(exc).__name__}: {exc}")
    with contextlib.suppress(Exception):
        async with open_store(config=config) as provider:
            latest = await provider.load_latest_checkpoint(execution_id)
            if latest is not None and latest.metadata.get(META_STATUS) == "failed":
                return _Outcome("failed", error)
    return _Outcome("error", error)


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


async def _child_run(job: dict[str, Any], channel: Any) -> _Outcome:
    from durably import open_store
    from durably._plugins import get_hooks
    from durably._redact import redact
    from durably.hookspecs import hookimpl
    from durably.runner import resume_execution

    execution_id = str(job["execution_id"])
    raw = dict(job["config"])
    raw["sources"] = tuple(raw.get("sources", ()))
    config = DurabilityConfig(**raw)
    channel.write(b"p\n")  # started: the imports are done
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
    try:
        if handoff is not None:
            # The worker claimed it for us (CLAIM_NEXT): give that claim back right
            # before ours, so that no other worker picks it in between.
            owner, epoch, expires_at = handoff
            async with open_store(config=config) as provider:
                await provider.release(Lease(execution_id, owner, int(epoch), float(expires_at)))
        result = await resume_execution(execution_id, config=config, echo=None, progress=progress)
    except (LeaseHeldError, FencedError) as exc:
        return _Outcome("busy", redact(str(exc)))
    except DAMAGE as exc:
        return _Outcome("damaged", redact(str(exc)))
    except Exception as exc:
        return await _after_exception(config, execution_id, exc)
    if result.status in ("completed", "already-completed"):
        return _Outcome("completed")
    return _Outcome("failed", redact(result.error or "failed"))
