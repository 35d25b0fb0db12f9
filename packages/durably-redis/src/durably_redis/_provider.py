"""The Redis checkpoint provider."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Self, cast

from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from durably.errors import (
    CorruptObjectError,
    FencedError,
    LeaseHeldError,
    StoreError,
    already_exists,
    fenced,
    precondition_failed,
)
from durably.storage import (
    DIGEST_RE,
    EXECUTION_ID_RE,
    BlobInfo,
    Capability,
    CheckpointInfo,
    CheckpointProvider,
    ExecutionInfo,
    ExpectedVersion,
    Lease,
    Page,
    WriteMode,
    call_with_retries,
    decode_int_cursor,
    decode_metadata,
    encode_int_cursor,
    encode_metadata,
)
from durably_redis._errors import detail_of, is_connection_loss, translate
from durably_redis._keys import MAX_SEQ, Keys, seq_member
from durably_redis._options import RedisOptions, Target, parse_options, parse_target
from durably_redis._scripts import SCRIPTS
from durably_redis._server import ServerInfo, inspect_server

log = logging.getLogger("durably.redis")

MAX_PAGE = 1000
"""Listings return at most this many items per page."""
DELETE_BATCH = 1000
"""Checkpoints deleted per script call (prune, delete_execution): each call is atomic
and short, so other clients are not held up by a huge execution."""
BLOB_PRECHECK_SIZE = 1024 * 1024
"""put_blob first asks whether a blob this large is already stored, to avoid sending it."""
POOL_TIMEOUT = 30.0
"""Seconds an operation waits for a free pooled connection."""
READ_RETRIES = 1
"""Reads (and other idempotent operations) whose connection broke are retried this often."""
REJECTED = frozenset({b"fenced", b"exists", b"mismatch", b"held"})
"""Script statuses of a write refused by its precondition: nothing was written, so there
is nothing to wait for."""


def _encode_owner(owner: str) -> bytes:
    return owner.encode()  # the core only accepts owners that are valid Unicode text


def _decode(value: bytes | str) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _encode_metadata(metadata: Mapping[str, str]) -> bytes:
    # ascii_only: NUL, control characters and non-ASCII characters are escaped; the
    # stored text is plain ASCII JSON and every str survives the round trip.
    return encode_metadata(metadata, ascii_only=True).encode()


def _seq_from_member(member: bytes, what: str) -> int:
    text = member.decode("ascii", "replace")
    if not text.isdigit():
        raise CorruptObjectError(f"{what}: the index holds {text!r}, not a sequence number")
    return int(text)


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
        self._keys = Keys(options.key_prefix)
        self._open_ready = False
        """Seen the open index complete (``<prefix>:open-ready``)."""
        self._client: Redis | None = None
        self._pool: BlockingConnectionPool | None = None
        self._server: ServerInfo | None = None
        self._shas: dict[str, str] = {}
        self._lock = asyncio.Lock()
        self._closed = False
        waits: list[tuple[Any, ...]] = []
        if options.wait_replicas:
            waits.append(("WAIT", options.wait_replicas, options.wait_timeout_ms))
        if options.waitaof_args is not None:
            waits.append(("WAITAOF", *options.waitaof_args, options.wait_timeout_ms))
        self._waits: tuple[tuple[Any, ...], ...] = tuple(waits)

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
        return self._server

    def describe(self) -> str:
        """``redis://[user@]host:port/db (key prefix 'durably')`` -- never the password."""
        return f"{self._target.where} (key prefix {self._options.key_prefix!r})"

    # ------------------------------------------------------------------ plumbing

    def _make_pool(self) -> BlockingConnectionPool:
        # No automatic retries: redis-py would resend a write whose reply was lost,
        # and a save in mode "create" must not be applied twice. Idempotent operations
        # are retried here instead (see _call).
        return BlockingConnectionPool(
            connection_class=SSLConnection if self._target.tls else Connection,
            max_connections=self._options.pool_size,
            timeout=POOL_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
            **self._target.kwargs,
        )

    async def _ready(self) -> Redis:
        client = self._client
        if client is not None:
            return client
        if self._closed:
            raise StoreError(f"the Redis store {self.describe()} is closed")
        async with self._lock:
            if self._client is None:
                if self._closed:
                    raise StoreError(f"the Redis store {self.describe()} is closed")
                pool = self._make_pool()
                client = Redis(connection_pool=pool)
                try:
                    server = await inspect_server(client, self._target, self._options)
                except rx.RedisError as exc:
                    await pool.disconnect()
                    raise translate(
                        exc, f"connecting to {self._target.where}", self._target
                    ) from exc
                except BaseException:
                    await pool.disconnect()
                    raise
                self._server = server
                self._shas = {name: script.sha(server.shebang) for name, script in SCRIPTS.items()}
                self._pool = pool
                self._client = client
            return self._client

    async def _close(self) -> None:
        self._closed = True
        pool, self._pool, self._client = self._pool, None, None
        if pool is not None:
            await pool.disconnect()

    async def _call(self, what: str, *command: Any, idempotent: bool) -> Any:
        """Run one command (one round trip); errors become durably errors."""
        client = await self._ready()
        return await self._retrying(what, lambda: _execute(client, command), idempotent=idempotent)

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
            translate=lambda exc: translate(exc, what, self._target),
            retries=READ_RETRIES,
            log=log,
            where=self._target.where,
            describe=lambda exc: detail_of(exc, self._target),
        )

    async def _script(
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
        client = await self._ready()
        sha = self._shas[name]
        waits = self._waits if write else ()
        by_sha = True

        async def attempt() -> Any:
            nonlocal by_sha
            while True:
                if by_sha:
                    call: tuple[Any, ...] = ("EVALSHA", sha, len(keys), *keys, *args)
                else:
                    assert self._server is not None
                    text = SCRIPTS[name].text(self._server.shebang)
                    call = ("EVAL", text, len(keys), *keys, *args)
                try:
                    return await self._run_script(client, what, call, waits)
                except rx.NoScriptError:
                    if not by_sha:
                        raise StoreError(
                            f"{what}: Redis {self._target.where} keeps refusing the script {name!r}"
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
        if _status(result) not in REJECTED:
            self._check_acks(what, replies[1:])
        return result

    def _check_acks(self, what: str, replies: Sequence[Any]) -> None:
        """Raise StoreError unless every WAIT/WAITAOF reached its count."""
        opts = self._options
        for wait, reply in zip(self._waits, replies, strict=True):
            if isinstance(reply, BaseException):
                raise translate(reply, what, self._target) from reply
            if wait[0] == "WAIT":
                acked = int(reply)
                if acked < opts.wait_replicas:
                    raise StoreError(
                        f"{what}: written on {self._target.where}, but only {acked} of "
                        f"{opts.wait_replicas} replicas acknowledged it within "
                        f"{opts.wait_timeout_ms} ms (wait_replicas): it is not known to be "
                        "durable and may be lost if the primary fails"
                    )
            else:
                local, replicas = (int(n) for n in reply)
                numlocal, numreplicas = wait[1], wait[2]
                if local < numlocal or replicas < numreplicas:
                    raise StoreError(
                        f"{what}: written on {self._target.where}, but WAITAOF confirmed "
                        f"the fsync on {local} of {numlocal} local and {replicas} of "
                        f"{numreplicas} replica append-only files within "
                        f"{opts.wait_timeout_ms} ms (wait_aof): it is not known to be "
                        "durable"
                    )

    def _fence_args(self, lease: Lease | None) -> list[Any]:
        if lease is None:
            return ["", ""]
        return [str(lease.epoch), _encode_owner(lease.owner)]

    def _fenced_error(self, action: str, lease: Lease, reply: Sequence[Any]) -> FencedError:
        current = reply[1] if len(reply) > 1 else b""
        return fenced(lease, action, current_epoch=int(current) if current else None)

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
        keys = self._keys
        what = f"saving checkpoint {seq} of execution {execution_id!r}"
        if isinstance(mode, ExpectedVersion):
            mode_arg, expected = "expect", mode.version
        else:
            mode_arg, expected = mode, ""
        reply = await self._script(
            "save",
            [
                keys.checkpoint(execution_id, seq),
                keys.seqs(execution_id),
                keys.lease(execution_id),
                keys.executions,
                keys.counter,
                keys.open,
            ],
            [
                mode_arg,
                expected,
                *self._fence_args(lease),
                stored,
                _encode_metadata(metadata),
                seq_member(seq),
                execution_id,
                keys.base(execution_id) + "c:",
            ],
            what=what,
            write=True,
            idempotent=False,
        )
        status = _status(reply)
        if status == b"fenced":
            assert lease is not None
            raise self._fenced_error(f"saving checkpoint {seq}", lease, reply)
        if status == b"exists":
            raise already_exists(execution_id, seq, version=_decode(reply[1]))
        if status == b"mismatch":
            current = _decode(reply[1])
            raise precondition_failed(
                execution_id, seq, expected, actual=current or None, missing=not current
            )
        if status != b"ok":
            raise StoreError(f"{what}: unexpected reply from the save script: {reply!r}")
        return CheckpointInfo(
            execution_id, seq, _decode(reply[1]), len(stored), float(reply[2]), dict(metadata)
        )

    def _checkpoint(
        self,
        execution_id: str,
        seq: int,
        fields: Sequence[Any],
    ) -> tuple[CheckpointInfo, bytes]:
        data, version, created, meta = fields
        what = f"checkpoint {seq} of execution {execution_id!r}"
        if data is None or version is None or created is None:
            raise CorruptObjectError(f"{what} is incomplete in Redis (a field is missing)")
        info = CheckpointInfo(
            execution_id,
            seq,
            _decode(version),
            len(data),
            float(created),
            decode_metadata(meta, what),
        )
        return info, bytes(data)

    async def _load(self, execution_id: str, seq: int) -> tuple[CheckpointInfo, bytes] | None:
        fields = await self._call(
            f"loading checkpoint {seq} of execution {execution_id!r}",
            "HMGET",
            self._keys.checkpoint(execution_id, seq),
            "d",
            "v",
            "t",
            "m",
            idempotent=True,
        )
        if fields[0] is None and fields[1] is None:
            return None
        return self._checkpoint(execution_id, seq, fields)

    async def _load_latest(self, execution_id: str) -> tuple[CheckpointInfo, bytes] | None:
        what = f"loading the latest checkpoint of execution {execution_id!r}"
        reply = await self._script(
            "latest",
            [self._keys.seqs(execution_id)],
            [self._keys.base(execution_id) + "c:"],
            what=what,
            write=False,
            idempotent=True,
        )
        if reply is None:
            return None
        seq = _seq_from_member(reply[0], what)
        return self._checkpoint(execution_id, seq, reply[1:])

    async def _list(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
        after: int | None,
    ) -> Page[CheckpointInfo]:
        limit = min(limit, MAX_PAGE)
        bounds = [b for b in (decode_int_cursor(cursor), after) if b is not None]
        lower = max(bounds) if bounds else None
        if lower is not None and lower >= MAX_SEQ:
            return Page(())
        start = "-" if lower is None or lower < 0 else "(" + seq_member(lower)
        what = f"listing checkpoints of execution {execution_id!r}"
        flat = await self._script(
            "list",
            [self._keys.seqs(execution_id)],
            [start, limit + 1, self._keys.base(execution_id) + "c:"],
            what=what,
            write=False,
            idempotent=True,
        )
        items: list[CheckpointInfo] = []
        for i in range(0, len(flat), 5):
            member, version, created, meta, size = flat[i : i + 5]
            seq = _seq_from_member(member, what)
            if version is None or created is None:
                raise CorruptObjectError(
                    f"checkpoint {seq} of execution {execution_id!r} is listed but missing"
                )
            items.append(
                CheckpointInfo(
                    execution_id,
                    seq,
                    _decode(version),
                    int(size),
                    float(created),
                    decode_metadata(meta, f"checkpoint {seq} of execution {execution_id!r}"),
                )
            )
        more = len(items) > limit
        items = items[:limit]
        return Page(tuple(items), encode_int_cursor(items[-1].seq) if more else None)

    async def _delete(self, execution_id: str, seq: int, lease: Lease | None) -> bool:
        return bool(await self._delete_batch(execution_id, [seq], lease))

    async def _delete_many(
        self,
        execution_id: str,
        seqs: Iterable[int],
        lease: Lease | None,
    ) -> list[int]:
        """Delete in batches of :data:`DELETE_BATCH`, each one fenced atomic script; a
        FencedError stops before the next batch."""
        todo = sorted(set(seqs))
        deleted: list[int] = []
        for start in range(0, len(todo), DELETE_BATCH):
            deleted.extend(
                await self._delete_batch(execution_id, todo[start : start + DELETE_BATCH], lease)
            )
        return deleted

    async def _delete_batch(
        self,
        execution_id: str,
        seqs: list[int],
        lease: Lease | None,
    ) -> list[int]:
        keys = self._keys
        what = (
            f"deleting checkpoint {seqs[0]} of execution {execution_id!r}"
            if len(seqs) == 1
            else f"deleting {len(seqs)} checkpoints of execution {execution_id!r}"
        )
        reply = await self._script(
            "delete",
            [
                keys.seqs(execution_id),
                keys.lease(execution_id),
                keys.executions,
                keys.blobs(execution_id),
                keys.open,
                *(keys.checkpoint(execution_id, s) for s in seqs),
            ],
            [
                *self._fence_args(lease),
                execution_id,
                keys.base(execution_id) + "c:",
                *(seq_member(s) for s in seqs),
            ],
            what=what,
            write=True,
            idempotent=False,
        )
        if _status(reply) == b"fenced":
            assert lease is not None
            raise self._fenced_error("deleting checkpoints", lease, reply)
        return [_seq_from_member(member, what) for member in reply[1:]]

    # ----------------------------------------------------------------- executions

    async def _list_executions(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        if cursor is not None and not (
            isinstance(cursor, str) and EXECUTION_ID_RE.fullmatch(cursor)
        ):
            raise ValueError(f"invalid cursor {cursor!r}")
        limit = min(limit, MAX_PAGE)
        start = "-" if cursor is None else "(" + cursor
        members = await self._call(
            "listing executions",
            "ZRANGEBYLEX",
            self._keys.executions,
            start,
            "+",
            "LIMIT",
            0,
            limit + 1,
            idempotent=True,
        )
        ids = [_decode(member) for member in members]
        items = tuple(ExecutionInfo(execution_id) for execution_id in ids[:limit])
        return Page(items, items[-1].execution_id if len(ids) > limit else None)

    async def _delete_execution(self, execution_id: str) -> bool:
        keys = self._keys
        what = f"deleting execution {execution_id!r}"
        existed: bool | None = None
        while True:
            existed_now, more = await self._script(
                "delete_execution",
                [
                    keys.seqs(execution_id),
                    keys.blobs(execution_id),
                    keys.lease(execution_id),
                    keys.executions,
                    keys.open,
                ],
                [keys.base(execution_id), execution_id, DELETE_BATCH],
                what=what,
                write=True,
                idempotent=True,
            )
            if existed is None:
                existed = bool(existed_now)
            if not more:
                return existed

    async def _list_open(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        if cursor is not None and not (
            isinstance(cursor, str) and EXECUTION_ID_RE.fullmatch(cursor)
        ):
            raise ValueError(f"invalid cursor {cursor!r}")
        if not self._open_ready:
            await self._build_open_index()
        limit = min(limit, MAX_PAGE)
        start = "-" if cursor is None else "(" + cursor
        members = await self._call(
            "listing open executions",
            "ZRANGEBYLEX",
            self._keys.open,
            start,
            "+",
            "LIMIT",
            0,
            limit + 1,
            idempotent=True,
        )
        ids = [_decode(member) for member in members]
        items = tuple(ExecutionInfo(execution_id) for execution_id in ids[:limit])
        return Page(items, items[-1].execution_id if len(ids) > limit else None)

    async def _build_open_index(self) -> None:
        """Index the open executions of a store written before the index existed (once
        per store: then ``<prefix>:open-ready`` says the index is complete)."""
        if await self._call(
            "reading the open index's state", "EXISTS", self._keys.open_ready, idempotent=True
        ):
            self._open_ready = True
            return
        async for execution in self.iter_executions():
            await self._reindex(execution.execution_id)
        await self._call(
            "marking the open index complete", "SET", self._keys.open_ready, "1", idempotent=True
        )
        self._open_ready = True

    async def _reindex(self, execution_id: str) -> tuple[bool, bool]:
        """One atomic script: list the execution if it is open, else unlist it; return
        (was listed, is listed)."""
        was, now = await self._script(
            "reindex",
            [self._keys.seqs(execution_id), self._keys.open],
            [self._keys.base(execution_id) + "c:", execution_id],
            what=f"indexing execution {execution_id!r}",
            write=True,
            idempotent=True,
        )
        return bool(was), bool(now)

    async def _forget_if_finished(self, execution_id: str) -> bool:
        was, now = await self._reindex(execution_id)
        return was and not now

    # --------------------------------------------------------------------- leases

    async def _claim(self, execution_id: str, owner: str, ttl: float) -> Lease:
        return await self._claim_if(execution_id, owner, ttl, None)

    async def _take_over(self, lease: Lease, owner: str, ttl: float) -> Lease:
        return await self._claim_if(lease.execution_id, owner, ttl, lease)

    async def _claim_if(
        self, execution_id: str, owner: str, ttl: float, dead: Lease | None
    ) -> Lease:
        """One CLAIM script; with ``dead``, it also replaces ``dead`` while it is live."""
        keys = self._keys
        reply = await self._script(
            "claim",
            [keys.lease(execution_id), keys.executions, keys.counter],
            [
                _encode_owner(owner),
                repr(float(ttl)),
                execution_id,
                str(dead.epoch) if dead else "",
                _encode_owner(dead.owner) if dead else b"",
            ],
            what=f"claiming execution {execution_id!r}",
            write=True,
            # A take-over retried after a lost reply would look like a lost race.
            idempotent=dead is None,
        )
        if _status(reply) == b"held":
            holder, expires_at = _decode(reply[1]), float(reply[2])
            raise LeaseHeldError(
                f"execution {execution_id!r} is leased by {holder!r} until "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(expires_at))} UTC",
                owner=holder,
                expires_at=expires_at,
            )
        return Lease(execution_id, owner, int(reply[1]), float(reply[2]))

    async def _renew(self, lease: Lease, ttl: float) -> Lease:
        what = f"renewing the lease on execution {lease.execution_id!r}"
        reply = await self._script(
            "renew",
            [self._keys.lease(lease.execution_id)],
            [*self._fence_args(lease), repr(float(ttl))],
            what=what,
            write=True,
            idempotent=True,
        )
        if _status(reply) == b"fenced":
            raise fenced(lease, "renewing the lease")
        return Lease(lease.execution_id, lease.owner, lease.epoch, float(reply[1]))

    async def _release(self, lease: Lease) -> None:
        await self._script(
            "release",
            [self._keys.lease(lease.execution_id)],
            self._fence_args(lease),
            what=f"releasing the lease on execution {lease.execution_id!r}",
            write=True,
            idempotent=True,
        )

    async def _get_lease(self, execution_id: str) -> Lease | None:
        owner, epoch, expires, released = await self._call(
            f"reading the lease on execution {execution_id!r}",
            "HMGET",
            self._keys.lease(execution_id),
            "owner",
            "epoch",
            "expires",
            "released",
            idempotent=True,
        )
        if epoch is None or owner is None or expires is None:
            return None
        return Lease(
            execution_id,
            _decode(owner),
            int(epoch),
            float(expires),
            released=released in (b"1", "1"),
        )

    # ---------------------------------------------------------------------- blobs

    async def _put_blob(self, execution_id: str, digest: str, stored: bytes) -> bool:
        what = f"storing blob {digest} of execution {execution_id!r}"
        if len(stored) >= BLOB_PRECHECK_SIZE and await self._has_blob(execution_id, digest):
            return False
        keys = self._keys
        reply = await self._script(
            "put_blob",
            [keys.blob(execution_id, digest), keys.blobs(execution_id), keys.executions],
            [stored, digest, execution_id],
            what=what,
            write=True,
            idempotent=True,
        )
        return bool(reply)

    async def _get_blob(self, execution_id: str, digest: str) -> bytes | None:
        data = await self._call(
            f"reading blob {digest} of execution {execution_id!r}",
            "HGET",
            self._keys.blob(execution_id, digest),
            "d",
            idempotent=True,
        )
        return None if data is None else bytes(data)

    async def _has_blob(self, execution_id: str, digest: str) -> bool:
        found = await self._call(
            f"looking up blob {digest} of execution {execution_id!r}",
            "EXISTS",
            self._keys.blob(execution_id, digest),
            idempotent=True,
        )
        return bool(found)

    async def _list_blobs(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
    ) -> Page[BlobInfo]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if cursor is not None and not (isinstance(cursor, str) and DIGEST_RE.fullmatch(cursor)):
            raise ValueError(f"invalid cursor {cursor!r}")
        limit = min(limit, MAX_PAGE)
        start = "-" if cursor is None else "(" + cursor
        flat = await self._script(
            "list_blobs",
            [self._keys.blobs(execution_id)],
            [start, limit + 1, self._keys.base(execution_id) + "b:"],
            what=f"listing blobs of execution {execution_id!r}",
            write=False,
            idempotent=True,
        )
        items: list[BlobInfo] = []
        for i in range(0, len(flat), 3):
            digest, created, size = flat[i : i + 3]
            if created is None:
                raise CorruptObjectError(
                    f"blob {_decode(digest)} of execution {execution_id!r} is listed but missing"
                )
            items.append(BlobInfo(_decode(digest), int(size), float(created)))
        more = len(items) > limit
        items = items[:limit]
        return Page(tuple(items), items[-1].digest if more else None)

    async def _delete_blob(self, execution_id: str, digest: str) -> bool:
        keys = self._keys
        reply = await self._script(
            "delete_blob",
            [
                keys.blob(execution_id, digest),
                keys.blobs(execution_id),
                keys.seqs(execution_id),
                keys.lease(execution_id),
                keys.executions,
            ],
            [digest, execution_id],
            what=f"deleting blob {digest} of execution {execution_id!r}",
            write=True,
            idempotent=False,
        )
        return bool(reply)


async def _execute(client: Redis, command: Sequence[Any]) -> Any:
    """``client.execute_command(*command)`` (untyped in redis-py)."""
    run = cast("Callable[..., Awaitable[Any]]", client.execute_command)
    return await run(*command)


def _status(reply: Any) -> Any:
    """The status word of a script reply (``b"ok"``, ``b"fenced"``, ...) or the reply."""
    if isinstance(reply, list) and reply:
        return reply[0]
    return reply
