"""Fixtures: a real PostgreSQL server (see durably_postgres.testing), one schema per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from durably_conformance import ProviderMaker
from durably_postgres import PostgresProvider
from durably_postgres.testing import PostgresServer, drop_schema, random_schema, server_or_skip


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = server_or_skip()
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    return pg_server.url


@pytest.fixture
def pg_schema(pg_url: str) -> Iterator[str]:
    """A fresh schema name for this test; the schema is dropped afterwards."""
    schema = random_schema()
    yield schema
    drop_schema(pg_url, schema)


MakeStore = ProviderMaker[PostgresProvider]


@pytest_asyncio.fixture
async def make_store(pg_url: str, pg_schema: str) -> AsyncIterator[MakeStore]:
    """``make_store(url=None, **options)``: a new provider on this test's store, closed
    afterwards (the helper the PostgreSQL and Redis tests share)."""
    maker = ProviderMaker(PostgresProvider, pg_url, {"schema": pg_schema})
    yield maker
    await maker.aclose()


@pytest_asyncio.fixture
async def admin(pg_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A separate autocommit connection for looking behind the provider's back."""
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        yield conn
