"""Shared helpers of the benchmarks: timing, statistics, tables, the machine header, and
the stores (a temporary directory, a moto S3 server, a throwaway PostgreSQL schema).

Every benchmark measures the things it compares **side by side in one run**: each
repetition runs every variant once, in turn, so a noisy neighbour or a slow disk moment
hits all of them alike, and the ratios are computed per repetition before their median
and spread are taken. Nothing here is a test: no assertion is made about a number.

Environment:

* ``DURABLY_BENCH_POSTGRES_URL`` (else ``DURABLY_TEST_POSTGRES_URL``, else
  ``postgresql://postgres@127.0.0.1:5432/test``): the PostgreSQL server to use. Each
  benchmark works in a schema (or database) of its own and drops it at the end.
* ``TMPDIR``: where the filesystem store and the primitives' files go.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# The workspace's editable install of some packages may lack its .pth file (see
# packages/durably-s3/tests/conftest.py); fall back to the source trees. Harmless when
# the packages are installed properly (the installed copy is found first).
for _src in sorted(ROOT.glob("packages/*/src")):
    if str(_src) not in sys.path:
        sys.path.append(str(_src))

from durably.config import DurabilityConfig  # noqa: E402
from durably.runner import Program, RunResult, run_program  # noqa: E402

REGION = "us-east-1"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"

# --------------------------------------------------------------------------- timing


def now() -> float:
    """The clock every benchmark uses: :func:`time.perf_counter`, in seconds."""
    return time.perf_counter()


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class Summary:
    """Median and spread (10th and 90th percentiles) of repeated measurements."""

    median: float
    p10: float
    p90: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        vals = [v for v in values if v == v]  # drop NaN
        if not vals:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(vals), quantile(vals, 0.1), quantile(vals, 0.9), len(vals))

    def fmt(self, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
        """``1.23 [1.10–1.41]``: median [p10–p90], multiplied by ``scale``."""
        if self.n == 0:
            return "n/a"
        m, lo, hi = self.median * scale, self.p10 * scale, self.p90 * scale
        return f"{m:.{digits}f} [{lo:.{digits}f}–{hi:.{digits}f}]{unit}"


def ms(summary: Summary, digits: int = 3) -> str:
    """A summary of seconds, shown in milliseconds."""
    return summary.fmt(1e3, digits)


def ratio(summary: Summary) -> str:
    """A summary of ratios, shown as ``2.1× [1.9–2.4]``."""
    if summary.n == 0:
        return "n/a"
    return f"{summary.median:.2f}× [{summary.p10:.2f}–{summary.p90:.2f}]"


# --------------------------------------------------------------------------- output


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """Print a Markdown table (aligned, so it reads well in a terminal too)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    if title:
        print(f"\n{title}\n")
    else:
        print()
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    sys.stdout.flush()


def note(text: str) -> None:
    """A paragraph of explanation under a table."""
    print()
    print(textwrap.fill(" ".join(text.split()), width=100))
    sys.stdout.flush()


def progress(text: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(f"  .. {text}", file=sys.stderr, flush=True)


def parse_args(
    description: str,
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The options every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="a fast smoke run (few repetitions, small sizes)"
    )
    parser.add_argument(
        "--providers",
        default="file,s3,postgres",
        help="comma-separated subset of file,s3,postgres (default: all)",
    )
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


# ----------------------------------------------------------------- the machine header

PACKAGES = (
    "durably",
    "durably-filesystem",
    "durably-s3",
    "durably-postgres",
    "zstandard",
    "psycopg",
    "psycopg-binary",
    "psycopg-pool",
    "aiobotocore",
    "botocore",
    "moto",
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-sqlite",
    "langgraph-checkpoint-postgres",
    "dbos",
    "sqlalchemy",
)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _mount_of(path: str) -> tuple[str, str, str, str]:
    """(device, mount point, fs type, options) of the mount holding ``path``."""
    real = os.path.realpath(path)
    best = ("?", "/", "?", "")
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        device, point, fstype, options = parts[:4]
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(
            best[1]
        ):
            best = (device, point, fstype, options)
    return best


def _disk(device: str) -> str:
    name = os.path.basename(device)
    base = name.rstrip("0123456789")
    if base.startswith("nvme") and "p" in name:
        base = name.rsplit("p", 1)[0]
    block = Path("/sys/block") / base
    if not block.exists():
        return device
    bits = [device]
    model = _read(str(block / "device" / "model")).strip()
    if model:
        bits.append(model)
    elif base.startswith("vd"):
        bits.append("virtio block device")
    rotational = _read(str(block / "queue" / "rotational")).strip()
    if rotational:
        bits.append("rotational" if rotational == "1" else "non-rotational")
    bits.append("(as reported by the kernel; on a VM the real medium is hidden)")
    return ", ".join(bits)


def git_revision() -> str:
    """The commit of the working tree the benchmark runs from (``+changes`` if dirty)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "packages"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}" + (" + uncommitted changes in packages/" if dirty else "")


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def version_of(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def postgres_server_info(url: str) -> str:
    """``PostgreSQL 15.20 (fsync=on, synchronous_commit=on, wal_sync_method=fdatasync)``."""
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            settings = []
            for name in (
                "fsync",
                "synchronous_commit",
                "wal_sync_method",
                "max_connections",
                "shared_buffers",
            ):
                value = conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                settings.append(f"{name}={value}")
            data_dir = ""
            with contextlib.suppress(Exception):
                data_dir = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
        where = ""
        if data_dir:
            device, point, fstype, _ = _mount_of(data_dir)
            where = f"; data directory on {device} ({fstype}, mounted at {point})"
        return f"PostgreSQL {version} ({', '.join(settings)}){where}"
    except Exception as exc:
        return f"unavailable ({type(exc).__name__}: {exc})".splitlines()[0]


def file_create_us(directory: str, count: int = 200) -> float:
    """Microseconds to create (and close) one empty file in a new subdirectory of
    ``directory``: the filesystem store creates several per execution, so the fixed
    cost of an execution follows it (seen on the 2-core VM: ~1 ms per file under
    ``/tmp`` for a while, 16-25 µs there at other times and elsewhere on the same disk)."""
    work = tempfile.mkdtemp(prefix="durably-bench-create-", dir=directory)
    try:
        start = now()
        for i in range(count):
            os.close(os.open(os.path.join(work, str(i)), os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        return (now() - start) / count * 1e6
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_header(title: str, args: argparse.Namespace) -> None:
    """The machine and the versions, at the top of every report."""
    print(f"# {title}")
    print()
    print(
        f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`"
        f"{' (quick smoke run: numbers are indicative only)' if args.quick else ''}"
    )
    print(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; source: {git_revision()}")
    print(
        f"- CPU: {_cpu_model()}; {os.cpu_count()} logical cores "
        f"({len(os.sched_getaffinity(0))} usable)"
    )
    mem = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal")
        ),
        "?",
    )
    osname = next(
        (
            line.split("=", 1)[1].strip('"')
            for line in _read("/etc/os-release").splitlines()
            if line.startswith("PRETTY_NAME=")
        ),
        "",
    )
    print(
        f"- memory: {mem}; kernel: {platform.system()} {platform.release()}"
        f"{'; ' + osname if osname else ''}"
    )
    tmp = tempfile.gettempdir()
    device, point, fstype, options = _mount_of(tmp)
    print(f"- temp dir: {tmp} on {fstype} mounted at {point} ({options}); disk: {_disk(device)}")
    print(
        f"- creating a file there (no flush): {file_create_us(tmp):.0f} µs "
        "(the stores are made there: `TMPDIR` moves them)"
    )
    print(
        f"- Python {platform.python_version()} ({platform.python_implementation()}, "
        f"{sys.executable})"
    )
    versions = [f"{name} {v}" for name in PACKAGES if (v := version_of(name))]
    missing = [name for name in PACKAGES if version_of(name) is None]
    print(f"- packages: {', '.join(versions)}")
    if missing:
        print(f"- not installed: {', '.join(missing)}")
    print(
        f"- load average at start: {load()} (other work on the machine skews timings; "
        "compare the load at the end)"
    )
    print(f"- PostgreSQL server: {postgres_server_info(pg_url())}")
    print(
        "- moto S3 server: ThreadedMotoServer on 127.0.0.1 (port 0) in a child process, "
        "requests serialized as in packages/durably-s3/tests/conftest.py"
    )
    print()
    print(
        "Numbers are `median [p10–p90]` over the repetitions; ratios are computed per "
        "repetition from measurements taken side by side, then summarized."
    )
    sys.stdout.flush()


# ------------------------------------------------------------------ programs and LLM

PROGRAM = '''\
"""The benchmark program: one agent whose Main playbook the scripted LLM writes."""

from durably import Agent, playbook


class Bench(Agent):
    """A benchmark agent."""

    @playbook(llm=True, begin=True)
    async def Main(self):
        """- Run the benchmark steps"""
'''

FILL = (
    "import hashlib\n"
    "def fill(seed, size):\n"
    "    return ''.join(hashlib.sha256(f'{seed}:{j}'.encode()).hexdigest()\n"
    "                   for j in range(size // 64 + 1))[:size]\n"
)
"""LLM code that makes deterministic, text-like values (hex digests: zstd halves them)."""


def fill(seed: int, size: int) -> str:
    """The same values as :data:`FILL` makes, for the Python side of the benchmarks."""
    return "".join(
        hashlib.sha256(f"{seed}:{j}".encode()).hexdigest() for j in range(size // 64 + 1)
    )[:size]


@dataclass(frozen=True)
class StateShape:
    """The agent state: a list of ``items`` strings of ``item_size`` characters; every
    await replaces one item (``item_size`` bytes change)."""

    name: str
    items: int
    item_size: int = 1024

    @property
    def total(self) -> int:
        return self.items * self.item_size

    def setup(self) -> str:
        return f"self.state.blob = [fill(-1 - k, {self.item_size}) for k in range({self.items})]\n"


SMALL = StateShape("small (1 KB)", 1)
MEDIUM = StateShape("medium (100 KB)", 100)


def loop_body(n: int, state: StateShape) -> str:
    """One ``for`` statement with ``n`` awaits (no quiet point inside: deltas only)."""
    if n == 0:
        return ""
    return (
        f"for i in range({n}):\n"
        f"    self.state.blob[i % {state.items}] = fill(i, {state.item_size})\n"
        f"    await self.Step(f'Main:{{i}}:EXE')\n"
    )


def statements_body(n: int, state: StateShape) -> str:
    """``n`` top-level statement pairs (a snapshot every ``snapshot_every`` operations)."""
    return "".join(
        f"self.state.blob[{i % state.items}] = fill({i}, {state.item_size})\n"
        f"await self.Step('Main:{i}:EXE')\n"
        for i in range(n)
    )


SHAPES: dict[str, Callable[[int, StateShape], str]] = {
    "loop": loop_body,
    "statements": statements_body,
}


def response(
    body: str,
    state: StateShape | None = None,
    *,
    tail: str = "await self.Return(0)\n",
    prelude: str = "",
) -> str:
    """A complete LLM response (a fenced Python block)."""
    setup = state.setup() if state is not None else ""
    return "```python\n" + FILL + setup + prelude + body + tail + "```\n"


class Workdir:
    """A temporary directory holding the program, the scripted responses and stores."""

    def __init__(self, prefix: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=f"durably-bench-{prefix}-"))
        self.program_path = self.path / "bench_program.py"
        self.program_path.write_text(PROGRAM)
        self._program: Program | None = None
        self._scripts = 0

    @property
    def program(self) -> Program:
        if self._program is None:
            self._program = Program.load(self.program_path)
        return self._program

    def script(self, text: str) -> str:
        """Write a scripted-LLM file with ``text`` as Main's only response; return the spec."""
        self._scripts += 1
        path = self.path / f"script-{self._scripts}.json"
        path.write_text(json.dumps({"Bench.Main": [text]}))
        return f"scripted:{path}?chunk_seed=1"

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


async def run(
    program: Program, llm: str, config: DurabilityConfig, execution_id: str | None = None
) -> tuple[float, RunResult]:
    """Run a program to its end through the real runtime; return (seconds, result)."""
    start = now()
    result = await run_program(
        program, llm=llm, config=config, echo=None, execution_id=execution_id
    )
    elapsed = now() - start
    if result.status != "completed":
        raise RuntimeError(f"benchmark run did not complete: {result}")
    return elapsed, result


# ------------------------------------------------------------------------- the stores


@dataclass
class StoreUsage:
    """What an execution occupies in the store (envelope bytes, as providers report)."""

    checkpoints: int = 0
    checkpoint_bytes: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.checkpoint_bytes + self.blob_bytes

    @property
    def writes(self) -> int:
        return self.checkpoints + self.blobs


async def store_usage(config: DurabilityConfig, execution_id: str) -> StoreUsage:
    """Sum the sizes of an execution's checkpoints and blobs, as listed by the store."""
    from durably import open_store

    usage = StoreUsage()
    async with open_store(config=config) as provider:
        async for info in provider.iter_checkpoints(execution_id):
            usage.checkpoints += 1
            usage.checkpoint_bytes += info.size
            kind = info.metadata.get("durably.kind", "?")
            usage.kinds[kind] = usage.kinds.get(kind, 0) + 1
        cursor: str | None = None
        while True:
            page = await provider.list_blobs(execution_id, cursor=cursor)
            usage.blobs += len(page.items)
            usage.blob_bytes += sum(b.size for b in page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    return usage


async def delete_executions(config: DurabilityConfig, execution_ids: Sequence[str]) -> None:
    """Remove executions a benchmark made (outside any timed section)."""
    from durably import open_store

    async with open_store(config=config) as provider:
        for execution_id in execution_ids:
            await provider.delete_execution(execution_id)


class Backend:
    """One store a benchmark runs against."""

    name = "?"
    key = "?"

    def config(self, **overrides: Any) -> DurabilityConfig:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


class FilesystemBackend(Backend):
    name = "filesystem"
    key = "file"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = root / "store"
        self.url = f"file://{self.store}"

    def config(self, **overrides: Any) -> DurabilityConfig:
        return replace(DurabilityConfig(store=self.url), **overrides)

    def describe(self) -> str:
        return f"{self.url}"


class S3Backend(Backend):
    name = "S3 (moto)"
    key = "s3"

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.url = f"s3://{bucket}/{self.prefix}"

    def options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "region": REGION}

    def config(self, **overrides: Any) -> DurabilityConfig:
        return replace(
            DurabilityConfig(store=self.url, providers={"s3": self.options()}), **overrides
        )

    def describe(self) -> str:
        return f"{self.url} at {self.endpoint}"


class PostgresBackend(Backend):
    name = "PostgreSQL"
    key = "postgres"

    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.schema = schema

    def options(self) -> dict[str, Any]:
        return {"schema": self.schema}

    def config(self, **overrides: Any) -> DurabilityConfig:
        return replace(
            DurabilityConfig(store=self.url, providers={"postgres": self.options()}), **overrides
        )

    def describe(self) -> str:
        return f"{self.url.split('@')[-1]} schema {self.schema}"


def pg_url() -> str:
    return (
        os.environ.get("DURABLY_BENCH_POSTGRES_URL")
        or os.environ.get("DURABLY_TEST_POSTGRES_URL")
        or DEFAULT_PG_URL
    )


def pg_available(url: str) -> str | None:
    """None if the server answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"


@contextlib.contextmanager
def pg_schema(url: str, prefix: str = "durably_bench") -> Iterator[str]:
    """A throwaway schema name; the schema (whoever created it) is dropped at the end."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def pg_uri(conninfo: str) -> str:
    """A ``postgresql://`` URL for a key=value conninfo (for libraries that want URLs)."""
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(conninfo)
    user = quote(str(params.pop("user", "postgres")))
    password = params.pop("password", None)
    host = params.pop("host", "127.0.0.1")
    port = params.pop("port", "5432")
    dbname = params.pop("dbname", "postgres")
    auth = f"{user}:{quote(str(password))}" if password else user
    query = "&".join(f"{k}={quote(str(v))}" for k, v in params.items())
    return f"postgresql://{auth}@{host}:{port}/{dbname}" + (f"?{query}" if query else "")


_MOTO_CHILD = r"""
import logging, sys, threading
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
app = server._server.app
lock = threading.Lock()
def handle(environ, start_response):
    with lock:
        return list(app(environ, start_response))
server._server.app = handle
host, port = server.get_host_and_port()
print(f"http://{host}:{port}", flush=True)
sys.stdin.read()
server.stop()
"""


def aws_test_environment() -> None:
    """Dummy credentials for moto; no AWS profile or endpoint from the environment."""
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_REGION",
    ):
        os.environ.pop(name, None)
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    os.environ["AWS_DEFAULT_REGION"] = REGION


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server over HTTP on 127.0.0.1 (port 0) in a child process.

    A child process, not a thread of this one, so that the server and the code under
    measurement do not share the GIL (a real S3 endpoint runs elsewhere, too).
    """
    aws_test_environment()
    proc = subprocess.Popen(
        [sys.executable, "-c", _MOTO_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().strip()
        if not endpoint.startswith("http://"):
            raise RuntimeError("the moto server did not start")
        yield endpoint
    finally:
        with contextlib.suppress(Exception):
            assert proc.stdin is not None
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def s3_client_config() -> Any:
    """The aiobotocore client settings the S3 provider uses by default."""
    from aiobotocore.config import AioConfig

    return AioConfig(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10.0,
        read_timeout=60.0,
        s3={"addressing_style": "auto"},
        max_pool_connections=32,
    )


def new_bucket(endpoint: str) -> str:
    import botocore.session

    session = botocore.session.get_session()
    client = session.create_client("s3", endpoint_url=endpoint, region_name=REGION)
    name = f"durably-bench-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name


@contextlib.asynccontextmanager
async def backends(
    args: argparse.Namespace, work: Path, tag: str = "durably_bench"
) -> AsyncIterator[list[Backend]]:
    """The stores selected with ``--providers`` that are available; says why one is not."""
    wanted = [p.strip() for p in args.providers.split(",") if p.strip()]
    found: list[Backend] = []
    with contextlib.ExitStack() as stack:
        if "file" in wanted:
            found.append(FilesystemBackend(work))
        if "s3" in wanted:
            try:
                import aiobotocore  # noqa: F401

                import durably_s3  # noqa: F401

                endpoint = stack.enter_context(moto_server())
                found.append(S3Backend(endpoint, new_bucket(endpoint)))
            except Exception as exc:
                print(f"\n**S3 skipped**: cannot start moto / durably-s3 here ({exc!r})")
        if "postgres" in wanted:
            url = pg_url()
            why = pg_available(url)
            if why is None:
                try:
                    import durably_postgres  # noqa: F401

                    found.append(PostgresBackend(url, stack.enter_context(pg_schema(url, tag))))
                except ImportError as exc:
                    print(f"\n**PostgreSQL skipped**: durably-postgres is not installed ({exc})")
            else:
                print(f"\n**PostgreSQL skipped**: no server at {url.split('@')[-1]} ({why})")
        yield found


# ------------------------------------------------------------------------ primitives


class Primitives:
    """The raw storage operations durably's writes are compared with, each timed as the
    mean over ``count`` back-to-back operations (like durably's per-await overhead)."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "primitives"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._log_fd: int | None = None
        self._s3: Any = None
        self._s3_stack: contextlib.AsyncExitStack | None = None
        self._pg: Any = None
        self._counter = 0

    # filesystem ---------------------------------------------------------------

    def append_fdatasync(self, size: int, count: int) -> float:
        """``write`` of ``size`` bytes to a file opened with O_APPEND, then ``fdatasync``."""
        if self._log_fd is None:
            self._log_fd = os.open(
                self.dir / "append.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
        data = os.urandom(size)
        fd = self._log_fd
        start = now()
        for _ in range(count):
            os.write(fd, data)
            os.fdatasync(fd)
        elapsed = (now() - start) / count
        if os.fstat(fd).st_size > 64 << 20:  # keep the file from growing without bound
            os.ftruncate(fd, 0)
            os.fsync(fd)
        return elapsed

    def atomic_replace(self, size: int, count: int) -> float:
        """Write a temp file, ``fsync`` it, ``rename`` it into place, ``fsync`` the dir."""
        data = os.urandom(size)
        target_dir = self.dir / "objects"
        target_dir.mkdir(exist_ok=True)
        dir_fd = os.open(target_dir, os.O_RDONLY)
        try:
            start = now()
            for _ in range(count):
                self._counter += 1
                tmp = target_dir / f".tmp-{self._counter}"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, data)
                os.fsync(fd)
                os.close(fd)
                os.rename(tmp, target_dir / f"obj-{self._counter % 512}")
                os.fsync(dir_fd)
            return (now() - start) / count
        finally:
            os.close(dir_fd)

    # S3 -----------------------------------------------------------------------

    async def s3_put(self, backend: S3Backend, size: int, count: int) -> float:
        """One ``put_object`` of ``size`` bytes (aiobotocore, the provider's settings)."""
        if self._s3 is None:
            from durably_s3._client import new_session

            self._s3_stack = contextlib.AsyncExitStack()
            self._s3 = await self._s3_stack.enter_async_context(
                new_session().create_client(
                    "s3",
                    endpoint_url=backend.endpoint,
                    region_name=REGION,
                    config=s3_client_config(),
                )
            )
            await self._s3.put_object(Bucket=backend.bucket, Key="primitive/warm", Body=b"x")
        data = os.urandom(size)
        start = now()
        for _ in range(count):  # a new key each time, as durably writes a new object
            self._counter += 1
            await self._s3.put_object(
                Bucket=backend.bucket, Key=f"primitive/{self._counter:08d}", Body=data
            )
        return (now() - start) / count

    # PostgreSQL ---------------------------------------------------------------

    async def pg_insert(self, backend: PostgresBackend, size: int, count: int) -> float:
        """One single-row ``INSERT`` committed on its own (autocommit), psycopg async."""
        import psycopg

        if self._pg is None:
            self._pg = await psycopg.AsyncConnection.connect(backend.url, autocommit=True)
            await self._pg.execute(f'CREATE SCHEMA IF NOT EXISTS "{backend.schema}"')
            await self._pg.execute(
                f'CREATE TABLE IF NOT EXISTS "{backend.schema}".bench_primitive '
                "(id bigserial PRIMARY KEY, data bytea NOT NULL)"
            )
        data = os.urandom(size)
        sql = f'INSERT INTO "{backend.schema}".bench_primitive (data) VALUES (%s)'
        start = now()
        for _ in range(count):
            await self._pg.execute(sql, (data,))
        elapsed = (now() - start) / count
        await self._pg.execute(f'TRUNCATE "{backend.schema}".bench_primitive')
        return elapsed

    async def close(self) -> None:
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None
        if self._s3_stack is not None:
            await self._s3_stack.aclose()
            self._s3 = self._s3_stack = None
        if self._pg is not None:
            await self._pg.close()
            self._pg = None


def main(
    coro_fn: Callable[[argparse.Namespace], Any],
    description: str,
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Parse the options, print the header, run the benchmark, print its duration."""
    args = parse_args(description, argv, extra)
    print_header(description, args)
    start = now()
    asyncio.run(coro_fn(args))
    print(
        f"\n_{Path(sys.argv[0]).name} took {now() - start:.0f} s; load average at the end: "
        f"{load()}._\n"
    )
