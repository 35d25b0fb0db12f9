"""Finding a database server for a networked provider's tests (PostgreSQL, Redis).

The plumbing ``durably_postgres.testing`` and ``durably_redis.testing`` share: a free
port, the search "URL from an env var -> a local server -> a throwaway server", and
skipping the test when there is none -- a failure when the "require" env var is ``1``
(CI sets it: there a missing server is a broken job, not a reason to skip).

Those modules ship inside the provider wheels, which do not depend on this
distribution, so they import this module inside their functions, never at import time.
"""

from __future__ import annotations

import atexit
import os
import socket
from collections.abc import Callable
from typing import Literal, Protocol, TypeVar

__all__ = ["Server", "Source", "Throwaway", "find_server", "free_port", "server_or_skip"]

Source = Literal["env", "local", "throwaway"]
"""Where a server came from: the env var's URL, the local default URL, or started by us."""


class Throwaway(Protocol):
    """A private server the tests can start (``ThrowawayRedis``, ``ThrowawayCluster``)."""

    @staticmethod
    def unavailable_reason() -> str | None:
        """None if one can be started here, else why not."""
        ...

    @property
    def url(self) -> str: ...

    def start(self) -> object:
        """Start it and wait until it answers; RuntimeError (first line: why) if not."""
        ...


class Server(Protocol):
    """What :func:`server_or_skip` needs of a provider's server dataclass."""

    @property
    def source(self) -> str: ...

    def stop(self) -> None: ...


T = TypeVar("T", bound=Throwaway)
S = TypeVar("S", bound=Server)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_server(
    make: Callable[[str, Source, T | None], S],
    *,
    env_url: str,
    local_url: str,
    answers: Callable[[str], str | None],
    local_answers: Callable[[str], str | None] | None = None,
    throwaway: type[T],
    cannot_start: str,
) -> tuple[S | None, str]:
    """Find or start a server: the URL in the env var ``env_url`` when it is set, else
    ``local_url`` if a server answers there, else a started ``throwaway()``.

    Args:
        make: Builds the provider's server dataclass from ``(url, source, throwaway)``.
        env_url: The name of the env var that may hold the server's URL.
        local_url: Where a local server would listen.
        answers: ``answers(url)`` is None if a server answers there, else why not.
        local_answers: The probe of ``local_url`` if not ``answers`` (a shorter timeout).
        throwaway: The throwaway server class.
        cannot_start: Introduces ``throwaway.unavailable_reason()`` in the reason.

    Returns:
        The server, or None and why there is none.

    Raises:
        RuntimeError: ``env_url`` is set but nothing answers there (an explicit URL that
            does not work is an error, not a reason to skip).
    """
    explicit = os.environ.get(env_url)
    if explicit:
        problem = answers(explicit)
        if problem:
            raise RuntimeError(f"{env_url} is set but the server does not answer: {problem}")
        return make(explicit, "env", None), ""
    problem = (local_answers or answers)(local_url)
    if problem is None:
        return make(local_url, "local", None), ""
    reasons = [f"no server at {local_url} ({problem})"]
    cant = throwaway.unavailable_reason()
    if cant:
        reasons.append(f"{cannot_start}: {cant}")
        return None, "; ".join(reasons)
    process = throwaway()
    try:
        process.start()
    except RuntimeError as exc:
        reasons.append(str(exc).splitlines()[0])
        return None, "; ".join(reasons)
    return make(process.url, "throwaway", process), ""


def server_or_skip(
    find: Callable[[], tuple[S | None, str]], *, what: str, env_url: str, env_require: str
) -> S:
    """``find()``'s server, or skip the test -- a failure when ``env_require`` is ``1``.

    A server the search started (source ``"throwaway"``) is stopped at exit, in case
    nobody calls its ``stop()``.

    Args:
        find: The provider's search (e.g. ``durably_redis.testing.find_server``); a
            RuntimeError from it fails the test.
        what: The kind of server, for the message (``"Redis"``).
        env_url: The env var that names a server, suggested in the skip message.
        env_require: The env var that turns a skip into a failure when it is ``1``.
    """
    import pytest

    try:
        server, reason = find()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    if server is None:
        message = f"no {what} server for the tests: {reason}. Set {env_url} to use one"
        if os.environ.get(env_require) == "1":
            pytest.fail(f"{message} ({env_require}=1 makes this a failure)")
        pytest.skip(message)
    if server.source == "throwaway":
        atexit.register(server.stop)
    return server
