"""from_url: URL and option parsing (no I/O), PG* environment, registration."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from durably._plugins import open_provider
from durably.errors import ConfigError
from durably_postgres import PostgresOptions, PostgresProvider

MakeStore = Callable[..., PostgresProvider]

DEAD = "postgresql://alice:s3cret@127.0.0.1:1/nowhere"


def test_from_url_does_no_io_and_describe_hides_the_password() -> None:
    provider = PostgresProvider.from_url(DEAD, {})  # nothing listens on port 1
    assert provider.describe() == "postgresql://alice@127.0.0.1:1/nowhere (schema durably)"
    assert "s3cret" not in repr(provider.options)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_registered_for_both_schemes(scheme: str) -> None:
    provider = open_provider(f"{scheme}://bob@db.example:6543/app", {"schema": "s1"})
    assert isinstance(provider, PostgresProvider)
    assert provider.describe() == "postgresql://bob@db.example:6543/app (schema s1)"


def test_defaults() -> None:
    assert PostgresProvider.from_url("postgresql://h/db", {}).options == PostgresOptions()
    assert PostgresOptions().schema == "durably"


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown option 'pool_max'") as info:
        PostgresProvider.from_url("postgresql://h/db", {"pool_max": 3})
    assert "pool_max_size" in str(info.value)  # the suggestion
    assert info.value.key == "durability.postgres.pool_max"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"schema": "bad-name"}, "invalid schema name"),
        ({"schema": "1abc"}, "invalid schema name"),
        ({"schema": 5}, "invalid schema name"),
        ({"pool_min_size": -1}, "at least 0"),
        ({"pool_max_size": 0}, "at least 1"),
        ({"pool_min_size": 5, "pool_max_size": 2}, "smaller than pool_min_size"),
        ({"pool_max_size": True}, "expected an integer"),
        ({"connect_timeout": "10"}, "expected a number"),
        ({"connect_timeout": 0}, "at least"),
        ({"statement_timeout": -1}, "at least"),
        ({"lease_clock": "local"}, "'server' or 'client'"),
        ({"migrate": "no"}, "expected true or false"),
        ({"prepared_statements": 0}, "expected true or false"),
        ({"application_name": 3}, "expected a string"),
    ],
)
def test_invalid_option_values(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PostgresProvider.from_url("postgresql://h/db", options)


def test_valid_options_are_kept() -> None:
    provider = PostgresProvider.from_url(
        "postgresql://h/db",
        {
            "schema": "My_Schema",
            "pool_min_size": 0,
            "pool_max_size": 3,
            "connect_timeout": 2.5,
            "statement_timeout": 1.5,
            "lease_clock": "client",
            "migrate": False,
            "application_name": "worker-1",
            "connect_retries": 0,
            "pool_timeout": 4,
            "pool_linger": 0,
        },
    )
    opts = provider.options
    assert (opts.pool_timeout, opts.pool_linger) == (4.0, 0.0)
    assert (opts.schema, opts.pool_min_size, opts.pool_max_size) == ("My_Schema", 0, 3)
    assert (opts.statement_timeout, opts.lease_clock, opts.migrate) == (1.5, "client", False)


@pytest.mark.parametrize("value", [-1, "10", True, float("nan")])
def test_a_bad_pool_linger_is_a_config_error(value: Any) -> None:
    with pytest.raises(ConfigError, match="pool_linger"):
        PostgresProvider.from_url("postgresql://h/db", {"pool_linger": value})


@pytest.mark.parametrize("url", ["mysql://h/db", "file:///tmp/x"])
def test_not_a_postgres_url(url: str) -> None:
    with pytest.raises(ConfigError, match="not a PostgreSQL URL"):
        PostgresProvider.from_url(url, {})


def test_unparsable_url_does_not_show_the_password() -> None:
    with pytest.raises(ConfigError, match="invalid PostgreSQL URL") as info:
        PostgresProvider.from_url("postgresql://alice:s3cret@h/db?bogus=1", {})
    assert "s3cret" not in str(info.value)
    assert "alice:***@h" in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.asyncio
async def test_bare_url_uses_the_pg_environment(
    pg_url: str,
    pg_schema: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = conninfo_to_dict(pg_url)
    for key, var in [
        ("host", "PGHOST"),
        ("port", "PGPORT"),
        ("user", "PGUSER"),
        ("dbname", "PGDATABASE"),
        ("password", "PGPASSWORD"),
    ]:
        if key in params:
            monkeypatch.setenv(var, str(params[key]))
        else:
            monkeypatch.delenv(var, raising=False)
    provider = PostgresProvider.from_url("postgresql://", {"schema": pg_schema})
    assert provider.describe().startswith(
        f"postgresql://{params.get('user')}@{params.get('host')}:{params.get('port', '5432')}/"
    )
    try:
        await provider.save_checkpoint("env-run", 0, b"via PG* variables")
        assert (await provider.load_checkpoint("env-run", 0)).data == b"via PG* variables"
    finally:
        await provider.close()


@pytest.mark.asyncio
async def test_application_name_and_statement_timeout_reach_the_server(
    make_store: MakeStore,
    admin: psycopg.AsyncConnection[Any],
) -> None:
    name = f"durably-test-{secrets.token_hex(4)}"
    store = make_store(application_name=name, statement_timeout=1.5)
    await store.save_checkpoint("app", 0, b"x")
    pool = store._db.pool
    assert pool is not None
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT current_setting('application_name'),"
            " current_setting('statement_timeout'),"
            " current_setting('default_transaction_isolation')"
        )
        assert await cur.fetchone() == (name, "1500ms", "read committed")


@pytest.mark.asyncio
async def test_default_application_name_is_durably(make_store: MakeStore) -> None:
    store = make_store()
    await store.save_checkpoint("app", 0, b"x")
    assert store._db.pool is not None
    async with store._db.pool.connection() as conn:
        cur = await conn.execute("SELECT current_setting('application_name')")
        assert await cur.fetchone() == ("durably",)


@pytest.mark.asyncio
async def test_prepared_statements_can_be_turned_off(make_store: MakeStore) -> None:
    for enabled, threshold in ((True, 5), (False, None)):
        store = make_store(prepared_statements=enabled, pool_max_size=1)
        await store.save_checkpoint(f"p-{enabled}", 0, b"x")
        assert store._db.pool is not None
        async with store._db.pool.connection() as conn:
            assert conn.prepare_threshold == threshold
