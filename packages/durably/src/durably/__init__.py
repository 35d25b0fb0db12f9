"""durably: durable execution for LLM agent programs.

Every ``await`` in LLM-written agent code is a checkpoint; a new process pointed at the
same store resumes exactly where a killed one stopped.

Importing ``durably`` is cheap: it imports no storage backend, no LLM client, and the
executor and runtime only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from durably.agent import Agent, AgentHandle, State, playbook
from durably.config import DurabilityConfig, load_config
from durably.errors import (
    AlreadyExistsError,
    CheckpointTooLargeError,
    ConcurrentAwaitError,
    ConfigError,
    ConflictError,
    CorruptHistoryError,
    CorruptObjectError,
    DivergenceError,
    DurablyError,
    DurablyWarning,
    FencedError,
    IncompleteCodeError,
    IncompleteExecutionError,
    InvalidExecutionIdError,
    LeaseHeldError,
    NotFoundError,
    OwnerLockLostError,
    PreconditionFailedError,
    ProgramChangedError,
    ProviderNotFoundError,
    SerializationError,
    SignatureError,
    StatementSyntaxError,
    StoreError,
    StoreUnavailableError,
    UnsupportedError,
    UnsupportedFormatError,
)
from durably.hookspecs import hookimpl
from durably.storage import (
    BlobInfo,
    Capability,
    CheckpointInfo,
    CheckpointProvider,
    ExecutionInfo,
    ExpectedVersion,
    Lease,
    Page,
    StoredCheckpoint,
    WriteMode,
)

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentHandle",
    "AlreadyExistsError",
    "BlobInfo",
    "Capability",
    "Checkpoint",
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointProvider",
    "CheckpointTooLargeError",
    "ConcurrentAwaitError",
    "ConfigError",
    "ConflictError",
    "CorruptHistoryError",
    "CorruptObjectError",
    "DivergenceError",
    "DurabilityConfig",
    "DurablyError",
    "DurablyWarning",
    "ExecutionInfo",
    "ExpectedVersion",
    "FencedError",
    "FilesystemCheckpointProvider",
    "IncompleteCodeError",
    "IncompleteExecutionError",
    "InvalidExecutionIdError",
    "Lease",
    "LeaseHeldError",
    "NotFoundError",
    "OwnerLockLostError",
    "Page",
    "PreconditionFailedError",
    "ProgramChangedError",
    "ProviderNotFoundError",
    "RecoveryCoordinator",
    "RunResult",
    "SerializationError",
    "SignatureError",
    "State",
    "StatementSyntaxError",
    "StoreError",
    "StoreUnavailableError",
    "StoredCheckpoint",
    "StreamingPythonExecutor",
    "UnsupportedError",
    "UnsupportedFormatError",
    "WriteMode",
    "__version__",
    "diff",
    "fork",
    "history",
    "hookimpl",
    "load_config",
    "open_store",
    "playbook",
    "resume_execution",
    "run_program",
    "submit_program",
]

if TYPE_CHECKING:
    from durably._inspect import Checkpoint
    from durably._seed import CheckpointManager, RecoveryCoordinator, StreamingPythonExecutor
    from durably.runner import RunResult, resume_execution, run_program, submit_program
    from durably.storage import CheckpointProvider as _Provider
    from durably.timetravel import diff, fork, history
    from durably_filesystem import FilesystemCheckpointProvider

_LAZY = {
    "StreamingPythonExecutor": "durably._seed",
    "Checkpoint": "durably._inspect",
    "CheckpointManager": "durably._seed",
    "RecoveryCoordinator": "durably._seed",
    "RunResult": "durably.runner",
    "fork": "durably.timetravel",
    "diff": "durably.timetravel",
    "history": "durably.timetravel",
    "submit_program": "durably.runner",
    "resume_execution": "durably.runner",
    "run_program": "durably.runner",
    "FilesystemCheckpointProvider": "durably_filesystem",
}


def __getattr__(name: str) -> Any:
    """Import the executor, the runtime and the default provider on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'durably' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def open_store(
    url: str | None = None,
    options: dict[str, Any] | None = None,
    *,
    config: DurabilityConfig | None = None,
) -> _Provider:
    """Open the checkpoint store for ``url`` (default: the configured store).

    No I/O happens until the store is first used. The envelope (compression) follows
    the configuration.
    """
    from durably._envelope import Envelope
    from durably._plugins import open_provider

    config = config or load_config()
    if url is None:
        url = config.store
        options = dict(config.provider_options()) if options is None else options
    provider = open_provider(url, options)
    provider.envelope = Envelope(
        compression_level=config.compression_level,
        compression_threshold=config.compression_threshold,
    )
    return provider
