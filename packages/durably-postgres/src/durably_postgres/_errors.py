"""Turning psycopg exceptions into durably's typed errors, without leaking secrets."""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout

from durably.errors import DurablyError, StoreError, StoreUnavailableError
from durably_postgres._options import Target

#: SQLSTATEs after which the server rolled the whole statement back: retrying is safe.
ROLLED_BACK_STATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "57P03",  # cannot_connect_now (starting up / shutting down)
    }
)

_AUTH_MARKERS = (
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    "fe_sendauth: no password supplied",
    "password is required",
    'role "',
)


def detail_of(exc: BaseException, target: Target) -> str:
    """The first meaningful line of a psycopg message, password removed."""
    text = str(exc).strip()
    for prefix in ("connection failed: ",):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    if "FATAL:" in first:
        first = first.split("FATAL:", 1)[1].strip()
    return target.redact(first)


def connect_error_is_permanent(exc: psycopg.Error) -> bool:
    """Whether a failure to connect will not go away by retrying (auth, missing db)."""
    text = str(exc).lower()
    if any(marker in text for marker in _AUTH_MARKERS):
        return True
    return "does not exist" in text or "permission denied" in text


def connect_error(exc: psycopg.Error, target: Target, attempts: int) -> StoreError:
    """A StoreUnavailableError that says why connecting to ``target`` failed."""
    text = str(exc)
    lowered = text.lower()
    detail = detail_of(exc, target)
    if any(marker in lowered for marker in _AUTH_MARKERS) and 'database "' not in lowered:
        return StoreUnavailableError(
            f"cannot connect to {target.where}: authentication failed for user "
            f"{target.user!r} ({detail}). Check the user and password in the store URL, "
            "PGUSER/PGPASSWORD or ~/.pgpass, and the server's pg_hba.conf"
        )
    if 'database "' in lowered and "does not exist" in lowered:
        return StoreUnavailableError(
            f"cannot connect to {target.where}: {detail}. Create it (createdb NAME, or "
            "CREATE DATABASE) or fix the database name in the store URL"
        )
    if "permission denied" in lowered:
        return StoreUnavailableError(
            f"cannot connect to {target.where}: {detail}. Grant the role CONNECT on the database"
        )
    tries = f" (after {attempts} attempts)" if attempts > 1 else ""
    return StoreUnavailableError(
        f"cannot connect to PostgreSQL at {target.where}{tries}: {detail}. Is the server "
        "running and reachable? Check the host and port in the store URL or PGHOST/PGPORT"
    )


def is_rolled_back(exc: BaseException) -> bool:
    """The statement failed as a whole and left nothing behind: safe to retry."""
    return isinstance(exc, psycopg.Error) and exc.sqlstate in ROLLED_BACK_STATES


def is_connection_loss(exc: BaseException) -> bool:
    """The connection broke (the outcome of a write in flight is unknown)."""
    if isinstance(exc, PoolTimeout) or not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in ("57P01", "57P02")


def translate(exc: psycopg.Error, what: str, target: Target, *, schema: str) -> DurablyError:
    """Map a psycopg error raised while doing ``what`` to a durably error."""
    detail = detail_of(exc, target)
    where = target.where
    if isinstance(exc, PoolTimeout):
        return StoreUnavailableError(
            f"{what}: no connection to {where} became available ({detail}); the server is "
            "down or unreachable, or every pooled connection is busy (see pool_max_size)"
        )
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return StoreError(
            f"{what}: permission denied on {where} ({detail}). Grant the role USAGE on "
            f"schema {schema!r} and SELECT, INSERT, UPDATE, DELETE on its tables and USAGE "
            "on its sequences, or run `durably migrate` as the schema's owner"
        )
    if isinstance(
        exc, (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName, pg_errors.UndefinedObject)
    ):
        return StoreError(
            f"{what}: durably's tables are missing in schema {schema!r} of {where} "
            f"({detail}). Was the schema dropped? Run `durably migrate` to recreate it"
        )
    if isinstance(exc, pg_errors.QueryCanceled):
        return StoreError(
            f"{what}: the statement was cancelled on {where} ({detail}); nothing was "
            "written. Raise statement_timeout if it is too low"
        )
    if is_connection_loss(exc):
        return StoreUnavailableError(
            f"{what}: lost the connection to {where} ({detail}). The statement either "
            "committed entirely or not at all"
        )
    if isinstance(exc, psycopg.OperationalError):
        return StoreUnavailableError(f"{what}: {where} is unavailable ({detail})")
    return StoreError(f"{what}: PostgreSQL error on {where}: {detail}")
