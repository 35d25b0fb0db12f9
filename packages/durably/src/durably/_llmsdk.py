"""What the SDK-based chat clients (``openai:``, ``azure-openai:``, ``anthropic:``) share.

Both official SDKs are generated from the same template: typed ``APIStatusError`` (with
``status_code`` and ``body``), ``APIConnectionError``/``APITimeoutError``, retries with
exponential backoff that honour ``Retry-After``. This module turns their errors into
durably's :class:`~durably.llm.LLMError` family with a hint and without secrets, checks
the ``[llm]`` options, and holds one SDK client per event loop (an SDK client's
connection pool belongs to the loop that opened it).

The SDKs are imported lazily, by the clients, never by ``import durably``.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from durably._llmtypes import IncompleteResponseError, LLMError
from durably._redact import redact, redact_url
from durably.errors import ConfigError

__all__ = [
    "LoopLocal",
    "check_options",
    "import_sdk",
    "is_transport_error",
    "mid_stream_error",
    "paced",
    "request_error",
    "split_query",
    "without_userinfo",
]

T = TypeVar("T")

SDK_TIMEOUT = 600.0
"""Both SDKs' default timeout (seconds): what ``timeout`` is when it is not set."""

_TRANSPORT_MODULES = ("httpx", "httpx2", "httpcore", "h11", "h2", "anyio", "aiohttp", "ssl")
_PERMANENT_ERROR_TYPES = {
    "invalid_request_error",
    "authentication_error",
    "permission_error",
    "not_found_error",
    "invalid_api_key",
}


def import_sdk(name: str, extra: str) -> Any:
    """Import an SDK, or fail with the extra that installs it.

    Raises:
        ConfigError: The SDK is not installed.
    """
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(
            f"the {name!r} package is not installed (needed by {extra}: LLM specs)",
            key="--llm",
            fix=f"pip install 'durably[{extra}]'",
        ) from exc


def check_options(
    options: Mapping[str, Any] | None, known: Iterable[str], client: str
) -> dict[str, Any]:
    """The ``[llm]`` options for a client, refusing unknown ones.

    Raises:
        ConfigError: An option the client does not know.
    """
    found = dict(options or {})
    allowed = set(known)
    unknown = sorted(set(found) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown [llm] option {unknown[0]!r} for the {client} client",
            key=f"llm.{unknown[0]}",
            fix=f"Known options: {', '.join(sorted(allowed))}",
        )
    return found


def split_query(url: str) -> tuple[str, dict[str, str]]:
    """A base URL without its query, and the query as a dict (``?api-version=...``).

    The SDKs build request URLs by appending paths to the base URL, so a query left in
    it would end up in the middle of the path; it is sent as the client's default query
    instead.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")).rstrip("/"), query


def without_userinfo(url: str, api_key: str | None) -> str:
    """The base URL to give an SDK: without its ``user:password@`` when there is a key.

    The SDKs' HTTP client turns user info in the URL into HTTP basic authentication, which
    replaces the key's ``Authorization`` header: user info authenticates only a server
    that needs no key (a proxy on the way).
    """
    if not api_key:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class LoopLocal:
    """One SDK client per running event loop, made on first use by ``factory``."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._factory = factory
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = self._factory()
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.close()


def is_transport_error(exc: BaseException) -> bool:
    """An error of the connection under a stream (a reset, an EOF in a chunk, a timeout)."""
    if isinstance(exc, OSError | TimeoutError | EOFError):
        return True
    return any(cls.__module__.split(".")[0] in _TRANSPORT_MODULES for cls in type(exc).__mro__)


async def paced(
    events: AsyncIterable[T], seconds: float | None, is_output: Callable[[T], bool]
) -> AsyncIterator[T]:
    """The events of a response stream; :class:`TimeoutError` once the stream was waited
    on for ``seconds`` (the client's ``timeout``; the SDK's 600 when None) since the last
    event that carries output (text, reasoning).

    The HTTP client's own read timeout restarts with every byte, so a server that sends
    only keep-alives (SSE comments, ``ping`` events) would hold the call forever. Only
    the time spent waiting for the next event counts, not the time the caller takes
    between two (running the statements that arrived).
    """
    limit = SDK_TIMEOUT if seconds is None else seconds
    loop = asyncio.get_running_loop()
    waited = 0.0
    iterator = aiter(events)
    while True:
        left = limit - waited
        if left <= 0:
            raise TimeoutError(f"no output for {limit:g} s")
        start = loop.time()
        try:
            async with asyncio.timeout(left):
                item = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise TimeoutError(f"no output for {limit:g} s") from None
        waited = 0.0 if is_output(item) else waited + loop.time() - start
        yield item


def _detail(exc: BaseException) -> str:
    """What the server said, as text (the error object's message when it sent one)."""
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            kind = error.get("type") or error.get("code")
            return f"{error['message']}" + (f" ({kind})" if isinstance(kind, str) else "")
    message = getattr(exc, "message", None)
    return str(message if isinstance(message, str) else exc)


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    while (
        cause is not None and (cause.__cause__ or cause.__context__) is not None and not str(cause)
    ):
        cause = cause.__cause__ or cause.__context__
    text = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc)
    return text.rstrip(": ")


def request_error(
    exc: BaseException,
    *,
    provider: str,
    where: str,
    model: str,
    key_env: str | None,
    attempts: int,
    secrets: Iterable[str | None] = (),
) -> LLMError:
    """An :class:`LLMError` for a request the SDK gave up on (after its retries).

    Args:
        exc: The SDK's exception.
        provider: ``OpenAI``, ``Azure OpenAI``, ``Anthropic``.
        where: The base URL, fit to show (:func:`~durably._redact.redact_url`).
        model: The model (or deployment) asked for.
        key_env: The environment variable holding the key (named in hints).
        attempts: How many attempts the SDK made at most.
        secrets: Values to redact (the key).
    """
    secrets = tuple(secrets)
    where = redact_url(where)
    status = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        timed_out = "Timeout" in type(exc).__name__
        what = "timed out" if timed_out else "failed"
        return LLMError(
            f"cannot reach {provider} at {where}: the connection {what} after {attempts} "
            f"attempt(s) ({redact(_cause(exc), secrets)[:300]}); check the base URL, the "
            "network and the HTTP(S)_PROXY variables",
            retryable=True,
        )
    detail = redact(_detail(exc), secrets)[:300]
    key = f"${key_env}" if key_env else "the API key"
    retryable = status in (408, 409, 429) or status >= 500
    if status == 401:
        hint = (
            f"the API key was refused (401 Unauthorized): check that {key} holds a valid "
            f"key for this server" + (" ([llm] api_key_env names the variable)" if key_env else "")
        )
    elif status == 403:
        hint = (
            f"access was refused (403 Forbidden): the key in {key} may not be allowed to "
            f"use model {model!r}"
        )
    elif status == 404:
        hint = f"not found (404): check the model name {model!r} and the base URL {where}"
    elif status == 429:
        hint = (
            f"rate limited (429) after {attempts} attempt(s), each waiting as Retry-After "
            "said: wait, or raise [llm] max_attempts"
        )
    elif status >= 500:
        hint = f"server error {status} after {attempts} attempt(s)"
    else:
        hint = f"the request was refused ({status})"
    return LLMError(
        f"{provider} at {where}: {hint}. The server said: {detail}", retryable=retryable
    )


def mid_stream_error(
    exc: BaseException,
    *,
    provider: str,
    where: str,
    received: int,
    secrets: Iterable[str | None] = (),
) -> IncompleteResponseError:
    """The error for a stream cut off by ``exc`` (an error event, a dropped connection).

    It is retryable unless the server's error object says the request itself is wrong.
    """
    where = redact_url(where)
    body = getattr(exc, "body", None)
    kind = None
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("type") or error.get("code"), str):
            kind = error.get("type") or error.get("code")
    if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
        detail = str(exc) or _cause(exc)
        what = f"the server sent no text in time ({redact(detail, tuple(secrets))[:200]})"
    elif is_transport_error(exc) or "Connection" in type(exc).__name__:
        what = f"the connection dropped ({redact(_cause(exc), tuple(secrets))[:200]})"
    else:
        what = f"the server sent an error ({redact(_detail(exc), tuple(secrets))[:300]})"
    return IncompleteResponseError(
        f"the response from {provider} at {where} was cut off after {received} characters: {what}",
        retryable=kind not in _PERMANENT_ERROR_TYPES,
    )
