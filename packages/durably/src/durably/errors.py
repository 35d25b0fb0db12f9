"""The exceptions durably raises.

Every exception durably raises on purpose derives from :class:`DurablyError`, so
``except durably.DurablyError`` catches all of them. Errors coming from a storage
backend (an OS error, a botocore or psycopg exception) are wrapped in a
:class:`StoreError` subclass with ``raise ... from original``, so the original is
always available as ``__cause__``.

The tree::

    DurablyError
    ├── ConfigError                      bad configuration (names the file, key and fix)
    │   └── ProviderNotFoundError        no provider for a URL scheme (names the package)
    ├── InvalidExecutionIdError          an id that could escape the store (``../x``)
    ├── UnsupportedError                 the provider lacks a capability (NotImplementedError)
    ├── StoreError                       anything a storage backend reports
    │   ├── StoreUnavailableError        backend unreachable / credentials refused
    │   ├── NotFoundError                no such checkpoint / blob / execution
    │   ├── ConflictError                a conditional write lost
    │   │   ├── AlreadyExistsError       mode="create" on an existing sequence
    │   │   ├── PreconditionFailedError  expected version did not match
    │   │   ├── FencedError              the writer's lease epoch was superseded
    │   │   ├── LeaseHeldError           another owner holds a live lease
    │   │   └── OwnerLockLostError       the store dropped our owner lock; another has it
    │   └── CorruptObjectError           checksum mismatch, truncated or malformed object
    │       └── CorruptHistoryError      a checkpoint missing, replaced or out of order
    ├── UnsupportedFormatError           stored by a newer durably (unknown format version)
    ├── SerializationError               a value cannot be stored (names its path)
    │   └── SignatureError               signed pickle data failed verification
    ├── CheckpointTooLargeError          a checkpoint exceeds the configured maximum
    ├── DivergenceError                  replay requested a different operation
    ├── IncompleteExecutionError         an end that cannot be a correct completion
    ├── ProgramChangedError              the program changed under an execution
    └── StatementSyntaxError             LLM code that can never parse (also a SyntaxError)
        └── IncompleteCodeError          the stream ended in the middle of a statement

Raised into the program's own code, and so not a :class:`DurablyError` (the code sees it
like any error of its own, and the LLM is told about it in its next prompt):

    RuntimeError
    └── ConcurrentAwaitError             an agent's durable operations awaited concurrently
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from durably.storage import Lease

__all__ = [
    "AlreadyExistsError",
    "CheckpointTooLargeError",
    "ConcurrentAwaitError",
    "ConfigError",
    "ConflictError",
    "CorruptHistoryError",
    "CorruptObjectError",
    "DivergenceError",
    "DurablyError",
    "DurablyWarning",
    "FencedError",
    "IncompleteCodeError",
    "IncompleteExecutionError",
    "InvalidExecutionIdError",
    "LeaseHeldError",
    "NotFoundError",
    "OwnerLockLostError",
    "PreconditionFailedError",
    "ProgramChangedError",
    "ProviderNotFoundError",
    "SerializationError",
    "SignatureError",
    "StatementSyntaxError",
    "StoreError",
    "StoreUnavailableError",
    "UnsupportedError",
    "UnsupportedFormatError",
    "already_exists",
    "fenced",
    "lease_held",
    "precondition_failed",
]


class DurablyError(Exception):
    """Root of every exception durably raises on purpose."""


class DurablyWarning(UserWarning):
    """Warnings durably emits (skipped variables, non-durable backend settings, ...)."""


class ConfigError(DurablyError):
    """The configuration is invalid.

    Attributes:
        source: The file (or ``"environment"`` / ``"argument"``) the bad value came from.
        key: The dotted key, e.g. ``"durability.store"``.
        fix: A sentence telling the user what to do.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        key: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.source = source
        self.key = key
        self.fix = fix
        parts = []
        if source:
            parts.append(source)
        if key:
            parts.append(f"[{key}]" if not parts else f"key {key!r}")
        prefix = ": ".join(parts)
        text = f"{prefix}: {message}" if prefix else message
        if fix:
            text = f"{text}. {fix}"
        super().__init__(text)


class ProviderNotFoundError(ConfigError):
    """No storage provider is installed for a URL scheme."""


class UnsupportedError(DurablyError, NotImplementedError):
    """The provider does not declare the capability an operation needs."""


class InvalidExecutionIdError(DurablyError, ValueError):
    """An execution id is empty, too long, or could escape the store's namespace."""


class StoreError(DurablyError):
    """A storage backend failed. The backend's own exception is ``__cause__``."""


class StoreUnavailableError(StoreError):
    """The backend cannot be reached, or refused our credentials."""


class NotFoundError(StoreError, KeyError):
    """The requested checkpoint, blob or execution does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ConflictError(StoreError):
    """A conditional write did not happen because its precondition failed.

    A conflict never leaves a partial write behind: the stored data is exactly what
    it was before the call.
    """


class AlreadyExistsError(ConflictError):
    """``mode="create"`` was asked for an object that already exists."""


class PreconditionFailedError(ConflictError):
    """The object's current version is not the expected one."""


class FencedError(ConflictError):
    """The writer's lease was superseded by a newer claim (its epoch is stale)."""


class LeaseHeldError(ConflictError):
    """Another owner holds a live lease on the execution.

    Attributes:
        owner: The current holder.
        expires_at: When its lease expires (UNIX seconds), unless renewed.
        owner_alive: Whether the holder is known to be alive (True), unknown (None: it
            runs on another host and the store cannot tell) -- never False, since a
            provably dead holder's lease is taken over instead.
    """

    def __init__(
        self,
        message: str,
        *,
        owner: str | None = None,
        expires_at: float | None = None,
        owner_alive: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.owner = owner
        self.expires_at = expires_at
        self.owner_alive = owner_alive


class OwnerLockLostError(ConflictError):
    """The store dropped this process's owner lock on an execution, and another process
    holds it now (see :meth:`durably.storage.OwnerLock.ensure_held`).

    The lock went with the store connection that held it (cut by the server or the
    network); in between another process found it free, judged this owner dead and took
    the lock to take the execution over. The execution must stop: its lease is being
    (or was) superseded, and its writes are fenced once it is.
    """


class CorruptObjectError(StoreError):
    """A stored object failed its integrity check (checksum, length or structure).

    A corrupt object is never returned to the caller, not even partially.
    """


class CorruptHistoryError(CorruptObjectError):
    """An execution's history is not complete: a checkpoint that resuming or inspecting
    needs is missing, or one was replaced or moved (its hash-chain link does not match).

    Every checkpoint records the digest of the one before it, and the checkpoints from
    the oldest one the latest builds on (its base snapshot) to the latest must all be
    present. Retention only ever removes checkpoints below that base.

    Attributes:
        execution_id: The execution.
        missing: The sequence numbers that should be there and are not, ascending.
        broken: Sequence numbers whose link to the previous checkpoint does not match
            (that checkpoint or its predecessor was replaced, or they were reordered).
    """

    def __init__(
        self,
        execution_id: str,
        *,
        missing: tuple[int, ...] = (),
        broken: tuple[int, ...] = (),
        context: str = "",
    ) -> None:
        self.execution_id = execution_id
        self.missing = missing
        self.broken = broken
        problems = []
        if missing:
            problems.append(
                f"checkpoint{'s' if len(missing) > 1 else ''} "
                f"{_ranges(missing)} {'are' if len(missing) > 1 else 'is'} missing"
            )
        if broken:
            problems.append(
                f"checkpoints {_ranges(broken)} do not follow the ones before them"
                if len(broken) > 1
                else f"checkpoint {broken[0]} does not follow the one before it"
            )
            problems[-1] += " (a checkpoint was replaced or reordered)"
        where = f" ({context})" if context else ""
        super().__init__(
            f"the history of execution {execution_id!r} is damaged{where}: "
            f"{'; '.join(problems)}. It cannot be resumed or shown safely from "
            "this point; restore the store from a backup, or fork the execution "
            "at an earlier, complete checkpoint"
        )


def _ranges(seqs: tuple[int, ...]) -> str:
    """``1, 3-5, 9`` for (1, 3, 4, 5, 9)."""
    parts: list[str] = []
    start = prev = seqs[0]
    for seq in (*seqs[1:], None):
        if seq is not None and seq == prev + 1:
            prev = seq
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if seq is not None:
            start = prev = seq
    return ", ".join(parts)


class UnsupportedFormatError(DurablyError):
    """An object was written in a format version this durably does not know."""


class SerializationError(DurablyError):
    """A value cannot be stored.

    Attributes:
        path: Where the value lives, e.g. ``"Main frame local 'conn'"``.
        reason: Why, e.g. ``"socket is not serializable"``.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


class SignatureError(SerializationError):
    """Signed (pickled) data did not verify; it was not unpickled."""


class CheckpointTooLargeError(DurablyError):
    """A checkpoint exceeds ``max_checkpoint_size``; the message names the largest values."""


class DivergenceError(DurablyError):
    """During replay the code asked for a different operation than the journal recorded.

    This means the program, its inputs or the LLM code changed, or the code between
    awaits is not deterministic.
    """


class IncompleteExecutionError(DurablyError):
    """An execution ended in a state that cannot be a correct completion.

    Checked before anything is recorded as ``completed``: an agent with frames left on its
    call stack, a request to another agent that got no reply, a begin playbook that never
    returned, or journal entries that replay never consumed. The execution is recorded
    ``failed`` and its checkpoint history is kept for ``resume`` and ``fork``.
    """


class ConcurrentAwaitError(RuntimeError):
    """An agent's durable operation was awaited outside the agent's own task.

    ``asyncio.gather(...)`` and ``asyncio.create_task(...)`` (and, on Python 3.11,
    ``asyncio.wait_for(...)``) run what they are given in tasks of their own,
    concurrently. An agent's operations
    (``Say``, ``Yield``, LLM playbooks, tools, calls to other agents) are journaled one
    at a time, in the order they are asked for; concurrent ones would be asked for in
    another order when a resume replays them (a journaled one answers at once, a live
    one waits), and a resumed run could hand one call's result to another. So each is
    refused where it is asked for, before anything is journaled, in the run before a
    crash as in the resumed one: await them one after another.

    Not a :class:`DurablyError`: it is raised into the program's code, which sees it like
    any error of its own (an LLM playbook's next prompt names it; a tool's call records
    it as the tool's error).
    """


class ProgramChangedError(DurablyError):
    """The program file differs from the one the execution started with."""


class StatementSyntaxError(DurablyError, SyntaxError):
    """LLM code that can never become valid Python, whatever arrives next."""


class IncompleteCodeError(StatementSyntaxError):
    """The response ended while a statement was still incomplete."""


# ---------------------------------------------------------------- provider error builders
#
# Every storage provider reports the conflicts of the contract with these, so the
# messages (and what they promise) are the same whichever backend is used.


def fenced(
    lease: Lease,
    action: str,
    *,
    current_epoch: int | None = None,
    taken_over_by: str | None = None,
) -> FencedError:
    """The error of a write, delete or renewal made with a superseded lease [C9, C16].

    Also the error of a *process* that lost its lease while it ran (``taken_over_by``
    given): the runner raises it when its lease was superseded -- it was paused or cut off
    past its lease and another process took the execution over -- and ``durably`` exits
    with status 3 on it. This is the only place a :class:`FencedError` is built.

    Args:
        lease: The lease the caller presented (the process's own, for a take-over).
        action: What was refused, without the execution (``"saving checkpoint 3"``,
            ``"deleting checkpoint 2"``, ``"renewing the lease"``). A take-over stops the
            whole process, not one call, so its message does not name it.
        current_epoch: The execution's current lease epoch, if the provider (or, for a
            take-over, the runner) knows it.
        taken_over_by: Who holds the execution now (``host:pid``, or ``"another
            process"``): the message then says that the process stopped and wrote nothing
            after the take-over, instead of that one call changed nothing.

    Returns:
        A :class:`FencedError` saying that nothing was changed (a provider raises it
        only before changing anything), or, for a take-over, that nothing was written
        after it.
    """
    if taken_over_by is not None:
        holder = taken_over_by
        if current_epoch is not None:
            holder += f" (epoch {current_epoch})"
        message = (
            f"execution {lease.execution_id!r} was taken over by {holder} "
            f"while this process was paused or cut off past its lease (epoch {lease.epoch}); "
            "this process stopped and wrote nothing after the take-over"
        )
    else:
        by = (
            f" by epoch {current_epoch}"
            if current_epoch is not None
            else " by a newer claim (or the execution was deleted)"
        )
        message = (
            f"{action} was refused: the lease of {lease.owner!r} on execution "
            f"{lease.execution_id!r} (epoch {lease.epoch}) was superseded{by}; nothing was "
            "changed"
        )
    return FencedError(message)


def already_exists(
    execution_id: str,
    seq: int,
    *,
    version: str | None = None,
) -> AlreadyExistsError:
    """The error of ``mode="create"`` for a sequence number that exists [C5].

    Args:
        execution_id: The execution.
        seq: The existing checkpoint's sequence number.
        version: Its current version, if the provider knows it.
    """
    at = f" (version {version!r})" if version is not None else ""
    return AlreadyExistsError(
        f"checkpoint {seq} of execution {execution_id!r} already exists{at}; use "
        "mode='overwrite' or ExpectedVersion(version) to replace it"
    )


def precondition_failed(
    execution_id: str,
    seq: int,
    expected: str,
    *,
    actual: str | None = None,
    missing: bool = False,
) -> PreconditionFailedError:
    """The error of an ``ExpectedVersion(expected)`` write that found another version [C7].

    Args:
        execution_id: The execution.
        seq: The checkpoint's sequence number.
        expected: The version the caller expected.
        actual: The version found, if the provider knows it.
        missing: The checkpoint does not exist (an expected version never creates one).
    """
    if missing:
        found = "it does not exist"
    elif actual is not None:
        found = f"its version is {actual!r}"
    else:
        found = "it does not exist or has another version"
    return PreconditionFailedError(
        f"checkpoint {seq} of execution {execution_id!r} was not written: expected version "
        f"{expected!r}, but {found}"
    )


def lease_held(
    execution_id: str,
    owner: str | None,
    expires_at: float | None,
) -> LeaseHeldError:
    """The error of a claim while another owner holds a live lease [C15].

    Args:
        execution_id: The execution.
        owner: The holder of the live lease; None when the provider only knows that the
            lease kept changing hands while it tried (a contended claim, to be retried).
        expires_at: When the holder's lease expires (UNIX seconds), if known.
    """
    if owner is None:
        return LeaseHeldError(f"execution {execution_id!r} is contended: claim it again")
    until = (
        f" until {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(expires_at))} UTC"
        if expires_at is not None
        else ""
    )
    return LeaseHeldError(
        f"execution {execution_id!r} is leased by {owner!r}{until}",
        owner=owner,
        expires_at=expires_at,
    )
