"""Per-step durability overhead of durably vs. peers, on the same machine, disk and server.

Peers:

* **LangGraph** (``langgraph``) with ``SqliteSaver`` (a SQLite file in the same temp dir
  as durably's filesystem store; WAL, ``synchronous=FULL``) and ``PostgresSaver`` (the
  same PostgreSQL server, a throwaway schema): a graph of N sequential nodes, each
  replacing (or appending) one 1 KB item of the state, run with ``durability="sync"``
  (each step persisted before the next starts -- durably's guarantee).
* **DBOS** (``dbos``, system database on the same server, a throwaway schema): a
  workflow of N ``@DBOS.step`` calls, each returning the new 1 KB item.
* **durably**: the same work as LLM code through the real runtime, on the filesystem and
  on PostgreSQL, in both program shapes (``loop``: one ``for`` statement; ``statements``:
  N top-level statements, a snapshot every 16 operations).

For every system the overhead per step is ``(t_durable - t_plain) / N``: the same run
with durability (checkpointer / DBOS decorators / ``enabled=True``) minus without it, so
each framework's own per-step cost (shown separately) is not counted as durability cost.
Fixed per-run costs (first and last checkpoints) are included, amortized over N.

State variants: ``small`` (one 1 KB item, replaced each step), ``medium`` (100 items of
1 KB, one replaced each step), ``append`` (starts empty, one 1 KB item appended per step).

Run: ``python benchmarks/bench_peers.py [--quick]``.
"""

from __future__ import annotations

import argparse
import gc
import operator
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import _common as c
import _goals

fill = c.fill


@dataclass(frozen=True)
class Variant:
    name: str
    items: int  # initial items (0 for append)
    append: bool = False


VARIANTS = (
    Variant("small (1 KB)", 1),
    Variant("medium (100 KB)", 100),
    Variant("append (+1 KB/step)", 0, append=True),
)
PEER_GOALS = {
    "LangGraph SqliteSaver": 4.0,
    "LangGraph PostgresSaver": 4.0,
    "DBOS (PostgreSQL)": 5.0,
}
"""Issue 19, goal 4: peer ÷ durably overhead per step, at least this much."""


def durably_body(shape: str, n: int, v: Variant) -> str:
    if not v.append:
        return c.SHAPES[shape](n, c.StateShape(v.name, v.items))
    if shape == "loop":
        return (
            f"for i in range({n}):\n"
            "    self.state.blob.append(fill(i, 1024))\n"
            "    await self.Step(f'Main:{i}:EXE')\n"
        )
    return "".join(
        f"self.state.blob.append(fill({i}, 1024))\nawait self.Step('Main:{i}:EXE')\n"
        for i in range(n)
    )


def durably_setup(v: Variant) -> str:
    return f"self.state.blob = [fill(-1 - k, 1024) for k in range({v.items})]\n"


# ----------------------------------------------------------------------------- peers


class System:
    """Something that runs N steps with and without durability."""

    name = "?"

    def prepare(self, n: int, v: Variant) -> None:
        """Build what the runs need (outside timing)."""

    async def run(self, durable: bool) -> float:
        raise NotImplementedError

    def bytes_per_step(self, n: int) -> float | None:
        return None

    def close(self) -> None:
        pass


class Durably(System):
    def __init__(self, work: c.Workdir, backend: c.Backend, shape: str) -> None:
        self.work = work
        self.backend = backend
        self.shape = shape
        self.name = f"durably {shape} ({backend.name})"
        self.llm = ""
        self._bytes: float | None = None

    def prepare(self, n: int, v: Variant) -> None:
        self.n = n
        self.llm = self.work.script(
            c.response(durably_body(self.shape, n, v), prelude=durably_setup(v))
        )
        self._bytes = None

    async def run(self, durable: bool) -> float:
        config = self.backend.config(enabled=durable)
        gc.collect()
        elapsed, result = await c.run(self.work.program, self.llm, config)
        if durable:
            if self._bytes is None:
                usage = await c.store_usage(config, result.execution_id)
                self._bytes = usage.total / self.n
            await c.delete_executions(config, [result.execution_id])
        return elapsed

    def bytes_per_step(self, n: int) -> float | None:
        return self._bytes


class LangGraph(System):
    """A LangGraph graph of N sequential nodes, each changing one 1 KB item."""

    def __init__(self, kind: str, work: c.Workdir, pg: str | None) -> None:
        from langgraph.checkpoint.postgres import PostgresSaver
        from langgraph.checkpoint.sqlite import SqliteSaver

        self.kind = kind
        self.name = f"LangGraph {'SqliteSaver' if kind == 'sqlite' else 'PostgresSaver'}"
        if kind == "sqlite":
            self.path = work.path / "langgraph.sqlite"
            self.conn = sqlite3.connect(self.path, check_same_thread=False)
            self.saver: Any = SqliteSaver(self.conn)
            self.saver.setup()
            mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
            sync = self.conn.execute("PRAGMA synchronous").fetchone()[0]
            names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
            self.pragmas = f"journal_mode={mode}, synchronous={names.get(sync, sync)}"
        else:
            import psycopg
            from psycopg.rows import dict_row

            assert pg is not None
            self.schema = f"durably_bench_lg_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(pg, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA "{self.schema}"')
            self.pg = pg
            self.pconn = psycopg.connect(
                pg,
                autocommit=True,
                prepare_threshold=0,
                row_factory=dict_row,
                options=f"-c search_path={self.schema}",
            )
            self.saver = PostgresSaver(self.pconn)
            self.saver.setup()
        self.thread = ""

    def prepare(self, n: int, v: Variant) -> None:
        from langgraph.graph import END, START, StateGraph

        class Replace(TypedDict):
            blob: list[str]
            i: int

        class Append(TypedDict):
            blob: Annotated[list[str], operator.add]
            i: int

        def node(k: int) -> Callable[[Any], dict[str, Any]]:
            if v.append:
                return lambda state: {"blob": [fill(k, 1024)], "i": k}

            def replace(state: Any) -> dict[str, Any]:
                blob = list(state["blob"])
                blob[k % v.items] = fill(k, 1024)
                return {"blob": blob, "i": k}

            return replace

        graphs = []
        for saver in (self.saver, None):
            builder: Any = StateGraph(Append if v.append else Replace)
            prev = START
            for k in range(n):
                builder.add_node(f"n{k}", node(k))
                builder.add_edge(prev, f"n{k}")
                prev = f"n{k}"
            builder.add_edge(prev, END)
            graphs.append(builder.compile(checkpointer=saver))
        self.durable_graph, self.plain_graph = graphs
        self.initial = {"blob": [fill(-1 - k, 1024) for k in range(v.items)], "i": -1}
        self.n = n
        self.threads: list[str] = []

    async def run(self, durable: bool) -> float:
        gc.collect()
        config: dict[str, Any] = {"recursion_limit": self.n + 10}
        start = c.now()
        if durable:
            thread = uuid.uuid4().hex
            self.threads.append(thread)
            config["configurable"] = {"thread_id": thread}
            self.durable_graph.invoke(self.initial, config, durability="sync")
        else:
            self.plain_graph.invoke(self.initial, config)
        return c.now() - start

    def bytes_per_step(self, n: int) -> float | None:
        """Bytes of the first durable run's rows (checkpoints + pending writes) per step."""
        if not self.threads:
            return None
        thread = self.threads[0]
        if self.kind == "sqlite":
            cur = self.conn.execute(
                "SELECT (SELECT COALESCE(SUM(LENGTH(checkpoint) + LENGTH(metadata)), 0) "
                "FROM checkpoints WHERE thread_id = ?), (SELECT COALESCE(SUM(LENGTH(value)), 0) "
                "FROM writes WHERE thread_id = ?)",
                (thread, thread),
            )
            a, b = cur.fetchone()
        else:
            row = self.pconn.execute(
                "SELECT (SELECT COALESCE(SUM(pg_column_size(checkpoint) + "
                "pg_column_size(metadata)), 0) FROM checkpoints WHERE thread_id = %s) AS a, "
                "(SELECT COALESCE(SUM(octet_length(blob)), 0) FROM checkpoint_blobs "
                "WHERE thread_id = %s) AS b, (SELECT COALESCE(SUM(octet_length(blob)), 0) "
                "FROM checkpoint_writes WHERE thread_id = %s) AS w",
                (thread, thread, thread),
            ).fetchone()
            if row is None:
                return None
            a, b = row["a"], row["b"] + row["w"]
        return float(a + b) / n

    def cleanup_runs(self) -> None:
        for thread in self.threads[1:]:
            self.saver.delete_thread(thread)
        self.threads = self.threads[:1]

    def close(self) -> None:
        if self.kind == "sqlite":
            self.conn.close()
        else:
            import psycopg

            self.pconn.close()
            with psycopg.connect(self.pg, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


class Dbos(System):
    """A DBOS workflow of N ``@DBOS.step`` calls (system database on PostgreSQL)."""

    name = "DBOS (PostgreSQL)"

    def __init__(self, pg: str) -> None:
        from dbos import DBOS

        self.pg = pg
        self.schema = f"durably_bench_dbos_{uuid.uuid4().hex[:8]}"

        def step_plain(k: int, size: int) -> str:
            return fill(k, size)

        step = DBOS.step()(step_plain)

        def body(n: int, items: int, append: bool, stepfn: Callable[[int, int], str]) -> int:
            blob = [fill(-1 - k, 1024) for k in range(items)]
            for k in range(n):
                if append:
                    blob.append(stepfn(k, 1024))
                else:
                    blob[k % items] = stepfn(k, 1024)
            return len(blob)

        def workflow(n: int, items: int, append: bool) -> int:
            return body(n, items, append, step)

        def plain(n: int, items: int, append: bool) -> int:
            return body(n, items, append, step_plain)

        self.plain = plain
        self.workflow = DBOS.workflow(name="durably_bench_workflow")(workflow)
        DBOS(
            config={
                "name": "durably-bench",
                "system_database_url": c.pg_uri(pg),
                "dbos_system_schema": self.schema,
                "log_level": "WARNING",
            }
        )
        DBOS.launch()
        self.workflow_ids: list[str] = []

    def prepare(self, n: int, v: Variant) -> None:
        self.n, self.v = n, v

    async def run(self, durable: bool) -> float:
        from dbos import SetWorkflowID

        gc.collect()
        items = self.v.items
        start = c.now()
        if durable:
            wid = uuid.uuid4().hex
            with SetWorkflowID(wid):
                self.workflow(self.n, items, self.v.append)
            elapsed = c.now() - start
            self.workflow_ids.append(wid)
            return elapsed
        self.plain(self.n, items, self.v.append)
        return c.now() - start

    def bytes_per_step(self, n: int) -> float | None:
        import psycopg

        if not self.workflow_ids:
            return None
        with psycopg.connect(self.pg, autocommit=True) as conn:
            row = conn.execute(
                f'SELECT COALESCE(SUM(octet_length(output)), 0) FROM "{self.schema}".'
                "operation_outputs WHERE workflow_uuid = %s",
                (self.workflow_ids[-1],),
            ).fetchone()
        return float(row[0]) / n if row else None

    def close(self) -> None:
        import psycopg
        from dbos import DBOS

        DBOS.destroy()
        with psycopg.connect(self.pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')


# ------------------------------------------------------------------------------ main


def make_peers(args: argparse.Namespace, work: c.Workdir, pg: str | None) -> list[System]:
    peers: list[System] = []
    try:
        import langgraph  # noqa: F401
        from langgraph.checkpoint.sqlite import SqliteSaver  # noqa: F401

        lg = LangGraph("sqlite", work, None)
        print(f"- LangGraph SqliteSaver: {lg.path} ({lg.pragmas})")
        peers.append(lg)
    except ImportError as exc:
        print(
            f"\n**LangGraph SqliteSaver not measured**: cannot import it here ({exc}). "
            "Install langgraph and langgraph-checkpoint-sqlite (the nox session `bench` does)."
        )
    if pg is None:
        print("\n**LangGraph PostgresSaver and DBOS not measured**: no PostgreSQL server.")
        return peers
    try:
        from langgraph.checkpoint.postgres import PostgresSaver  # noqa: F401

        lgp = LangGraph("postgres", work, pg)
        print(f"- LangGraph PostgresSaver: schema {lgp.schema}")
        peers.append(lgp)
    except ImportError as exc:
        print(
            f"\n**LangGraph PostgresSaver not measured**: cannot import it here ({exc}). "
            "Install langgraph-checkpoint-postgres (the nox session `bench` does)."
        )
    try:
        import dbos  # noqa: F401
    except ImportError as exc:
        print(
            f"\n**DBOS not measured**: cannot import it here ({exc}). Install dbos (the nox "
            "session `bench` does)."
        )
    else:
        try:
            d = Dbos(pg)
            print(f"- DBOS: system database {pg.split('@')[-1]}, schema {d.schema}")
            peers.append(d)
        except Exception as exc:
            print(
                f"\n**DBOS not measured**: it failed to launch here ({type(exc).__name__}: {exc})."
            )
    return peers


async def bench(args: argparse.Namespace) -> None:
    n, reps = (20, 2) if args.quick else (100, 5)
    work = c.Workdir("peers")
    pg = c.pg_url() if c.pg_available(c.pg_url()) is None else None
    args.providers = "file,postgres" if pg else "file"
    systems: list[System] = []
    print()
    try:
        async with c.backends(args, work.path, "durably_bench_peers") as stores:
            for backend in stores:
                for shape in ("loop", "statements"):
                    systems.append(Durably(work, backend, shape))
            systems += make_peers(args, work, pg)
            results: dict[str, list[list[str]]] = {}
            ratios: list[list[str]] = []
            for v in VARIANTS:
                per: dict[str, dict[str, list[float]]] = {
                    s.name: {"over": [], "base": []} for s in systems
                }
                for s in systems:
                    s.prepare(n, v)
                    await s.run(True)  # warm-up (and the bytes measurement)
                    await s.run(False)
                for rep in range(reps):
                    c.progress(f"peers {v.name}: repetition {rep + 1}/{reps}")
                    for s in systems:
                        order = (True, False) if rep % 2 == 0 else (False, True)
                        t = {d: await s.run(d) for d in order}
                        per[s.name]["over"].append((t[True] - t[False]) / n)
                        per[s.name]["base"].append(t[False] / n)
                        if isinstance(s, LangGraph):
                            s.cleanup_runs()
                for s in systems:
                    over = c.Summary.of(per[s.name]["over"])
                    base = c.Summary.of(per[s.name]["base"])
                    b = s.bytes_per_step(n)
                    results.setdefault(v.name, []).append(
                        [s.name, c.ms(over), c.ms(base), f"{b:,.0f}" if b is not None else "?"]
                    )
                ratios += ratio_rows(v, systems, per)
            for v in VARIANTS:
                c.table(
                    [
                        "system",
                        "durability overhead ms/step",
                        "run without durability ÷ N (ms)",
                        "bytes written/step",
                    ],
                    results[v.name],
                    title=f"## State {v.name}: N = {n} steps, {reps} repetitions",
                )
            c.table(
                ["state", "peer", "compared with", "peer ÷ durably (overhead per step)"],
                ratios,
                title="## Ratios (> 1: durably is ahead)",
            )
            c.note(
                "Ratios are computed per repetition (each peer and durably measured in the "
                "same repetition) and summarized. Same store kind: LangGraph SqliteSaver vs "
                "durably on the filesystem (both on the temp dir's disk); LangGraph "
                "PostgresSaver and DBOS vs durably on PostgreSQL (same server)."
            )
    finally:
        for s in systems:
            try:
                s.close()
            except Exception as exc:
                print(f"(cleanup of {s.name} failed: {exc!r})")
        work.cleanup()


def ratio_rows(
    v: Variant, systems: list[System], per: dict[str, dict[str, list[float]]]
) -> list[list[str]]:
    rows = []
    names = {s.name for s in systems}
    pairs = [
        ("LangGraph SqliteSaver", "filesystem"),
        ("LangGraph PostgresSaver", "PostgreSQL"),
        ("DBOS (PostgreSQL)", "PostgreSQL"),
    ]
    for peer, store in pairs:
        if peer not in names:
            continue
        for shape in ("loop", "statements"):
            ours = f"durably {shape} ({store})"
            if ours not in names:
                continue
            values = [
                p / d if d > 0 else float("nan")
                for p, d in zip(per[peer]["over"], per[ours]["over"], strict=True)
            ]
            summary = c.Summary.of(values)
            rows.append([v.name, peer, ours, c.ratio(summary)])
            target = PEER_GOALS[peer]
            _goals.record(
                4,
                f"{peer} ÷ {ours}, state {v.name}",
                f"{summary.median:.2f}×",
                f"≥ {target:g}×",
                summary.median >= target,
            )
    return rows


if __name__ == "__main__":
    c.main(bench, "durably benchmark: per-step durability overhead vs. LangGraph and DBOS")
