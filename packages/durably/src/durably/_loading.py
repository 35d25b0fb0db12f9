"""Reading an execution's checkpoints back: decoding, fetching blobs, checking the history.

:class:`CheckpointReader` is the reading half of :class:`~durably.checkpoint.CheckpointManager`:
:meth:`~CheckpointReader.load_execution` gives a :class:`LoadedExecution` (the documents
since the oldest snapshot any agent needs), after :class:`HistoryCheck` made sure that
stretch of history is complete and chained. Decoding never imports what the data names
unless the execution is being restored (see :meth:`~CheckpointReader.decode`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from durably._codec import ValueCodec
from durably._codec._decode import decode_plain
from durably._codeobjects import decode_fallback
from durably._journal import (
    FIRST_AGENT_ID,
    DeltaDoc,
    FinalDoc,
    RestoredAgent,
    SnapshotDoc,
    doc_type,
)
from durably._metadata import META_PREV
from durably.errors import (
    CorruptHistoryError,
    CorruptObjectError,
    NotFoundError,
    SerializationError,
)
from durably.storage import META_STATUS, CheckpointProvider, StoredCheckpoint

__all__ = ["CheckpointReader", "HistoryCheck", "LoadedExecution"]

_DIGEST_IN_TEXT = re.compile(rb"sha256:[0-9a-f]{64}")

PAGE = 512
"""Checkpoints read per :meth:`~durably.storage.CheckpointProvider.load_checkpoints` call."""
#: At most this many missing sequence numbers are listed in a CorruptHistoryError.
MISSING_SHOWN = 10_000


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
    _parsed: list[tuple[int, DeltaDoc]] | None = field(default=None, init=False, repr=False)

    def deltas_of(self, agent_id: str, after: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """The deltas ``agent_id`` wrote after checkpoint ``after`` (its snapshot), in order."""
        return (
            (seq, delta)
            for seq, delta in self.deltas
            if delta.get("agent") == agent_id and seq > after
        )

    def journal(self) -> list[tuple[int, DeltaDoc]]:
        """:attr:`deltas` as documents, parsed once (read them, do not change them)."""
        if self._parsed is None:
            self._parsed = [(seq, DeltaDoc.from_doc(delta, seq)) for seq, delta in self.deltas]
        return self._parsed

    def restored(self, agent_id: str) -> RestoredAgent:
        """An agent's last snapshot with the journal written since (what replay uses)."""

        seq, doc, _state, _locals = self.snapshots[agent_id]
        restored = RestoredAgent(SnapshotDoc.from_doc(doc), seq)
        for delta_seq, delta in self.journal():
            if delta_seq > seq and delta.agent == agent_id:
                restored.add_delta(delta, delta_seq)
        return restored


def digest_of(data: bytes) -> str:
    """The ``sha256:<hex>`` of a stored checkpoint (the hash chain's link)."""
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
        """The sequence numbers between ``first`` and ``last`` that are not stored, the
        first :data:`MISSING_SHOWN` of them (:meth:`missing_count` counts them all)."""
        out: list[int] = []
        for start, stop in self._gaps():
            out.extend(range(start, min(stop, start + MISSING_SHOWN - len(out))))
            if len(out) >= MISSING_SHOWN:
                break
        return tuple(out)

    def missing_count(self) -> int:
        """How many sequence numbers between ``first`` and ``last`` are not stored."""
        return sum(stop - start for start, stop in self._gaps())

    def _gaps(self) -> Iterator[tuple[int, int]]:
        """The missing stretches as ``(start, stop)`` ranges: work in what is stored, not
        in the length of the stretch (a damaged manifest may claim a base far back)."""
        expected = self.first
        for seq in sorted(set(self.present) - self._gone):
            if seq > expected:
                yield expected, seq
            expected = seq + 1
        if expected <= self.last:
            yield expected, self.last + 1

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
        if pruned_ok and have and list(self._gaps()) == [(self.first, have[0])]:
            raise NotFoundError(
                f"checkpoint {self.last} of execution {self.execution_id!r} can no longer "
                f"be restored: retention removed checkpoint(s) {self.first}-{have[0] - 1} "
                "that it builds on"
            )
        count = self.missing_count()
        more = f", {count} missing in all" if count > len(missing) else ""
        raise CorruptHistoryError(
            self.execution_id,
            missing=missing,
            context=f"checkpoints {self.first} to {self.last} are needed{more}",
        )

    def follow(self, stored: StoredCheckpoint) -> None:
        """Check ``stored``'s link to the checkpoint given before it (ascending order)."""
        link = stored.metadata.get(META_PREV)
        prev = self._prev
        follows = prev is not None and prev[0] == stored.seq - 1
        # A checkpoint without a link is unchecked (an older durably wrote it, e.g. during
        # a rolling upgrade); the chain detects accidents, it is not a signature.
        if follows and prev is not None and link is not None and link != prev[1]:
            self._broken.append(stored.seq)
        self._prev = (stored.seq, digest_of(stored.data), link is not None)

    def check_links(self) -> None:
        """Raise if a checkpoint did not follow the one before it.

        Raises:
            CorruptHistoryError: Naming the checkpoints whose link does not match.
        """
        if self._broken:
            raise CorruptHistoryError(
                self.execution_id, broken=tuple(self._broken), missing=self.missing()
            )


class CheckpointReader:
    """Reads one execution's checkpoints (the state is set up by the manager)."""

    execution_id: str
    provider: CheckpointProvider
    codec: ValueCodec
    known_blobs: set[str]
    next_seq: int
    _prev_digest: str | None
    _unresolved: list[str] | None
    _loading_seq: int
    _restored_bytes: dict[str, int]
    """Each agent's latest snapshot as loaded: the bytes its encoding took (the document
    and every blob it references), as the manager counted them when it wrote it."""
    _blob_cache: dict[str, bytes] | None = None
    """While :meth:`load_execution` runs: the blobs fetched so far (the latest checkpoint
    is decoded twice, for its manifest first and then in order with the others)."""

    async def decode(
        self,
        stored: StoredCheckpoint,
        referenced: set[str] | None = None,
        *,
        unresolved: list[str] | None = None,
        blob_bytes: list[int] | None = None,
    ) -> dict[str, Any]:
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
            blob_bytes: If given, the sizes of the blobs it references are appended.
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
                if blob_bytes is not None:
                    blob_bytes.extend(len(blob) for blob in blobs.values())
                if unresolved is not None and sink:
                    unresolved.extend(name for name in sink if name not in unresolved)
                return roots
            except (_MissingBlob, CorruptObjectError) as exc:
                missing = exc if isinstance(exc, _MissingBlob) else exc.__cause__
                if not isinstance(missing, _MissingBlob):
                    raise
                try:
                    blobs[missing.digest] = await self.provider.get_blob(
                        self.execution_id, missing.digest
                    )
                except NotFoundError as exc:
                    raise CorruptObjectError(
                        f"checkpoint {stored.seq} of {self.execution_id!r} references blob "
                        f"{missing.digest}, which is missing"
                    ) from exc
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
        cache = self._blob_cache
        wanted = {m.decode() for m in _DIGEST_IN_TEXT.findall(data)}
        while wanted:
            batch = sorted(wanted - fetched.keys())[:64]
            if not batch:
                break
            known = [] if cache is None else [digest for digest in batch if digest in cache]
            if known and cache is not None:
                for digest in known:
                    wanted.discard(digest)
                    fetched[digest] = blob = cache[digest]
                    wanted |= {m.decode() for m in _DIGEST_IN_TEXT.findall(blob)} - fetched.keys()
                continue
            results = await asyncio.gather(
                *(self.provider.get_blob(self.execution_id, d) for d in batch),
                return_exceptions=True,
            )
            for digest, result in zip(batch, results, strict=True):
                wanted.discard(digest)
                if isinstance(result, NotFoundError):
                    continue
                if isinstance(result, BaseException):
                    raise result
                fetched[digest] = result
                self.known_blobs.add(digest)
                if cache is not None:
                    cache[digest] = result
                wanted |= {m.decode() for m in _DIGEST_IN_TEXT.findall(result)} - fetched.keys()
        return fetched

    async def load_execution(
        self, at: int | None = None, *, inert: bool = False
    ) -> LoadedExecution | None:
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
                self._blob_cache = {}
                return await self._load(at, inert)
            except CorruptHistoryError:
                # Inspection may race with a writer that prunes: if the execution moved
                # on, what was missing may have been legitimately removed. Load again.
                if at is not None or attempt == 2 or not await self._moved_on():
                    raise
            finally:
                self._blob_cache = None
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
                raise NotFoundError(
                    f"execution {self.execution_id!r} has no checkpoint {at}"
                    " (it may have been pruned)"
                ) from None
        if latest is None:
            return None
        self._loading_seq = latest.seq
        unresolved: list[str] | None = [] if inert else None
        latest_doc = (await self.decode(latest, unresolved=unresolved))["doc"]
        manifest: dict[str, int] = latest_doc.get("manifest", {})
        if not isinstance(manifest, dict) or not all(
            type(seq) is int and 0 <= seq <= latest.seq for seq in manifest.values()
        ):
            raise CorruptObjectError(
                f"execution {self.execution_id!r}: checkpoint {latest.seq} names snapshots "
                "that cannot be there (its manifest is not agent -> an earlier sequence number)"
            )
        base = min(manifest.values()) if manifest else latest.seq
        snapshots: dict[str, tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]] = {}
        deltas: list[tuple[int, dict[str, Any]]] = []
        header: dict[str, Any] = latest_doc.get("header") or {}
        history = HistoryCheck(self.execution_id, base, latest.seq)
        stretch = await self._stretch(history, latest)
        history.check_listing(pruned_ok=at is not None)
        for stored in stretch:
            history.follow(stored)
            roots = decode_plain(stored.data)
            blob_bytes: list[int] = []
            if roots is None:
                roots = await self.decode(stored, unresolved=unresolved, blob_bytes=blob_bytes)
            doc = roots["doc"]
            kind = doc_type(doc)
            if kind == "snapshot":
                agent = doc["agent"]
                if manifest.get(agent) == stored.seq:
                    # So that its snapshot interval is the one the run before had.
                    self._restored_bytes[agent] = len(stored.data) + sum(blob_bytes)
                    snapshots[agent] = (
                        stored.seq,
                        doc,
                        roots.get("state") or {},
                        roots.get("locals") or {},
                    )
                header = doc.get("header") or header
            elif kind == "delta":
                deltas.append((stored.seq, doc))
        history.check_links()
        missing = set(manifest) - set(snapshots)
        if missing:
            raise CorruptObjectError(
                f"execution {self.execution_id!r}: the snapshot of agent(s) "
                f"{', '.join(sorted(missing))} is missing from the store"
            )
        status = latest.metadata.get(META_STATUS, "running")
        if at is None:
            self.next_seq = latest.seq + 1
            self._prev_digest = digest_of(latest.data)
        return LoadedExecution(
            latest_seq=latest.seq,
            latest_created_at=latest.info.created_at,
            status=FinalDoc.from_doc(latest_doc).status
            if doc_type(latest_doc) == "final"
            else status,
            header=header,
            result=latest_doc.get("result"),
            snapshots=snapshots,
            deltas=deltas,
            metadata=latest.metadata,
            next_agent_id=latest_doc.get("next_agent_id", FIRST_AGENT_ID),
            unresolved=tuple(unresolved or ()),
        )

    async def _stretch(
        self, history: HistoryCheck, latest: StoredCheckpoint
    ) -> list[StoredCheckpoint]:
        """Every stored checkpoint from ``history.first`` to ``latest``, ascending, each
        recorded in ``history``: read :data:`PAGE` at a time through the provider's bulk
        read (one pass: a checkpoint the read does not find is missing; the listing is
        asked only to step over a page where nothing was found)."""
        out: list[StoredCheckpoint] = []
        start = history.first
        while start < latest.seq:
            end = min(start + PAGE, latest.seq)
            found = False
            for stored in await self.provider.load_checkpoints(
                self.execution_id, list(range(start, end))
            ):
                if stored is not None:
                    history.listed(stored.seq)
                    out.append(stored)
                    found = True
            start = end
            if not found and end < latest.seq:
                # A whole page is missing (damage, or a manifest naming a base that never
                # existed): ask for the next stored one instead of reading the gap.
                page = await self.provider.list_checkpoints(
                    self.execution_id, after=end - 1, limit=1
                )
                start = min(page.items[0].seq, latest.seq) if page.items else latest.seq
        history.listed(latest.seq)
        out.append(latest)
        return out

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
                    f"execution {self.execution_id!r}",
                    f"LLM code imported module {name!r}, which cannot be imported here: {exc!r}",
                ) from exc
        live = await self.load_execution()
        if live is None:  # pragma: no cover - deleted while resuming
            raise NotFoundError(f"execution {self.execution_id!r} has no checkpoint")
        return live
