"""``openai:MODEL`` and ``azure-openai:DEPLOYMENT``: chat completions through the official
``openai`` SDK (``pip install 'durably[openai]'``), imported only when such a client is
made.

``openai:MODEL`` talks to OpenAI or to any OpenAI-compatible server (vLLM, Ollama, LM
Studio, a LiteLLM proxy) at ``[llm] base_url`` (or ``$OPENAI_BASE_URL``); a query in the
base URL (``?api-version=...``) is sent with every request. ``azure-openai:DEPLOYMENT``
uses the SDK's Azure client (``azure_endpoint``/``$AZURE_OPENAI_ENDPOINT``,
``api_version``/``$OPENAI_API_VERSION``, the key in ``$AZURE_OPENAI_API_KEY``).

The response is streamed (``stream_options={"include_usage": True}``) and is complete only
when the server says so with ``finish_reason: "stop"``; see :mod:`durably.llm` for the
contract and ``docs/guides/llm.md`` for the options. Requests are retried by the SDK
(``max_attempts`` in all, honouring ``Retry-After``); a stream cut off after it started
is the runtime's to continue. The SDK's HTTP client honours ``HTTP(S)_PROXY`` and
``NO_PROXY``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

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
from durably._llmtypes import (
    Finish,
    IncompleteResponseError,
    LLMError,
    ResponseRefusedError,
    ResponseTruncatedError,
)
from durably._redact import redact, redact_url
from durably.errors import ConfigError

__all__ = ["AzureOpenAIClient", "OpenAIClient", "finish_or_raise"]

_DEFAULT_BASE_URL = "https://api.openai.com/v1"
_NO_KEY = "no-key"
"""Sent as the key to a server that needs none (the SDK refuses to send no key)."""
_COMMON = {
    "api_key_env",
    "temperature",
    "max_response_tokens",
    "timeout",
    "max_attempts",
    "stream_usage",
}

_COMPLETE = {"stop", "end_turn", "stop_sequence", "eos", "eos_token"}
_TRUNCATED = {"length", "max_tokens", "model_length", "model_context_window_exceeded"}
_REFUSED = {"content_filter", "refusal", "safety"}


def finish_or_raise(
    reason: str | None,
    *,
    provider: str,
    where: str,
    received: int,
    model: str | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
) -> Finish:
    """The :class:`Finish` for a stream that ended with ``reason``, or the error it means.

    Raises:
        ResponseTruncatedError: A length limit.
        ResponseRefusedError: A content filter or a refusal.
        IncompleteResponseError: No reason (the stream ended early), or another one.
    """
    where = redact_url(where)
    if reason is None:
        raise IncompleteResponseError(
            f"the response from {provider} at {where} ended after {received} characters "
            "without a finish reason: the stream was cut off"
        )
    if reason in _COMPLETE:
        return Finish(
            reason, model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
    if reason in _TRUNCATED:
        raise ResponseTruncatedError(
            f"the response from {provider} hit its length limit ({reason!r}) after {received} "
            "characters: raise [llm] max_response_tokens (or shorten the playbook's steps)"
        )
    if reason in _REFUSED:
        raise ResponseRefusedError(
            f"{provider} stopped the response itself ({reason!r}) after {received} characters "
            "(a content filter or a refusal)"
        )
    raise IncompleteResponseError(
        f"the response from {provider} at {where} stopped for an unexpected reason "
        f"({reason!r}) after {received} characters"
    )


def option_number(
    options: dict[str, Any],
    name: str,
    kind: type[float] | type[int],
    default: Any,
    minimum: float | None = None,
) -> Any:
    """Pop a numeric ``[llm]`` option, checked.

    Raises:
        ConfigError: Not a number of the right kind, or below ``minimum``.
    """
    if name not in options:
        return default
    value = options.pop(name)
    if value is None:
        return default
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or (minimum is not None and value < minimum):
        what = "an integer" if kind is int else "a number"
        bound = f" >= {minimum:g}" if minimum is not None else ""
        raise ConfigError(f"[llm] {name} must be {what}{bound}, not {value!r}", key=f"llm.{name}")
    return kind(value)


class OpenAIClient:
    """Streams chat completions through ``openai.AsyncOpenAI``.

    Args:
        model: The model to ask for.
        base_url: The server (``None``: OpenAI's); a query in it is sent with every
            request.
        api_key: The key (``None``: the server needs none).
        api_key_env: The environment variable the key came from (named in hints).
        temperature: The sampling temperature (``None``: not sent, the model's default;
            reasoning models refuse any other).
        max_response_tokens: The most tokens one response may have (``None``: not sent).
            Sent as ``max_completion_tokens`` to OpenAI's own server and Azure (reasoning
            models refuse ``max_tokens``), as ``max_tokens`` to any other server.
        timeout: Seconds to wait to connect and between two chunks (``None``: the SDK's
            default, 10 minutes).
        max_attempts: Attempts at a request in all (the SDK retries connection errors,
            408, 409, 429 and 5xx with backoff, honouring ``Retry-After``).
        organization: The OpenAI organization to bill.
        stream_usage: Ask for the token usage (``stream_options.include_usage``); turn it
            off for a server that refuses the option.
    """

    provider: ClassVar[str] = "OpenAI"
    prefix: ClassVar[str] = "openai"
    options: ClassVar[frozenset[str]] = frozenset(_COMMON | {"base_url", "organization"})

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        temperature: float | None = None,
        max_response_tokens: int | None = None,
        timeout: float | None = None,
        max_attempts: int = 5,
        organization: str | None = None,
        stream_usage: bool = True,
    ) -> None:
        self.model = model
        self.spec = f"{self.prefix}:{model}"
        self.api_key = api_key
        self.api_key_env = api_key_env
        self.temperature = temperature
        self.max_response_tokens = max_response_tokens
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.organization = organization
        self.stream_usage = stream_usage
        self.base_url, self.query = split_query(base_url or _DEFAULT_BASE_URL)
        self.where = redact_url(self.base_url)
        """The server, fit for messages (no password)."""
        self._sdk = LoopLocal(self._make_sdk)

    # ---------------------------------------------------------------- setup

    @classmethod
    def from_spec(cls, model: str, options: Mapping[str, Any] | None = None) -> OpenAIClient:
        """The client for ``openai:MODEL`` and the ``[llm]`` options.

        Raises:
            ConfigError: No model, an unknown or invalid option, no key for OpenAI's own
                server, or the SDK is not installed.
        """
        opts = check_options(options, cls.options, f"{cls.prefix}:")
        if not model:
            raise ConfigError("no model given", key="--llm", fix=f"Use {cls.prefix}:MODEL")
        import_sdk("openai", "openai")
        kwargs = cls._common(opts)
        base_url = opts.pop("base_url", None) or os.environ.get("OPENAI_BASE_URL") or None
        organization = opts.pop("organization", None)
        key_env = kwargs["api_key_env"]
        if not kwargs["api_key"] and base_url is None:
            raise ConfigError(
                f"the environment variable {key_env} holding the OpenAI API key is not set",
                key="llm.api_key_env",
                fix=f"export {key_env}=...; or set [llm] base_url to a server that needs no key",
            )
        return cls(model, base_url=base_url, organization=organization, **kwargs)

    @staticmethod
    def _common(
        opts: dict[str, Any],
        default_key_env: str = "OPENAI_API_KEY",
        default_max_tokens: int | None = None,
    ) -> dict[str, Any]:
        key_env = opts.pop("api_key_env", None) or default_key_env
        if not isinstance(key_env, str):
            raise ConfigError(
                "[llm] api_key_env must name an environment variable", key="llm.api_key_env"
            )
        stream_usage = opts.pop("stream_usage", True)
        if not isinstance(stream_usage, bool):
            raise ConfigError("[llm] stream_usage must be true or false", key="llm.stream_usage")
        return {
            "api_key": os.environ.get(key_env) or None,
            "api_key_env": key_env,
            "temperature": option_number(opts, "temperature", float, None, 0),
            "max_response_tokens": option_number(
                opts, "max_response_tokens", int, default_max_tokens, 1
            ),
            "timeout": option_number(opts, "timeout", float, None, 0.001),
            "max_attempts": option_number(opts, "max_attempts", int, 5, 1),
            "stream_usage": stream_usage,
        }

    def _make_sdk(self) -> Any:
        openai = import_sdk("openai", "openai")
        kwargs: dict[str, Any] = {
            "api_key": self.api_key or _NO_KEY,
            "base_url": without_userinfo(self.base_url, self.api_key),
            "max_retries": self.max_attempts - 1,
        }
        if self.query:
            kwargs["default_query"] = self.query
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        if self.organization:
            kwargs["organization"] = self.organization
        return openai.AsyncOpenAI(**kwargs)

    def _secrets(self) -> tuple[str | None, ...]:
        return (self.api_key,)

    def _max_tokens_field(self) -> str:
        """``max_completion_tokens`` for OpenAI's own server, ``max_tokens`` for others
        (the field OpenAI-compatible servers know)."""
        host = urlsplit(self.base_url).hostname or ""
        return "max_completion_tokens" if host == "api.openai.com" else "max_tokens"

    async def aclose(self) -> None:
        """Close the SDK client of the running loop (its connections)."""
        await self._sdk.aclose()

    # ---------------------------------------------------------------- streaming

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

        With ``prefix``, the cut-off text is sent as the assistant's turn, followed by a
        note asking for the rest, and the answer is cleaned by
        :func:`~durably._continuation.clean_continuation`.

        Raises:
            IncompleteResponseError: The stream was cut off (after yielding what came).
            ResponseTruncatedError: ``finish_reason: "length"``.
            ResponseRefusedError: ``finish_reason: "content_filter"``.
            LLMError: The request failed (after the SDK's retries).
        """
        raw = self._stream(continuation_messages(messages, prefix))
        return clean_continuation(prefix, raw) if prefix else raw

    async def _stream(self, messages: list[dict[str, str]]) -> AsyncIterator[str | Finish]:
        openai = import_sdk("openai", "openai")
        sdk = self._sdk.get()
        request: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True}
        if self.temperature is not None:
            request["temperature"] = self.temperature
        if self.stream_usage:
            request["stream_options"] = {"include_usage": True}
        if self.max_response_tokens is not None:
            request[self._max_tokens_field()] = self.max_response_tokens
        try:
            response = await sdk.chat.completions.create(**request)
        except openai.OpenAIError as exc:
            if isinstance(exc, openai.APIError):
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
        model: str | None = None
        usage: Any = None
        try:
            await self._check_streaming(response)
            async for chunk in paced(response, self.timeout, _has_output):
                model = getattr(chunk, "model", None) or model
                usage = getattr(chunk, "usage", None) or usage
                for choice in getattr(chunk, "choices", None) or ():
                    if getattr(choice, "index", 0) != 0:
                        continue
                    delta = getattr(choice, "delta", None)
                    text = getattr(delta, "content", None) if delta is not None else None
                    if text:
                        received += len(text)
                        yield text
                    if getattr(choice, "finish_reason", None):
                        reason = choice.finish_reason
        except LLMError:
            raise
        except Exception as exc:
            if reason is None or reason not in _COMPLETE:
                if isinstance(exc, openai.APIError | ValueError) or is_transport_error(exc):
                    raise mid_stream_error(
                        exc,
                        provider=self.provider,
                        where=self.where,
                        received=received,
                        secrets=self._secrets(),
                    ) from exc
                raise
            # The server said the response was complete; only the usage chunk or the
            # terminator was lost on the way.
        finally:
            await _close(response)
        yield finish_or_raise(
            reason,
            provider=self.provider,
            where=self.where,
            received=received,
            model=model,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
        )

    async def _check_streaming(self, response: Any) -> None:
        """Refuse an answer that is not a stream of server-sent events.

        Raises:
            LLMError: Not retryable: the server answered plain JSON (it ignores
                ``stream: true``) or something else.
        """
        http: Any = getattr(response, "response", None)
        headers = getattr(http, "headers", None)
        if headers is None:
            return
        content_type = str(headers.get("content-type") or "")
        if not content_type or "event-stream" in content_type.lower():
            return
        try:
            body = (await http.aread()).decode("utf-8", "replace")
        except Exception:
            body = ""
        raise LLMError(
            f"{self.provider} at {self.where} answered {content_type.split(';')[0]} instead of "
            "a stream of server-sent events (text/event-stream): the server does not stream "
            "(durably needs streaming), or base_url points at something other than a "
            "chat-completions API. It said: "
            f"{redact(body, self._secrets())[:200] or '(nothing)'}",
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


class AzureOpenAIClient(OpenAIClient):
    """``azure-openai:DEPLOYMENT``: the SDK's ``AsyncAzureOpenAI``.

    Args:
        deployment: The deployment name (sent as the model).
        azure_endpoint: ``https://RESOURCE.openai.azure.com``.
        api_version: The API version (``?api-version=``).
        **kwargs: As :class:`OpenAIClient` (without ``base_url`` and ``organization``).
    """

    provider: ClassVar[str] = "Azure OpenAI"
    prefix: ClassVar[str] = "azure-openai"
    options: ClassVar[frozenset[str]] = frozenset(_COMMON | {"azure_endpoint", "api_version"})

    def __init__(
        self, deployment: str, *, azure_endpoint: str, api_version: str, **kwargs: Any
    ) -> None:
        super().__init__(deployment, base_url=azure_endpoint, **kwargs)
        self.azure_endpoint = azure_endpoint
        self.api_version = api_version

    @classmethod
    def from_spec(cls, model: str, options: Mapping[str, Any] | None = None) -> OpenAIClient:
        """The client for ``azure-openai:DEPLOYMENT`` and the ``[llm]`` options.

        Raises:
            ConfigError: No deployment, endpoint or API version, an unknown or invalid
                option, no key, or the SDK is not installed.
        """
        opts = check_options(options, cls.options, f"{cls.prefix}:")
        if not model:
            raise ConfigError("no deployment given", key="--llm", fix="Use azure-openai:DEPLOYMENT")
        import_sdk("openai", "openai")
        kwargs = cls._common(opts, default_key_env="AZURE_OPENAI_API_KEY")
        endpoint = opts.pop("azure_endpoint", None) or os.environ.get("AZURE_OPENAI_ENDPOINT")
        version = opts.pop("api_version", None) or os.environ.get("OPENAI_API_VERSION")
        if not endpoint:
            raise ConfigError(
                "no Azure OpenAI endpoint",
                key="llm.azure_endpoint",
                fix="Set [llm] azure_endpoint or $AZURE_OPENAI_ENDPOINT to "
                "https://RESOURCE.openai.azure.com",
            )
        if not version:
            raise ConfigError(
                "no Azure OpenAI API version",
                key="llm.api_version",
                fix="Set [llm] api_version or $OPENAI_API_VERSION (e.g. 2024-10-21)",
            )
        if not kwargs["api_key"]:
            raise ConfigError(
                f"the environment variable {kwargs['api_key_env']} holding the "
                "Azure OpenAI key is not set",
                key="llm.api_key_env",
                fix=f"export {kwargs['api_key_env']}=...",
            )
        return cls(model, azure_endpoint=str(endpoint), api_version=str(version), **kwargs)

    def _max_tokens_field(self) -> str:
        return "max_completion_tokens"

    def _make_sdk(self) -> Any:
        openai = import_sdk("openai", "openai")
        kwargs: dict[str, Any] = {
            "api_key": self.api_key,
            "azure_endpoint": self.azure_endpoint,
            "api_version": self.api_version,
            "max_retries": self.max_attempts - 1,
        }
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return openai.AsyncAzureOpenAI(**kwargs)


def _has_output(chunk: Any) -> bool:
    """Whether a chat-completions chunk carries output: text, reasoning (``reasoning`` /
    ``reasoning_content`` of compatible servers), a refusal, a tool call or the finish."""
    for choice in getattr(chunk, "choices", None) or ():
        if getattr(choice, "finish_reason", None):
            return True
        delta = getattr(choice, "delta", None)
        if delta is not None and any(
            getattr(delta, name, None)
            for name in ("content", "reasoning_content", "reasoning", "refusal", "tool_calls")
        ):
            return True
    return False
