"""The provider's SQL, rendered once per provider for its schema and lease clock.

Every statement that changes data is ONE statement, run on an autocommit connection:
one round trip, one transaction, nothing half-written if it fails. Placeholders are
psycopg's ``%(name)s``; ``{s}`` is the quoted schema and ``{now}`` the lease clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SaveKind = Literal["create", "overwrite", "expected"]

_CHECKPOINT_VALUES = (
    "%(id)s, %(seq)s::int8, nextval('{s}.versions'), %(data)s, %(meta)s, %(size)s::int8, now()"
)
_CHECKPOINT_COLUMNS = "(execution_id, seq, version, data, metadata, size, created_at)"
_FENCE = (
    "fence AS (SELECT id FROM {s}.executions"
    " WHERE id = %(id)s AND epoch = %(epoch)s::int8 AND lease_owner = %(owner)s"
    " FOR {lock})"
)
_RESULT_TAIL = "FROM (VALUES (1)) AS one (x) LEFT JOIN w ON true"


def _save(kind: SaveKind, fenced: bool) -> str:
    """The fenced, conditional single-statement checkpoint write.

    With a lease, ``fence`` row-locks the execution only if its epoch is still the
    lease's: a concurrent claim either commits first (the re-checked row no longer
    matches: nothing is written) or waits until this statement commits. Without a
    lease, the execution row is upserted after the checkpoint row, in the same statement.
    """
    if kind == "expected":
        guard = " AND EXISTS (SELECT 1 FROM fence)" if fenced else ""
        write = (
            "UPDATE {s}.checkpoints AS c SET version = nextval('{s}.versions'),"
            " data = %(data)s, metadata = %(meta)s, size = %(size)s::int8, created_at = now()"
            " WHERE c.execution_id = %(id)s AND c.seq = %(seq)s::int8"
            f" AND c.version = %(expected)s::int8{guard}"
            " RETURNING c.version, c.created_at"
        )
    else:
        source = (
            f"SELECT {_CHECKPOINT_VALUES} FROM fence"
            if fenced
            else f"VALUES ({_CHECKPOINT_VALUES})"
        )
        conflict = (
            "DO NOTHING"
            if kind == "create"
            else "DO UPDATE SET version = EXCLUDED.version, data = EXCLUDED.data,"
            " metadata = EXCLUDED.metadata, size = EXCLUDED.size,"
            " created_at = EXCLUDED.created_at"
        )
        write = (
            f"INSERT INTO {{s}}.checkpoints AS c {_CHECKPOINT_COLUMNS} {source}"
            f" ON CONFLICT (execution_id, seq) {conflict}"
            " RETURNING c.version, c.created_at"
        )
    if fenced:
        head = "WITH " + _FENCE.replace("{lock}", "NO KEY UPDATE") + ", "
        touch = (
            "UPDATE {s}.executions AS e SET updated_at = w.created_at,"
            " status = COALESCE(%(status)s::text, e.status) FROM w WHERE e.id = %(id)s"
        )
        ok = "(SELECT count(*) FROM fence) > 0"
    else:
        head = "WITH "
        touch = (
            "INSERT INTO {s}.executions AS e (id, status, updated_at)"
            " SELECT %(id)s, %(status)s::text, w.created_at FROM w"
            " ON CONFLICT (id) DO UPDATE SET updated_at = EXCLUDED.updated_at,"
            " status = COALESCE(EXCLUDED.status, e.status)"
        )
        ok = "true"
    return (
        f"{head}w AS ({write}), t AS ({touch})"
        f" SELECT {ok}, w.version, extract(epoch FROM w.created_at)::float8 {_RESULT_TAIL}"
    )


def _delete(fenced: bool) -> str:
    fence = "WITH " + _FENCE.replace("{lock}", "SHARE") + ", " if fenced else "WITH "
    guard = " AND EXISTS (SELECT 1 FROM fence)" if fenced else ""
    ok = "(SELECT count(*) FROM fence) > 0" if fenced else "true"
    return (
        f"{fence}d AS (DELETE FROM {{s}}.checkpoints"
        f" WHERE execution_id = %(id)s AND seq = ANY(%(seqs)s::int8[]){guard} RETURNING seq)"
        f" SELECT {ok}, (SELECT coalesce(array_agg(seq ORDER BY seq), ARRAY[]::int8[]) FROM d)"
    )


_INFO = "seq, version, size, extract(epoch FROM created_at)::float8, metadata"

_STATEMENTS: dict[str, str] = {
    "load": f"SELECT {_INFO}, data FROM {{s}}.checkpoints"
    " WHERE execution_id = %(id)s AND seq = %(seq)s::int8",
    "load_many": f"SELECT {_INFO}, data FROM {{s}}.checkpoints"
    " WHERE execution_id = %(id)s AND seq = ANY(%(seqs)s::int8[])",
    "load_latest": f"SELECT {_INFO}, data FROM {{s}}.checkpoints"
    " WHERE execution_id = %(id)s ORDER BY seq DESC LIMIT 1",
    "list": f"SELECT {_INFO} FROM {{s}}.checkpoints"
    " WHERE execution_id = %(id)s AND seq > %(after)s::int8"
    " ORDER BY seq LIMIT %(limit)s::int8",
    "list_executions": (
        "SELECT e.id, extract(epoch FROM e.updated_at)::float8 FROM {s}.executions AS e"
        " WHERE e.id > %(cursor)s AND (e.lease_owner IS NOT NULL"
        # Scalar sub-selects, not EXISTS: the planner may turn an EXISTS under OR into
        # a hashed sub-plan that reads all of checkpoints; these stay index probes.
        " OR (SELECT true FROM {s}.checkpoints AS c WHERE c.execution_id = e.id LIMIT 1)"
        " OR (SELECT true FROM {s}.blobs AS b WHERE b.execution_id = e.id LIMIT 1))"
        " ORDER BY e.id LIMIT %(limit)s::int8"
    ),
    "delete_execution": (
        "WITH c AS (DELETE FROM {s}.checkpoints WHERE execution_id = %(id)s RETURNING 1),"
        " b AS (DELETE FROM {s}.blobs WHERE execution_id = %(id)s RETURNING 1),"
        " e AS (DELETE FROM {s}.executions WHERE id = %(id)s"
        " RETURNING lease_owner IS NOT NULL AS leased)"
        " SELECT (SELECT count(*) FROM c) + (SELECT count(*) FROM b) > 0"
        " OR coalesce((SELECT bool_or(leased) FROM e), false)"
    ),
    "claim": (
        "INSERT INTO {s}.executions AS e"
        " (id, lease_owner, epoch, lease_expires_at, released, updated_at)"
        " VALUES (%(id)s, %(owner)s, nextval('{s}.epochs'),"
        " {now} + %(ttl)s::float8 * interval '1 second', false, now())"
        " ON CONFLICT (id) DO UPDATE SET lease_owner = EXCLUDED.lease_owner,"
        " epoch = EXCLUDED.epoch, lease_expires_at = EXCLUDED.lease_expires_at,"
        " released = false"
        " WHERE e.lease_owner IS NULL OR e.released OR e.lease_expires_at <= {now}"
        " OR e.lease_owner = EXCLUDED.lease_owner"
        " RETURNING e.epoch, extract(epoch FROM e.lease_expires_at)::float8"
    ),
    "take_over": (
        "UPDATE {s}.executions AS e SET lease_owner = %(owner)s,"
        " epoch = nextval('{s}.epochs'),"
        " lease_expires_at = {now} + %(ttl)s::float8 * interval '1 second', released = false"
        " WHERE e.id = %(id)s AND ((e.epoch = %(dead_epoch)s::int8"
        " AND e.lease_owner = %(dead_owner)s) OR e.lease_owner IS NULL OR e.released"
        " OR e.lease_expires_at <= {now} OR e.lease_owner = %(owner)s)"
        " RETURNING e.epoch, extract(epoch FROM e.lease_expires_at)::float8"
    ),
    "owner_lock_held": (
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid = %(hi)s::int8::oid AND objid = %(lo)s::int8::oid AND objsubid = 1)"
    ),
    "lease_holder": (
        "SELECT lease_owner, extract(epoch FROM lease_expires_at)::float8,"
        " (lease_owner IS NULL OR released OR lease_expires_at <= {now})"
        " FROM {s}.executions WHERE id = %(id)s"
    ),
    "renew": (
        "UPDATE {s}.executions"
        " SET lease_expires_at = {now} + %(ttl)s::float8 * interval '1 second', released = false"
        " WHERE id = %(id)s AND epoch = %(epoch)s::int8 AND lease_owner = %(owner)s"
        " RETURNING extract(epoch FROM lease_expires_at)::float8"
    ),
    "release": (
        "UPDATE {s}.executions"
        " SET released = true, lease_expires_at = LEAST(lease_expires_at, {now})"
        " WHERE id = %(id)s AND epoch = %(epoch)s::int8 AND lease_owner = %(owner)s"
        " RETURNING 1"
    ),
    "get_lease": (
        "SELECT lease_owner, epoch, extract(epoch FROM lease_expires_at)::float8, released"
        " FROM {s}.executions WHERE id = %(id)s AND lease_owner IS NOT NULL"
    ),
    "claim_next": (
        "WITH cand AS (SELECT id FROM {s}.executions"
        " WHERE (lease_expires_at IS NULL OR lease_expires_at <= {now}) {filters}"
        " ORDER BY lease_expires_at NULLS FIRST LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED)"
        " UPDATE {s}.executions AS e SET lease_owner = %(owner)s,"
        " epoch = nextval('{s}.epochs'),"
        " lease_expires_at = {now} + %(ttl)s::float8 * interval '1 second', released = false"
        " FROM cand WHERE e.id = cand.id"
        " RETURNING e.id, e.epoch, extract(epoch FROM e.lease_expires_at)::float8"
    ),
    "put_blob": (
        "WITH w AS (INSERT INTO {s}.blobs AS b (execution_id, digest, data, size, created_at)"
        " VALUES (%(id)s, %(digest)s, %(data)s, %(size)s::int8, now())"
        " ON CONFLICT (execution_id, digest) DO NOTHING RETURNING b.created_at),"
        " t AS (INSERT INTO {s}.executions AS e (id, updated_at)"
        " SELECT %(id)s, w.created_at FROM w"
        " ON CONFLICT (id) DO UPDATE SET updated_at = EXCLUDED.updated_at)"
        " SELECT count(*) FROM w"
    ),
    "put_blobs": (
        "WITH w AS (INSERT INTO {s}.blobs AS b (execution_id, digest, data, size, created_at)"
        " SELECT %(id)s, u.digest, u.data, octet_length(u.data), now()"
        " FROM unnest(%(digests)s::text[], %(datas)s::bytea[]) AS u (digest, data)"
        " ON CONFLICT (execution_id, digest) DO NOTHING RETURNING b.digest, b.created_at),"
        " t AS (INSERT INTO {s}.executions AS e (id, updated_at)"
        " SELECT %(id)s, max(w.created_at) FROM w HAVING count(*) > 0"
        " ON CONFLICT (id) DO UPDATE SET updated_at = EXCLUDED.updated_at)"
        " SELECT w.digest FROM w"
    ),
    "get_blob": "SELECT data FROM {s}.blobs WHERE execution_id = %(id)s AND digest = %(digest)s",
    "has_blob": "SELECT EXISTS (SELECT 1 FROM {s}.blobs"
    " WHERE execution_id = %(id)s AND digest = %(digest)s)",
    "list_blobs": (
        "SELECT digest, size, extract(epoch FROM created_at)::float8 FROM {s}.blobs"
        " WHERE execution_id = %(id)s AND digest > %(cursor)s ORDER BY digest LIMIT %(limit)s::int8"
    ),
    "delete_blob": "DELETE FROM {s}.blobs WHERE execution_id = %(id)s AND digest = %(digest)s"
    " RETURNING 1",
}


@dataclass(frozen=True, slots=True)
class Statements:
    """All statements, rendered for one schema and lease clock."""

    schema: str
    now: str
    text: dict[str, str]

    def __getitem__(self, name: str) -> str:
        return self.text[name]

    def save(self, kind: SaveKind, fenced: bool) -> str:
        return self.text[f"save:{kind}:{int(fenced)}"]

    def delete(self, fenced: bool) -> str:
        return self.text[f"delete:{int(fenced)}"]


def render(quoted_schema: str, lease_clock: Literal["server", "client"]) -> Statements:
    """Render every statement for ``quoted_schema``.

    ``lease_clock="server"`` times leases with the server's ``now()`` (the start of
    the statement's transaction); ``"client"`` with this process's clock, passed as the
    ``%(now)s`` parameter.
    """
    now = "now()" if lease_clock == "server" else "to_timestamp(%(now)s::float8)"
    raw = dict(_STATEMENTS)
    for kind in ("create", "overwrite", "expected"):
        for fenced in (False, True):
            raw[f"save:{kind}:{int(fenced)}"] = _save(kind, fenced)
    for fenced in (False, True):
        raw[f"delete:{int(fenced)}"] = _delete(fenced)
    for completed in (False, True):
        for unclaimed in (False, True):
            filters = ""
            if completed:
                filters += (
                    " AND status IS DISTINCT FROM 'completed' AND status IS DISTINCT FROM 'failed'"
                )
            if not unclaimed:
                filters += " AND lease_owner IS NOT NULL"
            raw[f"claim_next:{int(completed)}:{int(unclaimed)}"] = _STATEMENTS[
                "claim_next"
            ].replace("{filters}", filters)
    del raw["claim_next"]
    text = {
        name: sql.replace("{s}", quoted_schema).replace("{now}", now) for name, sql in raw.items()
    }
    return Statements(quoted_schema, now, text)
