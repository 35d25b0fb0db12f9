"""The PostgreSQL checkpoint provider."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import select
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self

import psycopg
from psycopg import errors as pg_errors
from psycopg import pq
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from durably.errors import (
    LeaseHeldError,
    StoreError,
    already_exists,
    fenced,
    precondition_failed,
)
from durably.storage import (
    BlobInfo,
    Capability,
    CheckpointInfo,
    CheckpointProvider,
    ExecutionInfo,
    ExpectedVersion,
    Lease,
    OwnerLock,
    Page,
    WriteMode,
    call_with_retries,
    decode_int_cursor,
    encode_int_cursor,
)
from durably_postgres._errors import (
    connect_error,
    connect_error_is_permanent,
    detail_of,
    is_connection_loss,
    is_rolled_back,
    translate,
)
from durably_postgres._migrations import MigrationReport, ensure_schema, quote_ident
from durably_postgres._options import PostgresOptions, Target, parse_options, parse_target
from durably_postgres._sql import SaveKind, Statements, render

log = logging.getLogger("durably.postgres")

MAX_PAGE = 1000
"""Listings return at most this many items per page."""
DELETE_BATCH = 1000
"""Prune deletes this many checkpoints per statement (short row locks, no table lock)."""
BLOB_PRECHECK_SIZE = 1024 * 1024
"""put_blob first asks whether a blob this large is already stored, to avoid sending it."""
STATEMENT_RETRIES = 3
"""Retries of a statement the server rolled back (deadlock, serialization failure) or,
for idempotent operations, of one whose connection broke."""
NUL_KEY = "~nul"
"""Metadata values containing NUL (which jsonb cannot hold) are stored split on NUL under
this key; it can never be a metadata key (keys start with ``[a-z0-9]``)."""

Row = TupleRow
AsyncConn = psycopg.AsyncConnection[TupleRow]


def _encode_metadata(metadata: Mapping[str, str]) -> Jsonb:
    plain: dict[str, Any] = {}
    split: dict[str, list[str]] = {}
    for key, value in metadata.items():
        if "\x00" in value:
            split[key] = value.split("\x00")
        else:
            plain[key] = value
    if split:
        plain[NUL_KEY] = split
    return Jsonb(plain)


def _decode_metadata(raw: Any) -> dict[str, str]:
    if not raw:
        return {}
    meta = dict(raw)
    split = meta.pop(NUL_KEY, None)
    if split:
        for key, parts in split.items():
            meta[key] = "\x00".join(parts)
    return {str(k): str(v) for k, v in meta.items()}


class _SessionOwnerLock(OwnerLock):
    """A session-level advisory lock held on a connection of its own: the server drops
    it when the session ends -- when this process dies or its connection is cut."""

    def __init__(self, conn: AsyncConn, key: int) -> None:
        self._conn: AsyncConn | None = conn
        self._key = key

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Unlock first: the server ends a closed session asynchronously, and a probe
            # right after release must already find the lock free.
            with contextlib.suppress(Exception):
                await conn.execute("SELECT pg_advisory_unlock(%s::int8)", (self._key,))
            with contextlib.suppress(Exception):
                await conn.close()


def _readable(fd: int) -> bool:
    """Whether ``fd`` has input (or EOF) pending, without blocking."""
    if hasattr(select, "poll"):  # not limited to fds < 1024 like select()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


async def _discard_if_dead(conn: AsyncConn) -> None:
    """Pool ``check``: reject an idle connection the server has already given up on.

    An idle connection has nothing to read unless the server sent something -- e.g.
    the FATAL message and EOF of a terminated backend or a restarted server. Looking
    costs no round trip (a zero-timeout ``select`` on the socket), and keeps a stale
    connection from failing a non-retryable write.
    """
    try:
        for _ in range(3):  # a FATAL message, then EOF: the second read fails
            if not _readable(conn.fileno()):
                break
            conn.pgconn.consume_input()
            if conn.pgconn.status != pq.ConnStatus.OK:
                raise psycopg.OperationalError("the server closed the connection")
    except (psycopg.Error, OSError, ValueError):
        await conn.close()
        raise psycopg.OperationalError("stale pooled connection discarded") from None


def _check_owner(owner: str) -> None:
    if not isinstance(owner, str) or not owner or len(owner) > 200 or "\x00" in owner:
        raise ValueError("owner must be a non-empty string of at most 200 characters")
    _check_encodable(owner)


def _check_encodable(owner: str) -> None:
    """The core accepts any str as owner; PostgreSQL text must be valid UTF-8."""
    try:
        owner.encode()
    except UnicodeEncodeError:
        raise ValueError(f"owner {owner!r} is not valid Unicode (lone surrogate)") from None


def _check_ttl(ttl: float) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (0 < ttl <= 365 * 86400):
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")


class PostgresProvider(CheckpointProvider):
    """Checkpoints, leases and blobs in PostgreSQL tables (``postgresql://`` URLs).

    Create it with :meth:`from_url`; no connection is made until the first operation,
    which connects (retrying transient failures with backoff), migrates the schema if
    needed (see :func:`~durably_postgres.migrate`) and opens a
    ``psycopg_pool.AsyncConnectionPool``. :meth:`close` closes the pool.

    Guarantees beyond the base contract:

    * Every write is ONE SQL statement on an autocommit connection -- one round trip,
      one transaction. A save with a lease checks the execution's epoch under a row lock
      and inserts the checkpoint in that same statement, so a superseded owner can never
      make a write durable, and a failure (even a connection lost mid-statement) leaves
      nothing behind.
    * Epochs and versions come from schema-wide sequences: they never repeat, not even
      after :meth:`delete_execution`.
    * :meth:`claim_next` hands out executions whose lease expired (``FOR UPDATE SKIP
      LOCKED``), for workers.
    """

    scheme: ClassVar[str] = "postgresql"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.PERSISTENT,
            Capability.SHARED,
            Capability.LARGE_OBJECTS,
            Capability.TAKEOVER,
            Capability.OWNER_LOCK,
            Capability.CLAIM_NEXT,
        }
    )

    def __init__(self, target: Target, options: PostgresOptions) -> None:
        """Prefer :meth:`from_url`. Performs no I/O."""
        super().__init__()
        self._target = target
        self._options = options
        self._sql: Statements = render(quote_ident(options.schema), options.lease_clock)
        self._pool: AsyncConnectionPool[AsyncConn] | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> Self:
        """Create a provider for ``postgresql://`` (or ``postgres://``) ``url``; no I/O.

        The URL is a libpq connection URI; what it leaves out comes from the ``PG*``
        environment variables (a bare ``postgresql://`` uses them entirely).

        Args:
            url: ``postgresql://user[:password]@host[:port]/dbname[?param=value...]``.
            options: The ``[durability.postgres]`` table: ``schema``, ``pool_min_size``,
                ``pool_max_size``, ``pool_timeout``, ``application_name``,
                ``connect_timeout``, ``connect_retries``, ``statement_timeout``,
                ``lease_clock``, ``migrate``, ``prepared_statements``.

        Raises:
            ConfigError: Not a PostgreSQL URL, an unparsable URL, or an unknown or
                invalid option (named in the message).
        """
        opts = parse_options(options)
        return cls(parse_target(url, opts), opts)

    @property
    def options(self) -> PostgresOptions:
        """The validated options."""
        return self._options

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding this store's tables."""
        return self._options.schema

    def describe(self) -> str:
        """``postgresql://user@host:port/db (schema NAME)`` -- never the password."""
        return f"{self._target.where} (schema {self._options.schema})"

    # ------------------------------------------------------------------ plumbing

    async def _connect(self) -> AsyncConn:
        """One connection, retrying transient failures with exponential backoff."""
        attempts = self._options.connect_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return await psycopg.AsyncConnection.connect(
                    self._target.conninfo(), autocommit=True
                )
            except psycopg.Error as exc:
                if connect_error_is_permanent(exc) or attempt == attempts:
                    raise connect_error(exc, self._target, attempt) from exc
                delay = min(5.0, 0.2 * 2 ** (attempt - 1)) * (0.5 + random.random())
                log.warning(
                    "cannot connect to %s (%s); retrying in %.1f s (attempt %d of %d)",
                    self._target.where,
                    detail_of(exc, self._target),
                    delay,
                    attempt,
                    attempts,
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _migrate(self, *, migrate: bool) -> MigrationReport:
        conn = await self._connect()
        try:
            return await ensure_schema(conn, self._options.schema, migrate=migrate)
        except psycopg.Error as exc:
            raise translate(
                exc, "preparing the schema", self._target, schema=self._options.schema
            ) from exc
        finally:
            await conn.close()

    async def _ready(self) -> AsyncConnectionPool[AsyncConn]:
        pool = self._pool
        if pool is not None:
            return pool
        if self._closed:
            raise StoreError(f"the PostgreSQL store {self.describe()} is closed")
        async with self._lock:
            if self._pool is None:
                if self._closed:
                    raise StoreError(f"the PostgreSQL store {self.describe()} is closed")
                await self._migrate(migrate=self._options.migrate)
                kwargs: dict[str, Any] = {"autocommit": True}
                if not self._options.prepared_statements:
                    kwargs["prepare_threshold"] = None
                pool = AsyncConnectionPool(
                    self._target.conninfo(),
                    kwargs=kwargs,
                    check=_discard_if_dead,
                    min_size=self._options.pool_min_size,
                    max_size=self._options.pool_max_size,
                    timeout=self._options.pool_timeout,
                    name=f"durably {self._target.where}",
                    open=False,
                )
                await pool.open(wait=False)
                self._pool = pool
            return self._pool

    async def _run(
        self,
        what: str,
        name: str,
        params: dict[str, Any],
        *,
        idempotent: bool,
        sql: str | None = None,
    ) -> list[Row]:
        """Run one statement (one round trip) and return its rows.

        Statements the server rolled back (deadlock, serialization failure) are retried;
        so are ``idempotent`` ones whose connection broke. Errors become durably errors.
        """
        pool = await self._ready()
        query = sql if sql is not None else self._sql[name]
        if self._options.lease_clock == "client":
            params["now"] = time.time()

        async def attempt() -> list[Row]:
            async with pool.connection() as conn:
                cur = await conn.execute(query, params, binary=True)
                return await cur.fetchall()

        return await call_with_retries(
            attempt,
            what=what,
            catch=psycopg.Error,
            retryable=lambda exc: is_rolled_back(exc) or (idempotent and is_connection_loss(exc)),
            translate=lambda exc: translate(exc, what, self._target, schema=self._options.schema),
            retries=STATEMENT_RETRIES,
            log=log,
            where=self._target.where,
            describe=lambda exc: detail_of(exc, self._target),
            backoff=lambda n: 0.05 * n * (0.5 + random.random()),
        )

    async def _close(self) -> None:
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _lease_params(self, lease: Lease) -> dict[str, Any]:
        return {"epoch": lease.epoch, "owner": lease.owner}

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
        kind: SaveKind
        params: dict[str, Any] = {
            "id": execution_id,
            "seq": seq,
            "data": stored,
            "size": len(stored),
            "meta": _encode_metadata(metadata),
            "status": metadata.get("durably.status"),
        }
        if isinstance(mode, ExpectedVersion):
            kind = "expected"
            expected = mode.version
            params["expected"] = (
                int(expected)
                if expected.isascii() and expected.isdigit() and len(expected) < 19
                else -1
            )
        else:
            kind = mode
        if lease is not None:
            params.update(self._lease_params(lease))
        what = f"saving checkpoint {seq} of execution {execution_id!r}"
        rows = await self._run(
            what, "", params, idempotent=False, sql=self._sql.save(kind, lease is not None)
        )
        fence_ok, version, created_at = rows[0]
        if not fence_ok:
            assert lease is not None
            raise fenced(lease, f"saving checkpoint {seq}")
        if version is None:
            if kind == "create":
                raise already_exists(execution_id, seq)
            assert isinstance(mode, ExpectedVersion)
            raise precondition_failed(execution_id, seq, mode.version)
        return CheckpointInfo(
            execution_id, seq, str(version), len(stored), created_at, dict(metadata)
        )

    def _info(self, execution_id: str, row: Row) -> CheckpointInfo:
        seq, version, size, created_at, metadata = row[:5]
        return CheckpointInfo(
            execution_id,
            int(seq),
            str(version),
            int(size),
            float(created_at),
            _decode_metadata(metadata),
        )

    async def _load(self, execution_id: str, seq: int) -> tuple[CheckpointInfo, bytes] | None:
        rows = await self._run(
            f"loading checkpoint {seq} of execution {execution_id!r}",
            "load",
            {"id": execution_id, "seq": seq},
            idempotent=True,
        )
        if not rows:
            return None
        return self._info(execution_id, rows[0]), bytes(rows[0][5])

    async def _load_latest(self, execution_id: str) -> tuple[CheckpointInfo, bytes] | None:
        rows = await self._run(
            f"loading the latest checkpoint of execution {execution_id!r}",
            "load_latest",
            {"id": execution_id},
            idempotent=True,
        )
        if not rows:
            return None
        return self._info(execution_id, rows[0]), bytes(rows[0][5])

    async def _list(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
        after: int | None,
    ) -> Page[CheckpointInfo]:
        start = decode_int_cursor(cursor)
        lower = max(-1 if start is None else start, -1 if after is None else after)
        limit = min(limit, MAX_PAGE)
        rows = await self._run(
            f"listing checkpoints of execution {execution_id!r}",
            "list",
            {"id": execution_id, "after": lower, "limit": limit + 1},
            idempotent=True,
        )
        items = tuple(self._info(execution_id, row) for row in rows[:limit])
        more = len(rows) > limit
        return Page(items, encode_int_cursor(items[-1].seq) if more else None)

    async def _delete(self, execution_id: str, seq: int, lease: Lease | None) -> bool:
        return bool(await self._delete_batch(execution_id, [seq], lease))

    async def _delete_many(
        self,
        execution_id: str,
        seqs: Iterable[int],
        lease: Lease | None,
    ) -> list[int]:
        """Delete in batches of :data:`DELETE_BATCH` (``seq = ANY(array)``), each one
        fenced statement; a FencedError stops before the next batch."""
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
        params: dict[str, Any] = {"id": execution_id, "seqs": seqs}
        if lease is not None:
            params.update(self._lease_params(lease))
        what = (
            f"deleting checkpoint {seqs[0]} of execution {execution_id!r}"
            if len(seqs) == 1
            else f"deleting {len(seqs)} checkpoints of execution {execution_id!r}"
        )
        rows = await self._run(
            what, "", params, idempotent=False, sql=self._sql.delete(lease is not None)
        )
        fence_ok, done = rows[0]
        if not fence_ok:
            assert lease is not None
            raise fenced(lease, "deleting checkpoints")
        return [int(seq) for seq in done]

    # ----------------------------------------------------------------- executions

    async def _list_executions(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        limit = min(limit, MAX_PAGE)
        rows = await self._run(
            "listing executions",
            "list_executions",
            {"cursor": cursor or "", "limit": limit + 1},
            idempotent=True,
        )
        items = tuple(ExecutionInfo(str(row[0]), float(row[1])) for row in rows[:limit])
        return Page(items, items[-1].execution_id if len(rows) > limit else None)

    async def _delete_execution(self, execution_id: str) -> bool:
        what = f"deleting execution {execution_id!r}"
        for attempt in range(STATEMENT_RETRIES + 1):
            try:
                rows = await self._run(
                    what, "delete_execution", {"id": execution_id}, idempotent=True
                )
                return bool(rows[0][0])
            except StoreError as exc:
                # A checkpoint committed by a concurrent save after this statement's
                # snapshot makes the foreign key fail: delete again, with a new snapshot.
                if (
                    not isinstance(exc.__cause__, pg_errors.ForeignKeyViolation)
                    or attempt == STATEMENT_RETRIES
                ):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # --------------------------------------------------------------------- leases

    async def _claim(self, execution_id: str, owner: str, ttl: float) -> Lease:
        _check_encodable(owner)
        what = f"claiming execution {execution_id!r}"
        params = {"id": execution_id, "owner": owner, "ttl": float(ttl)}
        for _ in range(STATEMENT_RETRIES + 1):
            rows = await self._run(what, "claim", dict(params), idempotent=True)
            if rows:
                epoch, expires_at = rows[0]
                return Lease(execution_id, owner, int(epoch), float(expires_at))
            held = await self._run(what, "lease_holder", {"id": execution_id}, idempotent=True)
            if held and not held[0][2]:
                holder, expires_at, _ = held[0]
                raise LeaseHeldError(
                    f"execution {execution_id!r} is leased by {holder!r} until "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(expires_at))} UTC",
                    owner=holder,
                    expires_at=float(expires_at),
                )
            # The lease expired or was released in between: claim again.
        raise LeaseHeldError(f"execution {execution_id!r} is contended: claim it again")

    async def _take_over(self, lease: Lease, owner: str, ttl: float) -> Lease:
        _check_encodable(owner)
        execution_id = lease.execution_id
        what = f"taking execution {execution_id!r} over"
        params = {
            "id": execution_id,
            "owner": owner,
            "ttl": float(ttl),
            "dead_epoch": lease.epoch,
            "dead_owner": lease.owner,
        }
        # Not retried on a lost connection: a take-over that did commit would then look
        # like a lost race.
        rows = await self._run(what, "take_over", params, idempotent=False)
        if rows:
            epoch, expires_at = rows[0]
            return Lease(execution_id, owner, int(epoch), float(expires_at))
        # No row to update (never claimed) or another live lease: what claim says.
        return await self._claim(execution_id, owner, ttl)

    def _lock_key(self, execution_id: str) -> tuple[int, int, int]:
        """The session advisory lock of an execution: (bigint key, high, low halves)."""
        digest = hashlib.blake2b(
            f"durably\0{self.schema}\0{execution_id}".encode(), digest_size=8
        ).digest()
        key = int.from_bytes(digest, "big") >> 1  # a positive bigint
        return key, key >> 32, key & 0xFFFFFFFF

    async def _lock_owner(self, execution_id: str) -> OwnerLock | None:
        await self._ready()
        key, _, _ = self._lock_key(execution_id)
        conn = await self._connect()
        try:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s::int8)", (key,))
            row = await cur.fetchone()
        except psycopg.Error as exc:
            await conn.close()
            raise translate(
                exc,
                f"locking the owner of execution {execution_id!r}",
                self._target,
                schema=self._options.schema,
            ) from exc
        except BaseException:
            await conn.close()
            raise
        if not row or not row[0]:
            await conn.close()
            return None
        return _SessionOwnerLock(conn, key)

    async def _owner_lock_free(self, execution_id: str) -> bool:
        _, hi, lo = self._lock_key(execution_id)
        rows = await self._run(
            f"probing the owner lock of execution {execution_id!r}",
            "owner_lock_held",
            {"hi": hi, "lo": lo},
            idempotent=True,
        )
        return not rows[0][0]

    async def _renew(self, lease: Lease, ttl: float) -> Lease:
        params = {"id": lease.execution_id, "ttl": float(ttl), **self._lease_params(lease)}
        rows = await self._run(
            f"renewing the lease on execution {lease.execution_id!r}",
            "renew",
            params,
            idempotent=True,
        )
        if not rows:
            raise fenced(lease, "renewing the lease")
        return Lease(lease.execution_id, lease.owner, lease.epoch, float(rows[0][0]))

    async def _release(self, lease: Lease) -> None:
        params = {"id": lease.execution_id, **self._lease_params(lease)}
        await self._run(
            f"releasing the lease on execution {lease.execution_id!r}",
            "release",
            params,
            idempotent=True,
        )

    async def _get_lease(self, execution_id: str) -> Lease | None:
        rows = await self._run(
            f"reading the lease on execution {execution_id!r}",
            "get_lease",
            {"id": execution_id},
            idempotent=True,
        )
        if not rows:
            return None
        owner, epoch, expires_at, released = rows[0]
        return Lease(
            execution_id, str(owner), int(epoch), float(expires_at), released=bool(released)
        )

    async def claim_next(
        self,
        owner: str,
        *,
        ttl: float,
        exclude_completed: bool = True,
        include_unclaimed: bool = True,
    ) -> Lease | None:
        """Claim one execution that nobody holds a live lease on, for a worker.

        The :attr:`~durably.storage.Capability.CLAIM_NEXT` fast path that ``durably
        worker`` uses (see :class:`~durably.storage.ClaimsNext`). Candidates are
        executions whose lease expired or was released -- and, with
        ``include_unclaimed``, executions that were never claimed -- skipping finished
        ones (latest ``durably.status`` metadata ``"completed"`` or ``"failed"``) unless
        ``exclude_completed`` is false. With the defaults the candidates are read from
        the partial index ``executions_open_idx``, which holds unfinished executions
        only: the cost does not grow with the number of finished ones. The candidate row
        is locked with ``FOR NO KEY UPDATE SKIP LOCKED``, so concurrent workers never get
        the same execution and do not wait for each other. The longest-expired lease is
        taken first.

        Returns:
            The new lease (epoch greater than any before), or None if nothing is claimable.
        """
        _check_owner(owner)
        _check_ttl(ttl)
        rows = await self._run(
            "claiming the next execution",
            f"claim_next:{int(exclude_completed)}:{int(include_unclaimed)}",
            {"owner": owner, "ttl": float(ttl)},
            idempotent=False,
        )
        if not rows:
            return None
        execution_id, epoch, expires_at = rows[0]
        return Lease(str(execution_id), owner, int(epoch), float(expires_at))

    # ---------------------------------------------------------------------- blobs

    async def _put_blob(self, execution_id: str, digest: str, stored: bytes) -> bool:
        what = f"storing blob {digest} of execution {execution_id!r}"
        if len(stored) >= BLOB_PRECHECK_SIZE and await self._has_blob(execution_id, digest):
            return False
        rows = await self._run(
            what,
            "put_blob",
            {"id": execution_id, "digest": digest, "data": stored, "size": len(stored)},
            idempotent=True,
        )
        return bool(rows[0][0])

    async def _get_blob(self, execution_id: str, digest: str) -> bytes | None:
        rows = await self._run(
            f"reading blob {digest} of execution {execution_id!r}",
            "get_blob",
            {"id": execution_id, "digest": digest},
            idempotent=True,
        )
        return bytes(rows[0][0]) if rows else None

    async def _has_blob(self, execution_id: str, digest: str) -> bool:
        rows = await self._run(
            f"looking up blob {digest} of execution {execution_id!r}",
            "has_blob",
            {"id": execution_id, "digest": digest},
            idempotent=True,
        )
        return bool(rows[0][0])

    async def _list_blobs(
        self,
        execution_id: str,
        cursor: str | None,
        limit: int,
    ) -> Page[BlobInfo]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        limit = min(limit, MAX_PAGE)
        rows = await self._run(
            f"listing blobs of execution {execution_id!r}",
            "list_blobs",
            {"id": execution_id, "cursor": cursor or "", "limit": limit + 1},
            idempotent=True,
        )
        items = tuple(BlobInfo(str(d), int(size), float(at)) for d, size, at in rows[:limit])
        return Page(items, items[-1].digest if len(rows) > limit else None)

    async def _delete_blob(self, execution_id: str, digest: str) -> bool:
        rows = await self._run(
            f"deleting blob {digest} of execution {execution_id!r}",
            "delete_blob",
            {"id": execution_id, "digest": digest},
            idempotent=True,
        )
        return bool(rows)
