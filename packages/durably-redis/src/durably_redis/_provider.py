"""The Redis checkpoint provider: the contract's methods, in the contract's order.

Each method is one call into the module that holds its mechanics:
:mod:`~durably_redis._checkpoints`, :mod:`~durably_redis._executions` (with the open
index), :mod:`~durably_redis._leases` and :mod:`~durably_redis._blobs`, all of them
running commands and Lua scripts (:mod:`~durably_redis._scripts`) through
:class:`~durably_redis._client.RedisClient` on the keys of :mod:`~durably_redis._keys`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar, Self

from durably._providerkit import delete_in_batches
from durably.storage import (
    BlobInfo,
    Capability,
    CheckpointInfo,
    CheckpointProvider,
    ExecutionInfo,
    Lease,
    Page,
    WriteMode,
)
from durably_redis import _blobs, _checkpoints, _executions, _leases
from durably_redis._client import RedisClient
from durably_redis._keys import DELETE_BATCH
from durably_redis._options import RedisOptions, Target, parse_options, parse_target
from durably_redis._server import ServerInfo

__all__ = ["RedisProvider"]


class RedisProvider(CheckpointProvider):
    """Checkpoints, leases and blobs in Redis (``redis://`` and ``rediss://`` URLs).

    Create it with :meth:`from_url`; no connection is made until the first operation,
    which opens a ``redis.asyncio`` connection pool, reads the server's version and
    persistence settings (warning with :class:`~durably.errors.DurablyWarning` when a
    restart of Redis would lose every checkpoint) and loads the Lua scripts.
    :meth:`close` closes the pool.

    Guarantees beyond the base contract:

    * Every write is ONE Lua script (``EVALSHA``), so one round trip and one atomic
      step: a save checks the lease epoch and the write mode, writes the checkpoint and
      updates the execution's index with no other command in between, and a rejected
      write changes nothing. With ``wait_aof``/``wait_replicas`` the ``WAITAOF``/``WAIT``
      is pipelined behind the script: still one round trip.
    * Versions and epochs come from one never-reset counter: they are not reused, not
      even after :meth:`delete_execution`.
    * Lease expiry is timed by the server's clock (``TIME`` inside the scripts).

    Redis Cluster is not supported (the scripts touch an execution's keys and the
    store-wide index together); use a standalone server, with replicas if you like.
    """

    scheme: ClassVar[str] = "redis"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.PERSISTENT,
            Capability.SHARED,
            Capability.LARGE_OBJECTS,
            Capability.TAKEOVER,
            Capability.OPEN_INDEX,
        }
    )

    def __init__(self, target: Target, options: RedisOptions) -> None:
        """Prefer :meth:`from_url`. Performs no I/O."""
        super().__init__()
        self._target = target
        self._options = options
        self._db = RedisClient(target, options, self.describe)

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> Self:
        """Create a provider for a ``redis://`` or ``rediss://`` URL; no I/O.

        Args:
            url: ``redis://[[user]:password@]host[:port][/db][?param=value...]``;
                ``rediss://`` for TLS. Parameters: ``db``, ``socket_timeout``,
                ``socket_connect_timeout``, ``socket_keepalive``,
                ``health_check_interval``, ``client_name``, ``username``, ``password``
                and, with ``rediss://``, ``ssl_cert_reqs``, ``ssl_ca_certs``,
                ``ssl_ca_path``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_password``,
                ``ssl_check_hostname``, ``ssl_ciphers``.
            options: The ``[durability.redis]`` table: ``key_prefix``, ``pool_size``,
                ``wait_aof``, ``wait_replicas``, ``wait_timeout_ms``.

        Raises:
            ConfigError: Not a Redis URL, an unknown URL parameter, or an unknown or
                invalid option (named in the message, which never shows the password).
        """
        opts = parse_options(options)
        return cls(parse_target(url, opts), opts)

    @property
    def options(self) -> RedisOptions:
        """The validated options."""
        return self._options

    @property
    def key_prefix(self) -> str:
        """The prefix of every key of this store."""
        return self._options.key_prefix

    @property
    def server(self) -> ServerInfo | None:
        """What the first operation found out about the server (None before it)."""
        return self._db.server

    def describe(self) -> str:
        """``redis://[user@]host:port/db (key prefix 'durably')`` -- never the password."""
        return f"{self._target.where} (key prefix {self._options.key_prefix!r})"

    async def _close(self) -> None:
        await self._db.close()

    # --------------------------------------------------------------- checkpoints

    async def _save(
        self,
        execution_id: str,
        seq: int,
        stored: bytes,
        metadata: dict[str, str],
        mode: WriteMode,
        lease: Lease | None,
    ) -> CheckpointInfo:
        return await _checkpoints.save(self._db, execution_id, seq, stored, metadata, mode, lease)

    async def _load(self, execution_id: str, seq: int) -> tuple[CheckpointInfo, bytes] | None:
        return await _checkpoints.load(self._db, execution_id, seq)

    async def _load_many(
        self, execution_id: str, seqs: Sequence[int]
    ) -> list[tuple[CheckpointInfo, bytes] | None]:
        """One pipeline of ``HMGET`` commands for the whole page (one round trip)."""
        return await _checkpoints.load_many(self._db, execution_id, seqs)

    async def _load_latest(self, execution_id: str) -> tuple[CheckpointInfo, bytes] | None:
        return await _checkpoints.load_latest(self._db, execution_id)

    async def _list(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
        after: int | None,
    ) -> Page[CheckpointInfo]:
        return await _checkpoints.list_page(self._db, execution_id, cursor, limit, after)

    async def _delete(self, execution_id: str, seq: int, lease: Lease | None) -> bool:
        return bool(await _checkpoints.delete(self._db, execution_id, [seq], lease))

    async def _delete_many(
        self,
        execution_id: str,
        seqs: Iterable[int],
        lease: Lease | None,
    ) -> list[int]:
        """Delete in batches of :data:`~durably_redis._keys.DELETE_BATCH`, each one fenced
        atomic script; a FencedError stops before the next batch."""
        delete = partial(_checkpoints.delete, self._db, execution_id, lease=lease)
        return await delete_in_batches(seqs, DELETE_BATCH, delete)

    # ----------------------------------------------------------------- executions

    async def _list_executions(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        return await _executions.list_executions(self._db, cursor, limit)

    async def _delete_execution(self, execution_id: str) -> bool:
        return await _executions.delete_execution(self._db, execution_id)

    async def _list_open(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        return await _executions.list_open(self._db, cursor, limit)

    async def _forget_if_finished(self, execution_id: str) -> bool:
        was, now = await _executions.reindex(self._db, execution_id)
        return was and not now

    # --------------------------------------------------------------------- leases

    async def _claim(self, execution_id: str, owner: str, ttl: float) -> Lease:
        return await _leases.claim(self._db, execution_id, owner, ttl, None)

    async def _renew(self, lease: Lease, ttl: float) -> Lease:
        return await _leases.renew(self._db, lease, ttl)

    async def _release(self, lease: Lease) -> None:
        await _leases.release(self._db, lease)

    async def _get_lease(self, execution_id: str) -> Lease | None:
        return await _leases.get_lease(self._db, execution_id)

    async def _take_over(self, lease: Lease, owner: str, ttl: float) -> Lease:
        return await _leases.claim(self._db, lease.execution_id, owner, ttl, lease)

    # ---------------------------------------------------------------------- blobs

    async def _put_blob(self, execution_id: str, digest: str, stored: bytes) -> bool:
        return await _blobs.put_blob(self._db, execution_id, digest, stored)

    async def _put_blobs(self, execution_id: str, blobs: Mapping[str, bytes]) -> dict[str, bool]:
        return await _blobs.put_blobs(self._db, execution_id, blobs)

    async def _get_blob(self, execution_id: str, digest: str) -> bytes | None:
        return await _blobs.get_blob(self._db, execution_id, digest)

    async def _has_blob(self, execution_id: str, digest: str) -> bool:
        return await _blobs.has_blob(self._db, execution_id, digest)

    async def _list_blobs(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
    ) -> Page[BlobInfo]:
        return await _blobs.list_blobs(self._db, execution_id, cursor, limit)

    async def _delete_blob(self, execution_id: str, digest: str) -> bool:
        return await _blobs.delete_blob(self._db, execution_id, digest)
