"""Test helpers: find (or start) a Redis server, isolate tests by key prefix, and
read/write raw storage behind the provider's back.

Used by this package's tests and by the cross-package end-to-end tests. Not part of
the provider's API. The search and the skip are shared with ``durably_postgres.testing``
(``durably_conformance``'s ``find_server``, ``server_or_skip`` and ``free_port``),
imported -- like pytest -- only when a function needs them: this module ships in the
provider's wheel, which depends on neither.

Where the server comes from, in order (:func:`find_server`):

1. ``DURABLY_TEST_REDIS_URL``, when set (it must answer).
2. A local server at ``redis://127.0.0.1:6379/0``, if one answers.
3. A throwaway ``redis-server`` (from PATH) on a free port in a temporary directory,
   without persistence, stopped and removed at the end.

If none is available the tests are skipped -- unless ``DURABLY_REQUIRE_REDIS=1``,
which turns the skip into a failure (CI sets it).

Tests share a server, so each one uses a random key prefix (:func:`random_prefix`)
and deletes its keys afterwards (:func:`delete_prefix`).
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

import redis
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from durably_redis._keys import Keys

__all__ = [
    "ENV_REQUIRE",
    "ENV_URL",
    "LOCAL_URL",
    "RedisBackdoor",
    "RedisServer",
    "ThrowawayRedis",
    "delete_prefix",
    "find_server",
    "free_port",
    "random_prefix",
    "server_or_skip",
]

ENV_URL = "DURABLY_TEST_REDIS_URL"
ENV_REQUIRE = "DURABLY_REQUIRE_REDIS"
LOCAL_URL = "redis://127.0.0.1:6379/0"


def _answers(url: str, timeout: float = 2.0) -> str | None:
    """None if a server answers PING at ``url``, else why not (no password in it)."""
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=_no_retry()
        )
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def _as_bytes(value: object) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"unexpected reply {value!r}")


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    from durably_conformance import free_port  # lazily: see the module docstring

    return free_port()


class ThrowawayRedis:
    """A private ``redis-server`` on 127.0.0.1, on a free port, in a temporary directory.

    By default it persists nothing (``--save "" --appendonly no``), like a cache.

    Args:
        password: Set ``requirepass`` (the URL then carries it).
        args: Extra configuration, e.g. ``("--appendonly", "yes")`` or
            ``("--rename-command", "CONFIG", "")``.
    """

    def __init__(self, *, password: str | None = None, args: Sequence[str] = ()) -> None:
        self.password = password
        self.args = tuple(args)
        self.port = 0
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def unavailable_reason() -> str | None:
        """None if a server can be started here, else why not."""
        if shutil.which("redis-server") is None:
            return "redis-server is not on PATH"
        return None

    @property
    def running(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`stop` has not run since."""
        return self._process is not None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> ThrowawayRedis:
        """Start the server and wait until it answers; RuntimeError (with its log) if not."""
        reason = self.unavailable_reason()
        if reason:
            raise RuntimeError(f"cannot start a throwaway Redis server: {reason}")
        self._dir = Path(tempfile.mkdtemp(prefix="durably-redis-"))
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = free_port()
            if self._launch(timeout):
                return self
        text = self.log()
        self.stop()
        raise RuntimeError(f"throwaway Redis server failed to start:\n{text}")

    def restart(self, *, kill: bool = True, timeout: float = 10.0) -> None:
        """Stop the server -- with SIGKILL (a crash) or SIGTERM (a clean shutdown, which
        writes an RDB snapshot if save points are configured) -- and start it again on the
        same port and directory, so it reloads whatever it persisted."""
        if self._dir is None:
            raise RuntimeError("the server was not started")
        process = self._process
        if process is not None and process.poll() is None:
            if kill:
                process.kill()
            else:
                process.terminate()
            process.wait(timeout=10)
        self._process = None
        if not self._launch(timeout):
            text = self.log()
            self.stop()
            raise RuntimeError(f"throwaway Redis server failed to restart:\n{text}")

    def log(self) -> str:
        """The end of the server's log file."""
        path = self._dir / "redis.log" if self._dir is not None else None
        return path.read_text(errors="replace")[-2000:] if path and path.exists() else ""

    def _launch(self, timeout: float) -> bool:
        binary = shutil.which("redis-server")
        assert binary
        assert self._dir is not None
        command = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self._dir),
            "--logfile",
            str(self._dir / "redis.log"),
        ]
        if self.password:
            command += ["--requirepass", self.password]
        command += list(self.args)  # later settings win over the defaults above
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if _answers(self.url, timeout=0.5) is None:
                return True
            time.sleep(0.02)
        self._kill()
        return False

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def stop(self) -> None:
        """Stop the server and delete its directory. Idempotent."""
        self._kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> ThrowawayRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class RedisServer:
    """A server the tests may use: its URL, where it came from, and how to stop it."""

    url: str
    source: Literal["env", "local", "throwaway"]
    process: ThrowawayRedis | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the server if the tests started it."""
        if self.process is not None:
            self.process.stop()


def find_server() -> tuple[RedisServer | None, str]:
    """Find or start a server (see the module docstring). Returns it, or None and why.

    Raises:
        RuntimeError: ``DURABLY_TEST_REDIS_URL`` is set but nothing answers there.
    """
    from durably_conformance import find_server as search

    return search(
        RedisServer,
        env_url=ENV_URL,
        local_url=LOCAL_URL,
        answers=_answers,
        throwaway=ThrowawayRedis,
        cannot_start="cannot start one",
    )


_found: RedisServer | None = None


def server_or_skip() -> RedisServer:
    """:func:`find_server`, or skip the test -- a failure when DURABLY_REQUIRE_REDIS=1.

    The server found is remembered for the process (a throwaway server is started
    once, and stopped at exit if nobody called :meth:`RedisServer.stop`).
    """
    from durably_conformance import server_or_skip as search

    global _found
    if _found is None or (_found.process is not None and not _found.process.running):
        _found = search(find_server, what="Redis", env_url=ENV_URL, env_require=ENV_REQUIRE)
    return _found


def random_prefix(prefix: str = "durably-test") -> str:
    """A fresh key prefix, e.g. ``durably-test-3f9a1c2b7d``."""
    return f"{prefix}-{secrets.token_hex(5)}"


def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key of the store with this prefix (synchronous, for teardown).

    Returns:
        How many keys were deleted.
    """
    client = redis.Redis.from_url(url, socket_timeout=30, retry=_no_retry())
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=Keys(prefix).pattern(), count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(client.unlink(*batch))
                batch.clear()
        if batch:
            deleted += int(client.unlink(*batch))
        return deleted
    finally:
        client.close()


class RedisBackdoor:
    """Raw access to a store's keys, bypassing the provider (the conformance Backdoor).

    Args:
        url: The server's URL.
        key_prefix: The key prefix the provider under test uses.
    """

    def __init__(self, url: str, key_prefix: str) -> None:
        self.url = url
        self.keys = Keys(key_prefix)

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[aioredis.Redis]:
        client = aioredis.Redis.from_url(self.url, retry=AsyncRetry(NoBackoff(), 0))
        try:
            yield client
        finally:
            await client.aclose()

    async def _field(self, key: str, what: str) -> bytes:
        async with self._client() as client:
            value = await client.hget(key, "d")
        if value is None:
            raise KeyError(what)
        return _as_bytes(value)

    async def _replace(self, key: str, raw: bytes, what: str) -> None:
        async with self._client() as client:
            if not await client.hexists(key, "d"):
                raise KeyError(what)
            await client.hset(key, "d", raw)

    async def read_checkpoint(self, execution_id: str, seq: int) -> bytes:
        """The stored (envelope) bytes of a checkpoint."""
        return await self._field(
            self.keys.checkpoint(execution_id, seq), f"checkpoint {seq} of {execution_id}"
        )

    async def write_checkpoint(self, execution_id: str, seq: int, raw: bytes) -> None:
        """Replace a checkpoint's bytes in place (version, time and metadata unchanged)."""
        await self._replace(
            self.keys.checkpoint(execution_id, seq), raw, f"checkpoint {seq} of {execution_id}"
        )

    async def corrupt_checkpoint(self, execution_id: str, seq: int) -> None:
        """Flip every bit of the middle byte of a checkpoint."""
        data = bytearray(await self.read_checkpoint(execution_id, seq))
        data[len(data) // 2] ^= 0xFF
        await self.write_checkpoint(execution_id, seq, bytes(data))

    async def truncate_checkpoint(self, execution_id: str, seq: int) -> None:
        """Cut a checkpoint's bytes to half their length."""
        data = await self.read_checkpoint(execution_id, seq)
        await self.write_checkpoint(execution_id, seq, data[: len(data) // 2])

    async def corrupt_blob(self, execution_id: str, digest: str) -> None:
        """Flip every bit of the middle byte of a blob."""
        key = self.keys.blob(execution_id, digest)
        data = bytearray(await self._field(key, f"blob {digest} of {execution_id}"))
        data[len(data) // 2] ^= 0xFF
        await self._replace(key, bytes(data), f"blob {digest} of {execution_id}")

    async def locations(self) -> list[str]:
        """Every key the store holds, and one ``<prefix>:executions#<id>`` (and
        ``<prefix>:open#<id>``) per entry of the execution index (and of the open index).
        The version/epoch counter and the open index's ``open-ready`` flag (store-wide
        bookkeeping that must outlive executions) are left out."""
        found: list[str] = []
        async with self._client() as client:
            async for key in client.scan_iter(match=self.keys.pattern(), count=1000):
                name = _as_bytes(key).decode()
                if name in (self.keys.counter, self.keys.open_ready):
                    continue
                if name in (self.keys.executions, self.keys.open):
                    members = await client.zrange(name, 0, -1)
                    found.extend(f"{name}#{_as_bytes(member).decode()}" for member in members)
                found.append(name)
        return sorted(found)

    async def add_open_entry(self, execution_id: str) -> None:
        """Leave an open-index entry for the execution, as a crash before the index
        update would (C31; the provider's scripts update it atomically, so this only
        happens by hand)."""
        async with self._client() as client:
            await client.zadd(self.keys.open, {execution_id: 0})
