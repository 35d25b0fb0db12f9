"""The PostgreSQL checkpoint provider: the contract's methods, in the contract's order.

Each method is one call into the module that holds its mechanics:
:mod:`~durably_postgres._checkpoints`, :mod:`~durably_postgres._executions`,
:mod:`~durably_postgres._leases` (with the owner lock and ``claim_next``) and
:mod:`~durably_postgres._blobs`, all of them running the statements of
:mod:`~durably_postgres._sql` through :class:`~durably_postgres._client.PostgresClient`.
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
    OwnerLock,
    Page,
    WriteMode,
)
from durably_postgres import _blobs, _checkpoints, _executions, _leases
from durably_postgres._blobs import BLOB_PRECHECK_SIZE
from durably_postgres._checkpoints import DELETE_BATCH
from durably_postgres._client import PostgresClient
from durably_postgres._options import PostgresOptions, Target, parse_options, parse_target

__all__ = ["BLOB_PRECHECK_SIZE", "DELETE_BATCH", "PostgresProvider"]


class PostgresProvider(CheckpointProvider):
    """Checkpoints, leases and blobs in PostgreSQL tables (``postgresql://`` URLs).

    Create it with :meth:`from_url`; no connection is made until the first operation,
    which connects (retrying transient failures with backoff), migrates the schema if
    needed (see :func:`~durably_postgres.migrate`) and opens a
    ``psycopg_pool.AsyncConnectionPool`` -- shared with the process's other providers
    on the same server and options (:mod:`durably_postgres._engine`: at most
    ``pool_max_size + 1`` connections per process). :meth:`close` lets go of it; the
    last provider to close closes the pool.

    Guarantees beyond the base contract:

    * Every write is ONE SQL statement -- one round trip, one transaction, or, for saves
      that queued while another was in flight, one statement each in a shared
      transaction (group commit). A save with a lease checks the execution's epoch under
      a row lock and inserts the checkpoint in that same statement, so a superseded
      owner can never make a write durable, and a failure (even a connection lost
      mid-statement) leaves nothing behind. A save returns only once committed.
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
        self._db = PostgresClient(target, options, self.describe)

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> Self:
        """Create a provider for ``postgresql://`` (or ``postgres://``) ``url``; no I/O.

        The URL is a libpq connection URI; what it leaves out comes from the ``PG*``
        environment variables (a bare ``postgresql://`` uses them entirely).

        Args:
            url: ``postgresql://user[:password]@host[:port]/dbname[?param=value...]``.
            options: The ``[durability.postgres]`` table: ``schema``, ``pool_min_size``,
                ``pool_max_size``, ``pool_timeout``, ``pool_linger``, ``application_name``,
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
        """One ``SELECT ... WHERE seq = ANY(...)`` for the whole page."""
        return await _checkpoints.load_many(self._db, execution_id, list(seqs))

    async def _load_latest(self, execution_id: str) -> tuple[CheckpointInfo, bytes] | None:
        return await _checkpoints.load(self._db, execution_id, None)

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
        """Delete in batches of :data:`DELETE_BATCH` (``seq = ANY(array)``), each one
        fenced statement; a FencedError stops before the next batch."""
        delete = partial(_checkpoints.delete, self._db, execution_id, lease=lease)
        return await delete_in_batches(seqs, DELETE_BATCH, delete)

    # ----------------------------------------------------------------- executions

    async def _list_executions(self, cursor: str | None, limit: int) -> Page[ExecutionInfo]:
        return await _executions.list_executions(self._db, cursor, limit)

    async def _delete_execution(self, execution_id: str) -> bool:
        return await _executions.delete_execution(self._db, execution_id)

    # --------------------------------------------------------------------- leases

    async def _claim(self, execution_id: str, owner: str, ttl: float) -> Lease:
        return await _leases.claim(self._db, execution_id, owner, ttl)

    async def _renew(self, lease: Lease, ttl: float) -> Lease:
        return await _leases.renew(self._db, lease, ttl)

    async def _release(self, lease: Lease) -> None:
        await _leases.release(self._db, lease)

    async def _get_lease(self, execution_id: str) -> Lease | None:
        return await _leases.get_lease(self._db, execution_id)

    async def _take_over(self, lease: Lease, owner: str, ttl: float) -> Lease:
        return await _leases.take_over(self._db, lease, owner, ttl)

    async def _lock_owner(self, execution_id: str) -> OwnerLock | None:
        return await _leases.lock_owner(self._db, execution_id)

    async def _owner_lock_free(self, execution_id: str) -> bool:
        return await _leases.owner_lock_free(self._db, execution_id)

    # ---------------------------------------------------------------------- blobs

    async def _put_blob(self, execution_id: str, digest: str, stored: bytes) -> bool:
        return await _blobs.put_blob(self._db, execution_id, digest, stored)

    async def _put_blobs(self, execution_id: str, blobs: Mapping[str, bytes]) -> dict[str, bool]:
        """A batch as one multi-row insert per 16 MiB (see ``_blobs.put_blobs``)."""
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

    # ------------------------------------------------------ beyond the contract

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
        return await _leases.claim_next(
            self._db,
            owner,
            ttl,
            exclude_completed=exclude_completed,
            include_unclaimed=include_unclaimed,
        )
