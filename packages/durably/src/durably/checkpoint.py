"""Checkpoints of an execution: encoding and storing them, reading them back.

:class:`CheckpointManager` is the core's side of the storage contract for one
execution: it numbers checkpoints, encodes them with the safe codec (large unchanged
values go to content-addressed blobs, stored once), enforces the size limits, fences
every write with the execution's lease, chains every checkpoint to the one before it and
calls the checkpoint hooks. Reading back gives a :class:`LoadedExecution` (the documents
since the oldest snapshot any agent needs), checked to be complete (:class:`HistoryCheck`).

What the documents hold is :mod:`durably._journal`'s; resuming from them is
:mod:`durably._resume`'s; showing them is :mod:`durably._inspect`'s; the seed API is
:mod:`durably._seed`'s.
"""

from __future__ import annotations

from typing import Any, Protocol

from durably._codec import ValueCodec
from durably._codeobjects import encode_fallback
from durably._faults import CrashInjector
from durably._journal import (
    FinalDoc,
)
from durably._loading import CheckpointReader, HistoryCheck, LoadedExecution, digest_of
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
from durably.config import DurabilityConfig
from durably.errors import (
    CheckpointTooLargeError,
    DurablyError,
    NotFoundError,
)
from durably.storage import META_BASE, META_STATUS, CheckpointProvider, Lease

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


class CheckpointManager(CheckpointReader):
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
            on_unserializable=self.config.on_unserializable,
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
        """
        if not self.config.enabled:
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
            roots: dict[str, Any] = {"doc": body}
            labels = {"doc": f"agent {agent_id} checkpoint"}
            if state is not None:
                roots["state"] = state
                labels["state"] = f"agent {agent_id} state"
            if local_vars is not None:
                roots["locals"] = local_vars
                labels["locals"] = f"{frame} frame local"
            await self._store(
                seq,
                roots,
                labels,
                manifest,
                {META_KIND: kind, META_AGENT: agent_id, META_STATUS: "running"},
            )
            if self.faults is not None:
                self.faults.checkpoint_written()
        keep = self.config.keep_last
        if keep and self.written % max(keep, PRUNE_EVERY) == 0:
            await self.prune(keep)
        return seq

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

    def _write_lock(self) -> Any:
        """Serializes writes: sequence numbers are taken and written in order."""
        import asyncio

        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _store(
        self,
        seq: int,
        roots: dict[str, Any],
        labels: dict[str, str],
        manifest: dict[str, int],
        metadata: dict[str, str],
    ) -> None:
        """Encode ``roots``, put their new blobs, and save checkpoint ``seq`` (fenced by the
        lease), with the checkpoint hooks around it."""
        encoded = self.codec.encode(roots, labels)
        size = len(encoded.data)
        new_blobs = {
            digest: blob for digest, blob in encoded.blobs.items() if digest not in self.known_blobs
        }
        # Blobs count: a value stored once, as a blob, counts when it is first written.
        total = size + sum(len(blob) for blob in new_blobs.values())
        if total > self.config.max_checkpoint_size:
            raise CheckpointTooLargeError(
                self._too_large(
                    total,
                    roots.get("state"),
                    roots.get("locals"),
                    limit="max_checkpoint_size",
                    blobs=len(new_blobs),
                )
            )
        if self.config.max_execution_size:
            stored = await self._execution_bytes()
            if stored + total > self.config.max_execution_size:
                raise CheckpointTooLargeError(
                    self._too_large(
                        total,
                        roots.get("state"),
                        roots.get("locals"),
                        limit="max_execution_size",
                        stored=stored,
                        blobs=len(new_blobs),
                    )
                )
        metadata = {
            **metadata,
            META_BASE: str(min(manifest.values()) if manifest else seq),
            META_AGENTS: str(len(manifest)),
            **self._owner_metadata(),
        }
        if seq == 0:
            metadata[META_PREV] = CHAIN_START
        elif self._prev_digest is not None:
            metadata[META_PREV] = self._prev_digest
        self.hooks.before_checkpoint(self.execution_id, seq, metadata)
        try:
            for digest, blob in new_blobs.items():
                if digest not in self.known_blobs:
                    await self.provider.put_blob(self.execution_id, blob, digest=digest)
                    self.known_blobs.add(digest)
                    self.bytes_written += len(blob)
            info = await self.provider.save_checkpoint(
                self.execution_id, seq, encoded.data, metadata=metadata, lease=self.lease
            )
        except BaseException as exc:
            self.hooks.on_checkpoint_error(self.execution_id, seq, exc)
            raise
        self.next_seq = seq + 1
        self._prev_digest = digest_of(encoded.data)
        self.written += 1
        self.bytes_written += size
        self.hooks.after_checkpoint(self.execution_id, info)

    def _owner_metadata(self) -> dict[str, str]:
        """Who wrote a checkpoint: lets anyone check from the store that owners never
        overlapped (epochs never decrease along the sequence)."""
        if self.lease is None:
            return {}
        return {META_OWNER: self.lease.owner, META_EPOCH: str(self.lease.epoch)}

    async def _execution_bytes(self) -> int:
        """Bytes this execution has in the store (checkpoints and blobs), for
        ``max_execution_size``: counted from the store once per manager (when it did not
        start the execution), then kept up to date as it writes."""
        if self._stored_before is None:
            before = 0
            if self.next_seq > 0:  # resumed: count what earlier processes stored
                async for info in self.provider.iter_checkpoints(self.execution_id):
                    before += info.size
                cursor: str | None = None
                while True:
                    page = await self.provider.list_blobs(self.execution_id, cursor=cursor)
                    before += sum(blob.size for blob in page.items)
                    if page.next_cursor is None:
                        break
                    cursor = page.next_cursor
            self._stored_before = before - self.bytes_written
        return self._stored_before + self.bytes_written

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

    def _too_large(
        self,
        size: int,
        state: dict[str, Any] | None,
        local_vars: dict[str, Any] | None,
        *,
        limit: str = "max_checkpoint_size",
        stored: int = 0,
        blobs: int = 0,
    ) -> str:
        sizes = []
        for label, values in (("state", state or {}), ("local", local_vars or {})):
            for name, value in values.items():
                try:
                    sizes.append((len(self.codec.encode_value(value)), f"{label} {name!r}"))
                except Exception:
                    continue
        sizes.sort(reverse=True)
        largest = ", ".join(f"{name} ({n:,} bytes)" for n, name in sizes[:3])
        with_blobs = f" (with {blobs} new blob(s))" if blobs else ""
        if limit == "max_execution_size":
            return (
                f"checkpoint of execution {self.execution_id!r} is {size:,} bytes"
                f"{with_blobs}; with the {stored:,} bytes the execution already stored "
                f"it goes over max_execution_size ({self.config.max_execution_size:,}); "
                f"largest values: {largest or 'none'}"
            )
        return (
            f"checkpoint of execution {self.execution_id!r} is {size:,} bytes"
            f"{with_blobs}, over max_checkpoint_size "
            f"({self.config.max_checkpoint_size:,}); largest values: "
            f"{largest or 'none'}"
        )


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
