"""The ``durably`` command's terminal output, with ``rich`` (imported only here, and only by
the command: ``import durably`` never imports it).

Two modes:

* **fancy** -- stdout (and, for ``run``/``resume``, stderr) is a terminal, ``NO_COLOR``
  is not set and ``TERM`` is not ``dumb``: colours, tables, and while a program runs a
  live status line (spinner, agent, call stack, LLM calls, tokens, checkpoints, elapsed
  time) under the transcript. The status line is taken down before an input prompt, so
  the prompt is on its own line, and before Ctrl-C's message.
* **plain** -- anything else (a pipe, a file, ``NO_COLOR``): the same words with no
  colour and no control codes, stable for scripts and tests.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from typing import IO, Any

from durably._inspect import _printable

__all__ = ["RunScreen", "fancy", "make_console", "relative"]


def fancy(*streams: IO[str]) -> bool:
    """Whether output to ``streams`` may use colours and control codes."""
    if os.environ.get("NO_COLOR", "") != "" or os.environ.get("TERM") == "dumb":
        return False
    return all(_isatty(stream) for stream in streams)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def make_console(stream: IO[str] | None = None) -> Any:
    """A rich console on ``stream`` (stdout): colours only in fancy mode; no markup or
    highlighting of stored text (it is shown as it is, control characters escaped)."""
    from rich.console import Console

    stream = stream or sys.stdout
    on = fancy(stream)
    return Console(
        file=stream,
        force_terminal=on,
        no_color=not on,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=not on,
    )


def relative(then: float | None, now: float | None = None) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago``."""
    if not then:
        return "-"
    seconds = max(0.0, (now or time.time()) - then)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def iso(then: float | None) -> str:
    """Local time, ISO 8601 to the second."""
    if not then:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(then))


STATUS_STYLE = {
    "completed": "green",
    "running": "cyan",
    "failed": "red",
    "damaged": "red",
    "crashed": "yellow",
    "stale": "yellow",
    "stopped": "yellow",
    "waiting for input": "magenta",
}

_AGENT_STYLES = (
    "cyan",
    "magenta",
    "green",
    "blue",
    "yellow",
    "bright_cyan",
    "bright_magenta",
    "bright_green",
)


def agent_style(name: str) -> str:
    """A stable colour per agent class name."""
    return _AGENT_STYLES[sum(name.encode()) % len(_AGENT_STYLES)]


class RunScreen:
    """What ``durably run``/``resume`` show while a program runs.

    The transcript goes to stdout as it happens (``Agent: text``, and ``you: text`` for
    each given answer the program consumes). In fancy mode a live status line stays under
    it, an input prompt replaces it (``you> ``, on its own line), and :meth:`close` takes
    it down (the Ctrl-C message then starts on a clean line).
    """

    def __init__(self, execution_id: str | None = None) -> None:
        self.execution_id = execution_id
        self.fancy = fancy(sys.stdout, sys.stderr)
        self.console = make_console(sys.stdout) if self.fancy else None
        self.live: Any = None
        self.execution: Any = None
        self.agent = ""
        self.stack: list[str] = []
        self.started = time.monotonic()
        self.prompting = False
        self.closed = False

    # ------------------------------------------------------------------ lines

    def say(self, line: str) -> None:
        """A line an agent said (``Agent: text``)."""
        agent, sep, text = line.partition(": ")
        if not self.fancy:
            print(_printable(line), flush=True)
            return
        from rich.text import Text

        shown = Text()
        if sep:
            shown.append(agent, style=f"bold {agent_style(agent)}")
            shown.append(": ")
            shown.append(_printable(text))
        else:
            shown.append(_printable(line))
        self._print(shown)

    def heard(self, agent: str, agent_id: str, text: str) -> None:
        """A given answer the program consumed: the user's line of the transcript."""
        if not self.fancy:
            print(_printable(f"you: {text}"), flush=True)
            return
        from rich.text import Text

        self._print(Text.assemble(("you", "bold green"), ": ", _printable(text)))

    def tool_failed(self, error: dict[str, Any]) -> None:
        """A Python tool raised (its failure is journaled): a ``tool error:`` line of the
        transcript, as ``durably show`` words it."""
        from durably._inspect import tool_error_text

        line = f"tool error: {tool_error_text(error)}"
        if not self.fancy:
            print(_printable(line), flush=True)
            return
        from rich.text import Text

        self._print(Text(_printable(line), style="red"))

    def notice(self, line: str) -> None:
        """A message about the run (not part of the transcript): stderr when plain."""
        if not self.fancy:
            print(_printable(line), file=sys.stderr, flush=True)
            return
        from rich.text import Text

        self._print(Text(_printable(line), style="dim"))

    def _print(self, renderable: Any) -> None:
        assert self.console is not None
        self.console.print(renderable)  # above the live status line, when it is up

    # ------------------------------------------------------------------ status

    def watch(self, execution: Any) -> None:
        """The execution whose counters the status line shows; starts the status line."""
        self.execution = execution
        self._start()

    def step(self, agent: str, agent_id: str, stack: list[str]) -> None:
        self.agent = f"{agent}({agent_id})"
        self.stack = list(stack)

    def _start(self) -> None:
        if not self.fancy or self.live is not None or self.closed:
            return
        from rich.live import Live

        self.live = Live(
            _Status(self),
            console=self.console,
            transient=True,
            refresh_per_second=10,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.live.start()

    def _stop(self) -> None:
        if self.live is not None:
            live, self.live = self.live, None
            live.stop()

    def status_text(self) -> str:
        """The status line's words (without the spinner): elapsed time, the agent and its
        call stack, the LLM call, tokens (as providers report them), checkpoints."""
        parts = [f"{time.monotonic() - self.started:.1f} s"]
        if self.agent:
            parts.append(f"{self.agent} {' > '.join(self.stack)}".rstrip())
        execution = self.execution
        if execution is not None:
            parts.append(f"LLM call {getattr(execution, 'calls_used', 0)}")
            tokens = getattr(execution, "tokens_used", 0)
            if tokens:
                parts.append(f"{tokens:,} tokens")
            written = getattr(getattr(execution, "manager", None), "next_seq", None)
            if isinstance(written, int):
                parts.append(f"{written} checkpoints")
        if self.execution_id:
            parts.append(f"execution {self.execution_id}")
        return _printable(" · ".join(parts))

    # ------------------------------------------------------------------ input

    async def ask(self, agent: str, agent_id: str) -> str:
        """The user's answer, typed at a prompt on its own line (the status line is taken
        down meanwhile)."""
        self._stop()
        if self.fancy:
            prompt = f"\x1b[1;32myou\x1b[0m ({_printable(agent)})> "
        else:
            prompt = f"you ({_printable(agent)})> "
        self.prompting = True
        try:
            return await _read_line(prompt)
        finally:
            self.prompting = False
            self._start()

    def close(self) -> None:
        """Take the status line down (at the end, on an error, on Ctrl-C)."""
        self.closed = True
        self._stop()


class _Status:
    """The live status line: a spinner and :meth:`RunScreen.status_text`."""

    def __init__(self, screen: RunScreen) -> None:
        from rich.spinner import Spinner

        self.screen = screen
        self.spinner = Spinner("dots", style="cyan")

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        grid.add_row(
            self.spinner,
            Text(self.screen.status_text(), style="dim", no_wrap=True, overflow="ellipsis"),
        )
        yield grid


async def _read_line(prompt: str) -> str:
    """``input(prompt)`` in a daemon thread: Ctrl-C at the prompt ends the command at
    once (a worker thread of the default executor would be waited for at exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str] = loop.create_future()

    def read() -> None:
        try:
            line = input(prompt)
        except BaseException as exc:  # EOFError: the terminal closed
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, line, None)

    threading.Thread(target=read, name="durably-input", daemon=True).start()
    return await future


def _settle(future: asyncio.Future[str], value: str | None, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value or "")
