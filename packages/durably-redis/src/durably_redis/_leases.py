"""Leases in Redis: one hash per execution (owner, epoch, expires, released).

``claim`` (also the take-over), ``renew`` and ``release`` are scripts: the check of the
current record and its replacement are one atomic step, expiry is timed by the server's
clock (``TIME``), and epochs come from the store's counter, which is never reset (C15,
C16, C23, C29).
"""

from __future__ import annotations

from durably.errors import fenced, lease_held
from durably.storage import Lease
from durably_redis._client import RedisClient, decode, encode_owner, fence_args, status

__all__ = ["claim", "get_lease", "release", "renew"]


async def claim(
    db: RedisClient, execution_id: str, owner: str, ttl: float, dead: Lease | None
) -> Lease:
    """One ``claim`` script; with ``dead``, it also replaces ``dead`` while it is live."""
    keys = db.keys
    reply = await db.script(
        "claim",
        [keys.lease(execution_id), keys.executions, keys.counter],
        [
            encode_owner(owner),
            repr(float(ttl)),
            execution_id,
            str(dead.epoch) if dead else "",
            encode_owner(dead.owner) if dead else b"",
        ],
        what=f"claiming execution {execution_id!r}",
        write=True,
        # A take-over retried after a lost reply would look like a lost race.
        idempotent=dead is None,
    )
    if status(reply) == b"held":
        raise lease_held(execution_id, decode(reply[1]), float(reply[2]))
    return Lease(execution_id, owner, int(reply[1]), float(reply[2]))


async def renew(db: RedisClient, lease: Lease, ttl: float) -> Lease:
    """The ``renew`` script: a new expiry if the epoch is still the current one."""
    reply = await db.script(
        "renew",
        [db.keys.lease(lease.execution_id)],
        [*fence_args(lease), repr(float(ttl))],
        what=f"renewing the lease on execution {lease.execution_id!r}",
        write=True,
        idempotent=True,
    )
    if status(reply) == b"fenced":
        raise fenced(lease, "renewing the lease")
    return Lease(lease.execution_id, lease.owner, lease.epoch, float(reply[1]))


async def release(db: RedisClient, lease: Lease) -> None:
    """The ``release`` script (a superseded lease changes nothing)."""
    await db.script(
        "release",
        [db.keys.lease(lease.execution_id)],
        fence_args(lease),
        what=f"releasing the lease on execution {lease.execution_id!r}",
        write=True,
        idempotent=True,
    )


async def get_lease(db: RedisClient, execution_id: str) -> Lease | None:
    """One ``HMGET`` of the lease hash."""
    owner, epoch, expires, released = await db.call(
        f"reading the lease on execution {execution_id!r}",
        "HMGET",
        db.keys.lease(execution_id),
        "owner",
        "epoch",
        "expires",
        "released",
        idempotent=True,
    )
    if epoch is None or owner is None or expires is None:
        return None
    return Lease(
        execution_id, decode(owner), int(epoch), float(expires), released=released in (b"1", "1")
    )
