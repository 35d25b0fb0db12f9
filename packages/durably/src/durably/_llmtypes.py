"""The LLM client contract's types: errors, :class:`Finish`, budgets, :class:`LLMClient`.

Public through :mod:`durably.llm` (the contract is documented there). They live here so
that the clients (``_openai``, ``_anthropic``, ...) can use them without importing
:mod:`durably.llm`, which imports the clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

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
        super().__init__(
            f"LLM budget [llm] {budget} = {limit} reached ({used} used"
            f"{'; ' + detail if detail else ''}); raise it in durably.toml "
            "and resume the execution"
        )
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
    and tokens its journal holds. Calls are counted when they start, so ``max_calls`` is
    reached at the same call whether or not the execution crashed on the way. Tokens are
    counted when the provider reports them, at the end of a response: a crash while a
    response streams loses that report (the resumed run continues the response and counts
    what the continuation reports), so ``max_tokens`` may let a crashed execution spend
    the tokens of the responses that were in flight once more.

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
                raise ConfigError(
                    f"[llm] {name} must be a non-negative integer, not {value!r}",
                    key=f"llm.{name}",
                    fix="Use an integer; 0 turns the budget off",
                )
            values[name] = value
        return cls(**values), rest


@runtime_checkable
class LLMClient(Protocol):
    """Streams one response to a chat prompt."""

    spec: str

    def stream(
        self,
        messages: list[dict[str, str]],
        *,
        agent: str,
        playbook: str,
        call: int,
        prefix: str = "",
    ) -> AsyncIterator[str | Finish]:
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
