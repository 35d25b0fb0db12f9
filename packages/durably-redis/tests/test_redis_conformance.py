"""The whole durably conformance suite against a real Redis server."""

from __future__ import annotations

import pytest

from durably_conformance import Backdoor, ProviderFactory, ProviderSuite
from durably_redis import RedisProvider
from durably_redis.testing import RedisBackdoor

# The test server runs without persistence; the provider says so on first use of each
# instance (test_redis_provider.py asserts that warning).
pytestmark = pytest.mark.filterwarnings(
    "ignore:Redis .* keeps durably's checkpoints in memory only:durably.errors.DurablyWarning"
)


class TestRedisProvider(ProviderSuite):
    """Each test gets a fresh key prefix (``key_prefix``), whose keys are deleted afterwards."""

    @pytest.fixture
    def make_provider(self, redis_url: str, key_prefix: str) -> ProviderFactory:
        return lambda: RedisProvider.from_url(redis_url, {"key_prefix": key_prefix})

    @pytest.fixture
    def backdoor(self, redis_url: str, key_prefix: str) -> Backdoor:
        return RedisBackdoor(redis_url, key_prefix)

    @pytest.fixture
    def store_url(self, redis_url: str) -> str:
        return redis_url

    @pytest.fixture
    def store_options(self, key_prefix: str) -> dict[str, str]:
        # Child processes open this test's key prefix (C22 across processes).
        return {"key_prefix": key_prefix}
