"""Every hook durably calls, grouped by lifecycle.

Plugins implement hooks with :data:`durably.hookimpl`::

    from durably import hookimpl

    @hookimpl
    def durably_after_checkpoint(execution_id, info):
        metrics.increment("checkpoints", tags={"execution": execution_id})

A plugin is any module or object registered through the ``durably`` entry-point group
(see ``docs/guides/plugins.md``). Storage providers are registered separately through
the lazy ``durably.providers`` group, keyed by URL scheme, or through
:func:`durably_register_providers`. Any plugin can be blocked by naming it in the
``DURABLY_DISABLE_PLUGINS`` environment variable (comma-separated entry-point names).

Hooks are called with keyword arguments; an implementation may accept any subset of
a hook's arguments (pluggy's rule), so new arguments can be added without breaking
plugins. Unless stated otherwise a hook's return value is ignored and an exception
raised by an implementation propagates to the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from durably.storage import CheckpointInfo, CheckpointProvider

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("durably")
hookimpl = pluggy.HookimplMarker("durably")

ProviderFactory = Callable[[str, Mapping[str, Any]], "CheckpointProvider"]


# ---------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------


@hookspec
def durably_register_providers() -> Mapping[str, ProviderFactory]:  # type: ignore[empty-body]
    """Contribute storage providers by URL scheme.

    Called once, the first time a store URL is opened. Return a mapping from scheme
    (``"memory"``, ``"gs"``, ...) to a factory ``factory(url, options)`` that returns a
    :class:`~durably.storage.CheckpointProvider`. ``url`` is the whole store URL and
    ``options`` the provider's sub-table of ``[durability]`` (``[durability.<scheme>]``),
    possibly empty. The factory must raise :class:`~durably.errors.ConfigError` for
    unknown options or a malformed URL, and must not perform I/O (connections are made
    lazily, on first use).

    Schemes registered here take precedence over the ``durably.providers`` entry-point
    group; when two plugins register the same scheme, the one registered last wins
    (pluggy's LIFO order) and a warning is logged.
    """


@hookspec
def durably_register_llm_clients() -> Mapping[str, Callable[..., Any]]:  # type: ignore[empty-body]
    """Contribute LLM clients by spec prefix (``"scripted"``, ``"openai"``, ``"mine"``).

    Return a mapping from prefix to a factory ``factory(spec, options)``; ``spec`` is
    what follows ``prefix:`` in ``--llm prefix:rest``. Same precedence rules as
    :func:`durably_register_providers`.
    """


# ---------------------------------------------------------------------------
# Checkpoint lifecycle -- called by the core around every durable checkpoint write
# ---------------------------------------------------------------------------


@hookspec
def durably_before_checkpoint(execution_id: str, seq: int, metadata: Mapping[str, str]) -> None:
    """A checkpoint is about to be written.

    Called on the hot path (once per ``await`` of LLM code): keep it cheap. Raising
    aborts the checkpoint, and the operation that led to it fails with that exception.
    ``metadata`` is read-only.
    """


@hookspec
def durably_after_checkpoint(execution_id: str, info: CheckpointInfo) -> None:
    """A checkpoint is durable; ``info`` describes what was stored.

    Called on the hot path; keep it cheap. An exception raised here is logged and
    ignored: the checkpoint is already durable and execution goes on.
    """


@hookspec
def durably_on_checkpoint_error(execution_id: str, seq: int, error: BaseException) -> None:
    """Writing checkpoint ``seq`` failed with ``error``; the error is raised after this hook.

    Nothing of the failed checkpoint is durable. Use it for alerting; do not retry
    from here (the core decides whether an error is retryable).
    """


# ---------------------------------------------------------------------------
# Recovery lifecycle -- called when an execution is restored from the store
# ---------------------------------------------------------------------------


@hookspec
def durably_before_recover(execution_id: str, seq: int) -> None:
    """An execution is about to be restored from checkpoint ``seq``.

    Raising aborts the recovery with that exception; nothing is changed in the store.
    """


@hookspec
def durably_after_recover(execution_id: str, seq: int, replayed: int) -> None:
    """An execution was restored; ``replayed`` journal entries will be answered from the
    journal before execution goes live again."""


@hookspec
def durably_on_recover_error(execution_id: str, error: BaseException) -> None:
    """Restoring an execution failed with ``error``; the error is raised after this hook."""


# ---------------------------------------------------------------------------
# Value encoding -- values the safe codec does not know
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def durably_encode_value(value: Any) -> tuple[str, Any] | None:
    """Encode a value of a type the built-in codec does not support.

    Return ``(tag, payload)``, where ``tag`` names the type (namespace it: ``"myapp.Money"``)
    and ``payload`` is a value the codec can encode (JSON types, bytes, tuples, ...), or
    None to let the next plugin try. The first non-None result wins. Must be
    deterministic: the same value gives the same payload.
    """


@hookspec(firstresult=True)
def durably_decode_value(tag: str, payload: Any) -> Any | None:
    """Rebuild a value that :func:`durably_encode_value` encoded with ``tag``.

    Return the value, or None if the tag is not yours (to rebuild a genuine None,
    encode it as a built-in None instead). If no plugin knows the tag, decoding fails
    with :class:`~durably.errors.SerializationError` naming the tag.
    """
