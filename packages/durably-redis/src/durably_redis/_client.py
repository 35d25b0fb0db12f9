"""The connection to Redis: the pool, commands, Lua scripts, retries and WAIT/WAITAOF.

:class:`RedisClient` is what the provider's modules talk to. It connects on first use
(:class:`~durably._providerkit.Connector`): opens a ``redis.asyncio`` pool without
redis-py's own retries, reads the server's version and persistence settings
(:func:`~durably_redis._server.inspect_server`) and computes the scripts' SHAs. Then

* :meth:`RedisClient.call` runs one command (one round trip);
* :meth:`RedisClient.script` runs one Lua script by SHA (falling back to ``EVAL`` when
  the server lost it), pipelined with the ``WAIT``/``WAITAOF`` the options ask for, whose
  acknowledgements it checks unless the script reports a rejection;

and both retry an *idempotent* operation once after a lost connection, then turn redis-py
errors into durably errors (:mod:`durably_redis._errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from durably._providerkit import Connector
from durably.errors import FencedError, StoreError, fenced
from durably.storage import Lease, call_with_retries
from durably_redis._errors import detail_of, is_connection_loss, translate
from durably_redis._keys import Keys
from durably_redis._options import RedisOptions, Target
from durably_redis._scripts import SCRIPTS
from durably_redis._server import ServerInfo, inspect_server

__all__ = ["RedisClient", "decode", "encode_owner", "fence_args", "fenced_error", "status"]

log = logging.getLogger("durably.redis")

POOL_TIMEOUT = 30.0
"""Seconds an operation waits for a free pooled connection."""
READ_RETRIES = 1
"""Reads (and other idempotent operations) whose connection broke are retried this often."""
REJECTED = frozenset({b"fenced", b"exists", b"mismatch", b"held"})
"""Script statuses of a write refused by its precondition: nothing was written, so there
is nothing to wait for."""


@dataclass(frozen=True, slots=True)
class _Connected:
    client: Redis
    pool: BlockingConnectionPool
    server: ServerInfo
    shas: dict[str, str]


class RedisClient:
    """One store's connection to its server (made on first use).

    Args:
        target: Where to connect (from the URL).
        options: The validated ``[durability.redis]`` options.
        describe: The store's description, for the "closed" error.
    """

    def __init__(self, target: Target, options: RedisOptions, describe: Callable[[], str]) -> None:
        self.target = target
        self.options = options
        self.keys = Keys(options.key_prefix)
        self.open_ready = False
        """Seen the open index complete (``<prefix>:open-ready``)."""
        self._connector = Connector(
            self._connect, closed=lambda: f"the Redis store {describe()} is closed"
        )
        waits: list[tuple[Any, ...]] = []
        if options.wait_replicas:
            waits.append(("WAIT", options.wait_replicas, options.wait_timeout_ms))
        if options.waitaof_args is not None:
            waits.append(("WAITAOF", *options.waitaof_args, options.wait_timeout_ms))
        self._waits: tuple[tuple[Any, ...], ...] = tuple(waits)
        self.server: ServerInfo | None = None
        """What the first operation found out about the server (None before it)."""

    def _make_pool(self) -> BlockingConnectionPool:
        # No automatic retries: redis-py would resend a write whose reply was lost,
        # and a save in mode "create" must not be applied twice. Idempotent operations
        # are retried here instead (see _retrying).
        return BlockingConnectionPool(
            connection_class=SSLConnection if self.target.tls else Connection,
            max_connections=self.options.pool_size,
            timeout=POOL_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            **self.target.kwargs,
        )

    async def _connect(self) -> _Connected:
        pool = self._make_pool()
        client = Redis(connection_pool=pool)
        try:
            server = await inspect_server(client, self.target, self.options)
        except rx.RedisError as exc:
            await pool.disconnect()
            raise translate(exc, f"connecting to {self.target.where}", self.target) from exc
        except BaseException:
            await pool.disconnect()
            raise
        self.server = server
        shas = {name: script.sha(server.shebang) for name, script in SCRIPTS.items()}
        return _Connected(client, pool, server, shas)

    async def close(self) -> None:
        """Close the pool (idempotent); later operations raise StoreError."""
        connected = self._connector.close()
        if connected is not None:
            await connected.pool.disconnect()

    async def call(self, what: str, *command: Any, idempotent: bool) -> Any:
        """Run one command (one round trip); errors become durably errors."""
        client = (await self._connector.get()).client
        return await self._retrying(what, lambda: _execute(client, command), idempotent=idempotent)

    async def call_many(
        self, what: str, commands: Sequence[Sequence[Any]], *, idempotent: bool
    ) -> list[Any]:
        """Run ``commands`` in one pipeline (one round trip, not a transaction); their
        replies in order. The first command that failed raises, as a durably error."""
        client = (await self._connector.get()).client

        async def attempt() -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
            for reply in replies:
                if isinstance(reply, BaseException):
                    raise reply
            return list(replies)

        result: list[Any] = await self._retrying(what, attempt, idempotent=idempotent)
        return result

    async def _retrying(
        self, what: str, call: Callable[[], Awaitable[Any]], *, idempotent: bool
    ) -> Any:
        """``call`` once, or again after a lost connection if ``idempotent``; errors
        become durably errors."""
        return await call_with_retries(
            call,
            what=what,
            catch=rx.RedisError,
            retryable=lambda exc: idempotent and is_connection_loss(exc),
            translate=lambda exc: translate(exc, what, self.target),
            retries=READ_RETRIES,
            log=log,
            where=self.target.where,
            describe=lambda exc: detail_of(exc, self.target),
        )

    async def script(
        self,
        name: str,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        what: str,
        write: bool,
        idempotent: bool,
    ) -> Any:
        """Run a Lua script (EVALSHA, falling back to EVAL if the server lost it).

        A ``write`` is followed, in the same pipeline (the same round trip), by the
        WAIT/WAITAOF the options ask for; their acknowledgements are checked unless the
        script reports a rejection (:data:`REJECTED`: it wrote nothing to wait for).
        """
        connected = await self._connector.get()
        sha = connected.shas[name]
        waits = self._waits if write else ()
        by_sha = True

        async def attempt() -> Any:
            nonlocal by_sha
            while True:
                if by_sha:
                    call: tuple[Any, ...] = ("EVALSHA", sha, len(keys), *keys, *args)
                else:
                    text = SCRIPTS[name].text(connected.server.shebang)
                    call = ("EVAL", text, len(keys), *keys, *args)
                try:
                    return await self._run_script(connected.client, what, call, waits)
                except rx.NoScriptError:
                    if not by_sha:
                        raise StoreError(
                            f"{what}: Redis {self.target.where} keeps refusing the script {name!r}"
                        ) from None
                    by_sha = False  # the server restarted or its script cache was flushed

        return await self._retrying(what, attempt, idempotent=idempotent)

    async def _run_script(
        self, client: Redis, what: str, call: tuple[Any, ...], waits: tuple[tuple[Any, ...], ...]
    ) -> Any:
        """One script call, pipelined with ``waits`` (one round trip)."""
        if not waits:
            return await _execute(client, call)
        pipe = client.pipeline(transaction=False)
        pipe.execute_command(*call)
        for wait in waits:
            pipe.execute_command(*wait)
        replies = await pipe.execute(raise_on_error=False)
        result = replies[0]
        if isinstance(result, BaseException):
            raise result
        if status(result) not in REJECTED:
            self._check_acks(what, replies[1:])
        return result

    def _check_acks(self, what: str, replies: Sequence[Any]) -> None:
        """Raise StoreError unless every WAIT/WAITAOF reached its count."""
        opts = self.options
        for wait, reply in zip(self._waits, replies, strict=True):
            if isinstance(reply, BaseException):
                raise translate(reply, what, self.target) from reply
            if wait[0] == "WAIT":
                acked = int(reply)
                if acked < opts.wait_replicas:
                    raise StoreError(
                        f"{what}: written on {self.target.where}, but only {acked} of "
                        f"{opts.wait_replicas} replicas acknowledged it within "
                        f"{opts.wait_timeout_ms} ms (wait_replicas): it is not known to be "
                        "durable and may be lost if the primary fails"
                    )
            else:
                local, replicas = (int(n) for n in reply)
                numlocal, numreplicas = wait[1], wait[2]
                if local < numlocal or replicas < numreplicas:
                    raise StoreError(
                        f"{what}: written on {self.target.where}, but WAITAOF confirmed "
                        f"the fsync on {local} of {numlocal} local and {replicas} of "
                        f"{numreplicas} replica append-only files within "
                        f"{opts.wait_timeout_ms} ms (wait_aof): it is not known to be "
                        "durable"
                    )


async def _execute(client: Redis, command: Sequence[Any]) -> Any:
    """``client.execute_command(*command)`` (untyped in redis-py)."""
    run = cast("Callable[..., Awaitable[Any]]", client.execute_command)
    return await run(*command)


def status(reply: Any) -> Any:
    """The status word of a script reply (``b"ok"``, ``b"fenced"``, ...) or the reply."""
    if isinstance(reply, list) and reply:
        return reply[0]
    return reply


def decode(value: bytes | str) -> str:
    """A reply's text (bytes decoded as UTF-8)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def encode_owner(owner: str) -> bytes:
    """An owner as a script argument (the core only accepts valid Unicode owners)."""
    return owner.encode()


def fence_args(lease: Lease | None) -> list[Any]:
    """The ``epoch, owner`` arguments of a fenced script (empty: not fenced)."""
    if lease is None:
        return ["", ""]
    return [str(lease.epoch), encode_owner(lease.owner)]


def fenced_error(action: str, lease: Lease, reply: Sequence[Any]) -> FencedError:
    """The FencedError of a script that replied ``fenced`` (with the current epoch)."""
    current = reply[1] if len(reply) > 1 else b""
    return fenced(lease, action, current_epoch=int(current) if current else None)
