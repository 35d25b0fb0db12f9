"""LLM clients: what the interpreter loop streams responses from.

A client is chosen by a spec string: ``scripted:PATH`` (tests, examples, the demo) or
``openai:MODEL`` (any OpenAI-compatible chat-completions server). Plugins add prefixes
through the ``durably_register_llm_clients`` hook.

Every client implements :class:`LLMClient`. The runtime journals every chunk it
receives, so a client is never asked twice for a response it already delivered. When a
response was cut off by a crash, the runtime asks again with ``prefix`` set to the text
already received, and the client must stream **only what follows it**: the scripted
client slices its response; the OpenAI client sends the prefix as the start of the
assistant's message and asks the model to continue it.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs

from durably.errors import ConfigError, DurablyError

__all__ = ["LLMClient", "LLMError", "ScriptedLLM", "open_llm"]


class LLMError(DurablyError):
    """The LLM client failed (no scripted response left, the server refused, ...)."""


@runtime_checkable
class LLMClient(Protocol):
    """Streams one response to a chat prompt."""

    spec: str

    def stream(self, messages: list[dict[str, str]], *, agent: str, playbook: str, call: int,
               prefix: str = "") -> AsyncIterator[str]:
        """Stream the response, as text chunks.

        Args:
            messages: The chat messages (``role``/``content``).
            agent: The agent's class name.
            playbook: The playbook the call is for.
            call: How many LLM calls this agent made for this playbook before this one.
            prefix: Text of this response already received before a crash; stream only
                what follows it.
        """
        ...


class ScriptedLLM:
    """Plays back responses from a JSON file (no network), in pseudo-random chunks.

    The file maps ``"Agent.Playbook"`` to the list of responses that playbook gets, in
    order. Each response is streamed in chunks of 1-24 characters whose sizes come from a
    seeded generator (``scripted:PATH?chunk_seed=N``), to exercise streaming;
    ``&delay=SECONDS`` waits before each chunk, like a real model.
    """

    def __init__(self, responses: Mapping[str, list[str]], *, spec: str = "scripted",
                 chunk_seed: int = 0, min_chunk: int = 1, max_chunk: int = 24,
                 delay: float = 0.0) -> None:
        self.responses = {key: list(value) for key, value in responses.items()}
        self.spec = spec
        self.chunk_seed = chunk_seed
        self.min_chunk = min_chunk
        self.max_chunk = max_chunk
        self.delay = delay
        self.calls: list[tuple[str, int, str]] = []

    @classmethod
    def from_spec(cls, rest: str, options: Mapping[str, Any] | None = None) -> ScriptedLLM:
        path, _, query = rest.partition("?")
        params = parse_qs(query)
        seed = int(params.get("chunk_seed", ["0"])[0])
        delay = float(params.get("delay", ["0"])[0])
        file = Path(path).expanduser()
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read scripted responses: {exc.strerror}",
                              source=str(file)) from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON: {exc}", source=str(file)) from exc
        if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in data.values()
        ):
            raise ConfigError('expected an object {"Agent.Playbook": ["response", ...]}',
                              source=str(file))
        return cls(data, spec=f"scripted:{rest}", chunk_seed=seed, delay=delay)

    async def stream(self, messages: list[dict[str, str]], *, agent: str, playbook: str,
                     call: int, prefix: str = "") -> AsyncIterator[str]:
        key = f"{agent}.{playbook}"
        script = self.responses.get(key, [])
        if call >= len(script):
            raise LLMError(f"the scripted LLM has no response #{call + 1} for {key} "
                           f"(it has {len(script)})")
        response = script[call]
        if prefix and not response.startswith(prefix):
            raise LLMError(f"the journaled start of {key} response #{call + 1} does not match "
                           "the scripted response")
        self.calls.append((key, call, prefix))
        rng = random.Random(f"{self.chunk_seed}:{key}:{call}")
        position = len(prefix)
        while position < len(response):
            size = rng.randint(self.min_chunk, self.max_chunk)
            if self.delay:
                await asyncio.sleep(self.delay)
            yield response[position:position + size]
            position += size


def open_llm(spec: str, options: Mapping[str, Any] | None = None) -> LLMClient:
    """Create the client for ``spec`` (``scripted:PATH``, ``openai:MODEL``, a plugin's)."""
    prefix, sep, rest = spec.partition(":")
    if not sep:
        raise ConfigError(f"cannot read LLM spec {spec!r}", key="--llm",
                          fix="Use scripted:PATH or openai:MODEL")
    if prefix == "scripted":
        return ScriptedLLM.from_spec(rest, options)
    if prefix == "openai":
        from durably._openai import OpenAIClient

        openai_client: LLMClient = OpenAIClient.from_spec(rest, options)
        return openai_client
    from durably._plugins import get_hooks

    factory = get_hooks().llm_client_factories().get(prefix)
    if factory is None:
        raise ConfigError(f"unknown LLM client {prefix!r}", key="--llm",
                          fix="Use scripted:PATH or openai:MODEL, or install a plugin that "
                          "registers it")
    client = factory(rest, dict(options or {}))
    if not isinstance(client, LLMClient):
        raise ConfigError(f"the {prefix!r} LLM client factory returned {client!r}", key="--llm")
    return client
