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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import parse_qs

from durably.errors import ConfigError, DurablyError

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


class LLMError(DurablyError):
    """The LLM client failed (no scripted response left, the server refused, ...).

    Attributes:
        retryable: A later attempt may succeed (a dropped connection, a 5xx, a rate
            limit); ``False`` when it cannot until something changes (a bad key, an
            unknown model, a budget).
    """

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class IncompleteResponseError(LLMError):
    """The provider did not say the response was complete: the connection dropped, the
    stream ended without its terminator, or it sent an error event. What arrived is
    journaled as an unfinished response; it is continued, never taken as finished."""

    retryable = True


class ResponseTruncatedError(IncompleteResponseError):
    """The response hit the provider's length limit (``finish_reason: "length"``,
    ``stop_reason: "max_tokens"``). Raise ``[llm] max_response_tokens``."""

    retryable = False


class ResponseRefusedError(IncompleteResponseError):
    """The provider stopped the response itself (a content filter, a refusal)."""

    retryable = False


class ContinuationError(LLMError):
    """The model's continuation of a cut-off response does not extend it (it restarted
    the answer, or answered with prose): continuing would run wrong code."""


class NoCodeError(LLMError):
    """The model answered twice in a row without a code block (after a corrective note)."""


class LLMBudgetExceededError(LLMError):
    """A budget of ``[llm]`` was reached (``max_calls``, ``max_calls_per_playbook_run``,
    ``max_tokens``). Raise it and ``durably resume`` the execution to go on.

    Attributes:
        budget: The option's name.
        limit: Its value.
        used: What was used when the next call was refused.
    """

    def __init__(self, budget: str, limit: int, used: int, detail: str = "") -> None:
        super().__init__(f"LLM budget [llm] {budget} = {limit} reached ({used} used"
                         f"{'; ' + detail if detail else ''}); raise it in durably.toml "
                         "and resume the execution")
        self.budget = budget
        self.limit = limit
        self.used = used


@dataclass(frozen=True)
class Finish:
    """The provider's word that a response is complete, and what it cost.

    A client yields one as the last item of :meth:`LLMClient.stream`. Token counts are
    what the provider reported (``None`` when it reported none).

    Attributes:
        reason: The provider's own finish reason (``stop``, ``end_turn``, ...).
        model: The model that answered, as the provider named it.
        prompt_tokens: Tokens of the prompt (input).
        completion_tokens: Tokens of the response (output).
    """

    reason: str = "stop"
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class LLMLimits:
    """The runtime's budgets and circuit breakers for LLM calls (``[llm]`` options that
    are the runtime's, not the client's; :meth:`split` separates them).

    Counts are per execution and survive crashes: a resumed execution counts the calls
    and tokens its journal holds, so a budget is reached at the same call whether or not
    the execution crashed on the way.

    Attributes:
        max_calls: LLM calls per execution (every agent's, continuations of a cut-off
            response not counted again).
        max_calls_per_playbook_run: LLM calls of one run of one playbook (a loop of
            responses that never ``Return``).
        max_tokens: Prompt plus completion tokens per execution, as providers report them
            (``None``: unlimited).
        max_continuations: How many times one response cut off by a retryable error (a
            dropped stream) is continued from its journaled text before the execution
            fails.
    """

    max_calls: int | None = 200
    max_calls_per_playbook_run: int | None = 100
    max_tokens: int | None = None
    max_continuations: int = 3

    OPTIONS = ("max_calls", "max_calls_per_playbook_run", "max_tokens", "max_continuations")

    @classmethod
    def split(cls, options: Mapping[str, Any] | None) -> tuple[LLMLimits, dict[str, Any]]:
        """``(limits, the client's options)`` from an ``[llm]`` table.

        Raises:
            ConfigError: A limit is not a non-negative integer (``0`` or ``false`` turns
                ``max_calls``/``max_calls_per_playbook_run``/``max_tokens`` off).
        """
        rest = dict(options or {})
        values: dict[str, Any] = {}
        for name in cls.OPTIONS:
            if name not in rest:
                continue
            value = rest.pop(name)
            if value is False or value is None or (value == 0 and name != "max_continuations"):
                values[name] = None if name != "max_continuations" else 0
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"[llm] {name} must be a non-negative integer, not {value!r}",
                                  key=f"llm.{name}", fix="Use an integer; 0 turns the budget off")
            values[name] = value
        return cls(**values), rest


@runtime_checkable
class LLMClient(Protocol):
    """Streams one response to a chat prompt."""

    spec: str

    def stream(self, messages: list[dict[str, str]], *, agent: str, playbook: str, call: int,
               prefix: str = "") -> AsyncIterator[str | Finish]:
        """Stream the response, as text chunks, then one :class:`Finish`.

        Messages start with one ``system`` message, then alternate ``user`` and
        ``assistant``, starting and ending with ``user``.

        Raises:
            IncompleteResponseError: The provider did not complete the response (after
                yielding what did arrive).
            LLMError: The request failed.

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
                     call: int, prefix: str = "") -> AsyncIterator[str | Finish]:
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
        raise ConfigError(f"unknown LLM client {prefix!r}", key="--llm",
                          fix=f"Use {known}, or install a plugin that registers it")
    client = factory(rest, dict(options or {}))
    if not isinstance(client, LLMClient):
        raise ConfigError(f"the {prefix!r} LLM client factory returned {client!r}", key="--llm")
    return client
