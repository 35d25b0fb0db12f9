"""durably-postgres: durably's PostgreSQL storage provider (``postgresql://`` URLs).

Configure it with ``store = "postgresql://user@host:5432/dbname"`` and, optionally, a
``[durability.postgres]`` table (see ``docs/providers/postgres.md``). The provider is
registered under the ``postgresql`` and ``postgres`` URL schemes.

Test helpers (finding a server, a raw-storage backdoor) live in
:mod:`durably_postgres.testing`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from durably_postgres._migrations import SCHEMA_VERSION, MigrationReport
from durably_postgres._options import PostgresOptions
from durably_postgres._provider import PostgresProvider

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "MigrationReport",
    "PostgresOptions",
    "PostgresProvider",
    "__version__",
    "migrate",
    "migrate_async",
]


async def migrate_async(url: str, options: Mapping[str, Any] | None = None) -> MigrationReport:
    """Create or upgrade durably's schema at ``url`` to :data:`SCHEMA_VERSION`.

    Safe to run any number of times and from several processes at once: the
    migrations run in one transaction under a PostgreSQL advisory lock, and versions
    already applied are skipped. Used by ``durably migrate``, and needed before first
    use when the option ``migrate = false``.

    Args:
        url: The store URL (``postgresql://...``).
        options: The ``[durability.postgres]`` table; ``schema`` picks the schema and
            ``migrate`` is ignored.

    Raises:
        StoreError: The schema is newer than this durably-postgres (upgrade it), or the
            role may not create the schema or its tables (the message says what to grant).
        StoreUnavailableError: The server cannot be reached or refused the credentials.
        ConfigError: A bad URL or option.
    """
    provider = PostgresProvider.from_url(url, options or {})
    try:
        return await provider._db.migrate(migrate=True)
    finally:
        await provider.close()


def migrate(url: str, options: Mapping[str, Any] | None = None) -> MigrationReport:
    """Synchronous :func:`migrate_async` (runs its own event loop; not from async code)."""
    return asyncio.run(migrate_async(url, options))
