"""The server-finding logic of durably_postgres.testing (used by every Postgres test)."""

from __future__ import annotations

import psycopg
import pytest

from durably_postgres import PostgresProvider
from durably_postgres import testing as pg_testing
from durably_postgres.testing import ThrowawayCluster, find_server, free_port, server_or_skip


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """server_or_skip remembers the server of the session; these tests look afresh."""
    monkeypatch.setattr(pg_testing, "_found", None)


@pytest.fixture
def no_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pg_testing.ENV_URL, raising=False)
    monkeypatch.setattr(pg_testing, "LOCAL_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/x")


@pytest.fixture
def no_throwaway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        ThrowawayCluster,
        "unavailable_reason",
        staticmethod(lambda: "initdb/pg_ctl not found (test)"),
    )


@pytest.mark.usefixtures("no_local_server", "no_throwaway")
def test_no_server_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pg_testing.ENV_REQUIRE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="initdb/pg_ctl not found") as info:
        server_or_skip()
    assert pg_testing.ENV_URL in str(info.value)


@pytest.mark.usefixtures("no_local_server", "no_throwaway")
def test_no_server_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pg_testing.ENV_REQUIRE, "1")
    with pytest.raises(pytest.fail.Exception, match="DURABLY_REQUIRE_POSTGRES=1"):
        server_or_skip()


def test_an_explicit_url_that_does_not_answer_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pg_testing.ENV_URL, f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    monkeypatch.delenv(pg_testing.ENV_REQUIRE, raising=False)
    with pytest.raises(pytest.fail.Exception, match="is set but the server does not answer"):
        server_or_skip()


def test_an_explicit_url_wins(monkeypatch: pytest.MonkeyPatch, pg_url: str) -> None:
    monkeypatch.setenv(pg_testing.ENV_URL, pg_url)
    server, _ = find_server()
    assert server is not None
    assert (server.url, server.source) == (pg_url, "env")


@pytest.mark.usefixtures("no_local_server")
@pytest.mark.asyncio
async def test_a_throwaway_cluster_is_started_when_nothing_answers() -> None:
    reason = ThrowawayCluster.unavailable_reason()
    if reason:
        pytest.skip(f"cannot start a throwaway cluster here: {reason}")
    server, why = find_server()
    assert server is not None, why
    try:
        assert server.source == "throwaway"
        store = PostgresProvider.from_url(server.url, {})
        try:
            await store.save_checkpoint("t", 0, b"in a throwaway cluster")
            assert (await store.load_checkpoint("t", 0)).data == b"in a throwaway cluster"
        finally:
            await store.close()
    finally:
        server.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.url, connect_timeout=2)


def test_unix_socket_urls_are_described_readably() -> None:
    store = PostgresProvider.from_url("postgresql://bob@/app?host=/var/run/postgresql", {})
    assert store.describe() == (
        "postgresql://bob@:5432/app?host=/var/run/postgresql (schema durably)"
    )


def test_the_server_is_found_once_per_process(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pg_testing.ENV_URL, pg_url)
    first = server_or_skip()
    monkeypatch.setenv(pg_testing.ENV_URL, "postgresql://nobody@127.0.0.1:1/not-asked-again")
    assert server_or_skip() is first
