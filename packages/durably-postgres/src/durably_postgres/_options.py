"""Parsing the store URL and the ``[durability.postgres]`` options (no I/O)."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from durably.errors import ConfigError
from durably.options import (
    bool_option,
    choice_option,
    integer_option,
    number_option,
    option_items,
    redact_url,
    string_option,
)

SCHEMES = ("postgresql", "postgres")
SCHEMA_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
OPTION_KEY = "durability.postgres"

LeaseClock = Literal["server", "client"]


@dataclass(frozen=True, slots=True)
class PostgresOptions:
    """The validated ``[durability.postgres]`` table. See ``docs/providers/postgres.md``."""

    schema: str = "durably"
    """The PostgreSQL schema that holds durably's tables (created by the migrations)."""
    pool_min_size: int = 1
    """Connections the pool keeps open."""
    pool_max_size: int = 10
    """Connections the pool opens at most."""
    pool_timeout: float = 30.0
    """Seconds an operation waits for a pooled connection before StoreUnavailableError."""
    pool_linger: float = 10.0
    """Seconds the process's pool and owner-lock session stay open after the last store
    using them closed, for the next store to take again (0: they close with it)."""
    application_name: str | None = None
    """Shown in ``pg_stat_activity``; default ``durably`` unless the URL or PGAPPNAME sets one."""
    connect_timeout: float = 10.0
    """Seconds to wait for one connection attempt (libpq ``connect_timeout``)."""
    connect_retries: int = 3
    """Transient connection failures are retried this many times, with backoff."""
    statement_timeout: float | None = None
    """Seconds after which the server cancels a statement (None/0: the server's setting)."""
    lease_clock: LeaseClock = "server"
    """Whose clock times leases: the server's ``now()`` (default) or this process's."""
    migrate: bool = True
    """Create/upgrade the schema automatically on first use."""
    prepared_statements: bool = True
    """Let psycopg prepare statements it runs often (turn off behind PgBouncer in
    transaction mode older than 1.21)."""


_number = number_option
_integer = integer_option


def parse_options(options: Mapping[str, Any] | None) -> PostgresOptions:
    """Validate the provider options; an unknown key or a bad value raises ConfigError."""
    values: dict[str, Any] = {}
    for name, key, value in option_items(options, OPTION_KEY, PostgresOptions.__dataclass_fields__):
        if name == "schema":
            string_option(
                key,
                value,
                pattern=SCHEMA_RE,
                what="schema name",
                fix="Use 1-63 characters from A-Z, a-z, 0-9 and '_', not starting with a digit",
            )
        elif name in ("pool_min_size", "connect_retries"):
            value = _integer(key, value, minimum=0)
        elif name == "pool_max_size":
            value = _integer(key, value, minimum=1)
        elif name in ("pool_timeout", "connect_timeout"):
            value = _number(key, value, minimum=0.001)
        elif name == "pool_linger":
            value = _number(key, value, minimum=0, allow_zero=True)
        elif name == "statement_timeout":
            if value is not None:
                value = _number(key, value, minimum=0, allow_zero=True) or None
        elif name == "application_name":
            string_option(key, value)
        elif name == "lease_clock":
            choice_option(key, value, ("server", "client"))
        elif name in ("migrate", "prepared_statements"):
            bool_option(key, value)
        values[name] = value
    parsed = PostgresOptions(**values)
    if parsed.pool_max_size < parsed.pool_min_size:
        raise ConfigError(
            f"pool_max_size ({parsed.pool_max_size}) is smaller than pool_min_size "
            f"({parsed.pool_min_size})",
            key=f"{OPTION_KEY}.pool_max_size",
        )
    return parsed


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect: the libpq parameters, and how to talk about them safely."""

    params: Mapping[str, str] = field(repr=False)
    """libpq connection parameters (may contain the password: never log them)."""
    password: str | None = field(repr=False)
    user: str
    where: str
    """``postgresql://user@host:port/dbname`` without the password."""

    def conninfo(self) -> str:
        """The libpq conninfo string (contains the password, if any: never log it)."""
        return make_conninfo(**self.params)

    def redact(self, text: str) -> str:
        """``text`` with every occurrence of the password replaced by ``***``."""
        if self.password and len(self.password) >= 3:
            return text.replace(self.password, "***")
        return text


def parse_target(url: str, opts: PostgresOptions) -> Target:
    """Turn a ``postgresql://`` URL (plus PG* environment) into connection parameters.

    Raises:
        ConfigError: Not a PostgreSQL URL, or libpq cannot parse it. The message never
            contains the password.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise ConfigError(
            f"not a PostgreSQL URL: {redact_url(url)!r}",
            key="durability.store",
            fix="Use postgresql://user@host:5432/dbname",
        )
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "cannot parse it"
        password = _password_in(url)
        if password and len(password) >= 3:
            detail = detail.replace(password, "***")
        # ``from None``: the libpq message may quote the URL, password included.
        raise ConfigError(
            f"invalid PostgreSQL URL {redact_url(url)!r}: {detail}",
            key="durability.store",
            fix="See https://www.postgresql.org/docs/current/"
            "libpq-connect.html#LIBPQ-CONNSTRING-URIS",
        ) from None
    merged: dict[str, Any] = {str(k): str(v) for k, v in params.items()}
    merged["connect_timeout"] = str(max(2, math.ceil(opts.connect_timeout)))
    if opts.application_name is not None:
        merged["application_name"] = opts.application_name
    else:
        merged["fallback_application_name"] = "durably"
    # The fencing and lease statements rely on READ COMMITTED's re-check of updated rows;
    # a role or database defaulting to SERIALIZABLE would turn races into errors.
    extra = ["-c default_transaction_isolation=read\\ committed"]
    if opts.statement_timeout:
        extra.append(f"-c statement_timeout={max(1, round(opts.statement_timeout * 1000))}")
    base = merged.get("options", os.environ.get("PGOPTIONS", "")).strip()
    merged["options"] = " ".join([base, *extra] if base else extra)
    password = merged.get("password") or os.environ.get("PGPASSWORD") or None
    user = merged.get("user") or os.environ.get("PGUSER") or _os_user()
    host = merged.get("host") or os.environ.get("PGHOST") or "localhost"
    port = merged.get("port") or os.environ.get("PGPORT") or "5432"
    dbname = merged.get("dbname") or os.environ.get("PGDATABASE") or user
    if host.startswith("/"):  # a Unix-domain socket directory
        where = f"postgresql://{user}@:{port}/{dbname}?host={host}"
    else:
        shown_host = f"[{host}]" if ":" in host else host
        where = f"postgresql://{user}@{shown_host}:{port}/{dbname}"
    return Target(params=merged, password=password, user=user, where=where)


def _password_in(url: str) -> str | None:
    match = re.search(r"://[^:/@?#]*:([^@/?#]*)@", url)
    return match.group(1) if match else None


def _os_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # pragma: no cover - no user database
        return "unknown"
