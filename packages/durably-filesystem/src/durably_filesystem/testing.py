"""Raw access to a filesystem store, bypassing the provider: for tests only.

:class:`FilesystemBackdoor` implements the conformance suite's ``Backdoor`` protocol
(``durably_conformance.Backdoor``): it reads and damages the files of a store the way
a disk, a crash or an operator could, so tests can check that the provider and the
core notice.
"""

# A test helper: it does its (small) file I/O directly, like the provider does.
# ruff: noqa: ASYNC240

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from durably.errors import CorruptObjectError, NotFoundError, UnsupportedFormatError
from durably.storage import validate_execution_id
from durably_filesystem import _format as fmt
from durably_filesystem import _packs as packs
from durably_filesystem._fsutil import O_CLOEXEC, fsync_dir, tmp_path, write_all

__all__ = ["FilesystemBackdoor"]


class FilesystemBackdoor:
    """Reads and rewrites a filesystem store's raw files.

    Every change is made under the execution's lock file, as a writer would, so it
    never races with a provider's own appends.

    Args:
        root: The store's directory (what the provider was given).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))

    # ----------------------------------------------------------------- helpers

    def execution_dir(self, execution_id: str) -> str:
        """The directory that holds an execution's files."""
        validate_execution_id(execution_id)
        return os.path.join(self.root, "executions", execution_id)

    def log_path(self, execution_id: str) -> str:
        """The path of an execution's checkpoint log."""
        return os.path.join(self.execution_dir(execution_id), "log")

    def blob_path(self, execution_id: str, digest: str) -> str:
        """The path of a blob's own file (a layout-1 store; see :meth:`find_blob`)."""
        hexdigest = digest.partition(":")[2]
        return os.path.join(self.execution_dir(execution_id), "blobs", hexdigest[:2], hexdigest)

    def packs_dir(self, execution_id: str) -> str:
        """The directory of an execution's blob packs (a layout-2 store)."""
        return os.path.join(self.execution_dir(execution_id), "blobs")

    def pack_names(self, execution_id: str) -> list[str]:
        """The file names of an execution's blob packs."""
        try:
            names = os.listdir(self.packs_dir(execution_id))
        except FileNotFoundError:
            return []
        return sorted(name for name in names if packs.is_pack_name(name))

    def find_blob(self, execution_id: str, digest: str) -> tuple[str, int, int]:
        """Where a blob's stored bytes lie: ``(path, offset, length)``, in its own file
        or in a pack."""
        path = self.blob_path(execution_id, digest)
        if os.path.exists(path):
            return path, 0, os.stat(path).st_size
        for name in self.pack_names(execution_id):
            pack = os.path.join(self.packs_dir(execution_id), name)
            packed = packs.read_table(pack).get(digest)
            if packed is not None:
                return pack, packed.offset, packed.length
        raise NotFoundError(f"no blob {digest} in execution {execution_id!r}")

    @contextlib.contextmanager
    def locked(self, execution_id: str) -> Iterator[None]:
        """Hold the execution's cross-process lock (blocking)."""
        fd = os.open(
            os.path.join(self.execution_dir(execution_id), "lock"),
            os.O_RDWR | os.O_CREAT | O_CLOEXEC,
            0o644,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def index(self, execution_id: str) -> fmt.LogIndex:
        """Scan an execution's log from scratch, as a new provider would."""
        fd = os.open(self.log_path(execution_id), os.O_RDONLY | O_CLOEXEC)
        try:
            fmt.read_log_header(fd, self.log_path(execution_id))
            index = fmt.LogIndex()
            fmt.scan(fd, index, fmt.LOG_HEADER_SIZE, os.fstat(fd).st_size)
            return index
        finally:
            os.close(fd)

    def _entry(self, execution_id: str, seq: int) -> fmt.Entry:
        try:
            index = self.index(execution_id)
        except FileNotFoundError:
            index = fmt.LogIndex()
        entry = index.entries.get(seq)
        if entry is None:
            raise NotFoundError(f"no checkpoint {seq} in the log of {execution_id!r}")
        return entry

    def _read(self, path: str, size: int, offset: int) -> bytes:
        fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
        try:
            return fmt.pread_exact(fd, size, offset)
        finally:
            os.close(fd)

    def _flip(self, path: str, offset: int) -> None:
        fd = os.open(path, os.O_RDWR | O_CLOEXEC)
        try:
            byte = os.pread(fd, 1, offset)
            os.pwrite(fd, bytes([byte[0] ^ 0xFF]), offset)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _replace_data(self, execution_id: str, seq: int, raw: bytes) -> None:
        """Rewrite the log with checkpoint ``seq``'s stored bytes replaced, re-framed."""
        path = self.log_path(execution_id)
        with self.locked(execution_id):
            entry = self._entry(execution_id, seq)
            size = os.stat(path).st_size
            before = self._read(path, entry.offset, 0)
            meta = self._read(path, entry.meta_len, entry.offset + fmt.HEAD_SIZE)
            after_start = entry.offset + entry.length
            after = self._read(path, size - after_start, after_start)
            record = fmt.encode_record(
                fmt.T_CHECKPOINT, seq, entry.write_id, entry.created_ns, meta, raw
            )
            directory = os.path.dirname(path)
            tmp = tmp_path(directory, "log")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_CLOEXEC, 0o644)
            try:
                write_all(fd, [before, *record, after])
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, path)
            fsync_dir(directory)

    # ------------------------------------------------------ the Backdoor protocol

    async def read_checkpoint(self, execution_id: str, seq: int) -> bytes:
        """The stored (envelope) bytes of checkpoint ``seq``, unverified."""
        entry = self._entry(execution_id, seq)
        return self._read(self.log_path(execution_id), entry.data_len, entry.data_offset)

    async def write_checkpoint(self, execution_id: str, seq: int, raw: bytes) -> None:
        """Replace checkpoint ``seq``'s stored bytes with ``raw``, with a valid frame.

        The provider's own checks pass, so only the core's envelope can tell.
        """
        self._replace_data(execution_id, seq, raw)

    async def corrupt_checkpoint(self, execution_id: str, seq: int) -> None:
        """Invert one byte in the middle of checkpoint ``seq``'s stored bytes, in place."""
        with self.locked(execution_id):
            entry = self._entry(execution_id, seq)
            self._flip(self.log_path(execution_id), entry.data_offset + entry.data_len // 2)

    async def truncate_checkpoint(self, execution_id: str, seq: int) -> None:
        """Cut checkpoint ``seq``'s stored bytes to half their length (re-framed)."""
        stored = await self.read_checkpoint(execution_id, seq)
        self._replace_data(execution_id, seq, stored[: len(stored) // 2])

    async def corrupt_blob(self, execution_id: str, digest: str) -> None:
        """Invert one byte in the middle of a blob's stored bytes (in its file or pack)."""
        path, offset, length = self.find_blob(execution_id, digest)
        self._flip(path, offset + length // 2)

    async def locations(self) -> list[str]:
        """Every file under the store's ``executions`` directory and every entry of its
        open-executions index, relative to the root (the index's ``.ready`` file is
        store-wide bookkeeping: left out)."""
        found = []
        top = os.path.join(self.root, "executions")
        for directory, _dirs, files in os.walk(top):
            for name in files:
                path = os.path.join(directory, name)
                found.extend(self._located(path, os.path.relpath(path, self.root)))
        with contextlib.suppress(FileNotFoundError):
            found.extend(
                f"open/{name}"
                for name in os.listdir(os.path.join(self.root, "open"))
                if not name.startswith(".")
            )
        return sorted(found)

    @staticmethod
    def _located(path: str, relative: str) -> list[str]:
        """A file's locations: a pack holds one per blob (``<pack>/<digest>``), so a
        batch in a pack counts as many locations as the same blobs in files of their own;
        any other file (or a pack that cannot be read) is one."""
        if not packs.is_pack_name(os.path.basename(path)):
            return [relative]
        try:
            return [f"{relative}/{digest}" for digest in packs.read_table(path)]
        except (OSError, CorruptObjectError, UnsupportedFormatError):
            return [relative]

    async def add_open_entry(self, execution_id: str) -> None:
        """Leave an open-index entry for the execution, as a crash between its final
        write and the index update would (C31)."""
        validate_execution_id(execution_id)
        directory = os.path.join(self.root, "open")
        os.makedirs(directory, exist_ok=True)
        os.close(os.open(os.path.join(directory, execution_id), os.O_WRONLY | os.O_CREAT, 0o644))
