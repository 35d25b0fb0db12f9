"""Run streamed LLM code statement by statement in a call-stack frame's namespace."""

from __future__ import annotations

import ast
import inspect
import linecache
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from durably._codeobjects import tag_definitions
from durably._loops import SteppedLoop, loop_of
from durably._statements import Statement, StatementSplitter
from durably.agent import running_agent
from durably.errors import DurablyError, StatementSyntaxError

if TYPE_CHECKING:
    from durably._journal import Frame
    from durably._runtime import AgentTask
    from durably.agent import Agent

__all__ = ["ControlFlow", "EndTurn", "PlaybookReturn", "ProgramExit", "StreamingPythonExecutor"]

_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_DEFINES = ("def ", "async def ", "class ")
"""How a statement that may define a function or class a checkpoint can store starts."""


class ControlFlow(BaseException):
    """Base of the signals durable operations use to end a response or a playbook.

    They derive from BaseException so that ``except Exception`` in LLM code cannot
    swallow them.
    """


class PlaybookReturn(ControlFlow):
    """``await self.Return(value)``: the playbook ends with ``value``."""

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value


class EndTurn(ControlFlow):
    """``await self.Yield("call")``: the rest of this response is skipped; next LLM call."""


class ProgramExit(ControlFlow):
    """``await self.Yield("exit")``: the program ends."""


@dataclass
class StatementError:
    """An exception LLM code raised; reported to the LLM in the next prompt."""

    statement: str
    error: str
    traceback: str = ""


@dataclass
class _Run:
    statements: list[Statement] = field(default_factory=list)


class StreamingPythonExecutor:
    """Executes a streamed LLM response in a frame, one top-level statement at a time.

    Each statement runs as soon as :class:`~durably._statements.StatementSplitter` says
    it is complete, with top-level ``await``, using the frame's namespace as its
    globals, so that comprehensions, lambdas and nested functions see the frame's
    variables as a Python reader expects. Statements the frame already executed (on
    resume) are skipped. After each statement of an agent's bottom frame the agent
    reaches a *quiet point* where the runtime may take a snapshot.

    The seed API's executor (:class:`durably._seed.StreamingPythonExecutor`) adds the
    methods a caller that feeds the response itself uses.
    """

    def __init__(self, agent: Agent, frame: Frame) -> None:
        self.agent = agent
        self.task: AgentTask = agent._task
        self.frame = frame
        self.splitter = StatementSplitter()
        self._fresh = True  # no chunk fed yet
        self.errors: list[StatementError] = []
        self._stopped = False
        self.stop_end: int | None = None

    async def finish(self) -> list[Statement]:
        """End of the response: run the statements still pending."""
        if self._stopped:
            return []
        try:
            statements = self.splitter.finish()
        except StatementSyntaxError as exc:
            self._syntax_error(exc)
            return []
        return await self._run_all(statements)

    # ------------------------------------------------------------------ running

    async def _feed(self, chunk: str) -> list[Statement]:
        if self._stopped:
            return []
        if self._fresh:
            self._fresh = False
            frame = self.frame
            if (
                frame.executed > 0
                and frame.error is None  # before 7eff073 an error left `offset` behind
                and StatementSplitter.can_resume(chunk, frame.offset)
            ):
                # a restored frame: split from the end of its last statement, not the start
                self.splitter = StatementSplitter(resume=(frame.offset, frame.executed))
        try:
            statements = self.splitter.feed(chunk)
        except StatementSyntaxError as exc:
            self._syntax_error(exc)
            return []
        return await self._run_all(statements)

    async def _run_all(self, statements: list[Statement]) -> list[Statement]:
        ran = []
        for statement in statements:
            if self._stopped:
                break
            await self._run(statement)
            ran.append(statement)
        return ran

    @property
    def response(self) -> str:
        """The response as it counts for the conversation: the code up to the statement
        that ended it (a Return, a Yield or an error), or all of it. Chunk-invariant."""
        text = self.splitter.text
        return text if self.stop_end is None else text[: self.stop_end]

    @property
    def ran_code(self) -> bool:
        """Whether the response held code: a statement ran (or was skipped as already
        run), or its code block did not parse. Prose, an empty answer or an empty code
        block hold none."""
        return self.frame.executed > 0 or (self.splitter.fenced and bool(self.errors))

    def _syntax_error(self, exc: SyntaxError) -> None:
        self._stopped = True
        self.errors.append(StatementError("", f"SyntaxError: {exc.msg} (line {exc.lineno})"))
        self.frame.error = self.errors[-1].error

    async def _run(self, statement: Statement) -> None:
        frame = self.frame
        if statement.index < frame.executed:
            return
        frame.current = (statement.start, statement.end)
        filename = (
            f"<llm {self.task.agent_id} {frame.playbook} call {frame.calls} "
            f"statement {statement.index}>"
        )
        # Tracebacks show the statement, and functions it defines can be re-created from it.
        lines = statement.source.splitlines(True)
        linecache.cache[filename] = (len(statement.source), None, lines, filename)
        token = running_agent.set(self.task)
        try:
            loop = self._stepped(statement.source)
            if loop is not None:  # iteration by iteration, with quiet points between
                await SteppedLoop(loop, filename).run(frame, statement.index, self.task)
            else:
                code = compile(statement.source, filename, "exec", flags=_FLAGS, dont_inherit=True)
                result = eval(code, frame.namespace)
                if inspect.iscoroutine(result):
                    await result
        except ControlFlow:
            self._stopped = True
            self.stop_end = statement.end
            frame.executed = statement.index + 1
            frame.offset = statement.end
            frame.current = None
            raise
        except DurablyError:
            raise
        except Exception as exc:  # the LLM's code failed: tell the LLM next time
            self._stopped = True
            self.stop_end = statement.end
            text = "".join(traceback.format_exception_only(exc)).strip()
            self.errors.append(
                StatementError(statement.source, text, traceback.format_exc(limit=-3))
            )
            frame.error = f"{text}\n  in statement: {statement.source.splitlines()[0]}"
            frame.executed = statement.index + 1
            frame.offset = statement.end  # the end of statement `executed - 1`, always
            frame.current = None
            return
        finally:
            running_agent.reset(token)
        if statement.source.lstrip().startswith(_DEFINES) or "lambda" in statement.source:
            tag_definitions(frame.namespace, filename, statement.source)
        frame.executed = statement.index + 1
        frame.offset = statement.end
        frame.current = None
        await self.task.quiet_point(frame)

    def _stepped(self, source: str) -> ast.For | ast.While | None:
        """The statement's loop, if the executor steps through it: a ``for`` or
        ``while`` loop that awaits, in the agent's bottom frame (only there can a loop
        reach a quiet point)."""
        frames = self.task.frames
        if not frames or frames[0] is not self.frame:
            return None
        return loop_of(source)

    @property
    def stopped(self) -> bool:
        """True once a Return, Yield("call"/"exit") or an error ended the response."""
        return self._stopped


def statement_spans(text: str, count: int) -> list[tuple[int, int]]:
    """``(start, end)`` offsets of the first ``count`` statements of a response (what a
    frame executed), recomputed from the text: statement boundaries do not depend on
    how the text was chunked, so they need not be stored."""
    splitter = StatementSplitter()
    try:
        statements = splitter.feed(text)
        if len(statements) < count:
            statements += splitter.finish()
    except StatementSyntaxError:
        pass
    return [(s.start, s.end) for s in statements[:count]]
