"""Leases in PostgreSQL: the lease columns of ``executions``, epochs from a sequence.

Claims, renewals and releases are single statements (:mod:`durably_postgres._sql`); an
epoch comes from a schema-wide sequence, so it never repeats, not even after
``delete_execution`` (C15, C16, C23). The owner lock (C30) is a session-level advisory
lock, held on the one session the process keeps for them
(:mod:`durably_postgres._ownerlocks`); the server drops it when the session ends.
:func:`claim_next` is the ``CLAIM_NEXT`` fast path for workers (``FOR NO KEY UPDATE SKIP
LOCKED``).
"""

from __future__ import annotations

import hashlib

import psycopg

from durably.errors import OwnerLockLostError, fenced, lease_held
from durably.storage import Lease, OwnerLock
from durably_postgres._checkpoints import lease_params
from durably_postgres._client import STATEMENT_RETRIES, PostgresClient
from durably_postgres._ownerlocks import OwnerLockSession

__all__ = [
    "check_claim_next",
    "claim",
    "claim_next",
    "get_lease",
    "lock_owner",
    "owner_lock_free",
    "release",
    "renew",
    "take_over",
]


def _check_encodable(owner: str) -> None:
    """The core accepts any str as owner; PostgreSQL text must be valid UTF-8."""
    try:
        owner.encode()
    except UnicodeEncodeError:
        raise ValueError(f"owner {owner!r} is not valid Unicode (lone surrogate)") from None


def check_claim_next(owner: str, ttl: float) -> None:
    """Validate the arguments of :func:`claim_next` (the core does not see them)."""
    if not isinstance(owner, str) or not owner or len(owner) > 200 or "\x00" in owner:
        raise ValueError("owner must be a non-empty string of at most 200 characters")
    _check_encodable(owner)
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not (0 < ttl <= 365 * 86400):
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")


async def claim(db: PostgresClient, execution_id: str, owner: str, ttl: float) -> Lease:
    """The ``claim`` statement; if it loses, who holds the lease (C15)."""
    _check_encodable(owner)
    what = f"claiming execution {execution_id!r}"
    params = {"id": execution_id, "owner": owner, "ttl": float(ttl)}
    for _ in range(STATEMENT_RETRIES + 1):
        rows = await db.run(what, "claim", dict(params), idempotent=True)
        if rows:
            epoch, expires_at = rows[0]
            return Lease(execution_id, owner, int(epoch), float(expires_at))
        held = await db.run(what, "lease_holder", {"id": execution_id}, idempotent=True)
        if held and not held[0][2]:
            holder, expires_at, _ = held[0]
            raise lease_held(execution_id, holder, float(expires_at))
        # The lease expired or was released in between: claim again.
    raise lease_held(execution_id, None, None)


async def take_over(db: PostgresClient, lease: Lease, owner: str, ttl: float) -> Lease:
    """The ``take_over`` statement; else what a claim says (C29)."""
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
    rows = await db.run(what, "take_over", params, idempotent=False)
    if rows:
        epoch, expires_at = rows[0]
        return Lease(execution_id, owner, int(epoch), float(expires_at))
    # No row to update (never claimed) or another live lease: what claim says.
    return await claim(db, execution_id, owner, ttl)


async def renew(db: PostgresClient, lease: Lease, ttl: float) -> Lease:
    """The ``renew`` statement: a new expiry if the epoch is still current (C16)."""
    params = {"id": lease.execution_id, "ttl": float(ttl), **lease_params(lease)}
    rows = await db.run(
        f"renewing the lease on execution {lease.execution_id!r}", "renew", params, idempotent=True
    )
    if not rows:
        raise fenced(lease, "renewing the lease")
    return Lease(lease.execution_id, lease.owner, lease.epoch, float(rows[0][0]))


async def release(db: PostgresClient, lease: Lease) -> None:
    """The ``release`` statement (a superseded lease changes nothing, C23)."""
    params = {"id": lease.execution_id, **lease_params(lease)}
    await db.run(
        f"releasing the lease on execution {lease.execution_id!r}",
        "release",
        params,
        idempotent=True,
    )


async def get_lease(db: PostgresClient, execution_id: str) -> Lease | None:
    rows = await db.run(
        f"reading the lease on execution {execution_id!r}",
        "get_lease",
        {"id": execution_id},
        idempotent=True,
    )
    if not rows:
        return None
    owner, epoch, expires_at, released = rows[0]
    return Lease(execution_id, str(owner), int(epoch), float(expires_at), released=bool(released))


def _lock_key(db: PostgresClient, execution_id: str) -> tuple[int, int, int]:
    """The session advisory lock of an execution: (bigint key, high, low halves)."""
    digest = hashlib.blake2b(
        f"durably\0{db.schema}\0{execution_id}".encode(), digest_size=8
    ).digest()
    key = int.from_bytes(digest, "big") >> 1  # a positive bigint
    return key, key >> 32, key & 0xFFFFFFFF


class _HeldLock(OwnerLock):
    """One execution's owner lock, held on the process's lock session."""

    def __init__(
        self,
        db: PostgresClient,
        session: OwnerLockSession,
        execution_id: str,
        key: int,
        token: object,
    ) -> None:
        self._db = db
        self._session: OwnerLockSession | None = session
        self._execution_id = execution_id
        self._key = key
        self._token = token

    async def release(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.unlock(self._key, self._token)

    async def ensure_held(self) -> None:
        """Take the lock again if its session was lost; OwnerLockLostError if another
        process took it meanwhile (see :mod:`durably_postgres._ownerlocks`)."""
        session = self._session
        if session is None:
            return  # released
        what = f"checking the owner lock of execution {self._execution_id!r}"
        try:
            held = await session.still_held(self._key, self._token)
        except psycopg.Error as exc:
            raise self._db.translate(exc, what) from exc
        if not held:
            raise OwnerLockLostError(
                f"{what}: the connection to {self._db.target.where} that held it was lost "
                "and this process could not take the lock back (another process may have "
                "found it free and be taking the execution over, or the lost session could "
                "not be ended); the execution stops here and can be resumed"
            )


async def lock_owner(db: PostgresClient, execution_id: str) -> OwnerLock | None:
    """Try the execution's advisory lock on the process's lock session; None if held (C30)."""
    key, _, _ = _lock_key(db, execution_id)
    session = await db.owner_locks()
    try:
        token = await session.try_lock(key)
    except psycopg.Error as exc:
        raise db.translate(exc, f"locking the owner of execution {execution_id!r}") from exc
    return None if token is None else _HeldLock(db, session, execution_id, key, token)


async def owner_lock_free(db: PostgresClient, execution_id: str) -> bool:
    """Whether no session holds the execution's advisory lock (``pg_locks``) (C30)."""
    _, hi, lo = _lock_key(db, execution_id)
    rows = await db.run(
        f"probing the owner lock of execution {execution_id!r}",
        "owner_lock_held",
        {"hi": hi, "lo": lo},
        idempotent=True,
    )
    return not rows[0][0]


async def claim_next(
    db: PostgresClient, owner: str, ttl: float, *, exclude_completed: bool, include_unclaimed: bool
) -> Lease | None:
    """The ``claim_next`` statement: one claimable execution's new lease, or None."""
    check_claim_next(owner, ttl)
    rows = await db.run(
        "claiming the next execution",
        f"claim_next:{int(exclude_completed)}:{int(include_unclaimed)}",
        {"owner": owner, "ttl": float(ttl)},
        idempotent=False,
    )
    if not rows:
        return None
    execution_id, epoch, expires_at = rows[0]
    return Lease(str(execution_id), owner, int(epoch), float(expires_at))
