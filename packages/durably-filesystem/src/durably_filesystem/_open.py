"""The index of open executions (``Capability.OPEN_INDEX``, clause C31).

One empty file per open execution -- an execution whose latest checkpoint is not
finished (:func:`durably.storage.is_finished`)::

    root/open/E          E is open (or was, if a crash interrupted its final write)
    root/open/.ready     the index is complete (written once per store, see below)

The entries change under the execution's ``flock``, in the same critical section as the
write that changes its latest checkpoint (see ``FilesystemProvider._save``): an entry is
created -- and its directory entry ``fsync``\\ ed -- *before* the record that opens the
execution is written, and removed *after* the record that finishes it is durable. A
crash can therefore leave a stale entry (a finished execution still listed) but never an
open execution without one. Listing the open executions reads this directory only: its
cost does not depend on the number of finished executions.

A store written by a version without the index has no ``.ready`` file: the first
listing builds the index by looking at every execution once (under each one's lock),
then writes ``.ready``. Processes of an older version writing to the store at the same
time would not maintain the index: upgrade them all.
"""

# Small filesystem calls (stat, create, unlink) run on the event loop on purpose.

from __future__ import annotations

import contextlib
import os

from durably.storage import is_finished
from durably_filesystem import _format as fmt
from durably_filesystem._fsutil import (
    O_CLOEXEC,
    TMP_PREFIX,
    fsync_dir,
    makedirs_durable,
    write_atomic,
)

__all__ = ["OPEN", "READY", "OpenIndex", "open_after_delete", "open_after_save"]

OPEN = "open"
"""The index directory's name under the store's root."""
READY = ".ready"
"""The file that says the index is complete."""


def open_after_save(index: fmt.LogIndex, seq: int, metadata: dict[str, str]) -> bool | None:
    """Whether saving ``(seq, metadata)`` leaves the execution open; None when the save
    does not change its latest checkpoint (a seq below the latest)."""
    if index.seqs and seq < index.seqs[-1]:
        return None
    return not is_finished(metadata)


def open_after_delete(index: fmt.LogIndex, doomed: list[int]) -> bool | None:
    """Whether deleting ``doomed`` leaves the execution open; None when its latest
    checkpoint stays the same."""
    if not index.seqs:
        return None
    gone = set(doomed)
    if index.seqs[-1] not in gone:
        return None
    for seq in reversed(index.seqs):
        if seq not in gone:
            return not is_finished(index.entries[seq].metadata)
    return False


def is_open(index: fmt.LogIndex | None) -> bool:
    """Whether an execution whose log has ``index`` is open."""
    if index is None or not index.seqs:
        return False
    return not is_finished(index.entries[index.seqs[-1]].metadata)


class OpenIndex:
    """The ``open`` directory of one store.

    Args:
        root: The store's root directory.
        fsync: Make a new entry durable (``fsync`` of the directory) before returning.
    """

    def __init__(self, root: str, *, fsync: bool) -> None:
        self.dir = os.path.join(root, OPEN)
        self.fsync = fsync
        self.ready = False
        """Seen complete (``.ready`` exists) by this instance."""
        self._dir_made = False

    def path(self, execution_id: str) -> str:
        """The entry of one execution."""
        return os.path.join(self.dir, execution_id)

    def add(self, execution_id: str) -> None:
        """Make sure the execution has an entry, durably (call under its lock)."""
        path = self.path(execution_id)
        if os.path.exists(path):
            return
        if not self._dir_made:
            makedirs_durable(self.dir, fsync=self.fsync)
            self._dir_made = True
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_CLOEXEC, 0o644)
        except FileExistsError:
            return
        except FileNotFoundError:  # the directory was removed by hand: make it again
            makedirs_durable(self.dir, fsync=self.fsync)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_CLOEXEC, 0o644)
        os.close(fd)
        if self.fsync:
            fsync_dir(self.dir)

    def remove(self, execution_id: str) -> bool:
        """Remove the execution's entry (call under its lock); whether it existed.

        Not ``fsync``\\ ed: after a crash the entry may come back, stale, which is allowed.
        """
        try:
            os.unlink(self.path(execution_id))
        except FileNotFoundError:
            return False
        return True

    def has(self, execution_id: str) -> bool:
        """Whether the execution has an entry."""
        return os.path.exists(self.path(execution_id))

    def names(self, after: str | None) -> list[str]:
        """The listed execution ids greater than ``after``, ascending."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(
            name
            for name in names
            if not name.startswith((".", TMP_PREFIX)) and (after is None or name > after)
        )

    def is_ready(self) -> bool:
        """Whether the index is complete (``.ready`` exists); remembered once seen."""
        if not self.ready:
            self.ready = os.path.exists(os.path.join(self.dir, READY))
        return self.ready

    def mark_ready(self) -> None:
        """Record that the index is complete."""
        makedirs_durable(self.dir, fsync=self.fsync)
        self._dir_made = True
        with contextlib.suppress(FileExistsError):
            write_atomic(os.path.join(self.dir, READY), [b""], fsync=self.fsync, exclusive=True)
        self.ready = True
