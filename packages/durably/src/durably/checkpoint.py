"""Checkpoints of an execution: encoding and storing them, reading them back.

:class:`CheckpointManager` is the core's side of the storage contract for one
execution: it numbers checkpoints and writes an agent's snapshots and deltas and the
execution's final record, each with the execution-wide keys (manifest, next agent id,
header), and applies retention. Storing one checkpoint -- encoding it with the safe codec
(large unchanged values go to content-addressed blobs, stored once), enforcing the size
limits, fencing it with the execution's lease, chaining it to the one before it, calling
the checkpoint hooks -- is :class:`~durably._storing.CheckpointWriter`'s. Reading back
gives a :class:`LoadedExecution` (the documents since the oldest snapshot any agent
needs), checked to be complete (:class:`HistoryCheck`).

What the documents hold is :mod:`durably._journal`'s; resuming from them is
:mod:`durably._resume`'s; showing them is :mod:`durably._inspect`'s; the seed API is
:mod:`durably._seed`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from durably._codec import ValueCodec
from durably._codeobjects import encode_fallback
from durably._faults import CrashInjector
from durably._journal import FinalDoc
from durably._loading import HistoryCheck, LoadedExecution, digest_of
from durably._metadata import (
    CHAIN_START,
    META_AGENT,
    META_AGENTS,
    META_EPOCH,
    META_KIND,
    META_OWNER,
    META_PREV,
    META_REASON,
    PRUNE_EVERY,
)
from durably._plugins import Hooks, get_hooks
from durably._storing import CheckpointWriter
from durably.config import DurabilityConfig
from durably.errors import (
    DurablyError,
    NotFoundError,
    SerializationError,
)
from durably.storage import META_STATUS, CheckpointProvider, Lease

__all__ = [
    "CHAIN_START",
    "META_AGENT",
    "META_AGENTS",
    "META_EPOCH",
    "META_KIND",
    "META_OWNER",
    "META_PREV",
    "META_REASON",
    "PRUNE_EVERY",
    "CheckpointManager",
    "ExecutionInfo",
    "HistoryCheck",
    "LoadedExecution",
]


class ExecutionInfo(Protocol):
    """What every checkpoint of an execution carries besides its agent's document."""

    header: dict[str, Any]
    """The execution's header (program, digest, LLM, inputs): on snapshots and finals."""
    next_agent_id: int

    def manifest(self) -> dict[str, int]:
        """Each agent's latest snapshot (read when the checkpoint takes its number)."""
        ...


class _Written(NamedTuple):
    """A snapshot this manager wrote: what :meth:`CheckpointManager.repeats_snapshot`
    compares a new one with."""

    seq: int
    op_index: int
    manifest: dict[str, int]
    next_agent_id: int
    digest: str
    encoded: int
    """Bytes its encoding took (document and every chunk, stored before or not)."""


def _roots(
    agent_id: str,
    body: dict[str, Any],
    state: dict[str, Any] | None,
    local_vars: dict[str, Any] | None,
    frame: str,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The codec's roots of an agent's checkpoint, and their labels (for its errors)."""
    roots: dict[str, Any] = {"doc": body}
    labels = {"doc": f"agent {agent_id} checkpoint"}
    if state is not None:
        roots["state"] = state
        labels["state"] = f"agent {agent_id} state"
    if local_vars is not None:
        roots["locals"] = local_vars
        labels["locals"] = f"{frame} frame local"
    return roots, labels


_PLACEHOLDERS = ("FunctionSource ", "ModuleReference ", "Unresolved ")
"""The stand-ins decoding makes (a function to re-create, a module or class not imported):
a snapshot that meets one is never deferred."""


class CheckpointManager(CheckpointWriter):
    """Writes and reads the checkpoints of one execution.

    Args:
        execution_id: The execution.
        provider: Where checkpoints live (any :class:`~durably.storage.CheckpointProvider`).
        config: Limits, retention and codec settings (default: :func:`durably.load_config`
            defaults, without reading files).
        hooks: The plugin facade (default: the process-wide one).
    """

    def __init__(
        self,
        execution_id: str,
        provider: CheckpointProvider,
        *,
        config: DurabilityConfig | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        from durably.storage import validate_execution_id

        self.execution_id = validate_execution_id(execution_id)
        self.provider = provider
        self.config = config or DurabilityConfig()
        self.hooks = hooks or get_hooks()
        self.lease: Lease | None = None
        self.next_seq = 0
        self.written = 0
        self.known_blobs: set[str] = set()
        self.bytes_written = 0
        self._lock: Any = None
        self._prev_digest: str | None = None  # of the last checkpoint written or loaded
        self._stored_before: int | None = None  # bytes stored before (max_execution_size)
        self._unresolved: list[str] | None = None  # set while decoding inertly
        self._loading_seq = -1
        self._snapshots: dict[str, _Written] = {}  # each agent's latest, if written here
        self._restored_bytes: dict[str, int] = {}
        self.faults = CrashInjector.from_env()
        """Fault injection (``DURABLY_CRASH_*``), None unless asked for."""
        hooks_ = self.hooks
        self.codec = ValueCodec(
            blob_threshold=self.config.blob_threshold,
            encode_hook=hooks_.encode_value if hooks_.has_value_codecs else None,
            decode_hook=hooks_.decode_value if hooks_.has_value_codecs else None,
            encode_fallback=encode_fallback,
            decode_fallback=self._decode_fallback,
            pickle_key=self.config.pickle_key if self.config.allow_pickle else None,
            # "replay" is the runtime's: it asks (unstorable) before a snapshot.
            on_unserializable="skip" if self.config.on_unserializable == "skip" else "error",
        )
        if self.config.allow_pickle and self.config.pickle_key is None:
            raise DurablyError(
                "allow_pickle is set but DURABLY_PICKLE_KEY is not: pickled "
                "values are signed with that key and never loaded unsigned"
            )

    # ------------------------------------------------------------------ writing

    async def write(
        self,
        execution: ExecutionInfo,
        agent_id: str,
        doc: dict[str, Any],
        *,
        kind: str,
        state: dict[str, Any] | None = None,
        local_vars: dict[str, Any] | None = None,
        frame: str = "agent",
        announce: Callable[[], None] | None = None,
    ) -> int:
        """Encode and durably store one checkpoint of agent ``agent_id``; return its seq.

        With ``enabled = false`` nothing is encoded or stored (the program runs without
        durability; it cannot be resumed).

        Args:
            execution: The execution-wide keys every checkpoint carries.
            agent_id: The agent that writes it.
            doc: Its document (:mod:`durably._journal`).
            kind: ``"snapshot"`` or ``"delta"``.
            state: The agent's state (snapshots).
            local_vars: The bottom frame's variables (snapshots).
            frame: The bottom frame's playbook (for error messages).
            announce: Shows the user what this checkpoint records (a line an agent said),
                called once every earlier checkpoint is stored and just before this one
                is: no other checkpoint -- no crash point -- falls between the user
                seeing it and its record becoming durable. A crash while this very
                checkpoint is written shows it once more after resume; none loses it.
                A checkpoint refused before any write (too large, unserializable)
                shows nothing.
        """
        if not self.config.enabled:
            if announce is not None:
                announce()
            self.next_seq += 1
            return self.next_seq - 1
        async with self._write_lock():
            seq = self.next_seq
            manifest = execution.manifest()
            if kind == "snapshot":
                manifest[agent_id] = seq
            body = {**doc, "manifest": manifest, "next_agent_id": execution.next_agent_id}
            if kind == "snapshot":
                body["header"] = execution.header
            roots, labels = _roots(agent_id, body, state, local_vars, frame)
            await self._store(
                seq,
                roots,
                labels,
                manifest,
                {META_KIND: kind, META_AGENT: agent_id, META_STATUS: "running"},
                announce,
            )
            if kind == "snapshot":
                assert self._prev_digest is not None
                self._snapshots[agent_id] = _Written(
                    seq,
                    doc.get("index", -1),
                    manifest,
                    execution.next_agent_id,
                    self._prev_digest,
                    self.encoded_bytes,
                )
            if self.faults is not None:
                self.faults.checkpoint_written()
        keep = self.config.keep_last
        if keep and self.written % max(keep, PRUNE_EVERY) == 0:
            await self.prune(keep)
        return seq

    def repeats_snapshot(
        self,
        execution: ExecutionInfo,
        agent_id: str,
        doc: dict[str, Any],
        *,
        state: dict[str, Any],
        local_vars: dict[str, Any],
        frame: str = "agent",
    ) -> bool:
        """Whether a snapshot of agent ``agent_id`` holding ``doc``, ``state`` and
        ``local_vars`` would repeat the agent's latest snapshot, which this manager
        wrote: encoded with the execution-wide keys that one carried (its manifest and
        next agent id) and its next operation index, the same bytes. The caller checks
        that no operation finished since (an operation started since and not finished
        -- a wait for a message when the program ends -- only moved the index on: a
        resume from the latest one starts it again, as after a crash right after that
        one). Then writing it again records nothing new. False when unsure (the latest
        one was written by another process, or nothing is stored)."""
        last = self._snapshots.get(agent_id)
        if last is None or not self.config.enabled or doc.get("index", -1) < last.op_index:
            return False
        body = {
            **doc,
            "index": last.op_index,
            "manifest": last.manifest,
            "next_agent_id": last.next_agent_id,
            "header": execution.header,
        }
        roots, labels = _roots(agent_id, body, state, local_vars, frame)
        return digest_of(self.codec.encode(roots, labels).data) == last.digest

    def unstorable(self, local_vars: dict[str, Any], frame: str) -> SerializationError | None:
        """Under ``on_unserializable = "replay"``: why a snapshot could not hold the frame
        variables ``local_vars`` (of playbook ``frame``), or None if it could (or the
        policy is another: the write then fails, or skips, as it says)."""
        if self.config.on_unserializable != "replay" or not local_vars or not self.config.enabled:
            return None
        try:
            self.codec.check({"locals": local_vars}, {"locals": f"{frame} frame local"})
        except SerializationError as exc:
            if exc.reason.startswith(_PLACEHOLDERS):
                raise  # a restore left it inert: deferring would go on with it, wrongly
            return exc
        return None

    def snapshot_bytes(self, agent_id: str) -> int:
        """Bytes the encoding of agent ``agent_id``'s latest snapshot took, if this
        manager wrote or loaded it (else 0): what another one will cost about as much
        of. Loaded, it counts the same bytes, so that a resumed run snapshots where the
        run before it would have."""
        last = self._snapshots.get(agent_id)
        return self._restored_bytes.get(agent_id, 0) if last is None else last.encoded

    async def prune(self, keep_last: int) -> list[int]:
        """Apply retention: keep the last ``keep_last`` checkpoints and what resume needs."""
        return await self.provider.prune(
            self.execution_id, keep_last=max(1, keep_last), lease=self.lease
        )

    async def write_final(self, execution: ExecutionInfo, status: str, result: Any) -> int:
        """Mark the execution finished (``completed`` or ``failed``)."""
        if not self.config.enabled:
            return self.next_seq
        async with self._write_lock():
            seq = self.next_seq
            manifest = execution.manifest()
            body = {
                **FinalDoc(status, result).to_doc(),
                "manifest": manifest,
                "header": execution.header,
                "next_agent_id": execution.next_agent_id,
            }
            await self._store(
                seq,
                {"doc": body},
                {"doc": "execution result"},
                manifest,
                {META_KIND: "final", META_STATUS: status},
            )
            return seq

    async def mark_failed(self, reason: str) -> int:
        """Record that the execution failed, with ``reason``, without running it.

        What ``durably worker`` does once an execution used up its attempts (its process
        crashed, timed out or could not resume it): a final record with status
        ``failed``, like the one a failing program gets, so ``durably ls`` shows it and
        workers stop retrying it; ``durably resume`` still continues it from its last
        checkpoint. Needs the execution's lease (set :attr:`lease` first).

        Returns:
            The final record's sequence number.

        Raises:
            NotFoundError: The execution has no checkpoint.
            CorruptHistoryError: The execution is damaged (nothing is written).
        """
        from durably._redact import redact

        loaded = await self.load_execution(inert=True)
        if loaded is None:
            raise NotFoundError(f"execution {self.execution_id!r} has no checkpoint")
        reason = redact(reason)
        manifest = {agent: seq for agent, (seq, *_rest) in loaded.snapshots.items()}
        body = {
            **FinalDoc("failed", reason).to_doc(),
            "manifest": manifest,
            "header": loaded.header,
            "next_agent_id": loaded.next_agent_id,
        }
        async with self._write_lock():
            seq = self.next_seq
            await self._store(
                seq,
                {"doc": body},
                {"doc": "execution result"},
                manifest,
                {META_KIND: "final", META_STATUS: "failed", META_REASON: _shorten(reason, 400)},
            )
            return seq


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
