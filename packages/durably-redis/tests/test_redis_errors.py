"""Typed errors for unreachable, silent, password-protected and misconfigured servers --
and never a password in them."""

from __future__ import annotations

import socket
import traceback
from collections.abc import Iterator

import pytest
from redis import exceptions as rx

from durably.errors import StoreError, StoreUnavailableError
from durably_redis import RedisProvider
from durably_redis.testing import ThrowawayRedis, free_port

pytestmark = pytest.mark.filterwarnings(
    "ignore:Redis .* keeps durably's checkpoints in memory only:durably.errors.DurablyWarning"
)

PASSWORD = "Very-Secret-Pa55word"
RUN = "run-1"


def _full_text(exc: BaseException) -> str:
    """The error with its whole chain of causes, as a traceback would print it."""
    return "".join(traceback.format_exception(exc))


async def _first_use_error(url: str) -> StoreError:
    provider = RedisProvider.from_url(url, {"key_prefix": "durably-errors-test"})
    try:
        with pytest.raises(StoreError) as raised:
            await provider.save_checkpoint(RUN, 0, b"x")
        return raised.value
    finally:
        await provider.close()


@pytest.fixture(scope="module")
def protected() -> Iterator[ThrowawayRedis]:
    """A server with ``requirepass``."""
    reason = ThrowawayRedis.unavailable_reason()
    if reason:
        pytest.skip(f"needs a throwaway Redis server: {reason}")
    with ThrowawayRedis(password=PASSWORD) as server:
        yield server


@pytest.mark.asyncio
async def test_connection_refused_names_host_and_port() -> None:
    port = free_port()  # nothing listens there
    error = await _first_use_error(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    assert isinstance(error, StoreUnavailableError)
    assert f"127.0.0.1:{port}" in str(error)
    assert "cannot reach Redis" in str(error)
    assert isinstance(error.__cause__, rx.ConnectionError)
    assert PASSWORD not in _full_text(error)


@pytest.mark.asyncio
async def test_a_server_that_does_not_answer_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections (in the backlog), never replies
        port = silent.getsockname()[1]
        error = await _first_use_error(f"redis://:{PASSWORD}@127.0.0.1:{port}/0?socket_timeout=0.3")
    assert isinstance(error, StoreUnavailableError)
    assert f"127.0.0.1:{port}" in str(error)
    assert "did not answer in time" in str(error)
    assert isinstance(error.__cause__, rx.TimeoutError)
    assert PASSWORD not in _full_text(error)


@pytest.mark.asyncio
async def test_a_wrong_password(protected: ThrowawayRedis) -> None:
    wrong = "Wrong-Pa55word-Also-Secret"
    error = await _first_use_error(protected.url.replace(PASSWORD, wrong))
    assert isinstance(error, StoreUnavailableError)
    assert "authentication failed" in str(error)
    assert f"127.0.0.1:{protected.port}" in str(error)
    text = _full_text(error)
    assert wrong not in text
    assert PASSWORD not in text


@pytest.mark.asyncio
async def test_a_missing_password(protected: ThrowawayRedis) -> None:
    error = await _first_use_error(protected.url.replace(f":{PASSWORD}@", ""))
    assert isinstance(error, StoreUnavailableError)
    assert "authentication failed" in str(error)


@pytest.mark.asyncio
async def test_the_right_password_works_and_stays_hidden(protected: ThrowawayRedis) -> None:
    provider = RedisProvider.from_url(protected.url, {})
    try:
        await provider.save_checkpoint(RUN, 0, b"x")
        assert (await provider.load_checkpoint(RUN, 0)).data == b"x"
        assert PASSWORD not in provider.describe()
        assert PASSWORD not in repr(provider.options)
    finally:
        await provider.close()


@pytest.mark.asyncio
async def test_a_database_that_does_not_exist(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0]
    url = url.replace("redis://", f"redis://:{PASSWORD}@") if "@" not in url else url
    error = await _first_use_error(f"{url}/9999")
    assert isinstance(error, StoreUnavailableError)
    assert "database 9999 does not exist" in str(error)
    assert PASSWORD not in _full_text(error)


@pytest.mark.asyncio
async def test_errors_after_the_server_went_away() -> None:
    """A store whose server stops: StoreUnavailableError; when it is back, work resumes."""
    reason = ThrowawayRedis.unavailable_reason()
    if reason:
        pytest.skip(f"needs a throwaway Redis server: {reason}")
    with ThrowawayRedis(password=PASSWORD) as server:
        provider = RedisProvider.from_url(server.url, {})
        try:
            await provider.save_checkpoint(RUN, 0, b"x")
            assert server._process is not None
            server._process.kill()
            server._process.wait()
            with pytest.raises(StoreUnavailableError) as raised:
                await provider.save_checkpoint(RUN, 1, b"y")
            assert f"127.0.0.1:{server.port}" in str(raised.value)
            assert PASSWORD not in _full_text(raised.value)
            server.restart()
            # Persistence was off: the data is gone, but the provider works again.
            assert await provider.load_latest_checkpoint(RUN) is None
            await provider.save_checkpoint(RUN, 0, b"again")
        finally:
            await provider.close()
