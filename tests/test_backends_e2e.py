"""The end-to-end crash/resume test against the other backends: SIGKILL `durably run`
after checkpoint k, `durably resume` in a new process, compare `show --json` with an
uninterrupted run -- through a `durably.toml` that names the store, as a user would."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import PROGRAM_CASES, durably, show

CRASH_POINTS = (2, 7, 15, 30)


@pytest.fixture
def postgres_config(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    from durably_postgres.testing import drop_schema, random_schema, server_or_skip

    server = server_or_skip()
    schema = random_schema("durably_e2e")
    config = tmp_path / "durably.toml"
    config.write_text(f'[durability]\nstore = "{server.url}"\nlease_ttl = 1\n'
                      f'[durability.postgres]\nschema = "{schema}"\n')
    yield config, server.url
    drop_schema(server.url, schema)


@pytest.fixture
def redis_config(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    from durably_redis.testing import delete_prefix, random_prefix, server_or_skip

    server = server_or_skip()
    prefix = random_prefix("durably-e2e")
    config = tmp_path / "durably.toml"
    config.write_text(f'[durability]\nstore = "{server.url}"\nlease_ttl = 1\n'
                      f'[durability.redis]\nkey_prefix = "{prefix}"\n')
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
    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {name: os.environ.get(name) for name in aws}
    os.environ.update(aws)
    try:
        bucket = f"durably-e2e-{uuid.uuid4().hex[:12]}"
        botocore.session.get_session().create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        store = f"s3://{bucket}/runs"
        config = tmp_path / "durably.toml"
        config.write_text(f'[durability]\nstore = "{store}"\nlease_ttl = 1\n'
                          f'[durability.s3]\nendpoint_url = "{endpoint}"\n')
        yield config, store
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _crash_and_resume(config: Path, store: str) -> None:
    case = PROGRAM_CASES["kitchen"]
    args = case.run_args(store, "reference")
    args[args.index("--store"):args.index("--store") + 2] = ["--config", str(config)]
    done = durably(*args)
    assert done.code == 0, done.err
    reference = show(store, "reference", config=config)
    for k in CRASH_POINTS:
        execution_id = f"crash-{k}"
        run_args = [a if a != "reference" else execution_id for a in args]
        first = durably(*run_args, env={"DURABLY_CRASH_AFTER_CHECKPOINT": str(k)})
        assert first.code == -signal.SIGKILL, (k, first.err)
        second = durably("resume", execution_id, "--wait", "--config", str(config))
        assert second.code == 0, (k, second.err)
        data = show(store, execution_id, config=config)
        assert data["status"] == "completed"
        for key in ("transcript", "agents", "llm_calls", "result"):
            assert data[key] == reference[key], (k, key)


def test_crash_and_resume_on_postgres(postgres_config: tuple[Path, str]) -> None:
    config, url = postgres_config
    _crash_and_resume(config, url)


def test_crash_and_resume_on_s3(s3_config: tuple[Path, str]) -> None:
    config, store = s3_config
    _crash_and_resume(config, store)


@pytest.mark.filterwarnings("ignore::durably.errors.DurablyWarning")  # Redis without AOF here
def test_crash_and_resume_on_redis(redis_config: tuple[Path, str]) -> None:
    config, url = redis_config
    _crash_and_resume(config, url)
