"""Versioned, idempotent schema migrations, serialized by an advisory lock."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg import errors as pg_errors

from durably.errors import StoreError

log = logging.getLogger("durably.postgres")

#: First key of the two-key advisory lock every durably migration takes; the second
#: key is ``hashtext(schema)``, so migrations of different schemas do not wait on each other.
LOCK_CLASS = 0x64726231  # "drb1"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What :func:`~durably_postgres.migrate` did.

    Attributes:
        schema: The PostgreSQL schema migrated.
        before: Its version before (0: it did not exist).
        after: Its version now (:data:`~durably_postgres.SCHEMA_VERSION`).
        applied: The versions applied by this call (empty if it was up to date).
    """

    schema: str
    before: int
    after: int
    applied: tuple[int, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "executions, checkpoints and blobs",
        (
            "CREATE SEQUENCE {s}.epochs AS bigint",
            "CREATE SEQUENCE {s}.versions AS bigint",
            """CREATE TABLE {s}.executions (
            id text COLLATE "C" PRIMARY KEY,
            lease_owner text,
            epoch bigint NOT NULL DEFAULT 0,
            lease_expires_at timestamptz,
            released boolean NOT NULL DEFAULT false,
            status text,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        ) WITH (fillfactor = 90)""",
            """CREATE INDEX executions_claimable_idx ON {s}.executions
            (lease_expires_at NULLS FIRST) WHERE status IS DISTINCT FROM 'completed'""",
            """CREATE TABLE {s}.checkpoints (
            execution_id text COLLATE "C" NOT NULL REFERENCES {s}.executions (id),
            seq bigint NOT NULL CHECK (seq >= 0),
            version bigint NOT NULL,
            data bytea NOT NULL,
            metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            size bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (execution_id, seq)
        )""",
            # Payloads arrive compressed by the envelope: do not let TOAST try again.
            "ALTER TABLE {s}.checkpoints ALTER COLUMN data SET STORAGE EXTERNAL",
            """CREATE TABLE {s}.blobs (
            execution_id text COLLATE "C" NOT NULL REFERENCES {s}.executions (id),
            digest text COLLATE "C" NOT NULL,
            data bytea NOT NULL,
            size bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (execution_id, digest)
        )""",
            "ALTER TABLE {s}.blobs ALTER COLUMN data SET STORAGE EXTERNAL",
        ),
    ),
    # Workers skip failed executions too: with only completed ones left out of the
    # index, failed ones (whose leases expired long ago) would be scanned first by every
    # claim_next, and an idle worker's cost would grow with them.
    Migration(
        2,
        "claim index without finished executions",
        (
            """CREATE INDEX executions_open_idx ON {s}.executions
            (lease_expires_at NULLS FIRST)
            WHERE status IS DISTINCT FROM 'completed' AND status IS DISTINCT FROM 'failed'""",
            "DROP INDEX {s}.executions_claimable_idx",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version
"""The schema version this durably-postgres creates and understands."""


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (names are validated simple identifiers)."""
    return '"' + name.replace('"', '""') + '"'


def _too_new(schema: str, found: int) -> StoreError:
    from durably_postgres import __version__

    return StoreError(
        f"PostgreSQL schema {schema!r} is at version {found}, newer than the version "
        f"{SCHEMA_VERSION} this durably-postgres {__version__} understands: it was "
        "migrated by a newer durably-postgres. Upgrade durably-postgres "
        "(pip install -U durably-postgres) to use this store"
    )


async def current_version(conn: psycopg.AsyncConnection[object], schema: str) -> int:
    """The schema's version, 0 if durably's tables do not exist (one round trip)."""
    s = quote_ident(schema)
    try:
        cur = await conn.execute(f"SELECT coalesce(max(version), 0) FROM {s}.schema_version")
    except pg_errors.UndefinedTable:
        return 0
    row = await cur.fetchone()
    return int(row[0]) if row else 0  # type: ignore[index]


async def ensure_schema(
    conn: psycopg.AsyncConnection[object],
    schema: str,
    *,
    migrate: bool,
) -> MigrationReport:
    """Bring ``schema`` to :data:`SCHEMA_VERSION`, or check that it is there.

    ``conn`` must be in autocommit mode. When the schema is current this costs one
    round trip and takes no lock. Otherwise the migrations run in ONE transaction that
    first takes ``pg_advisory_xact_lock(LOCK_CLASS, hashtext(schema))``: a second
    process starting at the same moment waits for it, then finds the schema current.

    Raises:
        StoreError: The schema is newer than this code knows (upgrade durably-postgres),
            or it is missing/older and ``migrate`` is false.
    """
    found = await current_version(conn, schema)
    if found == SCHEMA_VERSION:
        return MigrationReport(schema, found, found, ())
    if found > SCHEMA_VERSION:
        raise _too_new(schema, found)
    if not migrate:
        state = "does not exist" if found == 0 else f"is at version {found}"
        raise StoreError(
            f"PostgreSQL schema {schema!r} {state} and automatic migration is off "
            f"(migrate = false); this durably-postgres needs version {SCHEMA_VERSION}. "
            "Run `durably migrate` (durably_postgres.migrate(url)) first"
        )
    s = quote_ident(schema)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, schema))
        cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        if await cur.fetchone() is None:
            await conn.execute(f"CREATE SCHEMA {s}")
        cur = await conn.execute("SELECT to_regclass(%s)", (f"{s}.schema_version",))
        row = await cur.fetchone()
        if row is None or row[0] is None:  # type: ignore[index]
            await conn.execute(
                f"""CREATE TABLE {s}.schema_version (
                    version integer PRIMARY KEY,
                    description text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )"""
            )
        before = await current_version(conn, schema)
        if before > SCHEMA_VERSION:
            raise _too_new(schema, before)
        applied = []
        for migration in MIGRATIONS:
            if migration.version <= before:
                continue
            for statement in migration.statements:
                await conn.execute(statement.format(s=s))
            await conn.execute(
                f"INSERT INTO {s}.schema_version (version, description) VALUES (%s, %s)",
                (migration.version, migration.description),
            )
            applied.append(migration.version)
    if applied:
        log.info(
            "migrated PostgreSQL schema %r from version %d to %d", schema, before, SCHEMA_VERSION
        )
    return MigrationReport(schema, before, SCHEMA_VERSION, tuple(applied))
