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
from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer
from s3_testkit import REGION, MotoS3, RequestCounter, serialized


@pytest.fixture(scope="session", autouse=True)
def aws_env() -> Iterator[None]:
    """Dummy credentials and no shared AWS config, for the whole session (then restored)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in (
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "AWS_REGION",
        ):
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
    server._server.app = serialized(server._server.app)  # see the module docstring
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        try:
            yield MotoS3(endpoint)
        finally:
            server.stop()


@pytest.fixture
def counter() -> RequestCounter:
    return RequestCounter()
