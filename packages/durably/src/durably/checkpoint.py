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

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from durably._codec import ValueCodec
from durably._codeobjects import decode_fallback, encode_fallback
from durably._faults import CrashInjector
from durably._journal import (
    DeltaDoc,
    FinalDoc,
    RestoredAgent,
    SnapshotDoc,
    doc_type,
)
from durably._plugins import Hooks, get_hooks
from durably.config import DurabilityConfig
from durably.errors import (
    CheckpointTooLargeError,
    CorruptHistoryError,
    CorruptObjectError,
    DurablyError,
    NotFoundError,
    SerializationError,
)
from durably.storage import META_BASE, META_STATUS, CheckpointProvider, Lease, StoredCheckpoint

__all__ = ["CheckpointManager", "ExecutionInfo", "HistoryCheck", "LoadedExecution"]


class ExecutionInfo(Protocol):
    """What every checkpoint of an execution carries besides its agent's document."""

    header: dict[str, Any]
    """The execution's header (program, digest, LLM, inputs): on snapshots and finals."""
    next_agent_id: int

    def manifest(self) -> dict[str, int]:
        """Each agent's latest snapshot (read when the checkpoint takes its number)."""
        ...

FORMAT = 1
META_KIND = "durably.kind"
META_AGENT = "durably.agent"
META_AGENTS = "durably.agents"
META_OWNER = "durably.owner"
META_EPOCH = "durably.epoch"
META_PREV = "durably.prev"
"""Metadata key: ``sha256:<hex>`` of the previous checkpoint's stored document (a hash
chain: a missing, replaced or reordered checkpoint breaks it); ``start`` on checkpoint 0."""
CHAIN_START = "start"
META_REASON = "durably.reason"
"""Metadata key: why an execution was marked ``failed`` by a worker (shortened)."""
PRUNE_EVERY = 8
"""With ``keep_last``, prune every ``max(keep_last, PRUNE_EVERY)`` checkpoints, not at
every write (a prune lists the execution's checkpoints)."""
_DIGEST_IN_TEXT = re.compile(rb"sha256:[0-9a-f]{64}")


class _MissingBlob(Exception):
    def __init__(self, digest: str) -> None:
        self.digest = digest


@dataclass
class LoadedExecution:
    """Everything resume needs, decoded from the checkpoints since the oldest snapshot."""

    latest_seq: int
    latest_created_at: float
    status: str
    header: dict[str, Any]
    result: Any
    snapshots: dict[str, tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]]
    deltas: list[tuple[int, dict[str, Any]]]
    metadata: Mapping[str, str]
    next_agent_id: int
    unresolved: tuple[str, ...] = ()
    """With ``inert=True``: the classes (``"module:Qual"``) and modules (``"module"``)
    the stored values name that were not imported, decoded as inert placeholders."""

    def deltas_of(self, agent_id: str, after: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """The deltas ``agent_id`` wrote after checkpoint ``after`` (its snapshot), in order."""
        return ((seq, delta) for seq, delta in self.deltas
                if delta.get("agent") == agent_id and seq > after)

    def restored(self, agent_id: str) -> RestoredAgent:
        """An agent's last snapshot with the journal written since (what replay uses)."""

        seq, doc, _state, _locals = self.snapshots[agent_id]
        restored = RestoredAgent(SnapshotDoc.from_doc(doc), seq)
        for delta_seq, delta in self.deltas_of(agent_id, seq):
            restored.add_delta(DeltaDoc.from_doc(delta, delta_seq), delta_seq)
        return restored


def _digest(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


class HistoryCheck:
    """Checks that a stretch of an execution's history is complete and chained.

    Every checkpoint from ``first`` to ``last`` must be stored, and each one's
    ``durably.prev`` must be the digest of the one before it (checkpoints without a link,
    written by an older durably, are only checked for presence). Retention only
    removes a prefix of the history, below what the latest checkpoint needs; a gap inside
    the stretch is never legitimate.

    Args:
        execution_id: The execution (for the error).
        first: The first sequence number needed.
        last: The last one.
    """

    def __init__(self, execution_id: str, first: int, last: int) -> None:
        self.execution_id = execution_id
        self.first = first
        self.last = last
        self.present: list[int] = []
        self._gone: set[int] = set()
        self._prev: tuple[int, str, bool] | None = None  # seq, digest, carried a link
        self._broken: list[int] = []

    def listed(self, seq: int) -> None:
        """Record a stored checkpoint (from the listing, in ascending order)."""
        if self.first <= seq <= self.last and (not self.present or seq > self.present[-1]):
            self.present.append(seq)

    def vanished(self, seq: int) -> None:
        """A listed checkpoint could not be read (deleted since the listing)."""
        self._gone.add(seq)

    def missing(self) -> tuple[int, ...]:
        """The sequence numbers between ``first`` and ``last`` that are not stored."""
        have = set(self.present) - self._gone
        return tuple(seq for seq in range(self.first, self.last + 1) if seq not in have)

    def check_listing(self, *, pruned_ok: bool) -> None:
        """Raise unless every checkpoint of the stretch is stored.

        Args:
            pruned_ok: A missing *prefix* (nothing stored before the first present one)
                means retention removed what an older checkpoint builds on: that is a
                :class:`NotFoundError`, not damage.

        Raises:
            CorruptHistoryError: A checkpoint inside the stretch is missing.
            NotFoundError: Only a prefix is missing and ``pruned_ok``.
        """
        missing = self.missing()
        if not missing:
            return
        have = sorted(set(self.present) - self._gone)
        if pruned_ok and have and max(missing) < have[0]:
            raise NotFoundError(
                f"checkpoint {self.last} of execution {self.execution_id!r} can no longer "
                f"be restored: retention removed checkpoint(s) {self.first}-{have[0] - 1} "
                "that it builds on")
        raise CorruptHistoryError(self.execution_id, missing=missing,
                                  context=f"checkpoints {self.first} to {self.last} are needed")

    def follow(self, stored: StoredCheckpoint) -> None:
        """Check ``stored``'s link to the checkpoint given before it (ascending order)."""
        link = stored.metadata.get(META_PREV)
        prev = self._prev
        follows = prev is not None and prev[0] == stored.seq - 1
        # A checkpoint without a link is unchecked (an older durably wrote it, e.g. during
        # a rolling upgrade); the chain detects accidents, it is not a signature.
        if follows and prev is not None and link is not None and link != prev[1]:
            self._broken.append(stored.seq)
        self._prev = (stored.seq, _digest(stored.data), link is not None)

    def check_links(self) -> None:
        """Raise if a checkpoint did not follow the one before it.

        Raises:
            CorruptHistoryError: Naming the checkpoints whose link does not match.
        """
        if self._broken:
            raise CorruptHistoryError(self.execution_id, broken=tuple(self._broken),
                                      missing=self.missing())


class CheckpointManager:
    """Writes and reads the checkpoints of one execution.

    Args:
        execution_id: The execution.
        provider: Where checkpoints live (any :class:`~durably.storage.CheckpointProvider`).
        config: Limits, retention and codec settings (default: :func:`durably.load_config`
            defaults, without reading files).
        hooks: The plugin facade (default: the process-wide one).
    """

    def __init__(self, execution_id: str, provider: CheckpointProvider, *,
                 config: DurabilityConfig | None = None, hooks: Hooks | None = None) -> None:
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
            raise DurablyError("allow_pickle is set but DURABLY_PICKLE_KEY is not: pickled "
                               "values are signed with that key and never loaded unsigned")

    # ------------------------------------------------------------------ writing

    async def write(self, execution: ExecutionInfo, agent_id: str, doc: dict[str, Any], *,
                    kind: str, state: dict[str, Any] | None = None,
                    local_vars: dict[str, Any] | None = None,
                    frame: str = "agent") -> int:
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
            await self._store(seq, roots, labels, manifest,
                              {META_KIND: kind, META_AGENT: agent_id,
                               META_STATUS: "running"})
            if self.faults is not None:
                self.faults.checkpoint_written()
        keep = self.config.keep_last
        if keep and self.written % max(keep, PRUNE_EVERY) == 0:
            await self.prune(keep)
        return seq

    async def prune(self, keep_last: int) -> list[int]:
        """Apply retention: keep the last ``keep_last`` checkpoints and what resume needs."""
        return await self.provider.prune(self.execution_id, keep_last=max(1, keep_last),
                                         lease=self.lease)

    async def write_final(self, execution: ExecutionInfo, status: str, result: Any) -> int:
        """Mark the execution finished (``completed`` or ``failed``)."""
        if not self.config.enabled:
            return self.next_seq
        async with self._write_lock():
            seq = self.next_seq
            manifest = execution.manifest()
            body = {**FinalDoc(status, result).to_doc(), "manifest": manifest,
                    "header": execution.header, "next_agent_id": execution.next_agent_id}
            await self._store(seq, {"doc": body}, {"doc": "execution result"}, manifest,
                              {META_KIND: "final", META_STATUS: status})
            return seq

    def _write_lock(self) -> Any:
        """Serializes writes: sequence numbers are taken and written in order."""
        import asyncio

        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _store(self, seq: int, roots: dict[str, Any], labels: dict[str, str],
                     manifest: dict[str, int], metadata: dict[str, str]) -> None:
        """Encode ``roots``, put their new blobs, and save checkpoint ``seq`` (fenced by the
        lease), with the checkpoint hooks around it."""
        encoded = self.codec.encode(roots, labels)
        size = len(encoded.data)
        new_blobs = {digest: blob for digest, blob in encoded.blobs.items()
                     if digest not in self.known_blobs}
        # Blobs count: a value stored once, as a blob, counts when it is first written.
        total = size + sum(len(blob) for blob in new_blobs.values())
        if total > self.config.max_checkpoint_size:
            raise CheckpointTooLargeError(self._too_large(
                total, roots.get("state"), roots.get("locals"), limit="max_checkpoint_size",
                blobs=len(new_blobs)))
        if self.config.max_execution_size:
            stored = await self._execution_bytes()
            if stored + total > self.config.max_execution_size:
                raise CheckpointTooLargeError(self._too_large(
                    total, roots.get("state"), roots.get("locals"),
                    limit="max_execution_size", stored=stored, blobs=len(new_blobs)))
        metadata = {**metadata, META_BASE: str(min(manifest.values()) if manifest else seq),
                    META_AGENTS: str(len(manifest)), **self._owner_metadata()}
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
                self.execution_id, seq, encoded.data, metadata=metadata, lease=self.lease)
        except BaseException as exc:
            self.hooks.on_checkpoint_error(self.execution_id, seq, exc)
            raise
        self.next_seq = seq + 1
        self._prev_digest = _digest(encoded.data)
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
        body = {**FinalDoc("failed", reason).to_doc(), "manifest": manifest,
                "header": loaded.header, "next_agent_id": loaded.next_agent_id}
        async with self._write_lock():
            seq = self.next_seq
            await self._store(seq, {"doc": body}, {"doc": "execution result"}, manifest,
                              {META_KIND: "final", META_STATUS: "failed",
                               META_REASON: _shorten(reason, 400)})
            return seq

    def _too_large(self, size: int, state: dict[str, Any] | None,
                   local_vars: dict[str, Any] | None, *, limit: str = "max_checkpoint_size",
                   stored: int = 0, blobs: int = 0) -> str:
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
            return (f"checkpoint of execution {self.execution_id!r} is {size:,} bytes"
                    f"{with_blobs}; with the {stored:,} bytes the execution already stored "
                    f"it goes over max_execution_size ({self.config.max_execution_size:,}); "
                    f"largest values: {largest or 'none'}")
        return (f"checkpoint of execution {self.execution_id!r} is {size:,} bytes"
                f"{with_blobs}, over max_checkpoint_size "
                f"({self.config.max_checkpoint_size:,}); largest values: "
                f"{largest or 'none'}")

    # ------------------------------------------------------------------ reading

    async def decode(self, stored: StoredCheckpoint, referenced: set[str] | None = None,
                     *, unresolved: list[str] | None = None) -> dict[str, Any]:
        """Decode a stored checkpoint, fetching the blobs it references.

        Decoding never imports a module named by the data unless the checkpoint is being
        restored (``unresolved`` not given, after the program's fingerprint was checked):
        then a module that LLM code imported is imported again, as its ``import``
        statement did.

        Args:
            stored: The checkpoint.
            referenced: If given, the digests of the blobs it references are added.
            unresolved: Decode inertly (inspection): classes and modules that are not
                imported become placeholders and their names are appended here.
        """
        blobs = await self._prefetch(stored.data)

        def get(digest: str) -> bytes:
            if digest not in blobs:
                raise _MissingBlob(digest)
            return blobs[digest]

        for _ in range(10_000):
            sink: list[str] | None = None if unresolved is None else []
            try:
                self._unresolved = sink  # for _decode_fallback, during this call only
                try:
                    roots = self.codec.decode(stored.data, get, unresolved=sink)
                finally:
                    self._unresolved = None
                if referenced is not None:
                    referenced.update(blobs)
                if unresolved is not None and sink:
                    unresolved.extend(name for name in sink if name not in unresolved)
                return roots
            except (_MissingBlob, CorruptObjectError) as exc:
                missing = exc if isinstance(exc, _MissingBlob) else exc.__cause__
                if not isinstance(missing, _MissingBlob):
                    raise
                try:
                    blobs[missing.digest] = await self.provider.get_blob(
                        self.execution_id, missing.digest)
                except NotFoundError as exc:
                    raise CorruptObjectError(
                        f"checkpoint {stored.seq} of {self.execution_id!r} references blob "
                        f"{missing.digest}, which is missing") from exc
                self.known_blobs.add(missing.digest)
        raise CorruptObjectError("too many blobs")  # pragma: no cover

    def _decode_fallback(self, tag: str, payload: Any) -> Any:
        return decode_fallback(tag, payload, self._unresolved)

    async def _prefetch(self, data: bytes) -> dict[str, bytes]:
        """Fetch, level by level and concurrently, the blobs a document mentions, so that
        decoding needs no round trip per blob. (A string that merely looks like a digest
        costs one failed lookup; a blob missed here is still fetched during decoding.)"""
        import asyncio

        fetched: dict[str, bytes] = {}
        wanted = {m.decode() for m in _DIGEST_IN_TEXT.findall(data)}
        while wanted:
            batch = sorted(wanted - fetched.keys())[:64]
            if not batch:
                break
            results = await asyncio.gather(
                *(self.provider.get_blob(self.execution_id, d) for d in batch),
                return_exceptions=True)
            for digest, result in zip(batch, results, strict=True):
                wanted.discard(digest)
                if isinstance(result, NotFoundError):
                    continue
                if isinstance(result, BaseException):
                    raise result
                fetched[digest] = result
                self.known_blobs.add(digest)
                wanted |= {m.decode() for m in _DIGEST_IN_TEXT.findall(result)} - fetched.keys()
        return fetched

    async def load_execution(self, at: int | None = None, *,
                             inert: bool = False) -> LoadedExecution | None:
        """Load what resuming needs: the latest checkpoint (or checkpoint ``at``) and every
        checkpoint since its base snapshot, checked to be complete and chained.

        Args:
            at: A checkpoint to load instead of the latest (inspection, fork).
            inert: Inspection: never import anything; classes and modules that are not
                imported decode to placeholders (listed in
                :attr:`LoadedExecution.unresolved`). Without it, the values are restored
                live (only after the program's fingerprint was checked).

        Returns:
            The loaded execution, or None if it has no checkpoint.

        Raises:
            CorruptHistoryError: A checkpoint between the base and ``at`` (or the latest)
                is missing, or one does not follow the one before it.
            NotFoundError: Checkpoint ``at`` does not exist, or retention removed the
                checkpoints it builds on.
        """
        for attempt in range(3):
            try:
                return await self._load(at, inert)
            except CorruptHistoryError:
                # Inspection may race with a writer that prunes: if the execution moved
                # on, what was missing may have been legitimately removed. Load again.
                if at is not None or attempt == 2 or not await self._moved_on():
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _moved_on(self) -> bool:
        seen = self._loading_seq
        latest = await self.provider.load_latest_checkpoint(self.execution_id)
        return latest is not None and latest.seq != seen

    async def _load(self, at: int | None, inert: bool) -> LoadedExecution | None:
        self._loading_seq = -1
        if at is None:
            latest = await self.provider.load_latest_checkpoint(self.execution_id)
        else:
            try:
                latest = await self.provider.load_checkpoint(self.execution_id, at)
            except NotFoundError:
                raise NotFoundError(f"execution {self.execution_id!r} has no checkpoint {at}"
                                    " (it may have been pruned)") from None
        if latest is None:
            return None
        self._loading_seq = latest.seq
        unresolved: list[str] | None = [] if inert else None
        latest_doc = (await self.decode(latest, unresolved=unresolved))["doc"]
        manifest: dict[str, int] = latest_doc.get("manifest", {})
        base = min(manifest.values()) if manifest else latest.seq
        snapshots: dict[str, tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]] = {}
        deltas: list[tuple[int, dict[str, Any]]] = []
        header: dict[str, Any] = latest_doc.get("header") or {}
        history = HistoryCheck(self.execution_id, base, latest.seq)
        async for info in self.provider.iter_checkpoints(self.execution_id, after=base - 1):
            if info.seq > latest.seq:
                break
            history.listed(info.seq)
        history.check_listing(pruned_ok=at is not None)
        for seq in history.present:
            if seq == latest.seq:
                stored = latest
            else:
                try:
                    stored = await self.provider.load_checkpoint(self.execution_id, seq)
                except NotFoundError:
                    history.vanished(seq)
                    continue
            history.follow(stored)
            roots = await self.decode(stored, unresolved=unresolved)
            doc = roots["doc"]
            kind = doc_type(doc)
            if kind == "snapshot":
                agent = doc["agent"]
                if manifest.get(agent) == seq:
                    snapshots[agent] = (seq, doc, roots.get("state") or {},
                                        roots.get("locals") or {})
                header = doc.get("header") or header
            elif kind == "delta":
                deltas.append((seq, doc))
        history.check_listing(pruned_ok=False)
        history.check_links()
        missing = set(manifest) - set(snapshots)
        if missing:
            raise CorruptObjectError(
                f"execution {self.execution_id!r}: the snapshot of agent(s) "
                f"{', '.join(sorted(missing))} is missing from the store")
        status = latest.metadata.get(META_STATUS, "running")
        if at is None:
            self.next_seq = latest.seq + 1
            self._prev_digest = _digest(latest.data)
        return LoadedExecution(
            latest_seq=latest.seq, latest_created_at=latest.info.created_at,
            status=FinalDoc.from_doc(latest_doc).status if doc_type(latest_doc) == "final"
            else status,
            header=header, result=latest_doc.get("result"), snapshots=snapshots,
            deltas=deltas, metadata=latest.metadata,
            next_agent_id=latest_doc.get("next_agent_id", 1000),
            unresolved=tuple(unresolved or ()))

    async def resolve(self, loaded: LoadedExecution) -> LoadedExecution:
        """Turn an inert load into a live one, once the program is trusted and imported.

        Nothing to do if the inert load met no class or module that was not imported;
        otherwise the execution is loaded again, live (the program file is imported by
        now; a module that LLM code imported is imported again).
        """
        if not loaded.unresolved:
            return loaded
        import importlib

        for name in loaded.unresolved:
            if ":" in name:
                continue  # a class: its module must be imported by the program
            try:  # a module LLM code imported: import it again, as its statement did
                importlib.import_module(name)
            except Exception as exc:
                raise SerializationError(
                    f"execution {self.execution_id!r}", f"LLM code imported module "
                    f"{name!r}, which cannot be imported here: {exc!r}") from exc
        live = await self.load_execution()
        if live is None:  # pragma: no cover - deleted while resuming
            raise NotFoundError(f"execution {self.execution_id!r} has no checkpoint")
        return live

def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


