"""Split a streamed LLM response into top-level Python statements, incrementally.

An LLM response arrives as chunks of text. It holds Python code, usually inside one markdown
fence. The executor must run each top-level statement as soon as it is complete, and never
before; :class:`StatementSplitter` tells it when. Feed it the chunks with
:meth:`StatementSplitter.feed`, which returns the statements that became complete, and call
:meth:`StatementSplitter.finish` at the end of the stream.

The contract:

* **Chunk invariance.** The statements, their offsets and the point in the stream at which
  each is returned do not depend on how the text is cut into chunks: a statement is returned
  by the ``feed()`` call whose chunk holds the character that completes it. CRLF and lone CR
  are normalized to LF (a ``"\\r"`` ending one chunk and a ``"\\n"`` starting the next are one
  newline).
* **Fences.** If the first non-blank line starts with ```` ``` ```` (```` ```python ````,
  ```` ```py ````, ...), it opens a fence and is not code; otherwise the whole text is code.
  Code ends at a line made only of backticks (at least three, whitespace around them
  allowed) that is not inside a string, a bracket or a backslash continuation; the rest of
  the text is ignored (:attr:`StatementSplitter.code_closed`).
* **Units.** A :class:`Statement` is one top-level unit: the simple statements of one logical
  line (``a = 1`` or ``a(); b()``), or one compound statement with all its clauses (``if`` /
  ``elif`` / ``else``, ``try`` / ``except`` / ``else`` / ``finally``, ``for`` / ``while`` ...
  ``else``, ``with``, ``match``, ``def``, ``class``, their ``async`` forms), decorators
  included. Blank lines and comment-only lines between units belong to none of them.
* **Simple statements** are complete at the newline that ends their logical line (brackets,
  strings of every kind and backslash continuations are respected).
* **Compound statements** are complete once a later line starts at column 0 with something
  other than a comment or a continuation clause (``elif``, ``else``, ``except``,
  ``finally``; ``else_ = 1`` is not one) and everything before that line parses. This is
  decided as soon as enough of that line has arrived (``a`` is enough, ``el`` is not), or at
  the closing fence, or at :meth:`~StatementSplitter.finish`. A comment at column 0 between
  an ``if`` body and its ``else`` therefore does not end the ``if``.
* **Errors** (from :mod:`durably.errors`, re-exported here; both are ``SyntaxError``
  subclasses). ``feed()`` raises :class:`~durably.errors.StatementSyntaxError` only when the
  code can never become valid whatever arrives next (a column-0 line follows a unit that
  does not parse and is neither inside a string, a bracket or a continuation nor a
  decorator waiting for its ``def``). The closing fence or ``finish()`` arriving in the
  middle of a unit raises :class:`~durably.errors.IncompleteCodeError`. Line numbers in
  both are relative to :attr:`StatementSplitter.text`. A call never drops statements that
  became complete before the error: if one call completes statements and then meets an
  error, it returns the statements and the next call raises the error. After an error every
  call raises it again.

Parsing uses :func:`ast.parse` only (top-level ``await`` parses fine); nothing is compiled.
Work is done per completed line, plus a cheap look at the first word of a column-0 line
while it is still arriving. Scanning the text -- its lines and offsets, parsing a range of
them, tokenizing how a range ends -- is :class:`~durably._sourcetext.SourceText`'s; this
module assembles the lines into statements and decides when each is complete.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from enum import Enum, auto

from durably._sourcetext import FILENAME, SourceText
from durably.errors import IncompleteCodeError, StatementSyntaxError

__all__ = [
    "IncompleteCodeError",
    "Statement",
    "StatementSplitter",
    "StatementSyntaxError",
]

_CONTINUATION_CLAUSES = ("elif", "else", "except", "finally")
# A logical line starting with one of these hard keywords (or a decorator) is always the
# header of a compound statement. ``match`` is a soft keyword and is found by parsing.
_COMPOUND_START = re.compile(r"(?:async|class|def|for|if|try|while|with)\b|@")
_CLOSING_FENCE = re.compile(r"`{3,}")
# What may follow a statement's end on its last line, before the next statement's line.
_IGNORABLE_TAIL = re.compile(r"[ \t\f]*(?:;[ \t\f]*)?(?:#[^\n]*)?\n?")
_COMPOUND_NODES: tuple[type[ast.stmt], ...] = (
    ast.If,
    ast.For,
    ast.AsyncFor,
    ast.While,
    ast.Try,
    ast.TryStar,
    ast.With,
    ast.AsyncWith,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Match,
)


@dataclass(frozen=True, slots=True)
class Statement:
    """One complete top-level unit of the response's code.

    Attributes:
        index: 0-based index of this statement in the response.
        start: Offset into :attr:`StatementSplitter.text` of the first character of the
            statement's first line (its first decorator for a decorated definition).
        end: Offset just past the statement's last character: the end of the last AST node
            of the unit, without trailing comments, blank lines or the newline.
        source: ``text[start:end]``.
        lineno: 1-based line number in :attr:`StatementSplitter.text` of the first line.
    """

    index: int
    start: int
    end: int
    source: str
    lineno: int


class _Phase(Enum):
    START = auto()  # before the first non-blank line: fence or code is not known yet
    CODE = auto()
    CLOSED = auto()  # a closing fence was seen; the rest of the text is ignored


class StatementSplitter:
    """Incrementally split a streamed LLM response into complete top-level statements.

    Example:
        >>> splitter = StatementSplitter()
        >>> [s.source for s in splitter.feed("```python\\nif x:\\n    a()\\n")]
        []
        >>> [s.source for s in splitter.feed("b()\\n```\\n")]
        ['if x:\\n    a()', 'b()']
    """

    def __init__(self, *, resume: tuple[int, int] | None = None) -> None:
        """Create a splitter for one response.

        Args:
            resume: ``(end, count)`` of a response whose first ``count`` statements were
                already split (and run), the last of them ending at offset ``end`` of the
                normalized text: the lines up to the one holding ``end`` are recorded, not
                parsed again, and the first statement returned is statement ``count``,
                with the offsets and line numbers a splitter started from the beginning
                gives it. Only for a text that :meth:`can_resume` accepts.
        """
        self._source = SourceText()  # the lines, and what parsing and tokenizing say
        self._phase = _Phase.START
        self._pending: int | None = None  # index of the first line of the unfinished unit
        self._compound = False  # that unit is known to be a compound statement
        self._decision: bool | None = None  # whether the arriving line can end a unit
        self._count = 0
        self._fenced = False
        self._error: SyntaxError | None = None
        self._finished = False
        self._skip_to: int | None = None  # lines starting before it are recorded only
        self._skip_count = 0
        if resume is not None and resume[0] > 0 and resume[1] > 0:
            self._skip_to, self._skip_count = resume

    @property
    def text(self) -> str:
        """The whole response received so far, with CRLF and lone CR normalized to LF."""
        return self._source.text

    @staticmethod
    def can_resume(text: str, end: int) -> bool:
        """Whether a splitter may start at ``end`` (see ``resume``) of the response that
        begins with ``text``: the line holding ``end`` is complete in ``text`` and holds
        nothing after ``end`` but blanks, a ``;`` and a comment. ``text`` is normalized
        as :meth:`feed` normalizes it."""
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        newline = text.find("\n", end)
        if end <= 0 or newline < 0:
            return False
        return _IGNORABLE_TAIL.fullmatch(text, end, newline + 1) is not None

    @property
    def fenced(self) -> bool:
        """Whether the response opened a code fence."""
        return self._fenced

    @property
    def code_closed(self) -> bool:
        """Whether a closing fence was seen (the text after it is ignored)."""
        return self._phase is _Phase.CLOSED

    def feed(self, chunk: str) -> list[Statement]:
        """Add the next chunk of the response.

        Args:
            chunk: The next piece of the response, of any length (empty is fine).

        Returns:
            The statements that became complete with this chunk, in order.

        Raises:
            StatementSyntaxError: The code can never become valid, whatever arrives next.
            IncompleteCodeError: A closing fence arrived in the middle of a statement.
            RuntimeError: ``finish()`` was already called.
        """
        if self._error is not None:
            raise self._error
        if self._finished:
            raise RuntimeError("feed() called after finish()")
        source = self._source
        text = source.normalize(chunk)
        out: list[Statement] = []
        try:
            pos = 0
            while (newline := text.find("\n", pos)) >= 0:
                self._complete_line(source.partial + text[pos : newline + 1], out)
                pos = newline + 1
            if pos < len(text):
                source.partial += text[pos:]
                if self._pending is not None and self._compound and self._decision is None:
                    self._decide(source.partial, len(source.lines), complete=False, out=out)
        except SyntaxError as error:
            return self._fail(error, out)
        return out

    def finish(self) -> list[Statement]:
        """Signal the end of the stream.

        Returns:
            The statements that were still waiting: the last compound statement, and a last
            line that has no newline.

        Raises:
            IncompleteCodeError: The remaining code does not parse (the stream ended in the
                middle of a statement).
            StatementSyntaxError: The code can never become valid.
        """
        if self._error is not None:
            raise self._error
        if self._finished:
            return []
        self._finished = True
        out: list[Statement] = []
        try:
            if self._source.partial:
                self._complete_line(self._source.partial, out)
            if self._phase is _Phase.CODE and self._pending is not None:
                self._flush(out)
        except SyntaxError as error:
            return self._fail(error, out)
        return out

    # -- text bookkeeping ---------------------------------------------------------------

    def _complete_line(self, line: str, out: list[Statement]) -> None:
        """Record a complete line (or the unterminated last one, at finish) and act on it."""
        skip = self._skip_to
        if skip is not None:
            start = self._source.next_line_start
            if start < skip:  # a line of the statements already split: record it only
                self._source.add_line(line)
                stripped = line.strip()
                if self._phase is _Phase.START and stripped:
                    self._phase = _Phase.CODE
                    self._fenced = stripped.startswith("```")
                if start + len(line) >= skip:  # the line holding the resume point
                    self._end_skip(line[skip - start :])
                self._decision = None
                return
            self._end_skip(None)
        self._source.add_line(line)
        if self._phase is _Phase.START:
            stripped = line.strip()
            if not stripped:
                return
            self._phase = _Phase.CODE
            if stripped.startswith("```"):
                self._fenced = True
                return  # the opening fence
        if self._phase is _Phase.CODE:
            self._code_line(line, out)
        self._decision = None

    def _end_skip(self, rest: str | None) -> None:
        """Leave the recorded prefix: split from the next line on, as statement ``count``.

        Raises:
            ValueError: ``rest``, the rest of the line holding the resume point, holds
                code (:meth:`can_resume` said no).
        """
        self._skip_to = None
        if rest is not None and not _IGNORABLE_TAIL.fullmatch(rest):
            raise ValueError(f"cannot resume splitting before {rest!r}: not a statement's end")
        self._count = self._skip_count

    def _fail(self, error: SyntaxError, out: list[Statement]) -> list[Statement]:
        """Remember ``error``; raise it now unless statements completed before it."""
        self._error = error
        if out:
            return out
        raise error

    # -- the splitting ------------------------------------------------------------------

    def _code_line(self, line: str, out: list[Statement]) -> None:
        """Handle a complete line of code (already added to the source's lines)."""
        index = len(self._source.lines) - 1
        self._decide(line, index, complete=True, out=out)
        stripped = line.strip()
        if _CLOSING_FENCE.fullmatch(stripped) and (
            self._pending is None or not self._source.lexical_tail(self._pending, index)[0]
        ):
            self._phase = _Phase.CLOSED
            if self._pending is not None:
                self._flush(out, end=index)
            return
        if self._pending is not None and self._decision:
            # A column-0 line that can end the unit, yet the unit is still here: it does not
            # parse (else _decide, or the check at its newline, would have emitted it).
            parsed = self._source.parse(self._pending, index)
            if isinstance(parsed, SyntaxError) and not any(
                self._source.lexical_tail(self._pending, index)
            ):
                raise self._convert(StatementSyntaxError, parsed, "invalid statement")
        if self._pending is None:
            if not stripped or stripped.startswith("#"):
                return
            self._pending = index
            self._compound = _COMPOUND_START.match(line) is not None
        if not self._compound:
            module = self._source.parse(self._pending, index + 1)
            if isinstance(module, ast.Module):
                if any(isinstance(node, _COMPOUND_NODES) for node in module.body):
                    self._compound = True
                else:
                    self._emit(module, out)

    def _decide(self, prefix: str, stop: int, *, complete: bool, out: list[Statement]) -> None:
        """Decide whether line ``stop`` can end the pending unit, as soon as its start allows.

        A pending compound statement that parses is emitted as soon as the answer is yes.
        """
        if self._decision is not None:
            return
        decision = _can_end_unit(prefix, complete=complete)
        if decision is None:
            return
        self._decision = decision
        if decision and self._pending is not None and self._compound:
            module = self._source.parse(self._pending, stop)
            if isinstance(module, ast.Module):
                self._emit(module, out)

    def _flush(self, out: list[Statement], end: int | None = None) -> None:
        """Emit the pending unit at the end of the code, or raise IncompleteCodeError."""
        assert self._pending is not None
        result = self._source.parse(self._pending, len(self._source.lines) if end is None else end)
        if isinstance(result, SyntaxError):
            raise self._convert(IncompleteCodeError, result, "the code ended inside the statement")
        self._emit(result, out)

    def _emit(self, module: ast.Module, out: list[Statement]) -> None:
        """Append the units of the pending code (parsed as ``module``) and clear it.

        Usually the pending code is one unit. Statements that share a logical line
        (``a; b``, also across a backslash continuation) form one unit.
        """
        assert self._pending is not None
        source = self._source
        shift = self._pending  # the parsed lines count from the pending unit's first
        units: list[tuple[int, int, int]] = []  # (start, end, lineno)
        for node in module.body:
            lineno = node.lineno + shift
            first_line = _first_line(node) + shift
            end = source.offset((node.end_lineno or node.lineno) + shift, node.end_col_offset or 0)
            if units and first_line == lineno:  # not decorated: may follow a ";"
                gap = source.slice(units[-1][1], source.offset(lineno, node.col_offset))
                if "\n" not in gap.replace("\\\n", ""):
                    units[-1] = (units[-1][0], end, units[-1][2])
                    continue
            units.append((source.line_starts[first_line - 1], end, first_line))
        for start, end, lineno in units:
            out.append(Statement(self._count, start, end, source.slice(start, end), lineno))
            self._count += 1
        self._pending = None
        self._compound = False

    def _convert(
        self, kind: type[StatementSyntaxError], error: SyntaxError, what: str
    ) -> StatementSyntaxError:
        """Build a ``kind`` error about the pending unit from the parser's ``error``."""
        assert self._pending is not None
        lineno = error.lineno or self._pending + 1
        lines = self._source.lines
        text = lines[lineno - 1] if lineno <= len(lines) else None
        converted = kind(
            f"{what} starting at line {self._pending + 1}: {error.msg}",
            (FILENAME, lineno, error.offset, text, error.end_lineno, error.end_offset),
        )
        converted.__cause__ = error
        return converted


def _first_line(node: ast.stmt) -> int:
    """The first line of ``node``, counting its decorators."""
    decorators: list[ast.expr] = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def _can_end_unit(prefix: str, *, complete: bool) -> bool | None:
    """Whether a line starting with ``prefix`` can end the unit before it.

    Only a line that starts at column 0 with something other than a comment or a
    continuation clause (``elif``, ``else``, ``except``, ``finally``) can.

    Args:
        prefix: The start of the line (the whole line if ``complete``).
        complete: Whether ``prefix`` is the whole line.

    Returns:
        ``None`` while the prefix could still become a continuation clause.
    """
    prefix = prefix.lstrip("\f")  # a form feed resets the column to 0, as in Python
    if not prefix:
        return False if complete else None
    first = prefix[0]
    if first in " \t\v\n#":
        return False
    if not (first.isalpha() or first == "_"):
        return True
    length = 1
    while length < len(prefix) and (prefix[length].isalnum() or prefix[length] == "_"):
        length += 1
    word = prefix[:length]
    if length < len(prefix) or complete:
        return word not in _CONTINUATION_CLAUSES
    if any(clause.startswith(word) for clause in _CONTINUATION_CLAUSES):
        return None
    return True
