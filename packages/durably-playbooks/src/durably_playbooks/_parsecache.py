"""What Playbooks' parser made of a text, kept on disk so the next load skips the import.

Importing ``playbooks`` costs about 10 s of CPU (litellm), and a new run of a program loads
it only to parse text it has parsed before. :func:`cached` keeps each parse result as one
JSON file named by the digest of everything the result depends on: the function, its
input text, the installed playbooks release, this package's version and the source of
:mod:`durably_playbooks._pb` (the code that turns Playbooks' objects into data). A new
release, a changed parser adapter or a changed program is a new key, never a stale hit.

Safe by default: the files hold JSON data only (never pickles, nothing is imported from
them) with a SHA-256 of the value; a file that does not parse, does not match its key or
fails its checksum is ignored and rewritten. A cache that cannot be written (read-only
home, full disk) only costs the import.

Where: ``$DURABLY_PLAYBOOKS_CACHE`` (``off`` turns the cache off), else
``$XDG_CACHE_HOME/durably/playbooks``, else ``~/.cache/durably/playbooks``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["CACHE_ENV", "cache_dir", "cached"]

#: The environment variable naming the cache directory (``off``: no cache).
CACHE_ENV = "DURABLY_PLAYBOOKS_CACHE"
#: The layout of a cache file; part of every key (2: values kept in their own key order).
_LAYOUT = 2

T = TypeVar("T")


def cache_dir() -> Path | None:
    """The cache directory, or None when ``$DURABLY_PLAYBOOKS_CACHE`` is ``off``."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured.lower() in ("off", "0", "false", "no"):
        return None
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "durably" / "playbooks"


def cached(
    function: str,
    text: str,
    version: str,
    compute: Callable[[], T],
    *,
    load: Callable[[Any], T],
    keep: Callable[[], bool] | None = None,
) -> T:
    """``compute()``, or the value an earlier call with the same key stored.

    A hit is the value as it was computed: the same types, the same key order (a dict's
    order reaches documents and their digests).

    Args:
        function: Which parse (part of the key).
        text: Its input (part of the key).
        version: The installed playbooks release (part of the key).
        compute: Makes the value when it is not cached; its exceptions propagate and
            nothing is stored.
        load: Turns the stored JSON back into the value (tuples are stored as lists).
        keep: Asked after ``compute()``: False when what was computed may not belong to
            ``text`` (a file that changed while it was parsed), and nothing is stored.
    """
    directory = cache_dir()
    if directory is None:
        return compute()
    key = _key(function, text, version)
    path = directory / f"{key}.json"
    found = _read(path, key)
    if found is not None:
        return load(found[0])
    value = compute()
    if keep is None or keep():
        _write(directory, path, key, value)
    return value


def _key(function: str, text: str, version: str) -> str:
    from durably_playbooks import __version__, _pb

    adapter = Path(_pb.__file__).read_bytes()
    digest = hashlib.sha256()
    for part in (
        str(_LAYOUT).encode(),
        function.encode(),
        version.encode(),
        __version__.encode(),
        hashlib.sha256(adapter).digest(),
        text.encode("utf-8", errors="surrogatepass"),
    ):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _checksum(value_json: str) -> str:
    return hashlib.sha256(value_json.encode()).hexdigest()


def _read(path: Path, key: str) -> tuple[Any] | None:
    """The stored value (in a 1-tuple, as a value may be None), or None for a miss: no
    file, or one that is unreadable, not JSON, of another key or failing its checksum."""
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry.get("key") != key:
            return None
        value_json = json.dumps(entry["value"], ensure_ascii=False)
        if entry.get("sha256") != _checksum(value_json):
            return None
        return (entry["value"],)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _write(directory: Path, path: Path, key: str, value: Any) -> None:
    """Store ``value`` if JSON keeps it as it is; never fail the load over the cache."""
    try:
        value_json = json.dumps(value, ensure_ascii=False)
        if not _same(json.loads(value_json), value):
            return  # JSON would change it (non-str keys, a subclass, ...): not cached
        entry = {"key": key, "sha256": _checksum(value_json), "value": value}
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(entry, out, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except (OSError, ValueError, TypeError):
        return


def _same(loaded: Any, value: Any) -> bool:
    """Whether ``loaded`` (what JSON gave back) is ``value`` with tuples as lists: the same
    types (``1`` is not ``True`` or ``1.0``), the same dict keys in the same order."""
    if isinstance(value, tuple):
        value = list(value)
    if type(loaded) is not type(value):
        return False
    if isinstance(value, list):
        return len(loaded) == len(value) and all(map(_same, loaded, value))
    if isinstance(value, dict):
        return list(loaded) == list(value) and all(_same(loaded[k], value[k]) for k in value)
    return bool(loaded == value)
