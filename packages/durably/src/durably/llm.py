"""LLM clients: what the interpreter loop streams responses from.

A client is chosen by a spec string: ``scripted:PATH`` (tests, examples, the demo),
``openai:MODEL`` (the official ``openai`` SDK: OpenAI and any OpenAI-compatible server),
``azure-openai:DEPLOYMENT`` or ``anthropic:MODEL`` (the official ``anthropic`` SDK).
Plugins add prefixes through the ``durably_register_llm_clients`` hook.

Every client implements :class:`LLMClient`. The contract:

* ``stream()`` yields the response as text chunks and, **last, one** :class:`Finish`
  when the provider said the response is complete (OpenAI's ``finish_reason ==
  "stop"``, Anthropic's ``end_turn``), with the usage it reported.
* Anything else -- a dropped connection, a stream without its terminator, a length
  limit, a content filter, an error event -- is an :class:`IncompleteResponseError`
  (or a subclass) raised **after** the chunks that did arrive. The runtime has journaled
  those chunks; it never records such a response as finished. A ``retryable`` error
  is continued from the journaled text (at most ``[llm] max_continuations`` times);
  any other stops the execution as ``failed``, resumable once the cause is fixed.
* A client that yields no :class:`Finish` is taken at its word: its normal end means
  complete. Write one only for sources that cannot be cut off (a file, a cache).
* The runtime journals every chunk it receives, so a client is never asked twice for a
  response it already delivered. When a response was cut off (a crash, a dropped
  stream), the runtime asks again with ``prefix`` set to the text already received, and
  the client must stream **only what follows it**: the scripted client slices its
  response; the chat clients ask the model to continue and clean its answer (see
  :func:`durably._continuation.clean_continuation`).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from durably._llmtypes import (
    ContinuationError,
    Finish,
    IncompleteResponseError,
    LLMBudgetExceededError,
    LLMClient,
    LLMError,
    LLMLimits,
    NoCodeError,
    ResponseRefusedError,
    ResponseTruncatedError,
)
from durably.errors import ConfigError

__all__ = [
    "ContinuationError",
    "Finish",
    "IncompleteResponseError",
    "LLMBudgetExceededError",
    "LLMClient",
    "LLMError",
    "LLMLimits",
    "NoCodeError",
    "ResponseRefusedError",
    "ResponseTruncatedError",
    "ScriptedLLM",
    "open_llm",
]


class ScriptedLLM:
    """Plays back responses from a JSON file (no network), in pseudo-random chunks.

    The file maps ``"Agent.Playbook"`` to the list of responses that playbook gets, in
    order. Each response is streamed in chunks of 1-24 characters whose sizes come from a
    seeded generator (``scripted:PATH?chunk_seed=N``), to exercise streaming;
    ``&delay=SECONDS`` waits before each chunk, like a real model.
    """

    def __init__(
        self,
        responses: Mapping[str, list[str]],
        *,
        spec: str = "scripted",
        chunk_seed: int = 0,
        min_chunk: int = 1,
        max_chunk: int = 24,
        delay: float = 0.0,
    ) -> None:
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
        params = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(params) - {"chunk_seed", "delay"})
        if unknown:
            raise ConfigError(
                f"unknown scripted option {unknown[0]!r} in {f'scripted:{rest}'!r}",
                key="--llm",
                fix="Use scripted:PATH?chunk_seed=N&delay=SECONDS",
            )
        seed_text = params.get("chunk_seed", ["0"])[-1]
        delay_text = params.get("delay", ["0"])[-1]
        try:
            seed = int(seed_text)
        except ValueError:
            raise ConfigError(
                f"chunk_seed must be an integer, not {seed_text!r}",
                key="--llm",
                fix="Use scripted:PATH?chunk_seed=N, e.g. chunk_seed=7",
            ) from None
        try:
            delay = float(delay_text)
        except ValueError:
            delay = -1.0
        if not 0 <= delay < float("inf"):
            raise ConfigError(
                f"delay must be a number of seconds, not {delay_text!r}",
                key="--llm",
                fix="Use scripted:PATH?delay=SECONDS, e.g. delay=0.2",
            ) from None
        file = Path(path).expanduser()
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"cannot read scripted responses: {exc.strerror}", source=str(file)
            ) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"not UTF-8 text (byte {exc.start}): expected a JSON file of scripted responses",
                source=str(file),
            ) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON: {exc}", source=str(file)) from exc
        if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in data.values()
        ):
            raise ConfigError(
                'expected an object {"Agent.Playbook": ["response", ...]}', source=str(file)
            )
        return cls(data, spec=f"scripted:{rest}", chunk_seed=seed, delay=delay)

    async def stream(
        self,
        messages: list[dict[str, str]],
        *,
        agent: str,
        playbook: str,
        call: int,
        prefix: str = "",
    ) -> AsyncIterator[str | Finish]:
        key = f"{agent}.{playbook}"
        script = self.responses.get(key, [])
        if call >= len(script):
            raise LLMError(
                f"the scripted LLM has no response #{call + 1} for {key} (it has {len(script)})"
            )
        response = script[call]
        if prefix and not response.startswith(prefix):
            raise LLMError(
                f"the journaled start of {key} response #{call + 1} does not match "
                "the scripted response"
            )
        self.calls.append((key, call, prefix))
        rng = random.Random(f"{self.chunk_seed}:{key}:{call}")
        position = len(prefix)
        while position < len(response):
            size = rng.randint(self.min_chunk, self.max_chunk)
            if self.delay:
                await asyncio.sleep(self.delay)
            yield response[position : position + size]
            position += size
        yield Finish("stop", model="scripted")


def open_llm(spec: str, options: Mapping[str, Any] | None = None) -> LLMClient:
    """Create the client for ``spec``.

    Args:
        spec: ``scripted:PATH``, ``openai:MODEL``, ``azure-openai:DEPLOYMENT``,
            ``anthropic:MODEL``, or a plugin's ``PREFIX:REST``.
        options: The ``[llm]`` options meant for the client (the runtime's own budgets
            taken out).

    Raises:
        ConfigError: An unknown prefix, a bad option, or the client's SDK is missing (the
            message names the extra that installs it).
    """
    prefix, sep, rest = spec.partition(":")
    known = "scripted:PATH, openai:MODEL, azure-openai:DEPLOYMENT or anthropic:MODEL"
    if not sep:
        raise ConfigError(f"cannot read LLM spec {spec!r}", key="--llm", fix=f"Use {known}")
    if prefix == "scripted":
        return ScriptedLLM.from_spec(rest, options)
    if prefix in ("openai", "azure-openai"):
        from durably._openai import AzureOpenAIClient, OpenAIClient

        kind = AzureOpenAIClient if prefix == "azure-openai" else OpenAIClient
        openai_client: LLMClient = kind.from_spec(rest, options)
        return openai_client
    if prefix == "anthropic":
        from durably._anthropic import AnthropicClient

        anthropic_client: LLMClient = AnthropicClient.from_spec(rest, options)
        return anthropic_client
    from durably._plugins import get_hooks

    factory = get_hooks().llm_client_factories().get(prefix)
    if factory is None:
        raise ConfigError(
            f"unknown LLM client {prefix!r}",
            key="--llm",
            fix=f"Use {known}, or install a plugin that registers it",
        )
    client = factory(rest, dict(options or {}))
    if not isinstance(client, LLMClient):
        raise ConfigError(f"the {prefix!r} LLM client factory returned {client!r}", key="--llm")
    return client
