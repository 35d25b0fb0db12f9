"""Configuration: the ``[durability]`` table, where it is read from and in what order.

Sources, highest precedence first:

1. Explicit arguments (``durably run --store URL``, ``load_config(overrides=...)``).
2. Environment variables: ``DURABLY_STORE``, ``DURABLY_ENABLED``,
   ``DURABLY_COMPRESSION_LEVEL``, ``DURABLY_KEEP_LAST``, ``DURABLY_LEASE_TTL``,
   ``DURABLY_PICKLE_KEY`` (the HMAC key, never read from a file you might commit).
3. ``durably.toml`` -- its ``[durability]`` table (or the file named by ``DURABLY_CONFIG``).
4. ``pyproject.toml`` -- its ``[tool.durably]`` table (same keys as ``[durability]``).
5. ``playbooks.toml`` -- its ``[durability]`` table.
6. Defaults (below).

Files are looked up in the current directory (or the directory given). Values from a
higher source replace those of a lower one key by key; provider sub-tables
(``[durability.s3]``, ...) are merged key by key as well.

Every key is checked: an unknown key, a wrong type or an unknown store scheme raises
:class:`~durably.errors.ConfigError` naming the file, the key and the fix.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, cast

from durably.errors import ConfigError
from durably.options import did_you_mean

__all__ = ["DurabilityConfig", "WorkerConfig", "load_config", "load_worker_config", "parse_size"]

DEFAULT_STORE = "file://.durably"
KNOWN_TABLES = frozenset({"durability", "llm", "run", "worker"})
MAX_LEASE_TTL = 365 * 86400
MIN_BLOB_THRESHOLD = 256  # the codec's smallest chunking threshold (durably._codec)
PROVIDER_TABLES = frozenset({"file", "s3", "postgres", "postgresql", "redis", "rediss"})
_SCHEME_ALIASES = {"postgresql": "postgres", "rediss": "redis"}


@dataclass(frozen=True)
class DurabilityConfig:
    """The resolved ``[durability]`` settings."""

    enabled: bool = True
    """Turn checkpointing off entirely (programs still run)."""
    store: str = DEFAULT_STORE
    """Where executions live: ``file://DIR``, ``s3://bucket/prefix``, ``postgresql://...``."""
    compression_level: int = 3
    """zstd level 1-22 for stored objects; 0 disables compression."""
    compression_threshold: int = 1024
    """Objects smaller than this many bytes are stored uncompressed."""
    blob_threshold: int = 16 * 1024
    """Values whose encoding exceeds this many bytes are stored once, as blobs."""
    max_checkpoint_size: int = 64 * 1024 * 1024
    """A checkpoint larger than this fails with CheckpointTooLargeError: the checkpoint's
    document plus the new blobs it stores (values stored once, as blobs, count when they
    are first written)."""
    max_execution_size: int = 0
    """Bytes one execution may store, checkpoints and blobs together, before its next
    checkpoint fails with CheckpointTooLargeError naming the limit and the largest
    variables (0: no limit). What this process writes counts as encoded (before
    compression, like ``max_checkpoint_size``); what earlier processes of the execution
    stored (before a resume) counts as the store reports it."""
    keep_last: int = 0
    """Keep only the last N checkpoints of an execution while it runs (0 keeps all)."""
    on_completion: Literal["keep", "prune", "delete"] = "keep"
    """What to do with a completed execution's checkpoints: keep them all, prune them to
    ``keep_last`` (at least 1), or delete the execution."""
    on_unserializable: Literal["error", "replay", "skip"] = "error"
    """A frame variable no snapshot can hold (a generator, an open file, ``zip(...)``):
    ``"error"`` fails the checkpoint; ``"replay"`` waits with the agent's snapshots until
    it is gone, with a warning (every operation is journaled as always; a resume replays
    from the snapshot before, so it stays exact, only longer: while such a value lives,
    retention keeps everything since that snapshot); ``"skip"`` leaves the variable out
    with a warning (a resume then lacks it). A value of ``self.state`` no snapshot can
    hold fails the checkpoint under ``"replay"`` and ``"error"``."""
    allow_pickle: bool = False
    """Pickle values the codec does not know; needs ``DURABLY_PICKLE_KEY`` (HMAC-signed)."""
    lease_ttl: float = 30.0
    """Seconds an execution's lease lasts without renewal."""
    snapshot_every: int = 16
    """Snapshot an agent at its next quiet point once this many operations were journaled
    since its last snapshot (1 snapshots after every statement that awaited). Resume
    replays at most about this many operations per agent."""
    providers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Provider sub-tables, by scheme: ``{"s3": {"region": ...}}``."""
    sources: tuple[str, ...] = ()
    """Where the values came from (for ``durably config`` and error messages)."""

    @property
    def scheme(self) -> str:
        from durably._plugins import scheme_of

        return scheme_of(self.store)

    def provider_options(self) -> Mapping[str, Any]:
        """The sub-table for this store's scheme (``[durability.postgres]`` serves both
        ``postgres://`` and ``postgresql://``, ``[durability.redis]`` both ``redis://`` and
        ``rediss://``; the table named exactly like the scheme wins key by key)."""
        scheme = self.scheme
        family = _SCHEME_ALIASES.get(scheme, scheme)
        merged = dict(self.providers.get(family, {}))
        for alias, canonical in _SCHEME_ALIASES.items():
            if canonical == family and alias != family:
                merged.update(self.providers.get(alias, {}))
        return merged

    @property
    def pickle_key(self) -> bytes | None:
        key = os.environ.get("DURABLY_PICKLE_KEY")
        return key.encode() if key else None


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "enabled": (bool,),
    "store": (str,),
    "compression_level": (int,),
    "compression_threshold": (int, str),
    "blob_threshold": (int, str),
    "max_checkpoint_size": (int, str),
    "max_execution_size": (int, str),
    "keep_last": (int,),
    "on_completion": (str,),
    "on_unserializable": (str,),
    "allow_pickle": (bool,),
    "lease_ttl": (int, float),
    "snapshot_every": (int,),
}
_CHOICES = {
    "on_completion": ("keep", "prune", "delete"),
    "on_unserializable": ("error", "replay", "skip"),
}
_SIZES = ("compression_threshold", "blob_threshold", "max_checkpoint_size", "max_execution_size")
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_size(value: int | str, *, key: str = "size", source: str | None = None) -> int:
    """Parse ``1048576``, ``"64MiB"``, ``"10 MB"`` into bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError("must not be negative", source=source, key=key)
        return value
    text = str(value).strip().lower().replace(" ", "")
    number = text.rstrip("kmgib")
    unit = text[len(number) :]
    if unit not in _UNITS or not number.replace(".", "", 1).isdigit():
        raise ConfigError(
            f"cannot read size {value!r}",
            source=source,
            key=key,
            fix="Use a number of bytes or e.g. '64MiB', '500KB'",
        )
    return int(float(number) * _UNITS[unit])


def _check_table(table: Any, source: str, prefix: str) -> dict[str, Any]:
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"must be a table, not {type(table).__name__} {table!r}",
            source=source,
            key=prefix,
            fix=f"Write it as [{prefix}] with keys under it",
        )
    out: dict[str, Any] = {}
    providers: dict[str, dict[str, Any]] = {}
    for key, value in table.items():
        dotted = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            if key not in PROVIDER_TABLES and not key.isidentifier():
                raise ConfigError("unknown provider sub-table", source=source, key=dotted)
            providers[key] = dict(value)
            continue
        if key not in _FIELD_TYPES:
            raise ConfigError(
                "unknown key",
                source=source,
                key=dotted,
                fix=did_you_mean(key, _FIELD_TYPES, what="keys"),
            )
        types = _FIELD_TYPES[key]
        if isinstance(value, bool) and bool not in types:
            raise ConfigError(
                f"expected {types[0].__name__}, got a boolean", source=source, key=dotted
            )
        if not isinstance(value, types):
            raise ConfigError(
                f"expected {' or '.join(t.__name__ for t in types)}, got {type(value).__name__} "
                f"{value!r}",
                source=source,
                key=dotted,
            )
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(
                f"{value!r} is not one of {', '.join(_CHOICES[key])}", source=source, key=dotted
            )
        if key in _SIZES:
            value = parse_size(value, key=dotted, source=source)  # type: ignore[arg-type]
        if key == "compression_level" and not 0 <= value <= 22:
            raise ConfigError("must be between 0 and 22", source=source, key=dotted)
        if key == "keep_last" and value < 0:
            raise ConfigError("must be 0 (keep all) or more", source=source, key=dotted)
        if key == "snapshot_every" and value < 1:
            raise ConfigError("must be at least 1", source=source, key=dotted)
        if key == "lease_ttl" and not 0 < value <= MAX_LEASE_TTL:
            raise ConfigError(
                f"must be a positive number of seconds, at most {MAX_LEASE_TTL:,}",
                source=source,
                key=dotted,
            )
        if key == "blob_threshold" and value < MIN_BLOB_THRESHOLD:
            raise ConfigError(
                f"must be at least {MIN_BLOB_THRESHOLD} bytes",
                source=source,
                key=dotted,
                fix="Use e.g. '16KiB' (the default)",
            )
        out[key] = value
    if providers:
        out["providers"] = providers
    return out


def _check_tables(data: Mapping[str, Any], source: str) -> None:
    """A ``durably.toml`` holds only the known top-level tables."""
    unknown = set(data) - KNOWN_TABLES
    if unknown:
        raise ConfigError(
            "unknown table",
            source=source,
            key=sorted(unknown)[0],
            fix=f"Known tables: {', '.join(sorted(KNOWN_TABLES))}",
        )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"is not UTF-8 text (byte {exc.start})", source=str(path), fix="Save the file as UTF-8"
        ) from exc
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror}", source=str(path)) from exc


def _env_layer() -> dict[str, Any]:
    env = os.environ
    layer: dict[str, Any] = {}
    conversions = {
        "DURABLY_STORE": ("store", str),
        "DURABLY_ENABLED": ("enabled", "bool"),
        "DURABLY_COMPRESSION_LEVEL": ("compression_level", int),
        "DURABLY_KEEP_LAST": ("keep_last", int),
        "DURABLY_LEASE_TTL": ("lease_ttl", float),
    }
    for var, (key, kind) in conversions.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        try:
            if kind == "bool":
                lowered = raw.strip().lower()
                if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(raw)
                layer[key] = lowered in ("1", "true", "yes", "on")
            else:
                layer[key] = kind(raw)  # type: ignore[operator]
        except ValueError as exc:
            raise ConfigError(f"cannot read {raw!r}", source="environment", key=var) from exc
    return layer


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if key == "providers":
            providers = {k: dict(v) for k, v in merged.get("providers", {}).items()}
            for scheme, options in value.items():
                providers.setdefault(scheme, {}).update(options)
            merged["providers"] = providers
        else:
            merged[key] = value
    return merged


def load_config(
    directory: str | os.PathLike[str] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    use_env: bool = True,
) -> DurabilityConfig:
    """Resolve the configuration (see the module docstring for the order).

    Args:
        directory: Where to look for the files (default: the current directory).
        config_file: An explicit ``durably.toml`` (or any TOML file with ``[durability]``);
            it replaces the ``durably.toml`` lookup and must exist.
        overrides: Highest-precedence values (command-line options).
        use_env: Read ``DURABLY_*`` environment variables.
    """
    root = Path(directory) if directory is not None else Path.cwd()
    layers: list[tuple[str, dict[str, Any]]] = []

    playbooks = root / "playbooks.toml"
    if playbooks.is_file():
        table = _read_toml(playbooks).get("durability")
        if table is not None:
            layers.append((str(playbooks), _check_table(table, str(playbooks), "durability")))
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        table = _read_toml(pyproject).get("tool", {}).get("durably")
        if table is not None:
            layers.append((str(pyproject), _check_table(table, str(pyproject), "tool.durably")))
    explicit = config_file or (os.environ.get("DURABLY_CONFIG") if use_env else None)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(
                "file not found",
                source=str(path),
                fix="Check the path given with --config or DURABLY_CONFIG",
            )
        data = _read_toml(path)
        _check_tables(data, str(path))
        table = data.get("durability", {})
        layers.append((str(path), _check_table(table, str(path), "durability")))
    else:
        durably_toml = root / "durably.toml"
        if durably_toml.is_file():
            data = _read_toml(durably_toml)
            _check_tables(data, str(durably_toml))
            table = data.get("durability", {})
            layers.append((str(durably_toml), _check_table(table, str(durably_toml), "durability")))
    if use_env:
        env = _env_layer()
        if env:
            layers.append(("environment", _check_table(env, "environment", "durability")))
    if overrides:
        layers.append(
            (
                "argument",
                _check_table(
                    {k: v for k, v in overrides.items() if v is not None}, "argument", "durability"
                ),
            )
        )

    merged: dict[str, Any] = {}
    for _source, layer in layers:
        merged = _merge(merged, layer)
    names = {f.name for f in fields(DurabilityConfig)}
    config = replace(
        DurabilityConfig(),
        **{k: v for k, v in merged.items() if k in names},
        sources=tuple(source for source, _ in layers),
    )
    config.scheme  # noqa: B018 - validates the store URL early
    return config


@dataclass(frozen=True)
class WorkerConfig:
    """The ``[worker]`` table of ``durably.toml``: how ``durably worker`` supervises the
    executions it runs (each in a child process; see ``docs/guides/scaling-out.md``)."""

    statement_timeout: float = 300.0
    """Seconds an attempt may go without progress (a statement starting or a checkpoint
    being written) before its child process is killed and the attempt fails. 0: no limit.
    Starting the child, opening the store, claiming and loading the history get at least
    60 s."""
    max_attempts: int = 3
    """Failed attempts (a crash, a timeout, an error) after which the execution is
    marked ``failed`` and no longer retried by workers."""
    backoff: float = 1.0
    """Seconds to wait before the second attempt; doubled for every further one."""
    max_backoff: float = 300.0
    """The longest wait between two attempts."""
    cpu_limit: float = 0.0
    """CPU seconds one attempt's child process may use (``RLIMIT_CPU``). 0: no limit."""
    memory_limit: int = 0
    """Bytes of address space one attempt's child process may map (``RLIMIT_AS``).
    0: no limit."""


_WORKER_TYPES: dict[str, tuple[type, ...]] = {
    "statement_timeout": (int, float),
    "max_attempts": (int,),
    "backoff": (int, float),
    "max_backoff": (int, float),
    "cpu_limit": (int, float),
    "memory_limit": (int, str),
}


def _check_worker_table(table: Any, source: str) -> dict[str, Any]:
    import math

    if not isinstance(table, Mapping):
        raise ConfigError(
            f"must be a table, not {type(table).__name__} {table!r}", source=source, key="worker"
        )
    out: dict[str, Any] = {}
    for key, value in table.items():
        dotted = f"worker.{key}"
        if key not in _WORKER_TYPES:
            raise ConfigError(
                "unknown key",
                source=source,
                key=dotted,
                fix=did_you_mean(key, _WORKER_TYPES, what="keys"),
            )
        types = _WORKER_TYPES[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise ConfigError(
                f"expected {' or '.join(t.__name__ for t in types)}, got "
                f"{type(value).__name__} {value!r}",
                source=source,
                key=dotted,
            )
        value = cast(Any, value)  # checked above
        if key == "memory_limit":
            value = parse_size(value, key=dotted, source=source)
        elif key == "max_attempts":
            if value < 1:
                raise ConfigError("must be at least 1", source=source, key=dotted)
        elif not (math.isfinite(value) and 0 <= value <= MAX_LEASE_TTL):
            raise ConfigError(
                f"must be a number of seconds from 0 to {MAX_LEASE_TTL:,}",
                source=source,
                key=dotted,
            )
        out[key] = value
    return out


def load_worker_config(
    directory: str | os.PathLike[str] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    use_env: bool = True,
) -> WorkerConfig:
    """Resolve the ``[worker]`` settings: ``overrides`` (command-line options), then the
    ``[worker]`` table of ``durably.toml`` (or of ``config_file`` / ``DURABLY_CONFIG``),
    then the defaults.

    Raises:
        ConfigError: An unknown key or an invalid value (the message names the file and
            the key).
    """
    root = Path(directory) if directory is not None else Path.cwd()
    explicit = config_file or (os.environ.get("DURABLY_CONFIG") if use_env else None)
    path = Path(explicit) if explicit else root / "durably.toml"
    values: dict[str, Any] = {}
    if path.is_file():
        table = _read_toml(path).get("worker")
        if table is not None:
            values.update(_check_worker_table(table, str(path)))
    if overrides:
        values.update(
            _check_worker_table({k: v for k, v in overrides.items() if v is not None}, "argument")
        )
    return replace(WorkerConfig(), **values)
