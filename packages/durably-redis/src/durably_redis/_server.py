"""What the provider learns about the server on first use, and the warnings it gives.

One pipelined round trip reads the server's version (``INFO server``), its persistence
settings (``CONFIG GET appendonly``/``appendfsync``/``save``/``maxmemory-policy``, with
``INFO persistence`` as a fallback where ``CONFIG`` is disabled, as on most managed
services) and loads the Lua scripts.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from durably.errors import ConfigError, DurablyWarning, StoreError
from durably_redis._options import OPTION_KEY, RedisOptions, Target
from durably_redis._scripts import SCRIPTS

__all__ = ["MIN_VERSION", "Persistence", "ServerInfo", "inspect_server"]

log = logging.getLogger("durably.redis")

MIN_VERSION = (5, 0)
"""Scripts that read TIME and then write need effects replication (Redis 5)."""
SHEBANG_VERSION = (7, 0)
WAITAOF_VERSION = (7, 2)
_CONFIG_KEYS = ("appendonly", "appendfsync", "save", "maxmemory-policy")


@dataclass(frozen=True, slots=True)
class Persistence:
    """The server's persistence settings, as far as they could be read."""

    appendonly: bool | None
    """The append-only file is on (None: unknown)."""
    appendfsync: str | None
    """``always``, ``everysec`` or ``no`` (None: unknown)."""
    save: str | None
    """The RDB save points, e.g. ``"3600 1 300 100 60 10000"``; ``""`` = no snapshots."""
    maxmemory_policy: str | None
    source: str
    """``"CONFIG GET"``, ``"INFO persistence"`` or ``"unknown"``."""

    @property
    def survives_restart(self) -> bool | None:
        """Whether a saved checkpoint would still be there after Redis restarts
        (True: AOF or RDB snapshots are on; None: the settings could not be read)."""
        if self.appendonly:
            return True
        if self.save is None or self.appendonly is None:
            return None
        return bool(self.save.strip())


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the provider found out about the server on first use."""

    version: tuple[int, ...] | None
    """``redis_version`` of ``INFO server`` (None if INFO is disabled)."""
    persistence: Persistence

    @property
    def shebang(self) -> bool:
        """Whether the server understands ``#!lua`` script flags (Redis >= 7)."""
        return self.version is not None and self.version >= SHEBANG_VERSION


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _config_value(reply: Any, name: str) -> str | None:
    """The value of ``name`` in a CONFIG GET reply (a dict or a flat list), or None."""
    if isinstance(reply, BaseException):
        return None
    if isinstance(reply, Mapping):
        for key, value in reply.items():
            if _text(key) == name:
                return _text(value)
        return None
    if isinstance(reply, Sequence) and not isinstance(reply, (str, bytes)):
        items = list(reply)
        for key, value in zip(items[::2], items[1::2], strict=False):
            if _text(key) == name:
                return _text(value)
    return None


def _info_field(reply: Any, name: str) -> str | None:
    if isinstance(reply, BaseException) or reply is None:
        return None
    if isinstance(reply, Mapping):
        for key, value in reply.items():
            if _text(key) == name:
                return _text(value)
        return None
    match = re.search(rf"^{re.escape(name)}:(.*)$", _text(reply), re.MULTILINE)
    return match.group(1).strip() if match else None


def parse_version(text: str | None) -> tuple[int, ...] | None:
    """``"7.0.15"`` -> ``(7, 0, 15)``; None if unreadable."""
    if not text:
        return None
    numbers = re.findall(r"\d+", text)
    return tuple(int(n) for n in numbers[:3]) if numbers else None


def _persistence(config: list[Any], info: Any) -> Persistence:
    values = {
        name: _config_value(reply, name) for name, reply in zip(_CONFIG_KEYS, config, strict=True)
    }
    if values["appendonly"] is not None:
        return Persistence(
            appendonly=values["appendonly"].lower() == "yes",
            appendfsync=values["appendfsync"],
            save=values["save"],
            maxmemory_policy=values["maxmemory-policy"],
            source="CONFIG GET",
        )
    aof = _info_field(info, "aof_enabled")
    if aof is not None:
        return Persistence(
            appendonly=aof == "1",
            appendfsync=None,
            save=None,
            maxmemory_policy=None,
            source="INFO persistence",
        )
    return Persistence(None, None, None, None, "unknown")


def _warn_about(persistence: Persistence, target: Target) -> None:
    where = target.where
    survives = persistence.survives_restart
    if survives is False:
        warnings.warn(
            f"Redis {where} keeps durably's checkpoints in memory only: appendonly is 'no' "
            'and no RDB save points are configured (save ""), so a restart of the Redis '
            "server loses every checkpoint and no execution can be resumed after it. Turn "
            "on the append-only file (appendonly yes, appendfsync everysec or always); see "
            "docs/providers/redis.md",
            DurablyWarning,
            stacklevel=4,
        )
    elif survives is None:
        log.warning(
            "cannot read the persistence settings of Redis %s (CONFIG GET is disabled and "
            "INFO shows no AOF): make sure the server persists its data (appendonly yes), "
            "or checkpoints are lost when it restarts",
            where,
        )
    elif not persistence.appendonly:
        log.info(
            "Redis %s persists with RDB snapshots only (save %r): a crash loses the "
            "checkpoints written since the last snapshot; appendonly yes makes each one "
            "durable",
            where,
            persistence.save,
        )
    elif persistence.appendfsync == "no":
        log.info(
            "Redis %s has appendfsync no: the operating system decides when checkpoints "
            "reach the disk (a machine crash may lose the last ~30 s)",
            where,
        )
    policy = persistence.maxmemory_policy or ""
    if policy.startswith("allkeys-"):
        warnings.warn(
            f"Redis {where} has maxmemory-policy {policy}: when it reaches maxmemory it "
            "evicts keys, durably's checkpoints and leases included. Use noeviction (or a "
            "volatile-* policy) for a durably store",
            DurablyWarning,
            stacklevel=4,
        )


async def inspect_server(client: Redis, target: Target, options: RedisOptions) -> ServerInfo:
    """Read the server's version and settings, load the scripts, warn about durability.

    Raises:
        redis.exceptions.RedisError: The server could not be reached (the caller
            translates it).
        ConfigError: ``wait_aof`` cannot work on this server.
        StoreError: The server is older than Redis 5.
    """
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("INFO", "server")
    for name in _CONFIG_KEYS:
        pipe.execute_command("CONFIG", "GET", name)
    pipe.execute_command("INFO", "persistence")
    for script in SCRIPTS.values():
        pipe.execute_command("SCRIPT", "LOAD", script.text(True))
        pipe.execute_command("SCRIPT", "LOAD", script.text(False))
    replies = await pipe.execute(raise_on_error=False)
    for reply in replies:
        # A failed AUTH or SELECT fails every command of the pipeline: raise it.
        if isinstance(reply, Exception) and _is_fatal(reply):
            raise reply
    server, *rest = replies
    config = rest[: len(_CONFIG_KEYS)]
    info = rest[len(_CONFIG_KEYS)]
    version_text = _info_field(server, "redis_version")
    version = parse_version(version_text)
    persistence = _persistence(config, info)
    if version is not None and version < MIN_VERSION:
        raise StoreError(
            f"Redis {target.where} is version {version_text}; durably needs Redis "
            f"{'.'.join(map(str, MIN_VERSION))} or newer"
        )
    waitaof = options.waitaof_args
    if waitaof is not None:
        if version is not None and version < WAITAOF_VERSION:
            raise ConfigError(
                f"Redis {target.where} is version {version_text}, which has no WAITAOF",
                key=f"{OPTION_KEY}.wait_aof",
                fix="WAITAOF needs Redis 7.2 or newer: upgrade the server, or remove "
                "wait_aof (wait_replicas uses WAIT, which every version has)",
            )
        if persistence.appendonly is False:
            raise ConfigError(
                f"Redis {target.where} has appendonly off, so WAITAOF cannot confirm that "
                "a write reached its append-only file",
                key=f"{OPTION_KEY}.wait_aof",
                fix="Set appendonly yes on the server, or remove wait_aof",
            )
    _warn_about(persistence, target)
    return ServerInfo(version=version, persistence=persistence)


def _is_fatal(reply: Exception) -> bool:
    from redis import exceptions as rx

    if isinstance(reply, (rx.ConnectionError, rx.TimeoutError)):
        return True
    text = str(reply)
    return any(
        marker in text
        for marker in (
            "NOAUTH",
            "WRONGPASS",
            "invalid password",
            "DB index",
            "Invalid Database",
            "invalid username-password",
        )
    )
