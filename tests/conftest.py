"""Shared helpers for the cross-package and end-to-end tests: drive `durably` as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The fuzzer (tests/fuzz) runs in-process against the core's in-memory test store.
for _folder in (ROOT / "tests" / "fuzz", ROOT / "packages" / "durably" / "tests"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
KITCHEN = ROOT / "examples" / "kitchen"
KITCHEN_INPUT = (
    "I've got chickpeas, a bag of spinach, a can of tomatoes and some rice. I'm vegetarian."
)
COUNTER = ROOT / "packages" / "durably" / "tests" / "programs"


@dataclass
class Completed:
    code: int
    out: str
    err: str


def default_ctrl_c() -> None:
    """``preexec_fn`` of a process a test stops with Ctrl-C (SIGINT): Ctrl-C interrupts it
    even if this process ignores SIGINT (a background job of a non-interactive shell, as
    in ``pytest ... &``: its children inherit that, and Python keeps it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def durably(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> Completed:
    """Run the `durably` command in a new process (no terminal, clean DURABLY_* env)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    base.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "durably", *args],
        env=base,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return Completed(proc.returncode, proc.stdout, proc.stderr)


def show(
    store: str, execution_id: str, *, subprocess: bool = False, config: Path | None = None
) -> dict[str, Any]:
    """What `durably show --json` prints (in this process unless ``subprocess``), without
    the timings that differ between any two runs (see ``without_measurements``)."""
    from durably._inspect import without_measurements

    if subprocess:
        result = durably("show", execution_id, "--json", "--store", store)
        assert result.code == 0, result.err
        data: dict[str, Any] = without_measurements(json.loads(result.out))
        return data
    import asyncio

    from durably import open_store
    from durably._inspect import describe_execution
    from durably.checkpoint import CheckpointManager
    from durably.config import load_config

    async def describe() -> dict[str, Any] | None:
        settings = load_config(config_file=config, overrides={"store": store}, use_env=False)
        async with open_store(config=settings) as provider:
            return await describe_execution(
                CheckpointManager(execution_id, provider, config=settings)
            )

    found = asyncio.run(describe())
    assert found is not None
    # Exactly what the command prints, parsed back.
    return without_measurements(json.loads(json.dumps(found, ensure_ascii=False)))


@dataclass(frozen=True)
class ProgramCase:
    name: str
    program: Path
    script: Path
    inputs: Sequence[str]

    def run_args(self, store: str, execution_id: str) -> list[str]:
        args = [
            "run",
            str(self.program),
            "--llm",
            f"scripted:{self.script}?chunk_seed=5",
            "--store",
            store,
            "--execution-id",
            execution_id,
        ]
        for text in self.inputs:
            args += ["--input", text]
        return args


RELAY = ROOT / "tests" / "fuzz" / "programs"

PROGRAM_CASES = {
    "kitchen": ProgramCase(
        "kitchen", KITCHEN / "kitchen.py", KITCHEN / "kitchen.scripted.json", [KITCHEN_INPUT]
    ),
    "counter": ProgramCase(
        "counter", COUNTER / "counter.py", COUNTER / "counter.scripted.json", ["forty-two"]
    ),
    # Cross-agent calls and messages mid-response (tests/fuzz/test_regressions.py).
    "relay": ProgramCase("relay", RELAY / "relay.py", RELAY / "relay.scripted.json", []),
}


@pytest.fixture
def file_store(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


@pytest.fixture
def postgres_config(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    from durably_postgres.testing import drop_schema, random_schema, server_or_skip

    server = server_or_skip()
    schema = random_schema("durably_e2e")
    config = tmp_path / "durably.toml"
    config.write_text(
        f'[durability]\nstore = "{server.url}"\nlease_ttl = 1\n'
        f'[durability.postgres]\nschema = "{schema}"\n'
    )
    yield config, server.url
    drop_schema(server.url, schema)


@pytest.fixture
def redis_config(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    from durably_redis.testing import delete_prefix, random_prefix, server_or_skip

    server = server_or_skip()
    prefix = random_prefix("durably-e2e")
    config = tmp_path / "durably.toml"
    config.write_text(
        f'[durability]\nstore = "{server.url}"\nlease_ttl = 1\n'
        f'[durability.redis]\nkey_prefix = "{prefix}"\n'
    )
    yield config, server.url
    delete_prefix(server.url, prefix)


@pytest.fixture
def s3_config(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A moto S3 server on loopback (over HTTP), a fresh bucket, and the AWS settings the
    `durably` processes inherit from the environment."""
    import logging
    import os
    import uuid

    import botocore.session
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    aws = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {name: os.environ.get(name) for name in aws}
    os.environ.update(aws)
    try:
        bucket = f"durably-e2e-{uuid.uuid4().hex[:12]}"
        botocore.session.get_session().create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1"
        ).create_bucket(Bucket=bucket)
        store = f"s3://{bucket}/runs"
        config = tmp_path / "durably.toml"
        config.write_text(
            f'[durability]\nstore = "{store}"\nlease_ttl = 1\n'
            f'[durability.s3]\nendpoint_url = "{endpoint}"\n'
        )
        yield config, store
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(params=["filesystem", "s3", "postgres", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    """Each backend in turn, as ``(durably.toml naming the store, store URL)``."""
    if request.param == "filesystem":
        store = f"file://{tmp_path / 'store'}"
        config = tmp_path / "durably.toml"
        config.write_text(f'[durability]\nstore = "{store}"\nlease_ttl = 1\n')
        return config, store
    found: tuple[Path, str] = request.getfixturevalue(f"{request.param}_config")
    return found
