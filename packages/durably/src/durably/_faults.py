"""Fault injection for tests and the demo (documented in ``docs/guides/testing-durability.md``).

``DURABLY_CRASH_AFTER_CHECKPOINT=N``: SIGKILL the process right after the N-th checkpoint
its execution wrote is durable. ``DURABLY_CRASH_IN_LLM_CALL=N``: SIGKILL it right after
the first checkpoint written while the execution's N-th live LLM response is still
streaming in. The variables are read when a :class:`~durably.checkpoint.CheckpointManager`
is made; without them nothing is made and nothing runs at a checkpoint.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping

__all__ = ["CRASH_ENV", "CRASH_LLM_ENV", "CrashInjector"]

CRASH_ENV = "DURABLY_CRASH_AFTER_CHECKPOINT"
CRASH_LLM_ENV = "DURABLY_CRASH_IN_LLM_CALL"


class CrashInjector:
    """Kills the process at a chosen checkpoint.

    Args:
        after: Kill right after this many checkpoints (None: never).
        in_llm_call: Kill at the first checkpoint while this live LLM call streams.
    """

    def __init__(self, after: int | None, in_llm_call: int | None) -> None:
        self.after = after
        self.in_llm_call = in_llm_call
        self.written = 0
        self.llm_probe: Callable[[], tuple[int, bool]] = lambda: (0, False)
        """``(live LLM calls started, one is streaming now)``: set by the execution."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> CrashInjector | None:
        """The injector the environment asks for, or None."""
        after, in_call = environ.get(CRASH_ENV), environ.get(CRASH_LLM_ENV)
        if not after and not in_call:
            return None
        return cls(int(after) if after else None, int(in_call) if in_call else None)

    def checkpoint_written(self) -> None:
        """A checkpoint is durable: kill the process if this is the chosen one."""
        self.written += 1
        live, streaming = self.llm_probe()
        if (self.after is not None and self.written == self.after) or (
            self.in_llm_call is not None and live == self.in_llm_call and streaming
        ):
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(10)  # pragma: no cover
