"""Parsing the store URL and the ``[durability.redis]`` options (no I/O)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from durably.errors import ConfigError
from durably.options import did_you_mean, integer_option, option_items, redact_url

SCHEMES = ("redis", "rediss")
OPTION_KEY = "durability.redis"
DEFAULT_SOCKET_TIMEOUT = 30.0
"""Seconds a reply may take (redis-py's own default, 5 s, is short for 64 MiB objects)."""
DEFAULT_CONNECT_TIMEOUT = 5.0
"""Seconds a TCP (and TLS) connection attempt may take."""
KEY_PREFIX_RE = re.compile(r"[!-~]{1,64}")
"""Printable ASCII without spaces: the prefix is used verbatim in key names."""

# Query parameters of the URL passed on to redis-py, with how to read them. Anything
# else is refused (redis-py would only fail on first use, with a TypeError).
_FLOAT = "float"
_INT = "int"
_BOOL = "bool"
_STR = "str"
URL_PARAMETERS: Mapping[str, str] = {
    "db": _INT,
    "socket_timeout": _FLOAT,
    "socket_connect_timeout": _FLOAT,
    "socket_keepalive": _BOOL,
    "health_check_interval": _FLOAT,
    "client_name": _STR,
    "username": _STR,
    "password": _STR,
}
TLS_PARAMETERS: Mapping[str, str] = {
    "ssl_cert_reqs": _STR,
    "ssl_ca_certs": _STR,
    "ssl_ca_path": _STR,
    "ssl_certfile": _STR,
    "ssl_keyfile": _STR,
    "ssl_password": _STR,
    "ssl_check_hostname": _BOOL,
    "ssl_ciphers": _STR,
}
"""Only with ``rediss://`` (TLS)."""
_FALSE = ("0", "f", "false", "n", "no", "off")
_TRUE = ("1", "t", "true", "y", "yes", "on")


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """The validated ``[durability.redis]`` table. See ``docs/providers/redis.md``."""

    key_prefix: str = "durably"
    """Every key of the store starts with ``<key_prefix>:``; stores with different
    prefixes share a database without seeing each other."""
    pool_size: int = 10
    """Connections the pool opens at most (operations beyond wait for a free one)."""
    wait_aof: bool | int = False
    """``true``: each write returns only after ``WAITAOF 1 0`` confirms the server
    fsynced it to its append-only file; an integer ``n``: ``WAITAOF 1 n`` (the local
    AOF and the AOF of ``n`` replicas). Needs Redis >= 7.2 and ``appendonly yes``."""
    wait_replicas: int = 0
    """Each write returns only after ``WAIT n`` confirms ``n`` replicas received it."""
    wait_timeout_ms: int = 1000
    """How long ``WAIT``/``WAITAOF`` wait for the acknowledgements before the write is
    reported as not durable (StoreError)."""

    @property
    def waitaof_args(self) -> tuple[int, int] | None:
        """``(numlocal, numreplicas)`` for WAITAOF, or None when the option is off."""
        if self.wait_aof is False:
            return None
        if self.wait_aof is True:
            return (1, 0)
        return (1, int(self.wait_aof))


_integer = integer_option
__all__ = ["RedisOptions", "Target", "parse_options", "parse_target", "redact_url"]


def parse_options(options: Mapping[str, Any] | None) -> RedisOptions:
    """Validate the provider options; an unknown key or a bad value raises ConfigError."""
    values: dict[str, Any] = {}
    for name, key, value in option_items(options, OPTION_KEY, RedisOptions.__dataclass_fields__):
        if name == "key_prefix":
            if not isinstance(value, str) or not KEY_PREFIX_RE.fullmatch(value):
                raise ConfigError(
                    f"invalid key prefix {value!r}",
                    key=key,
                    fix="Use 1-64 printable ASCII characters without spaces, e.g. 'durably' "
                    "or 'app1:durably'",
                )
        elif name == "pool_size":
            value = _integer(key, value, minimum=1)
        elif name == "wait_aof":
            if not isinstance(value, bool):
                value = _integer(key, value, minimum=0)
        elif name == "wait_replicas":
            value = _integer(key, value, minimum=0)
        elif name == "wait_timeout_ms":
            value = _integer(key, value, minimum=1)
        values[name] = value
    return RedisOptions(**values)


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect: redis-py connection arguments, and how to talk about them safely."""

    kwargs: Mapping[str, Any] = field(repr=False)
    """Arguments for redis-py's connection class (may hold the password: never log them)."""
    password: str | None = field(repr=False)
    tls: bool
    host: str
    port: int
    db: int
    where: str
    """``redis://[user@]host:port/db`` without the password."""

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the password replaced by ``***``."""
        if self.password:
            text = text.replace(self.password, "***")
        return text


def _convert(name: str, kind: str, raw: str, shown_url: str) -> Any:
    key = "durability.store"
    try:
        if kind == _INT:
            return int(raw)
        if kind == _FLOAT:
            value = float(raw)
            if not value > 0:
                raise ValueError(raw)
            return value
        if kind == _BOOL:
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(raw)
    except ValueError:
        shown = "***" if "password" in name else repr(raw)
        raise ConfigError(f"invalid value {shown} for {name!r} in {shown_url!r}", key=key) from None
    return raw


def parse_target(url: str, opts: RedisOptions) -> Target:
    """Turn a ``redis://`` or ``rediss://`` URL into connection arguments (no I/O).

    ``redis://[[user]:password@]host[:port][/db][?param=value&...]``. The database
    comes from the path or ``?db=``; the parameters in :data:`URL_PARAMETERS` (and,
    with ``rediss://``, :data:`TLS_PARAMETERS`) are passed to redis-py.

    Raises:
        ConfigError: Not a Redis URL, an unknown parameter or a bad value. The message
            never contains the password.
    """
    shown_url = redact_url(url) if isinstance(url, str) else repr(url)
    key = "durability.store"
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"not a Redis URL: {shown_url!r}",
            key=key,
            fix="Use redis://host:6379/0 or rediss://host:6380/0",
        )
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError as exc:
        raise ConfigError(
            f"invalid Redis URL {shown_url!r}: {redact_url(str(exc))}", key=key
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"not a Redis URL: {shown_url!r}",
            key=key,
            fix="Use redis://host:6379/0 or rediss://host:6380/0",
        )
    tls = scheme == "rediss"
    allowed = dict(URL_PARAMETERS)
    if tls:
        allowed.update(TLS_PARAMETERS)
    kwargs: dict[str, Any] = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True).items():
        if name not in allowed:
            if name in TLS_PARAMETERS:
                raise ConfigError(
                    f"{name!r} needs a rediss:// (TLS) URL, not {shown_url!r}", key=key
                )
            fix = did_you_mean(name, allowed, what="parameters")
            if name in ("max_connections", "timeout"):
                fix = f"Use the option {OPTION_KEY}.pool_size instead"
            raise ConfigError(f"unknown URL parameter {name!r} in {shown_url!r}", key=key, fix=fix)
        kwargs[name] = _convert(name, allowed[name], values[-1], shown_url)
    if parts.username:
        kwargs["username"] = unquote(parts.username)
    if parts.password:
        kwargs["password"] = unquote(parts.password)
    path = unquote(parts.path or "").strip("/")
    if "db" not in kwargs:
        if path:
            if not path.isdigit():
                raise ConfigError(
                    f"invalid database {path!r} in {shown_url!r}",
                    key=key,
                    fix="The path of a Redis URL is the database number, e.g. redis://host:6379/0",
                )
            kwargs["db"] = int(path)
        else:
            kwargs["db"] = 0
    if kwargs["db"] < 0:
        raise ConfigError(f"invalid database {kwargs['db']} in {shown_url!r}", key=key)
    host = unquote(host) if host else "localhost"
    port = port or 6379
    kwargs["host"] = host
    kwargs["port"] = port
    kwargs.setdefault("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    # A reply must be allowed to take longer than the WAIT/WAITAOF it may include.
    kwargs.setdefault(
        "socket_timeout", max(DEFAULT_SOCKET_TIMEOUT, opts.wait_timeout_ms / 1000 + 10)
    )
    kwargs.setdefault("client_name", "durably")
    user = kwargs.get("username")
    shown_host = f"[{host}]" if ":" in host else host
    where = f"{scheme}://{user + '@' if user else ''}{shown_host}:{port}/{kwargs['db']}"
    password = kwargs.get("password")
    return Target(
        kwargs=kwargs,
        password=password,
        tls=tls,
        host=host,
        port=port,
        db=kwargs["db"],
        where=where,
    )
