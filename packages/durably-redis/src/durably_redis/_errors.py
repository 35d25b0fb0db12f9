"""Turning redis-py exceptions into durably's typed errors, without leaking secrets."""

from __future__ import annotations

from redis import exceptions as rx

from durably.errors import ConfigError, DurablyError, StoreError, StoreUnavailableError
from durably_redis._options import OPTION_KEY, Target

__all__ = ["detail_of", "is_connection_loss", "translate"]

_MAX_CONNECTIONS: tuple[type[BaseException], ...] = tuple(
    cls for cls in (getattr(rx, "MaxConnectionsError", None),) if isinstance(cls, type)
)
"""redis-py's "pool exhausted" error (absent from older 5.x releases)."""


def detail_of(exc: BaseException, target: Target) -> str:
    """The first meaningful line of a redis-py message, password removed."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return target.redact(lines[0]) if lines else type(exc).__name__


def is_connection_loss(exc: BaseException) -> bool:
    """The connection failed or timed out (for a write in flight: outcome unknown)."""
    return isinstance(exc, (rx.ConnectionError, rx.TimeoutError)) and not isinstance(
        exc, (rx.AuthenticationError, rx.AuthorizationError)
    )


def _is_auth_failure(exc: BaseException, text: str) -> bool:
    if isinstance(exc, (rx.AuthenticationError, rx.AuthenticationWrongNumberOfArgsError)):
        return True
    return any(
        marker in text
        for marker in (
            "WRONGPASS",
            "NOAUTH",
            "invalid password",
            "invalid username-password",
            "Authentication required",
            "AUTH <password> called without any password",
        )
    )


def translate(exc: BaseException, what: str, target: Target) -> DurablyError:
    """Map a redis-py error raised while doing ``what`` to a durably error.

    The message names the server as ``host:port`` (or the URL without its password)
    and says what to do; the password never appears in it.
    """
    detail = detail_of(exc, target)
    text = str(exc)
    where = target.where
    address = target.address
    if _is_auth_failure(exc, text):
        return StoreUnavailableError(
            f"{what}: authentication failed at Redis {address} ({detail}). Check the user "
            "and password in the store URL (redis://user:password@host:port/db) against the "
            "server's requirepass or ACL users"
        )
    if (
        "DB index is out of range" in text
        or "invalid DB index" in text
        or "Invalid Database" in text
    ):
        return StoreUnavailableError(
            f"{what}: database {target.db} does not exist on Redis {address} ({detail}). "
            "Redis numbers its databases from 0 to 'databases' - 1 (16 by default); fix the "
            "number in the store URL"
        )
    if isinstance(exc, (rx.NoPermissionError, rx.AuthorizationError)):
        return StoreError(
            f"{what}: the Redis user may not do this on {where} ({detail}). Grant it the "
            "commands durably uses (+@read +@write +@scripting +info +config|get +wait "
            "+waitaof) on the keys of its prefix (see docs/providers/redis.md)"
        )
    if isinstance(exc, rx.BusyLoadingError):
        return StoreUnavailableError(
            f"{what}: Redis {address} is loading its data set into memory ({detail}); "
            "try again in a moment"
        )
    if (
        isinstance(exc, _MAX_CONNECTIONS)
        or "No connection available" in text
        or "Too many connections" in text
    ):
        return StoreUnavailableError(
            f"{what}: no connection to Redis {address} became free in time ({detail}); "
            f"every pooled connection is busy (raise {OPTION_KEY}.pool_size) or the server "
            "does not answer"
        )
    if isinstance(exc, (rx.TimeoutError, TimeoutError)):
        return StoreUnavailableError(
            f"{what}: Redis {address} did not answer in time ({detail}). A write that timed "
            "out may or may not have been applied. Raise socket_timeout in the store URL if "
            "the server is just slow"
        )
    if isinstance(exc, rx.ConnectionError):
        return StoreUnavailableError(
            f"{what}: cannot reach Redis at {address} ({detail}). Is the server running and "
            "reachable? Check the host and port in the store URL"
        )
    if isinstance(exc, rx.OutOfMemoryError) or text.startswith("OOM") or " OOM " in text:
        return StoreError(
            f"{what}: Redis {where} is out of memory (maxmemory) and refused the write "
            f"({detail}); nothing was written. Free memory (prune or delete executions) or "
            "raise maxmemory"
        )
    if isinstance(exc, rx.ReadOnlyError) or "READONLY" in text:
        return StoreError(
            f"{what}: Redis {where} is a read-only replica ({detail}); nothing was written. "
            "Point the store URL at the primary"
        )
    if text.startswith("MISCONF"):
        return StoreError(
            f"{what}: Redis {where} refuses writes because it could not save its RDB "
            f"snapshot ({detail}); nothing was written. Check the server's disk and log"
        )
    if text.startswith("BUSY "):
        return StoreUnavailableError(
            f"{what}: Redis {address} is busy running a long script ({detail}); try again"
        )
    if "unknown command" in text and "WAITAOF" in text.upper():
        return ConfigError(
            f"Redis {where} does not support WAITAOF ({detail})",
            key=f"{OPTION_KEY}.wait_aof",
            fix="WAITAOF needs Redis 7.2 or newer: upgrade the server, or remove wait_aof "
            "(wait_replicas uses WAIT, which every version has)",
        )
    if "WAITAOF" in text.upper() and "appendonly" in text:
        return ConfigError(
            f"Redis {where} has appendonly off, so WAITAOF cannot confirm local fsyncs ({detail})",
            key=f"{OPTION_KEY}.wait_aof",
            fix="Set appendonly yes on the server, or remove wait_aof",
        )
    return StoreError(f"{what}: Redis error on {where}: {detail}")
