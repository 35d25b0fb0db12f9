"""The test helpers other packages reuse: server discovery, throwaway servers, cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from durably_redis import RedisProvider
from durably_redis import testing as rt

pytestmark = pytest.mark.filterwarnings(
    "ignore:Redis .* keeps durably's checkpoints in memory only:durably.errors.DurablyWarning"
)


def _needs_binary() -> None:
    reason = rt.ThrowawayRedis.unavailable_reason()
    if reason:
        pytest.skip(f"needs a throwaway Redis server: {reason}")


def test_a_throwaway_server_starts_and_cleans_up() -> None:
    _needs_binary()
    server = rt.ThrowawayRedis(args=("--appendonly", "yes"))
    with server:
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping()
            assert client.config_get("appendonly")["appendonly"] == "yes"
            assert client.config_get("save")["save"] == ""
        finally:
            client.close()
        directory = server._dir
        assert directory is not None
        assert directory.exists()
    assert not server.running
    assert not Path(directory).exists()
    server.stop()  # idempotent


def test_find_server_starts_one_when_nothing_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_binary()
    monkeypatch.delenv(rt.ENV_URL, raising=False)
    monkeypatch.setattr(rt, "LOCAL_URL", f"redis://127.0.0.1:{rt.free_port()}/0")
    server, reason = rt.find_server()
    assert server is not None, reason
    try:
        assert server.source == "throwaway"
        assert rt._answers(server.url) is None
    finally:
        server.stop()
    assert rt._answers(server.url) is not None


def test_an_explicit_url_that_does_not_answer_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(rt.ENV_URL, f"redis://127.0.0.1:{rt.free_port()}/0")
    with pytest.raises(RuntimeError, match=rt.ENV_URL):
        rt.find_server()


def test_random_prefixes_differ() -> None:
    assert rt.random_prefix() != rt.random_prefix()
    assert rt.random_prefix("x").startswith("x-")


@pytest.mark.asyncio
async def test_delete_prefix_removes_only_that_store(redis_url: str) -> None:
    mine, other = rt.random_prefix(), rt.random_prefix()
    try:
        for prefix in (mine, other):
            provider = RedisProvider.from_url(redis_url, {"key_prefix": prefix})
            try:
                await provider.save_checkpoint("run-1", 0, b"x")
                await provider.put_blob("run-1", b"blob")
            finally:
                await provider.close()
        # counter, index, open index, seqs, c, blobs, b
        assert rt.delete_prefix(redis_url, mine) == 7
        assert await rt.RedisBackdoor(redis_url, mine).locations() == []
        # index and open index (each with its entry), seqs, c, blobs, b
        assert len(await rt.RedisBackdoor(redis_url, other).locations()) == 8
    finally:
        rt.delete_prefix(redis_url, mine)
        rt.delete_prefix(redis_url, other)


@pytest.mark.asyncio
async def test_the_backdoor_reports_index_entries(redis_url: str, key_prefix: str) -> None:
    provider = RedisProvider.from_url(redis_url, {"key_prefix": key_prefix})
    try:
        await provider.save_checkpoint("run-1", 3, b"x")
    finally:
        await provider.close()
    locations = await rt.RedisBackdoor(redis_url, key_prefix).locations()
    assert locations == sorted(
        [
            f"{key_prefix}:executions",
            f"{key_prefix}:executions#run-1",
            f"{key_prefix}:open",
            f"{key_prefix}:open#run-1",
            f"{key_prefix}:x:run-1:seqs",
            f"{key_prefix}:x:run-1:c:{3:019d}",
        ]
    )
    with pytest.raises(KeyError):
        await rt.RedisBackdoor(redis_url, key_prefix).read_checkpoint("run-1", 4)
