"""Data, paging and timing helpers shared by the suites (and usable by providers' own tests)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from durably.storage import CheckpointProvider

__all__ = [
    "ALL_BYTE_VALUES",
    "BOUNDARY_EXECUTION_IDS",
    "HOSTILE_EXECUTION_IDS",
    "ProviderMaker",
    "collect_pages",
    "drain",
    "eventually",
    "gather_limited",
    "list_while_changing",
    "random_bytes",
    "sleep_past",
    "with_format_version",
]

T = TypeVar("T")

ALL_BYTE_VALUES: bytes = bytes(range(256)) + bytes(reversed(range(256)))
"""Every byte value, twice, in both orders (512 bytes)."""

HOSTILE_EXECUTION_IDS: tuple[object, ...] = (
    "",
    ".",
    "..",
    "../x",
    "../../etc/passwd",
    "x/../../y",
    "/abs",
    "/",
    "a/b",
    "a\\b",
    "..\\x",
    "C:x",
    ".hidden",
    "-dash-first",
    "_underscore-first",
    "x\x00y",
    "\x00",
    "a" * 129,
    "run 1",
    "run-1\n",
    "r\u00fcn",
    "%2e%2e",
    "*",
    "~",
    None,
    42,
    b"run-1",
)
"""Execution ids every public method must reject with InvalidExecutionIdError [C12]:
path traversal, absolute paths, separators, hidden names, NUL, 129 characters, the
empty string, non-ASCII, characters outside ``[A-Za-z0-9._-]`` and non-strings."""

BOUNDARY_EXECUTION_IDS: tuple[str, ...] = (
    "a",
    "0",
    "Z",
    "a" * 128,
    "A.b_c-9",
    "x..y",
    "run.",
    "9-",
)
"""Unusual but valid execution ids that every provider must store faithfully [C12]."""


def random_bytes(size: int, seed: int) -> bytes:
    """``size`` reproducible pseudo-random (incompressible) bytes."""
    return random.Random(seed).randbytes(size)


def with_format_version(stored: bytes, version: int) -> bytes:
    """Return an envelope with its format-version byte (offset 4) replaced.

    The envelope header is ``magic(4) version(1) codec(1) ...`` (see
    ``durably._envelope``), so the result is an object "written by a durably that
    uses format ``version``" -- the core must refuse it with UnsupportedFormatError.
    """
    if len(stored) < 5:
        raise ValueError("not an envelope: shorter than its header")
    return stored[:4] + bytes([version]) + stored[5:]


async def drain(iterator: AsyncIterator[T]) -> list[T]:
    """Collect an async iterator into a list."""
    return [item async for item in iterator]


async def gather_limited(jobs: Iterable[Callable[[], Awaitable[T]]], *, limit: int) -> list[T]:
    """Run coroutine factories with at most ``limit`` in flight; results in input order."""
    semaphore = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await job()

    return list(await asyncio.gather(*(run(job) for job in jobs)))


async def collect_pages(
    fetch: Callable[[str | None], Awaitable[Any]],
    *,
    limit: int | None,
    max_pages: int,
) -> tuple[list[Any], int]:
    """Follow ``next_cursor`` until it is None; return all items and the page count.

    ``fetch(cursor)`` returns a :class:`durably.storage.Page`. Checks that every page
    respects ``limit`` (when given), that cursors are strings and that the listing ends
    within ``max_pages`` pages.
    """
    items: list[Any] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await fetch(cursor)
        pages += 1
        if limit is not None:
            assert len(page.items) <= limit, (
                f"page {pages} has {len(page.items)} items, more than limit={limit}"
            )
        items.extend(page.items)
        if page.next_cursor is None:
            return items, pages
        assert isinstance(page.next_cursor, str), (
            f"next_cursor must be a str or None, not {type(page.next_cursor).__name__}"
        )
        assert pages < max_pages, (
            f"listing did not end after {pages} pages ({len(items)} items so far): "
            "next_cursor never became None"
        )
        cursor = page.next_cursor


async def list_while_changing(
    fetch: Callable[[str | None], Awaitable[Any]],
    key: Callable[[Any], Any],
    *,
    delete: Callable[[Any], Awaitable[object]],
    insert_before: Callable[[Any], Awaitable[object]],
    limit: int,
    max_pages: int = 100,
) -> list[Any]:
    """Page through a listing while it changes behind the cursor; return the keys seen.

    After every odd page, every item listed so far is deleted (``delete(key)``); after
    every even page, new items are inserted before the cursor (``insert_before(last
    key listed)`` inserts items whose keys sort before it). A keyset cursor (the last key
    returned) is unaffected; an offset cursor skips items after the deletes and repeats
    some after the inserts.
    """
    seen: list[Any] = []
    deleted = 0
    cursor: str | None = None
    for pages in range(1, max_pages + 1):
        page = await fetch(cursor)
        assert len(page.items) <= limit, (
            f"page {pages} has {len(page.items)} items, more than limit={limit}"
        )
        seen.extend(key(item) for item in page.items)
        if page.next_cursor is None:
            return seen
        assert isinstance(page.next_cursor, str), (
            f"next_cursor must be a str or None, not {type(page.next_cursor).__name__}"
        )
        cursor = page.next_cursor
        if pages % 2 == 1:
            for listed in seen[deleted:]:
                await delete(listed)
            deleted = len(seen)
        elif seen:
            await insert_before(seen[-1])
    raise AssertionError(f"listing did not end after {max_pages} pages ({seen[:20]}...)")


async def sleep_past(deadline: float, *, margin: float = 0.05) -> None:
    """Sleep until the wall clock (``time.time()``) is ``margin`` seconds past ``deadline``."""
    delay = deadline + margin - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


async def eventually(
    attempt: Callable[[], Awaitable[T]],
    *,
    retry_on: type[BaseException] | tuple[type[BaseException], ...],
    within: float,
    interval: float = 0.05,
) -> T:
    """Retry ``attempt`` while it raises ``retry_on``, for at most ``within`` seconds.

    Used where a provider's clock may lag ours a little (a lease that expired by our
    clock may still be live by the server's); the last error propagates on timeout.
    """
    deadline = time.monotonic() + within
    while True:
        try:
            return await attempt()
        except retry_on:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(interval)


P = TypeVar("P", bound=CheckpointProvider)


class ProviderMaker(Generic[P]):
    """Builds instances of a networked provider on one test's store, and closes them.

    The shared fixture helper of the provider packages' own tests (PostgreSQL, Redis):
    ``make_store(**options)`` builds ``cls.from_url(url, {**options_of_the_store,
    **options})``, and the fixture awaits :meth:`aclose` at teardown.

    Args:
        cls: The provider class.
        url: The store URL (a server started for the session).
        options: The options that select this test's store (a schema, a key prefix).
    """

    def __init__(self, cls: type[P], url: str, options: Mapping[str, Any]) -> None:
        self.cls = cls
        self.url = url
        self.options = dict(options)
        self._made: list[P] = []

    def __call__(self, url: str | None = None, **options: Any) -> P:
        """A new instance (on another ``url`` if given), with extra ``options``."""
        provider = self.cls.from_url(url or self.url, {**self.options, **options})
        self._made.append(provider)
        return provider

    async def aclose(self) -> None:
        """Close every instance made."""
        made, self._made = self._made, []
        for provider in made:
            await provider.close()
