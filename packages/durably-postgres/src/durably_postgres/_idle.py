"""Whether the server already closed an idle connection, seen without a round trip."""

from __future__ import annotations

import select
from typing import TYPE_CHECKING

import psycopg
from psycopg import pq

if TYPE_CHECKING:
    from durably_postgres._client import AsyncConn

__all__ = ["closed_by_server"]


def _readable(fd: int) -> bool:
    """Whether ``fd`` has input (or EOF) pending, without blocking."""
    if hasattr(select, "poll"):  # not limited to fds < 1024 like select()
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


def closed_by_server(conn: AsyncConn) -> bool:
    """Whether the idle ``conn`` is closed, broken, or ended by the server.

    An idle connection has nothing to read unless the server sent something -- e.g. the
    FATAL message and EOF of a terminated backend or a restarted server. Looking costs no
    round trip (a zero-timeout ``poll`` on the socket). Only for a connection with no
    statement in flight (what it reads would be taken from under the statement).
    """
    if conn.closed or conn.broken:
        return True
    try:
        for _ in range(3):  # a FATAL message, then EOF: the second read fails
            if not _readable(conn.fileno()):
                return False
            conn.pgconn.consume_input()
            if conn.pgconn.status != pq.ConnStatus.OK:
                return True
    except (psycopg.Error, OSError, ValueError):
        return True
    return False
