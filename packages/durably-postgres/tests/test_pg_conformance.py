"""The whole durably conformance suite against a real PostgreSQL server."""

from __future__ import annotations

import pytest

from durably_conformance import Backdoor, ProviderFactory, ProviderSuite
from durably_postgres import PostgresProvider
from durably_postgres.testing import PostgresBackdoor


class TestPostgresProvider(ProviderSuite):
    """Each test gets a fresh schema (``pg_schema``), dropped afterwards."""

    @pytest.fixture
    def make_provider(self, pg_url: str, pg_schema: str) -> ProviderFactory:
        return lambda: PostgresProvider.from_url(pg_url, {"schema": pg_schema})

    @pytest.fixture
    def backdoor(self, pg_url: str, pg_schema: str) -> Backdoor:
        return PostgresBackdoor(pg_url, pg_schema)

    @pytest.fixture
    def store_url(self, pg_url: str) -> str:
        return pg_url

    @pytest.fixture
    def store_options(self, pg_schema: str) -> dict[str, str]:
        # Child processes open this test's schema (C22 across processes).
        return {"schema": pg_schema}
