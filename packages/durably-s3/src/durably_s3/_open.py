"""The index of open executions (``Capability.OPEN_INDEX``, clause C31) in a bucket.

One small marker object per open execution (one whose latest checkpoint is not finished,
:func:`durably.storage.is_finished`)::

    <prefix>/open/E        {"epoch": e, "at": t}: E is open (or was: a stale entry)
    <prefix>/open-ready    the index is complete (written once per store)

S3 has no transaction spanning two objects, so the marker and the checkpoints are kept
in step by order and by epochs:

* **Opening** -- a save of an unfinished checkpoint first makes sure a marker exists
  whose ``epoch`` is at least the writer's lease epoch (a GET, and a conditional PUT if
  needed), then writes the checkpoint. The instance remembers it: once per claim for a
  leased writer, every ``TIDY_GRACE / 2`` seconds for an unleased one, so a steady-state
  save stays one request. A crash in between leaves a stale marker, never an open
  execution without one.
* **Closing** -- after a save that made a finished checkpoint the latest one (or a
  deletion that left the execution finished or empty), the marker is deleted with
  ``If-Match`` on the ETag read *before* looking at the latest checkpoint, and only if
  its ``epoch`` is not above the writer's epoch nor above the epoch of the latest
  checkpoint. A writer that opens the execution again holds a newer lease (epochs only
  grow, store-wide), so it wrote -- or is about to write -- a marker with a greater
  epoch: either the closer sees that epoch and keeps the marker, or the closer's
  conditional delete fails on the new ETag, or the new marker is written after the
  delete. The open entry of a leased writer is never lost.
* **Tidying** (``forget_if_finished``, which workers call for stale entries) follows the
  closing rule with no epoch of its own; for markers that give no epoch ordering -- an
  unleased writer's (epoch 0) or one with no checkpoint behind it -- it also waits until
  the marker is :data:`TIDY_GRACE` seconds old (by its ``at``, which unleased writers
  refresh), so a writer between its marker and its checkpoint is not overtaken.

Unleased writers of one execution in several instances at once (durably never does
this: its runs are leased) are not ordered against each other's final writes.

A store written by a version without the index has no ``open-ready`` object: the first
listing looks at every execution once, marks the open ones, then writes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from durably.errors import CorruptObjectError
from durably.storage import CheckpointProvider, ExecutionInfo, Page, is_finished
from durably_s3 import _format as fmt
from durably_s3._client import Precondition
from durably_s3._format import MARKER_SIZE
from durably_s3._slots import SlotsMixin

if TYPE_CHECKING:
    pass

__all__ = ["TIDY_GRACE", "LatestState", "OpenIndexMixin", "OpenMarker"]

TIDY_GRACE = 600.0
"""Seconds an unordered marker (epoch 0, or no checkpoint behind it) must have aged
before ``forget_if_finished`` deletes it."""
_CYCLES = 8


@dataclass(frozen=True, slots=True)
class OpenMarker:
    """An execution's open-index marker as read back."""

    epoch: int
    at: float
    etag: str


@dataclass(frozen=True, slots=True)
class LatestState:
    """What the open index needs of an execution's latest checkpoint."""

    seq: int
    epoch: int
    metadata: Mapping[str, str]


def encode_open_marker(epoch: int, at: float) -> bytes:
    """The body of a marker."""
    return json.dumps({"epoch": epoch, "at": at}, separators=(",", ":")).encode()


def decode_open_marker(body: bytes, etag: str, what: str) -> OpenMarker:
    """Parse a marker's body.

    Raises:
        CorruptObjectError: The body is not a marker.
    """
    try:
        data = json.loads(body)
        return OpenMarker(int(data["epoch"]), float(data["at"]), etag)
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObjectError(f"{what} is not an open-index marker: {exc}") from exc


class OpenIndexMixin(SlotsMixin):
    """The open index of :class:`~durably_s3.S3Provider` (see the module docstring).

    It builds on the slot helpers (:class:`~durably_s3._slots.SlotsMixin`).
    """

    _marked: dict[str, tuple[int, float]]
    _open_ready: bool

    def _open_what(self, execution_id: str) -> str:
        return (
            f"the open-index marker of execution {execution_id!r} "
            f"(s3://{self.bucket}/{self._layout.open_entry(execution_id)})"
        )

    async def _read_open_marker(self, execution_id: str) -> OpenMarker | None:
        found = await self._s3.get(self._layout.open_entry(execution_id))
        if not isinstance(found, tuple):
            return None
        info, body = found
        return decode_open_marker(body, info.etag, self._open_what(execution_id))

    async def _mark_open(self, execution_id: str, epoch: int) -> None:
        """Make sure a marker with an epoch of at least ``epoch`` exists (before the write
        that opens the execution). An unleased writer (``epoch`` 0) refreshes its ``at``
        when it is older than half of :data:`TIDY_GRACE`."""
        key = self._layout.open_entry(execution_id)
        for _ in range(_CYCLES):
            current = await self._read_open_marker(execution_id)
            now = time.time()
            if (
                current is not None
                and current.epoch >= epoch
                and (epoch > 0 or current.at > now - TIDY_GRACE / 2)
            ):
                return
            try:
                await self._s3.put(
                    key,
                    encode_open_marker(max(epoch, current.epoch) if current else epoch, now),
                    if_none_match=current is None,
                    if_match=current.etag if current else None,
                    data=False,
                )
                return
            except Precondition:
                continue
        # Every attempt lost a race with another marker write: one exists, of a newer
        # epoch or just refreshed -- as good as ours.

    async def _note_open(self, execution_id: str, epoch: int | None) -> None:
        """Before saving an unfinished checkpoint: the marker (once per lease epoch, or
        for an unleased writer, again when its ``at`` is half of :data:`TIDY_GRACE` old).
        """
        wanted = epoch or 0
        done = self._marked.get(execution_id)
        if (
            done is not None
            and done[0] == wanted
            and (wanted > 0 or time.monotonic() - done[1] < TIDY_GRACE / 2)
        ):
            return
        await self._mark_open(execution_id, wanted)
        self._marked[execution_id] = (wanted, time.monotonic())

    async def _latest_state(self, execution_id: str) -> LatestState | None:
        """The latest checkpoint's seq, writer epoch and metadata (markers skipped)."""
        async for item in self._descending(execution_id):
            if item.size == MARKER_SIZE:
                continue
            seq = fmt.Layout.seq_of(item.key)
            assert seq is not None
            meta = await self._slot(execution_id, seq)
            if meta is None or meta.kind == "marker":
                continue
            metadata = meta.metadata
            if metadata is None:
                info = await self._checkpoint_info(execution_id, item)
                if info is None:
                    continue
                metadata = dict(info.metadata)
            return LatestState(seq, meta.epoch, metadata)
        return None

    async def _close_open(self, execution_id: str, epoch: int | None) -> bool:
        """Delete the marker if the execution is finished or empty (see the module
        docstring); ``epoch`` is the closing writer's (None: a tidy-up). Returns whether
        the marker was deleted."""
        self._marked.pop(execution_id, None)
        marker = await self._read_open_marker(execution_id)
        if marker is None:
            return False
        latest = await self._latest_state(execution_id)
        if latest is not None and not is_finished(latest.metadata):
            return False
        ceiling = max(latest.epoch if latest is not None else 0, epoch or 0)
        if marker.epoch > ceiling:
            return False  # a newer writer opened it (or is about to)
        if (
            epoch is None
            and (latest is None or marker.epoch == 0)
            and (marker.at > time.time() - TIDY_GRACE)
        ):
            return False  # an unordered marker: its writer may be between two requests
        try:
            await self._s3.delete(self._layout.open_entry(execution_id), if_match=marker.etag)
        except Precondition:
            return False
        return True

    async def _list_open_markers(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        """A page of the open markers' execution ids (built first for an old store)."""
        if cursor is not None and not fmt.is_execution_id(cursor):
            raise ValueError(f"invalid cursor {cursor!r}")
        if not self._open_ready:
            await self._build_open_index()
        prefix = self._layout.open
        start = f"{prefix}{cursor}" if cursor else None
        page = await self._s3.list_page(prefix, start_after=start, max_keys=limit)
        items = tuple(
            ExecutionInfo(item.key[len(prefix) :])
            for item in page.objects
            if fmt.is_execution_id(item.key[len(prefix) :])
        )
        last = page.objects[-1].key[len(prefix) :] if page.objects else None
        return Page(items, last if page.truncated else None)

    async def _build_open_index(self) -> None:
        """Mark the open executions of a store written before the index existed (once
        per store: then ``open-ready`` says the index is complete)."""
        if await self._s3.head(self._layout.open_ready) is not None:
            self._open_ready = True
            return
        assert isinstance(self, CheckpointProvider)
        async for execution in self.iter_executions():
            latest = await self._latest_state(execution.execution_id)
            if latest is not None and not is_finished(latest.metadata):
                await self._mark_open(execution.execution_id, latest.epoch)
        try:
            await self._s3.put(self._layout.open_ready, b"1", if_none_match=True, data=False)
        except Precondition:
            pass  # another instance finished first
        self._open_ready = True

    async def _forget_marker_if_finished(self, execution_id: str) -> bool:
        """Tidy a stale open marker (the closing rule, with no epoch of its own)."""
        return await self._close_open(execution_id, None)
