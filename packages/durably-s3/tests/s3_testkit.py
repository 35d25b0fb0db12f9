"""Helpers of the S3 tests: the moto server handle and a request counter."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import botocore.session

from durably_s3._client import new_session

REGION = "us-east-1"


def serialized(app: Callable[..., Any]) -> Callable[..., Any]:
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
                Bucket=name, VersioningConfiguration={"Status": "Enabled"}
            )
        return name


class RequestCounter:
    """Counts the HTTP requests a provider sends, by operation (retries included).

    Pass ``counter.session`` to the provider; ``before-send`` fires once per HTTP
    request (attempt), and its event name ends with the operation name.
    """

    def __init__(self) -> None:
        self.session = new_session()
        self.sent: Counter[str] = Counter()
        self.by_path: Counter[tuple[str, str]] = Counter()
        """(operation, URL path without the bucket) -> requests."""
        self.session.register("before-send.s3", self._before_send)

    def _before_send(self, event_name: str, request: Any = None, **_: Any) -> None:
        operation = event_name.rpartition(".")[2]
        self.sent[operation] += 1
        if request is not None:
            from urllib.parse import unquote, urlsplit

            path = unquote(urlsplit(request.url).path).lstrip("/")
            self.by_path[(operation, path.partition("/")[2])] += 1

    def sent_to(self, fragment: str) -> Counter[str]:
        """The requests, by operation, whose object key contains ``fragment``."""
        found: Counter[str] = Counter()
        for (operation, key), count in self.by_path.items():
            if fragment in key:
                found[operation] += count
        return found

    @property
    def total(self) -> int:
        return sum(self.sent.values())

    def reset(self) -> None:
        self.sent.clear()
        self.by_path.clear()
