"""The parts every provider needs and none should write again.

Kept in one place so that the in-repo providers (filesystem, S3, PostgreSQL, Redis) and
third-party ones share one behaviour. Provider authors reach them through the public
modules: the listing cursors, the metadata codec and the retrying call through
:mod:`durably.storage`, the option helpers through :mod:`durably.options`.

* **Integer cursors** -- :func:`encode_int_cursor` / :func:`decode_int_cursor`: a
  listing ordered by sequence number resumes *after* the last number of the previous
  page, so the cursor survives writes and deletes between pages [C4, C13].
* **Metadata as JSON** -- :func:`encode_metadata` / :func:`decode_metadata`: compact,
  key-sorted JSON text; a damaged value raises :class:`~durably.errors.CorruptObjectError`.
* **Retrying one call** -- :func:`call_with_retries`: retry a backend call the backend
  says may be retried (a lost connection on an idempotent read, a rolled-back
  transaction), then turn the backend's exception into a durably error, chained.
* **Option tables** -- :func:`option_items`, :func:`bool_option`, :func:`string_option`,
  :func:`choice_option`, :func:`redact_url`: the ``[durability.<scheme>]`` table of a
  networked store, checked with one message shape.
* **Connecting once** -- :class:`Connector`: a networked store's client or pool, made on
  first use (never in ``from_url``), once however many tasks ask at the same time, and
  refused after ``close``.
* **Batched deletes** -- :func:`delete_in_batches`: ``_delete_many`` as a series of
  fenced batch requests (each one atomic), stopping at the first error.
* **Batched blob puts** -- :func:`put_in_batches`: ``_put_blobs`` as one request per
  size-bounded batch, big blobs one by one.

This module imports nothing from :mod:`durably.storage` (which re-exports from it).
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from durably.errors import ConfigError, CorruptObjectError, StoreError

__all__ = [
    "Connector",
    "bool_option",
    "call_with_retries",
    "choice_option",
    "decode_int_cursor",
    "decode_metadata",
    "delete_in_batches",
    "deleting_what",
    "did_you_mean",
    "encode_int_cursor",
    "encode_metadata",
    "integer_option",
    "number_option",
    "option_items",
    "put_in_batches",
    "redact_url",
    "string_option",
    "unknown_option",
]

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

_MAX_CURSOR_DIGITS = 19
"""A sequence number is below 2**63: at most 19 decimal digits."""


# ---------------------------------------------------------------------- cursors


def encode_int_cursor(position: int) -> str:
    """The ``next_cursor`` of a page whose last item has integer key ``position``.

    Args:
        position: The key (e.g. the sequence number) of the last item on the page.

    Returns:
        Its decimal text; :func:`decode_int_cursor` reads it back.
    """
    return str(int(position))


def decode_int_cursor(cursor: str | None) -> int | None:
    """The integer key after which a listing resumes (None: from the start).

    A cursor names the last item listed, not an offset, so deleting or inserting items
    between pages neither skips nor repeats one [C4, C13].

    Args:
        cursor: A ``next_cursor`` this provider returned, or None for the first page.

    Returns:
        The key of the last item of the previous page, or None for ``cursor=None``.

    Raises:
        ValueError: ``cursor`` is not the decimal text of a sequence number (the
            contract's answer to a cursor the provider did not hand out).
    """
    if cursor is None:
        return None
    if (
        not isinstance(cursor, str)
        or not cursor.isascii()
        or not cursor.isdigit()
        or len(cursor) > _MAX_CURSOR_DIGITS
    ):
        raise ValueError(f"invalid cursor {cursor!r}: pass the next_cursor of a page")
    return int(cursor)


# --------------------------------------------------------------------- metadata


def encode_metadata(metadata: Mapping[str, str], *, ascii_only: bool = False) -> str:
    """Checkpoint metadata as compact, key-sorted JSON text (``""`` when empty).

    Args:
        metadata: Validated checkpoint metadata (string keys and values).
        ascii_only: Escape every non-ASCII and control character, for a backend that
            stores the text as plain ASCII (every ``str`` still round-trips).

    Returns:
        The text :func:`decode_metadata` reads back; ``""`` for no metadata.
    """
    if not metadata:
        return ""
    encoder = _METADATA_ASCII if ascii_only else _METADATA_JSON
    return encoder.encode(metadata if type(metadata) is dict else dict(metadata))


# json.dumps builds an encoder at every call when given options: built once (every
# checkpoint's metadata goes through one of these).
_METADATA_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)
_METADATA_ASCII = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), sort_keys=True)


def decode_metadata(raw: str | bytes | bytearray | memoryview | None, what: str) -> dict[str, str]:
    """Read metadata written by :func:`encode_metadata` (empty or None: no metadata).

    Args:
        raw: The stored text (bytes are decoded as UTF-8).
        what: What holds the metadata, for the error message (``"checkpoint 3 of
            execution 'x'"``).

    Returns:
        The metadata mapping.

    Raises:
        CorruptObjectError: ``raw`` is not UTF-8 JSON of an object of strings.
    """
    if not raw:
        return {}
    try:
        text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")
        value = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptObjectError(f"the metadata of {what} is not valid JSON") from exc
    # JSON object keys are always strings: only the values need a look
    if type(value) is not dict or not all(type(v) is str for v in value.values()):
        raise CorruptObjectError(f"the metadata of {what} is not a string mapping")
    return value


# ----------------------------------------------------------------------- retries


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    catch: type[E] | tuple[type[E], ...],
    retryable: Callable[[E], bool],
    translate: Callable[[E], BaseException],
    retries: int,
    log: logging.Logger,
    where: str = "",
    describe: Callable[[E], str] = str,
    backoff: Callable[[int], float] | None = None,
) -> T:
    """Run ``call``; retry it while the backend's error is ``retryable``.

    Each attempt is one whole backend operation (one statement, one command, one
    request): only retry what the backend guarantees did not take effect, or what is
    idempotent -- a non-idempotent write whose reply was lost must not be sent twice.

    Args:
        call: Makes one attempt.
        what: The operation, for the log (``"saving checkpoint 3 of execution 'x'"``).
        catch: The backend's exception class(es); anything else propagates unchanged.
        retryable: Whether an attempt that raised this may be retried.
        translate: The durably error for a backend error that is not retried (raised
            ``from`` it, so the backend's exception is ``__cause__``).
        retries: Retries after the first attempt (0: no retry).
        log: Where a retry is logged (INFO).
        where: The store, for the log (without credentials).
        describe: The backend error as shown in the log (e.g. with the password
            redacted).
        backoff: Seconds to sleep before retry ``n`` (1-based); None: retry at once.

    Returns:
        What the first successful attempt returned.

    Raises:
        DurablyError: ``translate`` of the last backend error.
    """
    attempt = 0
    while True:
        try:
            return await call()
        except catch as exc:
            attempt += 1
            if not retryable(exc) or attempt > retries:
                raise translate(exc) from exc
            log.info("%s on %s: retrying after %s", what, where, describe(exc))
            if backoff is not None:
                await asyncio.sleep(backoff(attempt))


# ------------------------------------------------------------ connecting, batching


class Connector(Generic[T]):
    """A networked store's client (or pool): made on first use, once, refused after close.

    Args:
        connect: Makes the client (connects, checks the server, migrates...). Called at
            most once at a time; if it raises, the next :meth:`get` calls it again.
        closed: The message of the StoreError raised once :meth:`close` was called
            (``"the Redis store redis://host:6379/0 is closed"``).
    """

    def __init__(self, connect: Callable[[], Awaitable[T]], *, closed: Callable[[], str]) -> None:
        self._connect = connect
        self._closed_message = closed
        self._client: T | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def client(self) -> T | None:
        """The client, if one was made (and not closed)."""
        return self._client

    async def get(self) -> T:
        """The client, made now if it is the first use.

        Raises:
            StoreError: :meth:`close` was called.
        """
        client = self._client
        if client is not None:
            return client
        if self._closed:
            raise StoreError(self._closed_message())
        async with self._lock:
            if self._client is None:
                if self._closed:
                    raise StoreError(self._closed_message())
                self._client = await self._connect()
            return self._client

    def close(self) -> T | None:
        """Refuse every later :meth:`get`; return the client to dispose of (if any)."""
        self._closed = True
        client, self._client = self._client, None
        return client


async def delete_in_batches(
    seqs: Iterable[int],
    batch: int,
    delete: Callable[[list[int]], Awaitable[list[int]]],
) -> list[int]:
    """``_delete_many`` as one ``delete(batch_of_seqs)`` call per ``batch`` seqs.

    Each call is one atomic, fenced request of the backend (one statement, one script),
    short enough not to hold other clients up; a FencedError stops before the next one.

    Args:
        seqs: The sequence numbers to delete (duplicates are ignored).
        batch: At most this many per call.
        delete: Deletes one batch (ascending); returns the seqs that existed.

    Returns:
        The seqs that existed, ascending.
    """
    todo = sorted(set(seqs))
    deleted: list[int] = []
    for start in range(0, len(todo), batch):
        deleted.extend(await delete(todo[start : start + batch]))
    return deleted


async def put_in_batches(
    blobs: Mapping[str, bytes],
    *,
    batch_bytes: int,
    alone_from: int,
    put_one: Callable[[str, bytes], Awaitable[bool]],
    put_batch: Callable[[dict[str, bytes]], Awaitable[dict[str, bool]]],
) -> dict[str, bool]:
    """``_put_blobs`` as one ``put_batch`` request per about ``batch_bytes`` of blobs.

    A blob of ``alone_from`` bytes or more goes through ``put_one`` (a provider's
    ``_put_blob``, which may ask first whether it is stored, to avoid sending it).

    Returns:
        For each digest, whether this call wrote it (``put_one``/``put_batch``'s answers).
    """
    written = dict.fromkeys(blobs, False)
    batch: dict[str, bytes] = {}
    size = 0
    for digest, stored in blobs.items():
        if len(stored) >= alone_from:
            written[digest] = await put_one(digest, stored)
            continue
        if batch and size + len(stored) > batch_bytes:
            written.update(await put_batch(batch))
            batch, size = {}, 0
        batch[digest] = stored
        size += len(stored)
    if batch:
        written.update(await put_batch(batch))
    return written


def deleting_what(execution_id: str, seqs: list[int]) -> str:
    """``"deleting checkpoint 3 of execution 'x'"`` / ``"deleting 5 checkpoints ..."``."""
    if len(seqs) == 1:
        return f"deleting checkpoint {seqs[0]} of execution {execution_id!r}"
    return f"deleting {len(seqs)} checkpoints of execution {execution_id!r}"


# ----------------------------------------------------------------------- options


def option_items(
    options: Mapping[str, Any] | None, section: str, known: Iterable[str]
) -> Iterator[tuple[str, str, Any]]:
    """The entries of a ``[durability.<scheme>]`` table, each with its dotted key.

    Args:
        options: The table (None: empty).
        section: Its dotted name, e.g. ``"durability.redis"``.
        known: The option names the provider accepts.

    Yields:
        ``(name, key, value)`` with ``key = f"{section}.{name}"``, in table order.

    Raises:
        ConfigError: An unknown name (with a did-you-mean suggestion) or a table that is
            not a mapping.
    """
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"[{section}] must be a table", key=section)
    names = sorted(known)
    for name, value in (options or {}).items():
        key = f"{section}.{name}"
        if name not in names:
            raise unknown_option(name, names, key)
        yield name, key, value


def did_you_mean(name: str, known: Iterable[str], *, what: str = "options") -> str:
    """``"Did you mean 'x'?"`` for a near miss, else the list of known names."""
    names = sorted(known)
    close = difflib.get_close_matches(str(name), names, n=1)
    return f"Did you mean {close[0]!r}?" if close else f"Known {what}: {', '.join(names)}"


def unknown_option(name: str, known: Iterable[str], key: str) -> ConfigError:
    """The error for an option the provider does not know (raise it)."""
    return ConfigError(f"unknown option {name!r}", key=key, fix=did_you_mean(name, known))


def integer_option(key: str, value: Any, *, minimum: int) -> int:
    """``value`` as an int of at least ``minimum`` (a boolean is not an int)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"expected an integer, got {value!r}", key=key)
    if value < minimum:
        raise ConfigError(f"must be at least {minimum}, got {value!r}", key=key)
    return value


def number_option(
    key: str,
    value: Any,
    *,
    minimum: float,
    allow_zero: bool = False,
    what: str = "a number of seconds",
) -> float:
    """``value`` as a float of at least ``minimum`` (and not 0 unless ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"expected {what}, got {value!r}", key=key)
    if value < minimum or (value == 0 and not allow_zero):
        raise ConfigError(f"must be at least {minimum}, got {value!r}", key=key)
    return float(value)


def bool_option(key: str, value: Any) -> bool:
    """``value`` as a bool (only ``true``/``false``: no 0, 1 or strings).

    Raises:
        ConfigError: ``value`` is not a bool (the message names ``key``).
    """
    if not isinstance(value, bool):
        raise ConfigError(f"expected true or false, got {value!r}", key=key)
    return value


def string_option(
    key: str,
    value: Any,
    *,
    pattern: re.Pattern[str] | None = None,
    what: str = "a string",
    fix: str | None = None,
) -> str:
    """``value`` as a str without NUL, matching ``pattern`` in full if given.

    Raises:
        ConfigError: Not a string, a NUL in it, or not matching (``what`` names what
            was expected, ``fix`` says what to write instead).
    """
    if pattern is not None and not (isinstance(value, str) and pattern.fullmatch(value)):
        raise ConfigError(f"invalid {what} {value!r}", key=key, fix=fix)
    if not isinstance(value, str) or "\x00" in value:
        raise ConfigError(f"expected {what}, got {value!r}", key=key, fix=fix)
    return value


def choice_option(key: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``.

    Raises:
        ConfigError: Anything else (the message lists the choices).
    """
    allowed = tuple(choices)
    if not isinstance(value, str) or value not in allowed:
        shown = [repr(choice) for choice in allowed]
        listed = " or ".join([", ".join(shown[:-1]), shown[-1]] if len(shown) > 1 else shown)
        raise ConfigError(f"{value!r} is not {listed}", key=key)
    return value


_URL_PASSWORD = re.compile(r"(://[^:/@?#]*):[^@/?#]*@")
_QUERY_PASSWORD = re.compile(r"(?i)((?:ssl_)?password=)[^&\s]*")


def redact_url(url: str) -> str:
    """``url`` with its password (user info, ``password=`` parameters) shown as ``***``.

    For messages and logs about a networked store; it redacts what it can spot, so
    still never log a URL the user did not write.
    """
    url = _URL_PASSWORD.sub(r"\1:***@", url)
    return _QUERY_PASSWORD.sub(r"\1***", url)
