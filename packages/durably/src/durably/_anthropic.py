"""``anthropic:MODEL``: the Messages API through the official ``anthropic`` SDK
(``pip install 'durably[anthropic]'``), imported only when such a client is made.

The key is read from ``$ANTHROPIC_API_KEY`` (``[llm] api_key_env`` names another
variable); ``[llm] base_url`` (or ``$ANTHROPIC_BASE_URL``) points at another server. The
response is streamed and is complete only when the stream ends with ``message_stop`` and
a ``stop_reason`` of ``end_turn`` or ``stop_sequence``; see :mod:`durably.llm` for the
contract and ``docs/guides/llm.md`` for the options.

A cut-off response is continued with assistant prefill: the text already received is
sent as the start of the assistant's turn (without its trailing whitespace, which the API
refuses), and the model's continuation, with that whitespace taken off its start again,
is cleaned by :func:`~durably._continuation.clean_continuation`. Models that refuse
prefill (Claude 4.6 and later answer 400 "does not support assistant message prefill")
are asked as the OpenAI client asks: the cut-off text as the assistant's turn, then a
user note asking for the rest. The client switches to that on the first refusal (one
extra request per client), or at once with ``[llm] prefill = false``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any, ClassVar

from durably._continuation import clean_continuation, continuation_messages
from durably._llmsdk import (
    LoopLocal,
    check_options,
    import_sdk,
    is_transport_error,
    mid_stream_error,
    paced,
    request_error,
    split_query,
    without_userinfo,
)
from durably._llmtypes import Finish, LLMError
from durably._openai import finish_or_raise, option_number
from durably._redact import redact, redact_url
from durably.errors import ConfigError

__all__ = ["AnthropicClient"]

log = logging.getLogger("durably.llm")

_DEFAULT_BASE_URL = "https://api.anthropic.com"
_NO_KEY = "no-key"


class AnthropicClient:
    """Streams messages through ``anthropic.AsyncAnthropic``.

    Args:
        model: The model (``claude-...``).
        base_url: The server (``None``: ``$ANTHROPIC_BASE_URL`` or Anthropic's).
        api_key: The key (``None``: the server needs none).
        api_key_env: The environment variable the key came from (named in hints).
        temperature: The sampling temperature (``None``: not sent, the model's default;
            recent models and SDKs take none).
        max_response_tokens: The most tokens one response may have (the API's required
            ``max_tokens``).
        timeout: Seconds to wait to connect and between two events (``None``: the SDK's
            default).
        max_attempts: Attempts at a request in all (the SDK retries connection errors,
            408, 409, 429, 5xx and 529 with backoff, honouring ``Retry-After``).
        prefill: Continue a cut-off response with assistant prefill (``False``: with a
            note, as for models that refuse prefill; the client also switches to that
            on the first refusal).
    """

    provider: ClassVar[str] = "Anthropic"
    options: ClassVar[frozenset[str]] = frozenset(
        {
            "base_url",
            "api_key_env",
            "temperature",
            "max_response_tokens",
            "timeout",
            "max_attempts",
            "prefill",
        }
    )

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = "ANTHROPIC_API_KEY",
        temperature: float | None = None,
        max_response_tokens: int = 4096,
        timeout: float | None = None,
        max_attempts: int = 5,
        prefill: bool = True,
    ) -> None:
        self.model = model
        self.spec = f"anthropic:{model}"
        self.api_key = api_key
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.max_response_tokens = max_response_tokens
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.prefill = prefill
        self.base_url, self.query = split_query(base_url or _DEFAULT_BASE_URL)
        self.where = redact_url(self.base_url)
        self._sdk = LoopLocal(self._make_sdk)

    @classmethod
    def from_spec(cls, model: str, options: Mapping[str, Any] | None = None) -> AnthropicClient:
        """The client for ``anthropic:MODEL`` and the ``[llm]`` options.

        Raises:
            ConfigError: No model, an unknown or invalid option, no key for Anthropic's
                own server, or the SDK is not installed.
        """
        opts = check_options(options, cls.options, "anthropic:")
        if not model:
            raise ConfigError("no model given", key="--llm", fix="Use anthropic:MODEL")
        import_sdk("anthropic", "anthropic")
        key_env = opts.pop("api_key_env", None) or "ANTHROPIC_API_KEY"
        if not isinstance(key_env, str):
            raise ConfigError(
                "[llm] api_key_env must name an environment variable", key="llm.api_key_env"
            )
        base_url = opts.pop("base_url", None) or os.environ.get("ANTHROPIC_BASE_URL") or None
        api_key = os.environ.get(key_env) or None
        prefill = opts.pop("prefill", True)
        if not isinstance(prefill, bool):
            raise ConfigError("[llm] prefill must be true or false", key="llm.prefill")
        if not api_key and base_url is None:
            raise ConfigError(
                f"the environment variable {key_env} holding the Anthropic API key is not set",
                key="llm.api_key_env",
                fix=f"export {key_env}=...; or set [llm] base_url to a server that needs no key",
            )
        return cls(
            model,
            base_url=base_url,
            api_key=api_key,
            api_key_env=key_env,
            temperature=option_number(opts, "temperature", float, None, 0),
            max_response_tokens=option_number(opts, "max_response_tokens", int, 4096, 1),
            timeout=option_number(opts, "timeout", float, None, 0.001),
            max_attempts=option_number(opts, "max_attempts", int, 5, 1),
            prefill=prefill,
        )

    def _make_sdk(self) -> Any:
        anthropic = import_sdk("anthropic", "anthropic")
        kwargs: dict[str, Any] = {
            "api_key": self.api_key or _NO_KEY,
            "base_url": without_userinfo(self.base_url, self.api_key),
            "max_retries": self.max_attempts - 1,
        }
        if self.query:
            kwargs["default_query"] = self.query
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return anthropic.AsyncAnthropic(**kwargs)

    def _secrets(self) -> tuple[str | None, ...]:
        return (self.api_key,)

    async def aclose(self) -> None:
        """Close the SDK client of the running loop (its connections)."""
        await self._sdk.aclose()

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        agent: str,
        playbook: str,
        call: int,
        prefix: str = "",
    ) -> AsyncIterator[str | Finish]:
        """Stream the response, then a :class:`~durably.llm.Finish` (see :mod:`durably.llm`).

        With ``prefix``, the cut-off text is sent as assistant prefill (or, for a model
        that refuses prefill, as the assistant's turn followed by a note asking for the
        rest), and the answer is cleaned by
        :func:`~durably._continuation.clean_continuation`.

        Raises:
            IncompleteResponseError: The stream was cut off (after yielding what came).
            ResponseTruncatedError: ``stop_reason: "max_tokens"``.
            ResponseRefusedError: ``stop_reason: "refusal"``.
            LLMError: The request failed (after the SDK's retries).
        """
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        chat = [
            {"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"
        ]
        if not prefix:
            return self._stream(system, chat)
        return clean_continuation(prefix, self._continue(system, chat, prefix))

    async def _continue(
        self, system: str, chat: list[dict[str, str]], prefix: str
    ) -> AsyncIterator[str | Finish]:
        """The model's continuation of ``prefix`` (uncleaned)."""
        prefill = prefix.rstrip()
        if not prefill:  # only whitespace came: nothing to continue from
            async for item in _drop_leading(prefix, self._stream(system, chat)):
                yield item
            return
        if self.prefill:
            try:
                async for item in _drop_leading(
                    prefix[len(prefill) :],
                    self._stream(
                        system, [*chat, {"role": "assistant", "content": prefill}], prefill=True
                    ),
                ):
                    yield item
                return
            except _PrefillRefusedError:
                log.warning(
                    "%s model %r does not support assistant prefill: cut-off "
                    "responses are continued with a note instead",
                    self.provider,
                    self.model,
                )
                self.prefill = False
        async for item in self._stream(system, continuation_messages(chat, prefix)):
            yield item

    async def _stream(
        self, system: str, messages: list[dict[str, str]], *, prefill: bool = False
    ) -> AsyncIterator[str | Finish]:
        anthropic = import_sdk("anthropic", "anthropic")
        sdk = self._sdk.get()
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.max_response_tokens,
            "stream": True,
        }
        if system:
            request["system"] = system
        if self.temperature is not None:
            # Not a parameter of recent SDKs (recent models refuse it): sent as it is.
            request["extra_body"] = {"temperature": self.temperature}
        try:
            response = await sdk.messages.create(**request)
        except anthropic.AnthropicError as exc:
            if prefill and _refuses_prefill(exc):
                raise _PrefillRefusedError(str(exc)) from None
            if isinstance(exc, anthropic.APIError):
                raise request_error(
                    exc,
                    provider=self.provider,
                    where=self.where,
                    model=self.model,
                    key_env=self.api_key_env,
                    attempts=self.max_attempts,
                    secrets=self._secrets(),
                ) from None
            raise LLMError(f"{self.provider}: {redact(str(exc), self._secrets())[:300]}") from None
        received = 0
        reason: str | None = None
        stopped = False
        model: str | None = None
        prompt_tokens: int | None = None
        completion_tokens: int | None = None
        try:
            _check_streaming(response, self.where, self._secrets())
            async for event in paced(response, self.timeout, _has_output):
                kind = getattr(event, "type", None)
                if kind == "message_start":
                    message = getattr(event, "message", None)
                    model = getattr(message, "model", None) or model
                    prompt_tokens = _input_tokens(getattr(message, "usage", None)) or prompt_tokens
                elif kind == "content_block_delta":
                    delta = getattr(event, "delta", None)
                    text = getattr(delta, "text", None)
                    if getattr(delta, "type", None) == "text_delta" and text:
                        received += len(text)
                        yield text
                elif kind == "message_delta":
                    reason = getattr(getattr(event, "delta", None), "stop_reason", None) or reason
                    usage = getattr(event, "usage", None)
                    completion_tokens = getattr(usage, "output_tokens", None) or completion_tokens
                    prompt_tokens = _input_tokens(usage) or prompt_tokens
                elif kind == "message_stop":
                    stopped = True
        except LLMError:
            raise
        except Exception as exc:
            if isinstance(exc, anthropic.APIError | ValueError) or is_transport_error(exc):
                raise mid_stream_error(
                    exc,
                    provider=self.provider,
                    where=self.where,
                    received=received,
                    secrets=self._secrets(),
                ) from exc
            raise
        finally:
            await _close(response)
        yield finish_or_raise(
            reason if stopped else None,
            provider=self.provider,
            where=self.where,
            received=received,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )


class _PrefillRefusedError(LLMError):
    """The model refused assistant prefill (never leaves this module)."""


def _refuses_prefill(exc: BaseException) -> bool:
    """Whether ``exc`` is a 400 saying the model does not support assistant prefill."""
    if getattr(exc, "status_code", None) != 400:
        return False
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, Mapping) else None
    message = error.get("message") if isinstance(error, Mapping) else None
    return "prefill" in str(message if isinstance(message, str) else exc).lower()


def _input_tokens(usage: Any) -> int | None:
    """All the prompt's tokens: plain input plus cache writes and reads."""
    if usage is None:
        return None
    counts = [
        getattr(usage, name, None)
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    ]
    found = [c for c in counts if isinstance(c, int)]
    return sum(found) if found and counts[0] is not None else None


def _check_streaming(response: Any, where: str, secrets: tuple[str | None, ...]) -> None:
    http = getattr(response, "response", None)
    headers = getattr(http, "headers", None)
    if headers is None:
        return
    content_type = str(headers.get("content-type") or "")
    if content_type and "event-stream" not in content_type.lower():
        raise LLMError(
            f"Anthropic at {where} answered {content_type.split(';')[0]} instead of a stream "
            "of server-sent events (text/event-stream): the server does not stream (durably "
            "needs streaming), or base_url points at something other than the Messages API",
            retryable=False,
        )


async def _close(response: Any) -> None:
    close = getattr(response, "close", None)
    if close is None:
        return
    try:
        result = close()
        if hasattr(result, "__await__"):
            await result
    except Exception:  # closing a broken connection: nothing more to do
        pass


async def _drop_leading(
    whitespace: str, chunks: AsyncIterable[str | Finish]
) -> AsyncIterator[str | Finish]:
    """``chunks`` without the longest start they share with ``whitespace``.

    The prefill was sent without the prefix's trailing whitespace; the model's
    continuation usually starts by writing it again.
    """
    matched = 0
    done = not whitespace
    async for item in chunks:
        if done or not isinstance(item, str):
            done = True
            yield item
            continue
        cut = 0
        while cut < len(item) and matched < len(whitespace) and item[cut] == whitespace[matched]:
            cut += 1
            matched += 1
        if cut < len(item) or matched == len(whitespace):
            done = True
        if item[cut:]:
            yield item[cut:]


def _has_output(event: Any) -> bool:
    """Whether a messages-stream event is more than a keep-alive (``ping``): text,
    thinking, and the message's own events all are."""
    return getattr(event, "type", None) != "ping"
