"""Small filesystem helpers: durable atomic writes, directory fsync, error mapping."""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterable, Sequence

from durably.errors import StoreError, StoreUnavailableError

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
TMP_PREFIX = ".tmp-"

fdatasync = getattr(os, "fdatasync", os.fsync)
"""``fdatasync`` where the OS has it (Linux); ``fsync`` elsewhere."""

_UNAVAILABLE = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOTDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
    }
)


def wrap_os_error(exc: OSError, action: str, path: str | None = None) -> StoreError:
    """The :mod:`durably.errors` exception for an OSError (raise it ``from exc``).

    Permission problems, a read-only filesystem and a root that cannot be created
    become :class:`~durably.errors.StoreUnavailableError`; anything else (a full disk,
    an I/O error) :class:`~durably.errors.StoreError`. The message names the path.
    """
    where = exc.filename if isinstance(exc.filename, str) else path
    reason = exc.strerror or str(exc) or type(exc).__name__
    cls = StoreUnavailableError if exc.errno in _UNAVAILABLE else StoreError
    text = f"cannot {action}: {where}: {reason}" if where else f"cannot {action}: {reason}"
    return cls(text)


def fsync_dir(path: str) -> None:
    """Make a directory's entries (names created, renamed, removed) durable."""
    fd = os.open(path, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16
"""The most buffers one ``writev`` takes (Linux: 1024)."""


def write_all(fd: int, parts: Sequence[bytes | memoryview]) -> None:
    """Write every buffer, in order, with as few system calls as possible."""
    if len(parts) > _IOV_MAX:
        parts = [b"".join(parts)]  # a blob pack of many small blobs
    total = sum(map(len, parts))
    written = os.writev(fd, parts) if len(parts) > 1 else os.write(fd, parts[0])
    if written == total:
        return
    rest = memoryview(b"".join(parts))[written:]
    while rest:
        written = os.write(fd, rest)
        rest = rest[written:]


def tmp_path(directory: str, name: str) -> str:
    return os.path.join(directory, f"{TMP_PREFIX}{secrets.token_hex(6)}-{name}")


def write_tmp(path: str, parts: Sequence[bytes | memoryview], *, fsync: bool) -> str:
    """Write ``parts`` to a new temporary file next to ``path`` and return its name.

    With ``fsync`` the file's content is flushed before this returns. If anything fails,
    the temporary file is removed.
    """
    tmp = tmp_path(os.path.dirname(path), os.path.basename(path))
    write_new(tmp, parts, fsync=fsync)
    return tmp


def write_new(tmp: str, parts: Sequence[bytes | memoryview], *, fsync: bool) -> None:
    """Write ``parts`` to the new file ``tmp`` (``O_EXCL``), flushed with ``fsync``; if
    anything fails, the file is removed."""
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_CLOEXEC, 0o644)
    try:
        try:
            write_all(fd, parts)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        remove_quietly(tmp)
        raise


def publish(tmp: str, path: str, *, exclusive: bool) -> bool:
    """Move the temporary file ``tmp`` to ``path`` (``link`` when ``exclusive``, else
    ``rename``); the temporary name is gone afterwards, whatever happens.

    Returns:
        False if ``exclusive`` and ``path`` already existed (nothing was changed).
    """
    if not exclusive:
        try:
            os.replace(tmp, path)
        except BaseException:
            remove_quietly(tmp)
            raise
        return True
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        remove_quietly(tmp)
    return True


def remove_quietly(path: str) -> None:
    """Remove a file if it is there; ignore errors (cleaning up after a failure)."""
    try:
        os.unlink(path)
    except OSError:
        pass


def write_atomic(
    path: str,
    parts: Sequence[bytes | memoryview],
    *,
    fsync: bool,
    exclusive: bool = False,
    flush_dir: bool = True,
) -> bool:
    """Create or replace ``path`` with ``parts`` so that readers see all or nothing.

    Writes a temporary file in the same directory, fsyncs it, moves it into place
    (``rename``, or ``link`` when ``exclusive``) and fsyncs the directory (unless
    ``flush_dir`` is False: the caller has shown that losing the move in a crash of the
    machine is harmless, or that a later flush of the directory comes first).

    Returns:
        False if ``exclusive`` and ``path`` already existed (nothing was changed).
    """
    tmp = write_tmp(path, parts, fsync=fsync)
    if not publish(tmp, path, exclusive=exclusive):
        return False
    if fsync and flush_dir:
        fsync_dir(os.path.dirname(path))
    return True


def makedirs_durable(path: str, *, fsync: bool) -> None:
    """``os.makedirs(path, exist_ok=True)``, fsyncing each parent that gained an entry."""
    gained = make_dirs([path])
    if fsync:
        for parent in gained:
            fsync_dir(parent)


def make_dirs(paths: Iterable[str]) -> list[str]:
    """Create every missing directory of ``paths`` (and their missing parents) without
    flushing anything; return the directories that gained an entry, parents before
    children -- fsync each of them (once) to make the new directories durable."""
    gained: dict[str, None] = {}
    for path in paths:
        missing = []
        current = path
        while not os.path.isdir(current):
            missing.append(current)
            parent = os.path.dirname(current)
            if parent == current:
                break
            current = parent
        for directory in reversed(missing):
            try:
                os.mkdir(directory, 0o755)
            except FileExistsError:
                if not os.path.isdir(directory):
                    raise
                continue
            gained[os.path.dirname(directory)] = None
    return list(gained)


def read_file(path: str) -> bytes | None:
    """The content of a file, or None if it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 24)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
