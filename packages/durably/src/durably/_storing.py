"""Storing one checkpoint: encoding it, enforcing the size limits, fencing and chaining it.

:class:`CheckpointWriter` is the storing half of
:class:`~durably.checkpoint.CheckpointManager` (which decides what each checkpoint holds:
a snapshot, a delta or a final record). For every checkpoint it:

* encodes the roots with the safe codec; values above the blob threshold become
  content-addressed blobs, put once per execution (:attr:`known_blobs`), all the new
  blobs of a checkpoint in one ``put_blobs`` batch that is durable before the
  checkpoint is saved;
* refuses a checkpoint over ``max_checkpoint_size`` (its new blobs included) or one that
  would take the execution over ``max_execution_size``, naming the largest values
  (:class:`~durably.errors.CheckpointTooLargeError`);
* adds the metadata: the oldest checkpoint a resume from it needs (``durably.base``,
  from the manifest), the number of agents, the owner and epoch of the lease, and the
  hash-chain link to the previous checkpoint (``durably.prev``);
* saves it fenced by the execution's lease, with the checkpoint hooks around the write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from durably._loading import CheckpointReader, digest_of
from durably._metadata import CHAIN_START, META_AGENTS, META_EPOCH, META_OWNER, META_PREV
from durably._plugins import Hooks
from durably._storetypes import SEQ_END
from durably.config import DurabilityConfig
from durably.errors import CheckpointTooLargeError, CorruptObjectError
from durably.storage import META_BASE, Lease, validate_metadata

__all__ = ["CheckpointWriter"]


class CheckpointWriter(CheckpointReader):
    """Stores one execution's checkpoints (the state is set up by the manager)."""

    config: DurabilityConfig
    hooks: Hooks
    lease: Lease | None
    written: int
    bytes_written: int
    _lock: Any
    _stored_before: int | None
    encoded_bytes: int = 0
    """Bytes the latest checkpoint's encoding took: its document and every chunk of it,
    new or stored before."""
    _owner: tuple[Lease, dict[str, str]] | None = None
    """The lease :meth:`_owner_metadata` was built for, and what it built."""

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
        announce: Callable[[], None] | None = None,
    ) -> None:
        """Encode ``roots``, put their new blobs, and save checkpoint ``seq`` (fenced by the
        lease), with the checkpoint hooks around it. ``announce`` is called once the
        checkpoint is encoded and passed every check, just before its first write: a
        checkpoint refused (too large, unserializable, past the last sequence number)
        shows nothing."""
        if seq >= SEQ_END:  # only a history written by something else gets here
            raise CorruptObjectError(
                f"execution {self.execution_id!r}: its latest checkpoint has sequence "
                f"number {seq - 1}, the largest there can be, so no checkpoint can follow "
                "it; the store holds a history durably did not write"
            )
        encoded = self.codec.encode(roots, labels)
        size = len(encoded.data)
        self.encoded_bytes = (
            size + sum(len(blob) for blob in encoded.blobs.values()) if encoded.blobs else size
        )
        new_blobs = (
            {d: blob for d, blob in encoded.blobs.items() if d not in self.known_blobs}
            if encoded.blobs
            else {}
        )
        # Blobs count: a value stored once, as a blob, counts when it is first written.
        total = size + sum(len(blob) for blob in new_blobs.values()) if new_blobs else size
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
        metadata = validate_metadata(metadata)  # a reason, an agent id: not always short
        if announce is not None:
            announce()
        try:
            if new_blobs:
                # One batch, durable before the checkpoint that references it is written.
                await self.provider.put_blobs(self.execution_id, new_blobs)
                self.known_blobs.update(new_blobs)
                self.bytes_written += sum(len(blob) for blob in new_blobs.values())
            # The id and the seq are the manager's own: not validated again.
            info = await self.provider._save_valid(
                self.execution_id, seq, encoded.data, metadata, "create", self.lease
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
        overlapped (epochs never decrease along the sequence). Built once per lease (a
        :class:`~durably.storage.Lease` is immutable); the caller copies it."""
        lease = self.lease
        if lease is None:
            return {}
        cached = self._owner
        if cached is None or cached[0] is not lease:
            cached = self._owner = (lease, {META_OWNER: lease.owner, META_EPOCH: str(lease.epoch)})
        return cached[1]

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
