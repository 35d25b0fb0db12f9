"""Fixtures: a real Redis server (see durably_redis.testing), one key prefix per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from redis import asyncio as aioredis

from durably_conformance import ProviderMaker
from durably_redis import RedisProvider
from durably_redis.testing import RedisServer, delete_prefix, random_prefix, server_or_skip


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = server_or_skip()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix for this test; its keys are deleted afterwards."""
    prefix = random_prefix()
    yield prefix
    delete_prefix(redis_url, prefix)


MakeStore = ProviderMaker[RedisProvider]


@pytest_asyncio.fixture
async def make_store(redis_url: str, key_prefix: str) -> AsyncIterator[MakeStore]:
    """``make_store(url=None, **options)``: a new provider on this test's store, closed
    afterwards (the helper the PostgreSQL and Redis tests share)."""
    maker = ProviderMaker(RedisProvider, redis_url, {"key_prefix": key_prefix})
    yield maker
    await maker.aclose()


@pytest_asyncio.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A separate client for looking behind the provider's back."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
