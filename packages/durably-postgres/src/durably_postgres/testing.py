"""Test helpers: find (or start) a PostgreSQL server, isolate tests in schemas, and
read/write raw storage behind the provider's back.

Used by this package's tests and by the cross-package end-to-end tests. Not part of
the provider's API. The search and the skip are shared with ``durably_redis.testing``
(``durably_conformance``'s ``find_server``, ``server_or_skip`` and ``free_port``),
imported -- like pytest -- only when a function needs them: this module ships in the
provider's wheel, which depends on neither.

Where the server comes from, in order (:func:`find_server`):

1. ``DURABLY_TEST_POSTGRES_URL``, when set (it must answer).
2. A local server at ``postgresql://postgres@127.0.0.1:5432/test``, if one answers.
3. A throwaway cluster started with ``initdb``/``pg_ctl`` (from PATH or
   ``/usr/lib/postgresql/*/bin``), removed when stopped.

If none is available the tests are skipped -- unless ``DURABLY_REQUIRE_POSTGRES=1``,
which turns the skip into a failure (CI sets it).
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

import psycopg

from durably_postgres._migrations import quote_ident

__all__ = [
    "ENV_REQUIRE",
    "ENV_URL",
    "LOCAL_URL",
    "PostgresBackdoor",
    "PostgresServer",
    "ThrowawayCluster",
    "drop_schema",
    "find_server",
    "free_port",
    "random_schema",
    "server_or_skip",
]

ENV_URL = "DURABLY_TEST_POSTGRES_URL"
ENV_REQUIRE = "DURABLY_REQUIRE_POSTGRES"
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _answers(url: str, timeout: int = 3) -> str | None:
    """None if a server answers at ``url``, else why not (no password in it)."""
    try:
        with psycopg.connect(url, connect_timeout=timeout, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return candidates[-1] if candidates else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    from durably_conformance import free_port  # lazily: see the module docstring

    return free_port()


class ThrowawayCluster:
    """A private PostgreSQL cluster in a temporary directory (``initdb`` + ``pg_ctl``).

    Listens on 127.0.0.1 on a free port, ``fsync=off`` (tests only). As root, the
    server runs as the ``postgres`` OS user (PostgreSQL refuses to run as root).

    Args:
        auth: ``"trust"`` or ``"scram-sha-256"`` (then ``password`` is required).
        password: The password of the superuser ``postgres``.
    """

    def __init__(
        self, *, auth: Literal["trust", "scram-sha-256"] = "trust", password: str | None = None
    ) -> None:
        if auth != "trust" and not password:
            raise ValueError("password authentication needs a password")
        self.auth = auth
        self.password = password
        self.port = 0
        self._dir: Path | None = None
        self._runas: list[str] = []

    @staticmethod
    def unavailable_reason() -> str | None:
        """None if a cluster can be started here, else why not."""
        if _pg_bin("initdb") is None or _pg_bin("pg_ctl") is None:
            return "initdb/pg_ctl not found (on PATH or under /usr/lib/postgresql/*/bin)"
        if os.name == "posix" and os.geteuid() == 0:
            import pwd

            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no 'postgres' OS user to run the server"
            if shutil.which("runuser") is None:
                return "running as root and runuser is not available"
        return None

    @property
    def running(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`stop` has not run since."""
        return self._dir is not None

    @property
    def url(self) -> str:
        auth = f"postgres:{self.password}" if self.password else "postgres"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._runas, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> ThrowawayCluster:
        """Create and start the cluster; raises RuntimeError (with the log) on failure."""
        reason = self.unavailable_reason()
        if reason:
            raise RuntimeError(f"cannot start a throwaway PostgreSQL cluster: {reason}")
        initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        assert initdb
        assert pg_ctl
        self._dir = Path(tempfile.mkdtemp(prefix="durably-pg-"))
        if os.name == "posix" and os.geteuid() == 0:
            import pwd

            entry = pwd.getpwnam("postgres")
            os.chown(self._dir, entry.pw_uid, entry.pw_gid)
            self._runas = ["runuser", "-u", "postgres", "--"]
        data = self._dir / "data"
        args = [initdb, "-D", str(data), "-U", "postgres", "-N", "-A", self.auth]
        if self.password:
            pwfile = self._dir / "pw"
            pwfile.write_text(self.password + "\n")
            if self._runas:
                import pwd

                entry = pwd.getpwnam("postgres")
                os.chown(pwfile, entry.pw_uid, entry.pw_gid)
            args += ["--pwfile", str(pwfile)]
        self.port = free_port()
        try:
            self._run(*args)
            self._run(
                pg_ctl,
                "-D",
                str(data),
                "-w",
                "-t",
                "30",
                "-l",
                str(self._dir / "log"),
                "-o",
                f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c full_page_writes=off",
                "start",
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            log = self._dir / "log"
            text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            self.stop()
            raise RuntimeError(
                f"throwaway PostgreSQL cluster failed to start: {exc}\n{text}"
            ) from exc
        return self

    def stop(self) -> None:
        """Stop the server (immediately) and delete its directory. Idempotent."""
        if self._dir is None:
            return
        pg_ctl = _pg_bin("pg_ctl")
        data = self._dir / "data"
        if pg_ctl and (data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self._run(pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def __enter__(self) -> ThrowawayCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class PostgresServer:
    """A server the tests may use: its URL, where it came from, and how to stop it."""

    url: str
    source: Literal["env", "local", "throwaway"]
    cluster: ThrowawayCluster | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop the server if the tests started it (a throwaway cluster)."""
        if self.cluster is not None:
            self.cluster.stop()


def find_server() -> tuple[PostgresServer | None, str]:
    """Find or start a server (see the module docstring). Returns it, or None and why.

    Raises:
        RuntimeError: ``DURABLY_TEST_POSTGRES_URL`` is set but nothing answers there
            (an explicit URL that does not work is an error, not a reason to skip).
    """
    from durably_conformance import find_server as search

    return search(
        PostgresServer,
        env_url=ENV_URL,
        local_url=LOCAL_URL,
        answers=_answers,
        local_answers=lambda url: _answers(url, timeout=2),
        throwaway=ThrowawayCluster,
        cannot_start="cannot start a throwaway cluster",
    )


_found: PostgresServer | None = None


def server_or_skip() -> PostgresServer:
    """:func:`find_server`, or skip the test -- a failure when DURABLY_REQUIRE_POSTGRES=1.

    The server found is remembered for the process (a throwaway cluster is started
    once, and stopped at exit if nobody called :meth:`PostgresServer.stop`).
    """
    from durably_conformance import server_or_skip as search

    global _found
    if _found is None or (_found.cluster is not None and not _found.cluster.running):
        _found = search(find_server, what="PostgreSQL", env_url=ENV_URL, env_require=ENV_REQUIRE)
    return _found


def random_schema(prefix: str = "durably_test") -> str:
    """A fresh schema name, e.g. ``durably_test_3f9a1c2b7d``."""
    return f"{prefix}_{secrets.token_hex(5)}"


def drop_schema(url: str, schema: str) -> None:
    """``DROP SCHEMA ... CASCADE`` if it exists (synchronous, for fixture teardown)."""
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")


class PostgresBackdoor:
    """Raw access to a store's rows, bypassing the provider (the conformance Backdoor).

    Args:
        url: The server's URL.
        schema: The schema the provider under test uses.
    """

    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.schema = schema
        self._s = quote_ident(schema)

    async def _connect(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        return await psycopg.AsyncConnection.connect(self.url, autocommit=True)

    async def _fetch(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        async with await self._connect() as conn:
            cur = await conn.execute(sql.replace("{s}", self._s), params)
            return await cur.fetchall() if cur.description else []

    async def _one_bytes(self, sql: str, params: tuple[object, ...], what: str) -> bytes:
        rows = await self._fetch(sql, params)
        if not rows:
            raise KeyError(what)
        value = rows[0][0]
        assert isinstance(value, bytes)
        return value

    async def read_checkpoint(self, execution_id: str, seq: int) -> bytes:
        """The stored (envelope) bytes of a checkpoint."""
        return await self._one_bytes(
            "SELECT data FROM {s}.checkpoints WHERE execution_id = %s AND seq = %s",
            (execution_id, seq),
            f"checkpoint {seq} of {execution_id}",
        )

    async def _replace(self, execution_id: str, seq: int, raw: bytes) -> None:
        rows = await self._fetch(
            "UPDATE {s}.checkpoints SET data = %s WHERE execution_id = %s AND seq = %s RETURNING 1",
            (raw, execution_id, seq),
        )
        if not rows:
            raise KeyError(f"checkpoint {seq} of {execution_id}")

    async def write_checkpoint(self, execution_id: str, seq: int, raw: bytes) -> None:
        """Replace a checkpoint's bytes in place (version, size and metadata unchanged)."""
        await self._replace(execution_id, seq, raw)

    async def corrupt_checkpoint(self, execution_id: str, seq: int) -> None:
        """Flip every bit of the middle byte of a checkpoint."""
        data = bytearray(await self.read_checkpoint(execution_id, seq))
        data[len(data) // 2] ^= 0xFF
        await self._replace(execution_id, seq, bytes(data))

    async def truncate_checkpoint(self, execution_id: str, seq: int) -> None:
        """Cut a checkpoint's bytes to half their length."""
        data = await self.read_checkpoint(execution_id, seq)
        await self._replace(execution_id, seq, data[: len(data) // 2])

    async def corrupt_blob(self, execution_id: str, digest: str) -> None:
        """Flip every bit of the middle byte of a blob."""
        data = bytearray(
            await self._one_bytes(
                "SELECT data FROM {s}.blobs WHERE execution_id = %s AND digest = %s",
                (execution_id, digest),
                f"blob {digest} of {execution_id}",
            )
        )
        data[len(data) // 2] ^= 0xFF
        await self._fetch(
            "UPDATE {s}.blobs SET data = %s WHERE execution_id = %s AND digest = %s",
            (bytes(data), execution_id, digest),
        )

    async def locations(self) -> list[str]:
        """Every row the provider wrote for executions: ``checkpoints/<id>/<seq>``,
        ``blobs/<id>/<digest>`` and ``executions/<id>`` (the lease/status row)."""
        try:
            rows = await self._fetch(
                "SELECT 'checkpoints/' || execution_id || '/' || seq FROM {s}.checkpoints"
                " UNION ALL SELECT 'blobs/' || execution_id || '/' || digest FROM {s}.blobs"
                " UNION ALL SELECT 'executions/' || id FROM {s}.executions",
                (),
            )
        except psycopg.errors.UndefinedTable:
            return []  # the provider never ran: no schema yet
        return sorted(str(row[0]) for row in rows)
