"""The filesystem provider: an append-only, checksummed log per execution.

See ``docs/providers/filesystem.md`` for the layout, the record format and the
guarantees. In short, for one execution ``E`` under the store's root::

    root/durably-store.json            marker: the layout version
    root/executions/E/log              the checkpoint log (append-only, checksummed)
    root/executions/E/lock             flock(2) target serialising writers of E
    root/executions/E/lease            the current lease (JSON, replaced atomically)
    root/executions/E/owner            flock(2) held by the running owner (owner lock)
    root/executions/E/blobs/<hex>.pack blobs, many to a file (layout 2, see _packs.py)
    root/executions/E/blobs/ab/<hex>   one file per blob (layout 1: stores made before packs)
    root/.trash/                       executions being deleted
    root/lock, root/epoch-floor        the lease-epoch floor and its lock
    root/open/E                        E is open: the index of OPEN_INDEX (see _open.py)

A save is: take E's lock, check the lease (a ``stat`` of the lease file, which also
shows that the lock is still E's), catch up with what other processes appended (a
``stat`` of the log), check the write mode, append the record with one ``write``,
``fdatasync``, unlock. The store-wide ``root/lock`` and ``root/epoch-floor`` keep lease
epochs growing across ``delete_execution``.

Blocking I/O: small reads (a ``stat``, reading a record) run directly on the event
loop. Small durable writes -- an append and its ``fdatasync``, a lease file, a new
directory entry -- run inline too while nothing else in the process could use the wait,
and in a process-wide pool of threads when other work is pending, so that the flushes
of concurrent executions overlap and the filesystem's journal commits them together
(group commit, :mod:`~durably_filesystem._syncpool`); a save returns only after its
own flush either way. Payloads above :data:`INLINE_LIMIT`, large re-indexing and every
compaction run in ``asyncio.to_thread``; a contended ``flock`` is waited for in a
dedicated thread.

The modules: :mod:`~durably_filesystem._store` (the root, its marker, the executions'
states), :mod:`~durably_filesystem._checkpoints` (save, load, list, delete, compact),
:mod:`~durably_filesystem._executions` (listing, deletion, the open index),
:mod:`~durably_filesystem._leases` (lease files, the epoch floor, owner locks),
:mod:`~durably_filesystem._blobs` (with :mod:`~durably_filesystem._packs` and, for
layout-1 stores, :mod:`~durably_filesystem._blobfiles`); below them
:mod:`~durably_filesystem._log` (the log: locking, indexing, appending, compaction),
:mod:`~durably_filesystem._format` (the
record format), :mod:`~durably_filesystem._open` and :mod:`~durably_filesystem._fsutil`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Self

from durably.config import parse_size
from durably.errors import ConfigError, DurablyWarning
from durably.options import bool_option, option_items
from durably.storage import (
    BlobInfo,
    Capability,
    CheckpointInfo,
    CheckpointProvider,
    ExecutionInfo,
    Lease,
    OwnerLock,
    Page,
    WriteMode,
    validate_execution_id,
)
from durably_filesystem import _blobs, _checkpoints, _executions, _leases
from durably_filesystem._store import FileStore

__all__ = ["FilesystemProvider"]

DEFAULT_COMPACT_THRESHOLD = 1 << 20
"""Compact a log once it holds at least this many bytes of dead records (and at least
as many dead bytes as live ones)."""
OPTIONS = ("compact_threshold", "fsync")
_URL_EXAMPLE = "Use e.g. file://.durably or file:///var/lib/durably"


class FilesystemProvider(CheckpointProvider):
    """Stores executions in a local directory: the zero-config default store.

    Each execution has an append-only log of checksummed records. A save appends one
    record and ``fdatasync``\\ s it -- about the cost of the ``fdatasync`` itself -- under
    a short ``flock`` that makes conditional writes and leases hold between processes.
    Deletes append tombstones; the log is compacted (rewritten, then atomically renamed)
    when dead records dominate.

    Args:
        root: The store's directory; created on the first write. Relative paths are
            resolved against the current directory when the provider is created.
        fsync: Flush every write to stable storage before returning (``fdatasync`` of
            the log; ``fsync`` of new files and their directory). With False, a write
            survives a crash of the process but not of the machine.
        compact_threshold: Compact a log once it holds at least this many bytes of
            deleted or overwritten records, and at least as many as live ones.

    Raises:
        ValueError: ``root`` is empty or contains NUL; ``compact_threshold`` < 0.
    """

    scheme: ClassVar[str] = "file"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.PERSISTENT,
            Capability.SHARED,
            Capability.LARGE_OBJECTS,
            Capability.TAKEOVER,
            Capability.OWNER_LOCK,
            Capability.OPEN_INDEX,
        }
    )

    def __init__(
        self,
        root: str | os.PathLike[str] = ".durably",
        *,
        fsync: bool = True,
        compact_threshold: int = DEFAULT_COMPACT_THRESHOLD,
    ) -> None:
        super().__init__()
        path = os.fspath(root)
        if not isinstance(path, str) or not path or "\x00" in path:
            raise ValueError(f"invalid store directory {root!r}")
        if not isinstance(fsync, bool):
            raise TypeError(f"fsync must be a bool, not {type(fsync).__name__}")
        if (
            not isinstance(compact_threshold, int)
            or isinstance(compact_threshold, bool)
            or compact_threshold < 0
        ):
            raise ValueError(
                f"compact_threshold must be a size in bytes, not {compact_threshold!r}"
            )
        self._store = FileStore(
            os.path.abspath(path), fsync=fsync, compact_threshold=compact_threshold
        )
        if not fsync:
            warnings.warn(
                f"the file store {self._store.root} has fsync disabled: a checkpoint "
                "survives a crash of the process, but not of the machine",
                DurablyWarning,
                stacklevel=2,
            )

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> Self:
        """Create a provider from ``file://PATH`` and the ``[durability.file]`` options.

        Everything after ``file://`` is the path, verbatim (no percent-decoding):
        ``file://.durably`` and ``file://runs/store`` are relative to the current
        directory, ``file:///var/lib/app`` is absolute and ``file://~/store`` is in the
        home directory. Options: ``fsync`` (bool) and ``compact_threshold`` (bytes, or a
        size such as ``"4MiB"``). No I/O happens here.

        Raises:
            ConfigError: Not a ``file://`` URL, no path, a query or fragment, or an
                unknown or invalid option (the message names the key).
        """
        if not isinstance(url, str) or url[:7].lower() != "file://":
            raise ConfigError(
                f"{url!r} is not a file:// URL", key="durability.store", fix=_URL_EXAMPLE
            )
        path = url[7:]
        if not path:
            raise ConfigError(
                f"the store URL {url!r} names no directory",
                key="durability.store",
                fix=_URL_EXAMPLE,
            )
        if "\x00" in path:
            raise ConfigError("the store path contains a NUL character", key="durability.store")
        if "?" in path or "#" in path:
            raise ConfigError(
                f"the store URL {url!r} has a query or fragment",
                key="durability.store",
                fix="Put options in the [durability.file] table (fsync, compact_threshold)",
            )
        if path.startswith("~"):
            path = os.path.expanduser(path)
        kwargs: dict[str, Any] = {}
        for key, dotted, value in option_items(options, "durability.file", OPTIONS):
            if key == "fsync":
                kwargs["fsync"] = bool_option(dotted, value)
            else:
                if isinstance(value, bool) or not isinstance(value, (int, str)):
                    raise ConfigError(
                        f"expected a size, got {value!r}",
                        key=dotted,
                        fix="Use a number of bytes or e.g. '4MiB'",
                    )
                kwargs["compact_threshold"] = parse_size(value, key=dotted)
        return cls(path, **kwargs)

    @property
    def root(self) -> str:
        """The store's directory (absolute)."""
        return self._store.root

    @property
    def fsync(self) -> bool:
        """Whether writes are flushed to stable storage before they return."""
        return self._store.fsync

    @property
    def compact_threshold(self) -> int:
        """Dead bytes a log may hold before it is compacted."""
        return self._store.compact_threshold

    def describe(self) -> str:
        """``file://`` and the store's absolute path."""
        return self._store.describe()

    async def _close(self) -> None:
        await self._store.aclose()

    # --------------------------------------------------------------- checkpoints

    async def _save(
        self,
        execution_id: str,
        seq: int,
        stored: bytes,
        metadata: dict[str, str],
        mode: WriteMode,
        lease: Lease | None,
    ) -> CheckpointInfo:
        return await _checkpoints.save(
            self._store, execution_id, seq, stored, metadata, mode, lease
        )

    async def _load(self, execution_id: str, seq: int) -> tuple[CheckpointInfo, bytes] | None:
        return await _checkpoints.load(self._store, execution_id, seq)

    async def _load_many(
        self, execution_id: str, seqs: Sequence[int]
    ) -> list[tuple[CheckpointInfo, bytes] | None]:
        """One mutex, one index refresh, one read per run of records (see load_many)."""
        return await _checkpoints.load_many(self._store, execution_id, list(seqs))

    async def _load_latest(self, execution_id: str) -> tuple[CheckpointInfo, bytes] | None:
        return await _checkpoints.load(self._store, execution_id, None)

    async def _list(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
        after: int | None,
    ) -> Page[CheckpointInfo]:
        return await _checkpoints.list_page(self._store, execution_id, cursor, limit, after)

    async def _delete(self, execution_id: str, seq: int, lease: Lease | None) -> bool:
        return bool(await _checkpoints.delete(self._store, execution_id, [seq], lease))

    async def _delete_many(
        self,
        execution_id: str,
        seqs: Iterable[int],
        lease: Lease | None,
    ) -> list[int]:
        """All tombstones in one append, fenced once."""
        return await _checkpoints.delete(self._store, execution_id, list(seqs), lease)

    # ---------------------------------------------------------------- executions

    async def _list_executions(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        return await _executions.list_executions(self._store, cursor, limit)

    async def _delete_execution(self, execution_id: str) -> bool:
        return await _executions.delete_execution(self._store, execution_id)

    async def _list_open(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        return await _executions.list_open(self._store, cursor, limit)

    async def _forget_if_finished(self, execution_id: str) -> bool:
        self._store.check_store()
        return await _executions.reindex(self._store, execution_id, add=False)

    # -------------------------------------------------------------------- leases

    async def _claim(self, execution_id: str, owner: str, ttl: float) -> Lease:
        return await _leases.claim(self._store, execution_id, owner, ttl, None)

    async def _renew(self, lease: Lease, ttl: float) -> Lease:
        return await _leases.renew(self._store, lease, ttl)

    async def _release(self, lease: Lease) -> None:
        await _leases.release(self._store, lease)

    async def _get_lease(self, execution_id: str) -> Lease | None:
        return await _leases.get_lease(self._store, execution_id)

    async def _take_over(self, lease: Lease, owner: str, ttl: float) -> Lease:
        return await _leases.claim(self._store, lease.execution_id, owner, ttl, lease)

    async def _lock_owner(self, execution_id: str) -> OwnerLock | None:
        return await _leases.lock_owner(self._store, execution_id)

    async def _owner_lock_free(self, execution_id: str) -> bool:
        return await _leases.owner_lock_free(self._store, execution_id)

    # --------------------------------------------------------------------- blobs

    async def _put_blob(self, execution_id: str, digest: str, stored: bytes) -> bool:
        return await _blobs.put_blob(self._store, execution_id, digest, stored)

    async def _put_blobs(self, execution_id: str, blobs: Mapping[str, bytes]) -> dict[str, bool]:
        return await _blobs.put_blobs(self._store, execution_id, blobs)

    async def _get_blob(self, execution_id: str, digest: str) -> bytes | None:
        return await _blobs.get_blob(self._store, execution_id, digest)

    async def _has_blob(self, execution_id: str, digest: str) -> bool:
        return await _blobs.has_blob(self._store, execution_id, digest)

    async def _list_blobs(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
    ) -> Page[BlobInfo]:
        return await _blobs.list_blobs(self._store, execution_id, cursor, limit)

    async def _delete_blob(self, execution_id: str, digest: str) -> bool:
        return await _blobs.delete_blob(self._store, execution_id, digest)

    # ------------------------------------------------------ beyond the contract

    async def compact(self, execution_id: str) -> bool:
        """Rewrite an execution's log without its deleted and overwritten records now.

        Compaction also happens on its own (see ``compact_threshold``); call this for
        maintenance. Returns whether the log was rewritten (False: nothing to reclaim).
        """
        validate_execution_id(execution_id)
        return await _checkpoints.compact(self._store, execution_id)
