"""from_url: URL parsing and the ``[durability.redis]`` options, without any I/O."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from durably.errors import ConfigError
from durably_redis import RedisOptions, RedisProvider
from durably_redis._options import parse_target

PASSWORD = "pa55-w0rd-secret"


def test_defaults() -> None:
    provider = RedisProvider.from_url("redis://localhost", {})
    assert provider.options == RedisOptions()
    assert provider.key_prefix == "durably"
    assert provider.describe() == "redis://localhost:6379/0 (key prefix 'durably')"
    assert provider.server is None
    assert RedisProvider.scheme == "redis"


def test_from_url_does_no_io(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building (and closing, below) a provider opens no socket."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("from_url opened a connection")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    provider = RedisProvider.from_url("redis://no-such-host.invalid:1/3", {"pool_size": 2})
    assert provider.describe().startswith("redis://no-such-host.invalid:1/3")


@pytest.mark.asyncio
async def test_closing_an_unused_provider_does_no_io() -> None:
    provider = RedisProvider.from_url("redis://no-such-host.invalid:1/0", {})
    await provider.close()
    await provider.close()


@pytest.mark.parametrize(
    ("url", "where", "db", "tls"),
    [
        ("redis://localhost", "redis://localhost:6379/0", 0, False),
        ("redis://127.0.0.1:6380/5", "redis://127.0.0.1:6380/5", 5, False),
        ("redis://host/2?db=7", "redis://host:6379/7", 7, False),
        ("rediss://cache.example.com:6380/1", "rediss://cache.example.com:6380/1", 1, True),
        (f"redis://app:{PASSWORD}@h:1/0", "redis://app@h:1/0", 0, False),
        (f"redis://:{PASSWORD}@h", "redis://h:6379/0", 0, False),
        ("redis://[::1]:7000/0", "redis://[::1]:7000/0", 0, False),
    ],
)
def test_urls(url: str, where: str, db: int, tls: bool) -> None:
    target = parse_target(url, RedisOptions())
    assert target.where == where
    assert target.db == db
    assert target.tls is tls
    assert PASSWORD not in repr(target)
    provider = RedisProvider.from_url(url, {})
    assert PASSWORD not in provider.describe()


def test_url_credentials_and_parameters() -> None:
    target = parse_target(
        f"rediss://app:{PASSWORD}@h:6380/0?socket_timeout=2.5&ssl_cert_reqs=none"
        "&ssl_ca_certs=/etc/ca.pem&client_name=worker-7&socket_keepalive=no",
        RedisOptions(),
    )
    kwargs = dict(target.kwargs)
    assert kwargs["username"] == "app"
    assert kwargs["password"] == PASSWORD
    assert kwargs["socket_timeout"] == 2.5
    assert kwargs["ssl_cert_reqs"] == "none"
    assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert kwargs["client_name"] == "worker-7"
    assert kwargs["socket_keepalive"] is False
    assert target.redact(f"oops {PASSWORD}") == "oops ***"


def test_percent_encoded_password() -> None:
    target = parse_target("redis://:p%40ss%3Aw%2Ford@h", RedisOptions())
    assert target.kwargs["password"] == "p@ss:w/ord"


def test_socket_timeout_outlasts_the_wait() -> None:
    target = parse_target("redis://h", RedisOptions(wait_replicas=1, wait_timeout_ms=60_000))
    assert target.kwargs["socket_timeout"] >= 70
    assert parse_target("redis://h", RedisOptions()).kwargs["socket_timeout"] == 30


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("postgresql://h/db", "not a Redis URL"),
        ("localhost:6379", "not a Redis URL"),
        ("unix:///tmp/redis.sock", "not a Redis URL"),
        ("redis://h/zero", "invalid database"),
        ("redis://h:99999/0", "invalid Redis URL"),
        ("redis://h/0?retry_on_timeout=yes", "unknown URL parameter 'retry_on_timeout'"),
        ("redis://h/0?max_connections=5", "pool_size"),
        ("redis://h/0?ssl_cert_reqs=none", "needs a rediss:// \\(TLS\\) URL"),
        ("redis://h/0?socket_timeout=soon", "invalid value 'soon' for 'socket_timeout'"),
        ("redis://h/0?socket_timeout=0", "invalid value"),
        ("redis://h/0?db=x", "invalid value 'x' for 'db'"),
        ("redis://h/0?protocol=3", "unknown URL parameter 'protocol'"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        RedisProvider.from_url(url, {})


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{PASSWORD}@h/0?nonsense=1",
        f"redis://:{PASSWORD}@h/zero",
        f"redis://u:{PASSWORD}@h:99999/0",
        f"http://:{PASSWORD}@h/0",
        f"redis://h/0?password={PASSWORD}&db=nope",
    ],
)
def test_config_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as raised:
        RedisProvider.from_url(url, {})
    assert PASSWORD not in str(raised.value)
    assert raised.value.__cause__ is None or PASSWORD not in str(raised.value.__cause__)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"key_prefx": "x"}, "unknown option 'key_prefx'.*Did you mean 'key_prefix'"),
        ({"no_such_option": 1}, "unknown option 'no_such_option'"),
        ({"key_prefix": ""}, "invalid key prefix"),
        ({"key_prefix": "has space"}, "invalid key prefix"),
        ({"key_prefix": 7}, "invalid key prefix"),
        ({"pool_size": 0}, "at least 1"),
        ({"pool_size": True}, "expected an integer"),
        ({"pool_size": "10"}, "expected an integer"),
        ({"wait_aof": -1}, "at least 0"),
        ({"wait_aof": "yes"}, "expected an integer"),
        ({"wait_replicas": -1}, "at least 0"),
        ({"wait_replicas": 1.5}, "expected an integer"),
        ({"wait_timeout_ms": 0}, "at least 1"),
    ],
)
def test_bad_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as raised:
        RedisProvider.from_url("redis://localhost", options)
    name = next(iter(options))
    assert raised.value.key == f"durability.redis.{name}"


def test_options() -> None:
    provider = RedisProvider.from_url(
        "redis://localhost",
        {
            "key_prefix": "app1:durably",
            "pool_size": 3,
            "wait_aof": 2,
            "wait_replicas": 1,
            "wait_timeout_ms": 250,
        },
    )
    assert provider.options == RedisOptions("app1:durably", 3, 2, 1, 250)
    assert provider.key_prefix == "app1:durably"
    assert RedisOptions(wait_aof=True).waitaof_args == (1, 0)
    assert RedisOptions(wait_aof=2).waitaof_args == (1, 2)
    assert RedisOptions(wait_aof=0).waitaof_args == (1, 0)
    assert RedisOptions(wait_aof=False).waitaof_args is None
