"""An OpenAI-compatible chat-completions client with streaming, on the standard library.

``openai:MODEL`` talks to ``$OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``)
with ``$OPENAI_API_KEY``; ``[llm]`` in ``durably.toml`` may set ``base_url``, ``api_key_env``,
``temperature``, ``max_tokens``, ``timeout`` and ``max_attempts``. Transient failures
(connection errors, 408, 409, 429, 5xx) are retried with exponential backoff and jitter
before the first chunk arrives; a stream cut off later is left to the runtime, which
journals what arrived and asks for the rest with ``prefix``.

To continue a cut-off response, the prefix is sent as the start of the assistant's
message followed by a user message asking to continue exactly where it stopped; what the
server returns is streamed as the rest.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from durably._redact import redact, redact_url
from durably.errors import ConfigError
from durably.llm import LLMError

__all__ = ["OpenAIClient"]

_RETRYABLE = {408, 409, 429, 500, 502, 503, 504}
_OPTIONS = {"base_url", "api_key_env", "temperature", "max_tokens", "timeout", "max_attempts"}


class _HTTPStatusError(LLMError):
    """A non-200 answer. The server's body is echoed redacted (a server may echo the
    request's ``Authorization`` header or the key), then cut to 300 characters."""

    def __init__(self, status: int, body: str, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(f"the LLM server answered {status}: {redact(body, secrets)[:300]}")
        self.status = status


class OpenAIClient:
    """Streams chat completions from an OpenAI-compatible server."""

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None,
                 temperature: float = 0.0, max_tokens: int | None = None,
                 timeout: float = 120.0, max_attempts: int = 5) -> None:
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL")
                         or "https://api.openai.com/v1").rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.spec = f"openai:{model}"
        self.where = redact_url(self.base_url)
        """The base URL fit for messages (no password)."""
        try:
            parts = urlsplit(self.base_url)
            port = parts.port
        except ValueError:
            parts, port = None, None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"cannot use LLM base URL {self.where!r}", key="base_url",
                              fix="Use http(s)://host[:port]/v1")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self._host = f"{host}:{port}" if port else host
        self._basic: str | None = None
        if parts.username is not None and not self.api_key:
            import base64

            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._basic = base64.b64encode(pair.encode()).decode("ascii")

    def _secrets(self) -> tuple[str, ...]:
        parts = urlsplit(self.base_url)
        return tuple(s for s in (self.api_key, self._basic, parts.password) if s)

    @classmethod
    def from_spec(cls, model: str, options: Mapping[str, Any] | None = None) -> OpenAIClient:
        options = dict(options or {})
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ConfigError(f"unknown option {sorted(unknown)[0]!r}", key="llm",
                              fix=f"Known options: {', '.join(sorted(_OPTIONS))}")
        if not model:
            raise ConfigError("no model given", key="--llm", fix="Use openai:MODEL")
        key_env = options.pop("api_key_env", "OPENAI_API_KEY")
        return cls(model, api_key=os.environ.get(key_env, ""), **options)

    def _body(self, messages: list[dict[str, str]], prefix: str) -> bytes:
        sent = list(messages)
        if prefix:
            sent += [{"role": "assistant", "content": prefix},
                     {"role": "user", "content": "Your previous answer was cut off. Continue it "
                      "exactly where it stopped: output only the rest, without repeating "
                      "anything."}]
        body: dict[str, Any] = {"model": self.model, "messages": sent, "stream": True,
                                "temperature": self.temperature}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return json.dumps(body).encode()

    async def stream(self, messages: list[dict[str, str]], *, agent: str, playbook: str,
                     call: int, prefix: str = "") -> AsyncIterator[str]:
        body = self._body(messages, prefix)
        attempt = 0
        while True:
            attempt += 1
            try:
                reader, writer = await self._request(body)
                break
            except (OSError, TimeoutError, _HTTPStatusError) as exc:
                retryable = not isinstance(exc, _HTTPStatusError) or exc.status in _RETRYABLE
                if not retryable or attempt >= self.max_attempts:
                    if isinstance(exc, LLMError):
                        raise
                    raise LLMError(f"cannot reach the LLM server at {self.where}: "
                                   f"{redact(str(exc), self._secrets())}") from exc
                await asyncio.sleep(min(8.0, 0.25 * 2 ** (attempt - 1)) * random.uniform(0.5, 1))
        try:
            async for data in _events(reader, self.timeout):
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except json.JSONDecodeError as exc:
                    raise LLMError("the LLM server sent malformed data: "
                                   f"{redact(data, self._secrets())[:100]!r}") from exc
                for choice in event.get("choices", []):
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text
        finally:
            writer.close()

    async def _request(self, body: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self.base_url + "/chat/completions")
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 80)
        context = ssl.create_default_context() if secure else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, port, ssl=context), self.timeout)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = [f"POST {path} HTTP/1.1", f"Host: {self._host}",
                   "Content-Type: application/json", "Accept: text/event-stream",
                   f"Content-Length: {len(body)}", "Connection: close"]
        if self.api_key:
            headers.append(f"Authorization: Bearer {self.api_key}")
        elif self._basic:  # user info in the base URL: HTTP basic authentication
            headers.append(f"Authorization: Basic {self._basic}")
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode() + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), self.timeout)
        try:
            status = int(status_line.split()[1])
        except (IndexError, ValueError) as exc:
            writer.close()
            raise OSError(f"bad HTTP status line {status_line[:80]!r}") from exc
        chunked = False
        while True:
            line = await asyncio.wait_for(reader.readline(), self.timeout)
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            reader = _dechunk(reader, self.timeout)
        if status != 200:
            text = (await asyncio.wait_for(reader.read(4096), self.timeout)).decode(
                "utf-8", "replace")
            writer.close()
            raise _HTTPStatusError(status, text, self._secrets())
        return reader, writer


def _dechunk(reader: asyncio.StreamReader, timeout: float) -> asyncio.StreamReader:
    """A reader that yields the body of a chunked HTTP response."""
    out = asyncio.StreamReader()

    async def pump() -> None:
        try:
            while True:
                size_line = await asyncio.wait_for(reader.readline(), timeout)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    break
                out.feed_data(await asyncio.wait_for(reader.readexactly(size), timeout))
                await reader.readline()
        except Exception as exc:  # surfaced to the consumer
            out.set_exception(exc)
            return
        out.feed_eof()

    task = asyncio.get_running_loop().create_task(pump())
    out._durably_pump = task  # type: ignore[attr-defined]  # keep a reference
    return out


async def _events(reader: asyncio.StreamReader, idle: float) -> AsyncIterator[str]:
    """The ``data:`` payloads of a server-sent-events stream."""
    data: list[str] = []
    while True:
        line = await asyncio.wait_for(reader.readline(), idle)
        if not line:
            if data:
                yield "\n".join(data)
            return
        text = line.decode("utf-8").rstrip("\r\n")
        if not text:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if text.startswith("data:"):
            data.append(text[5:].lstrip())
