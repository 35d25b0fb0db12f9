"""durably-filesystem: the filesystem storage provider for durably (the default store).

``file://DIR`` URLs (and bare paths) open a :class:`FilesystemProvider`: one
append-only, checksummed log per execution, ``fdatasync``-ed on every checkpoint,
safe against crashes at any instant and shared safely between processes on one
machine. See ``docs/providers/filesystem.md``.
"""

from __future__ import annotations

from durably_filesystem._provider import FilesystemProvider
from durably_filesystem.testing import FilesystemBackdoor

FilesystemCheckpointProvider = FilesystemProvider
"""The name of the seed API; the same class as :class:`FilesystemProvider`."""

__all__ = ["FilesystemBackdoor", "FilesystemCheckpointProvider", "FilesystemProvider"]
