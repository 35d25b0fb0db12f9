"""Fixtures: a real moto S3 server over HTTP, fresh buckets, request counting.

The server is moto's ``ThreadedMotoServer`` on 127.0.0.1 and a free port. One change
to it: requests are handled one at a time (a lock around the WSGI app). Moto evaluates
``If-None-Match``/``If-Match`` on PutObject by reading the key and then writing it,
without a lock, in whichever thread werkzeug runs the request; two concurrent
conditional PUTs of one key can therefore both succeed (and moto can crash on
concurrent PUTs of one key). AWS S3 evaluates the condition atomically. Serializing
requests gives moto S3's atomicity; it does not make any request succeed or fail
differently than moto itself decides.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The workspace's editable install of durably-s3 lacks its .pth file; make the package
# importable from its source tree (harmless when it is installed properly).
_SRC = str(Path(__file__).resolve().parents[1] / "src")
if _SRC not in sys.path:
    sys.path.insert(0, _SRC)

import botocore.session  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402

from durably_s3._client import new_session  # noqa: E402

REGION = "us-east-1"


def _serialized(app: Callable[..., Any]) -> Callable[..., Any]:
    lock = threading.Lock()

    def handle(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with lock:
            return list(app(environ, start_response))

    return handle


class MotoS3:
    """The running server: its endpoint and a synchronous botocore client for set-up."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        session = botocore.session.get_session()
        self.client = session.create_client("s3", endpoint_url=endpoint, region_name=REGION)

    def new_bucket(self, *, versioning: bool = False) -> str:
        name = f"durably-{uuid.uuid4().hex[:20]}"
        self.client.create_bucket(Bucket=name)
        if versioning:
            self.client.put_bucket_versioning(
                Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        return name


@pytest.fixture(scope="session", autouse=True)
def aws_env() -> Iterator[None]:
    """Dummy credentials and no shared AWS config, for the whole session (then restored)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN",
                     "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", REGION)
        patch.setenv("AWS_CONFIG_FILE", os.devnull)
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield


@pytest.fixture(scope="session")
def moto_s3(aws_env: None) -> Iterator[MotoS3]:
    """A moto S3 server for the whole session; AWS_ENDPOINT_URL_S3 points at it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    assert server._server is not None
    server._server.app = _serialized(server._server.app)  # see the module docstring
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        try:
            yield MotoS3(endpoint)
        finally:
            server.stop()


class RequestCounter:
    """Counts the HTTP requests a provider sends, by operation (retries included).

    Pass ``counter.session`` to the provider; ``before-send`` fires once per HTTP
    request (attempt), and its event name ends with the operation name.
    """

    def __init__(self) -> None:
        self.session = new_session()
        self.sent: Counter[str] = Counter()
        self.session.register("before-send.s3", self._before_send)

    def _before_send(self, event_name: str, **_: Any) -> None:
        self.sent[event_name.rpartition(".")[2]] += 1

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def reset(self) -> None:
        self.sent.clear()


@pytest.fixture
def counter() -> RequestCounter:
    return RequestCounter()
