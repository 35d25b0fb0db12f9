"""A fake LLM server on loopback that speaks the real streaming wire formats.

:class:`FakeServer` answers ``POST .../chat/completions`` as OpenAI does (server-sent
events of ``chat.completion.chunk`` objects, ``data: [DONE]``) and ``POST .../messages``
as Anthropic does (``message_start`` ... ``message_stop`` events), over chunked HTTP/1.1,
from a thread, so that it serves in-process clients and ``durably`` subprocesses alike.

What it answers:

* ``responses``: a list served in order, or ``script``: the scripted LLM's file format
  (``{"Agent.Playbook": [response, ...]}``), served in order per key. The key is read
  from the prompt: the system message's ``You are agent <Class>`` and the first
  ``Execute playbook <Name>`` of a user message (``ProcessMessages`` when there is none).
* A request to continue a cut-off response (the conversation ends with the cut-off text
  as the assistant's turn and the client's "continue" note; or, Anthropic only, it ends
  with an assistant prefill) gets, like an honest model, the rest of the response that
  was being served for that key -- across server-side failures and client restarts
  alike. ``prefill=False`` makes the Anthropic dialect refuse prefill with a 400, as
  Claude 4.6 and later do.
* ``behaviours``: per request, in order, how to misbehave (:class:`Behaviour`); requests
  beyond the list behave as ``default`` says (normally when it is ``None``).

Every request is recorded in :attr:`FakeServer.requests`.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Behaviour", "FakeServer", "Request"]

_AGENT = re.compile(r"You are agent (\w+)")
_PLAYBOOK = re.compile(r"Execute playbook (\w+)")
_CONTINUE = "Your previous answer was cut off"
_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}


@dataclass
class Behaviour:
    """How the server answers one request.

    Attributes:
        status: The HTTP status; not 200: an error answer with ``body`` (or an error
            object in the dialect's format) and no stream.
        retry_after: A ``Retry-After`` header for an error answer.
        body: The body of an error answer (JSON text).
        text: The response text (instead of the next scripted response).
        chunk_size: Characters per content event.
        reset_after_chars: Reset the connection (TCP RST) after streaming this many
            characters of the response.
        error_event: Send an error event (instead of the end of the stream) after
            ``error_after_chars`` characters (all when ``None``); a dict is the error
            object sent.
        error_after_chars: Where the error event goes.
        no_done: Leave out OpenAI's ``data: [DONE]`` / Anthropic's ``message_stop``.
        finish_reason: OpenAI's finish reason (mapped for Anthropic: ``stop`` ->
            ``end_turn``, ``length`` -> ``max_tokens``, ``content_filter`` ->
            ``refusal``; other values are sent as they are); ``None``: none is sent
            (the stream just ends, cleanly).
        stop_after_chars: Stream only this many characters, then finish as
            ``finish_reason`` says (a response cut by a length limit).
        json_instead_of_sse: Answer 200 with the whole response as plain JSON, as a server
            that ignores ``stream: true`` does.
        delay_per_chunk: Seconds to wait before each content event.
        usage: Report token usage.
        pause_after_chars: After streaming this many characters, set
            :attr:`FakeServer.paused` and wait (at most 30 s) for
            :attr:`FakeServer.release` before going on: a stream stalled mid-response,
            for a test to kill its client in the middle of it.
        keepalive_after_chars: After streaming this many characters, send only
            keep-alives (OpenAI: SSE comments; Anthropic: ``ping`` events) every 0.1 s
            for ``keepalive_seconds``, then the rest.
        keepalive_seconds: How long the keep-alives last.
    """

    status: int = 200
    retry_after: str | None = None
    body: str | None = None
    text: str | None = None
    chunk_size: int = 7
    reset_after_chars: int | None = None
    error_event: bool | dict[str, Any] = False
    error_after_chars: int | None = None
    no_done: bool = False
    finish_reason: str | None = "stop"
    stop_after_chars: int | None = None
    json_instead_of_sse: bool = False
    delay_per_chunk: float = 0.0
    usage: bool = True
    pause_after_chars: int | None = None
    keepalive_after_chars: int | None = None
    keepalive_seconds: float = 3.0


@dataclass
class Request:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: dict[str, Any]
    at: float = field(default_factory=time.monotonic)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages (for Anthropic, without the separate system prompt)."""
        return list(self.body.get("messages", []))


def _text(content: Any) -> str:
    """A message's text (a string, or Anthropic's list of content blocks)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


class FakeServer:
    """The server; use as a context manager (``with FakeServer(...) as server``).

    Args:
        responses: Responses served in order (when there is no ``script``).
        script: ``{"Agent.Playbook": [response, ...]}``, served in order per key.
        behaviours: How to answer each request, in order.
        default: How to answer requests beyond ``behaviours`` (``None``: normally).
        model: The model name the server reports.
        prefill: Accept Anthropic's assistant prefill (``False``: a 400, as Claude 4.6
            and later answer).
    """

    def __init__(
        self,
        responses: list[str] | None = None,
        *,
        script: dict[str, list[str]] | None = None,
        behaviours: list[Behaviour] | None = None,
        default: Behaviour | None = None,
        model: str = "fake-model",
        prefill: bool = True,
    ) -> None:
        self.responses = list(responses or [])
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.behaviours = list(behaviours or [])
        self.default = default
        self.model = model
        self.prefill = prefill
        self.paused = threading.Event()
        """Set when a stream paused (``Behaviour.pause_after_chars``)."""
        self.release = threading.Event()
        """Set to let a paused stream go on."""
        self.active = 0
        """Requests being answered now."""
        self.requests: list[Request] = []
        self.served: dict[str, int] = {}
        """How many responses each key was served (``""`` without a script)."""
        self._current: dict[str, str] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        assert self._httpd is not None, "the server is not running"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give an OpenAI client (``http://127.0.0.1:PORT/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        """The server's root URL (for Anthropic's and Azure's clients)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeServer:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, daemon=True, name="fake-llm-server"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ answering

    def _behaviour(self) -> Behaviour:
        with self._lock:
            if self.behaviours:
                return self.behaviours.pop(0)
            return self.default or Behaviour()

    def _key(self, request: Request) -> str:
        if not self.script:
            return ""
        system = _text(request.body.get("system", ""))
        for message in request.messages:
            if message.get("role") in ("system", "developer"):
                system += _text(message.get("content"))
        agent = _AGENT.search(system)
        playbook = None
        for message in request.messages:
            if message.get("role") == "user":
                playbook = _PLAYBOOK.search(_text(message.get("content")))
                if playbook:
                    break
        return f"{agent[1] if agent else '?'}.{playbook[1] if playbook else 'ProcessMessages'}"

    @staticmethod
    def _prefix(request: Request, dialect: str) -> str | None:
        """The cut-off text a request asks to continue, or ``None``."""
        messages = request.messages
        if dialect == "anthropic" and messages and messages[-1].get("role") == "assistant":
            return _text(messages[-1].get("content"))
        if (
            len(messages) >= 2
            and messages[-1].get("role") == "user"
            and _text(messages[-1].get("content")).startswith(_CONTINUE)
            and messages[-2].get("role") == "assistant"
        ):
            return _text(messages[-2].get("content"))
        return None

    def next_text(self, request: Request, dialect: str, behaviour: Behaviour) -> str:
        """The text to stream for ``request`` (and what the server remembers)."""
        if behaviour.text is not None:
            return behaviour.text
        key = self._key(request)
        prefix = self._prefix(request, dialect)
        with self._lock:
            if prefix is not None and key in self._current:
                whole = self._current[key]
                if whole.startswith(prefix):
                    return whole[len(prefix) :]
                raise AssertionError(
                    f"continuation of {key}: {prefix[-40:]!r} does not "
                    "start the response being served"
                )
            number = self.served.get(key, 0)
            if self.script:
                queue = self.script.get(key, [])
                if number >= len(queue):
                    raise AssertionError(f"no scripted response #{number + 1} for {key}")
                whole = queue[number]
            else:
                if number >= len(self.responses):
                    raise AssertionError(f"no response #{number + 1} left")
                whole = self.responses[number]
            self.served[key] = number + 1
            self._current[key] = whole
            return whole


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {}
        parts = urlsplit(self.path)
        request = Request(
            "POST",
            parts.path,
            dict(parse_qsl(parts.query)),
            {k.lower(): v for k, v in self.headers.items()},
            body,
        )
        with self.fake._lock:
            self.fake.requests.append(request)
            self.fake.active += 1
        try:
            self._answer(request, parts.path)
        finally:
            with self.fake._lock:
                self.fake.active -= 1

    def _answer(self, request: Request, path: str) -> None:
        body = request.body
        dialect = "anthropic" if path.rstrip("/").endswith("/messages") else "openai"
        behaviour = self.fake._behaviour()
        if (
            dialect == "anthropic"
            and not self.fake.prefill
            and request.messages
            and request.messages[-1].get("role") == "assistant"
        ):
            behaviour = Behaviour(
                status=400,
                body=json.dumps(
                    {
                        "type": "error",
                        "error": {
                            "type": "invalid_request_error",
                            "message": "This model does not support assistant message prefill. The "
                            "conversation must end with a user message.",
                        },
                    }
                ),
            )
        if behaviour.status != 200:
            self._error(behaviour, dialect)
            return
        try:
            text = self.fake.next_text(request, dialect, behaviour)
        except AssertionError as exc:
            self._error(
                Behaviour(
                    status=500,
                    body=json.dumps(
                        {"error": {"message": f"fake server: {exc}", "type": "server_error"}}
                    ),
                ),
                dialect,
            )
            return
        prompt_tokens = _tokens(json.dumps(body.get("messages", [])) + _text(body.get("system")))
        if behaviour.json_instead_of_sse:
            self._json(text, behaviour, dialect, prompt_tokens)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if dialect == "anthropic":
            events = _anthropic_events(text, behaviour, self.fake.model, prompt_tokens)
        else:
            events = _openai_events(text, behaviour, self.fake.model, prompt_tokens)
        for event in events:
            if event is _RESET:
                self._reset()
                return
            if event is _DELAY:
                time.sleep(behaviour.delay_per_chunk)
                continue
            if event is _PAUSE:
                self.fake.paused.set()
                self.fake.release.wait(30)
                continue
            if event is _KEEPALIVE:
                alive = (
                    _sse({"type": "ping"}, "ping") if dialect == "anthropic" else b": keepalive\n\n"
                )
                end = time.monotonic() + behaviour.keepalive_seconds
                try:
                    while time.monotonic() < end:
                        self.wfile.write(f"{len(alive):x}\r\n".encode() + alive + b"\r\n")
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:  # the client gave up waiting
                    self.close_connection = True
                    return
                continue
            assert isinstance(event, bytes)
            try:
                self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                self.wfile.flush()
            except OSError:
                self.close_connection = True
                return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _reset(self) -> None:
        """Abort the connection with a TCP RST."""
        self.close_connection = True
        time.sleep(0.05)  # let the client read what was sent: the reset discards unread data
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass

    def _error(self, behaviour: Behaviour, dialect: str) -> None:
        if behaviour.body is not None:
            payload = behaviour.body.encode()
        elif dialect == "anthropic":
            payload = json.dumps(
                {
                    "type": "error",
                    "error": {"type": "api_error", "message": f"status {behaviour.status}"},
                }
            ).encode()
        else:
            payload = json.dumps(
                {
                    "error": {
                        "message": f"status {behaviour.status}",
                        "type": "server_error",
                        "code": None,
                    }
                }
            ).encode()
        self.send_response(behaviour.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        if behaviour.retry_after is not None:
            self.send_header("Retry-After", behaviour.retry_after)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _json(self, text: str, behaviour: Behaviour, dialect: str, prompt_tokens: int) -> None:
        if dialect == "anthropic":
            answer: dict[str, Any] = {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": self.fake.model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": prompt_tokens, "output_tokens": _tokens(text)},
            }
        else:
            answer = {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": 0,
                "model": self.fake.model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": _tokens(text),
                    "total_tokens": prompt_tokens + _tokens(text),
                },
            }
        payload = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()


_RESET = object()
_DELAY = object()
_PAUSE = object()
_KEEPALIVE = object()


def _pieces(text: str, behaviour: Behaviour) -> Iterator[str | object]:
    """The content pieces to send, with the reset/delay markers in place."""
    limit = len(text)
    for cut in (behaviour.reset_after_chars, behaviour.stop_after_chars):
        if cut is not None:
            limit = min(limit, cut)
    if behaviour.error_event and behaviour.error_after_chars is not None:
        limit = min(limit, behaviour.error_after_chars)
    pause = behaviour.pause_after_chars
    keepalive = behaviour.keepalive_after_chars
    for start in range(0, limit, max(1, behaviour.chunk_size)):
        if pause is not None and start >= pause:
            pause = None
            yield _PAUSE
        if keepalive is not None and start >= keepalive:
            keepalive = None
            yield _KEEPALIVE
        if behaviour.delay_per_chunk:
            yield _DELAY
        yield text[start : min(start + behaviour.chunk_size, limit)]
    if behaviour.reset_after_chars is not None:
        yield _RESET


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data)}\n\n".encode()


def _openai_events(
    text: str, behaviour: Behaviour, model: str, prompt_tokens: int
) -> Iterator[bytes | object]:
    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        return _sse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": model,
                "choices": choices,
                "usage": usage,
            }
        )

    yield chunk(
        [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    )
    sent = ""
    for piece in _pieces(text, behaviour):
        if not isinstance(piece, str):
            yield piece
            if piece is _RESET:
                return
            continue
        sent += piece
        yield chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
    if behaviour.error_event:
        error = (
            behaviour.error_event
            if isinstance(behaviour.error_event, dict)
            else {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
                "code": None,
            }
        )
        yield _sse({"error": error})
        return
    if behaviour.finish_reason is not None:
        yield chunk([{"index": 0, "delta": {}, "finish_reason": behaviour.finish_reason}])
    if behaviour.usage:
        completion = _tokens(sent)
        yield chunk(
            [],
            {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion,
            },
        )
    if not behaviour.no_done:
        yield b"data: [DONE]\n\n"


def _anthropic_events(
    text: str, behaviour: Behaviour, model: str, prompt_tokens: int
) -> Iterator[bytes | object]:
    yield _sse(
        {
            "type": "message_start",
            "message": {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": prompt_tokens if behaviour.usage else 0,
                    "output_tokens": 1,
                },
            },
        },
        "message_start",
    )
    yield _sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        "content_block_start",
    )
    yield _sse({"type": "ping"}, "ping")
    sent = ""
    for piece in _pieces(text, behaviour):
        if not isinstance(piece, str):
            yield piece
            if piece is _RESET:
                return
            continue
        sent += piece
        yield _sse(
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": piece},
            },
            "content_block_delta",
        )
    if behaviour.error_event:
        error = (
            behaviour.error_event
            if isinstance(behaviour.error_event, dict)
            else {"type": "overloaded_error", "message": "Overloaded"}
        )
        yield _sse({"type": "error", "error": error}, "error")
        return
    yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    if behaviour.finish_reason is not None:
        reason = _ANTHROPIC_STOP.get(behaviour.finish_reason, behaviour.finish_reason)
        yield _sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": None},
                "usage": {"output_tokens": _tokens(sent)},
            },
            "message_delta",
        )
    if not behaviour.no_done:
        yield _sse({"type": "message_stop"}, "message_stop")
