"""A scripted HTTP endpoint that answers like a misbehaving or misconfigured S3.

moto implements S3 faithfully; these tests need the failures it cannot produce: a
server that ignores conditional headers, one that throttles, one that cuts bodies
short, one that says the bucket lives in another region. The provider talks to it
over real HTTP, exactly as it would to S3.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None
    """Announce this Content-Length (else the body's length) -- to cut a body short."""


def error(status: int, code: str, message: str = "scripted", **extra: str) -> Reply:
    fields = "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message>{fields}</Error>"
    ).encode()
    return Reply(status, body, {"Content-Type": "application/xml"})


def ok_put(body: bytes) -> Reply:
    return Reply(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})


Script = Callable[[str, str, dict[str, str], bytes], Reply]
"""(method, path, headers, body) -> reply."""


@dataclass
class FakeS3:
    endpoint: str
    requests: list[tuple[str, str, dict[str, str]]]


@contextmanager
def fake_s3(script: Script) -> Iterator[FakeS3]:
    """Serve ``script`` on 127.0.0.1 (a free port) while the block runs."""
    seen: list[tuple[str, str, dict[str, str]]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            seen.append((self.command, self.path, headers))
            reply = script(self.command, self.path, headers, body)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            announced = len(reply.body) if reply.content_length is None else reply.content_length
            self.send_header("Content-Length", str(announced))
            if reply.content_length is not None:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FakeS3(f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
