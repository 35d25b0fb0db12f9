"""The text of a streamed LLM response as lines, and what Python's parser and tokenizer say
about a range of them: the scanning half of :mod:`durably._statements`.

:class:`SourceText` normalizes newlines across chunk boundaries, keeps the complete lines
with their offsets (and the line still arriving), parses a range of lines with line
numbers relative to the whole text (caching the last parse), tells whether a range ends
inside a string, a bracket or a continuation, and maps AST positions back to text offsets.
It decides nothing about statements: :class:`~durably._statements.StatementSplitter` does.
"""

from __future__ import annotations

import ast
import bisect
import io
import tokenize
import warnings

__all__ = ["FILENAME", "SourceText"]

FILENAME = "<response>"
"""The file name parse errors and statements carry."""
# Parser messages that are only given when the text ends inside a bracket or a long string.
_OPEN_AT_EOF = ("was never closed", "unterminated triple-quoted")


class SourceText:
    """The normalized text of one response, line by line.

    Attributes:
        lines: The complete lines of the normalized text, with their ``"\\n"`` (the
            unterminated last line too, once :meth:`add_line` was given it at the end).
        line_starts: The offset of each line in the normalized text.
        partial: The line still arriving.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.line_starts: list[int] = []
        self.partial = ""
        self._partial_start = 0  # the offset of `partial`
        self._cr_pending = False  # the last chunk ended with "\r"
        self._parsed: tuple[int, int, ast.Module | SyntaxError] | None = None  # parse cache
        self._joined = ""  # cache of "".join(self.lines[: self._joined_lines])
        self._joined_lines = 0

    @property
    def text(self) -> str:
        """The whole response received so far, with CRLF and lone CR normalized to LF."""
        if self._joined_lines < len(self.lines):
            self._joined += "".join(self.lines[self._joined_lines :])
            self._joined_lines = len(self.lines)
        return self._joined + self.partial

    def normalize(self, chunk: str) -> str:
        """Turn CRLF and lone CR into LF, also across chunk boundaries."""
        if not chunk:
            return ""
        skip_lf = self._cr_pending and chunk[0] == "\n"
        self._cr_pending = chunk[-1] == "\r"
        if skip_lf:
            chunk = chunk[1:]
        return chunk.replace("\r\n", "\n").replace("\r", "\n")

    @property
    def next_line_start(self) -> int:
        """The offset of the line still arriving (where the next complete line starts)."""
        return self._partial_start

    def add_line(self, line: str) -> None:
        """Record a complete line (or the unterminated last one, at the end)."""
        self.lines.append(line)
        self.line_starts.append(self._partial_start)
        self.partial = ""
        self._partial_start += len(line)

    def parse(self, first: int, stop: int) -> ast.Module | SyntaxError:
        """Parse lines ``first:stop``. The nodes' line numbers count from line ``first``
        (1 is line ``first + 1`` of the text: add ``first``), an error's from the whole
        text."""
        if self._parsed is not None and self._parsed[:2] == (first, stop):
            return self._parsed[2]
        # Parse the unit's own lines (padding the source with newlines would cost time
        # linear in ``first``), and leave the nodes' line numbers as they are: shifting
        # every node of the tree took as long as parsing it, for the few the caller reads.
        source = "".join(self.lines[first:stop])
        result: ast.Module | SyntaxError
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. invalid escapes: the executor warns
                result = ast.parse(source, FILENAME)
        except SyntaxError as error:
            if error.lineno is not None:
                error.lineno += first
            if error.end_lineno is not None:
                error.end_lineno += first
            result = error
        except ValueError as error:  # null bytes, on Python < 3.12
            result = SyntaxError(str(error), (FILENAME, first + 1, 1, None, None, None))
        self._parsed = (first, stop, result)
        return result

    def lexical_tail(self, first: int, stop: int) -> tuple[bool, bool]:
        """Look at how lines ``first:stop`` end, tokenizing them if parsing does not tell.

        Returns:
            ``(is_open, after_decorator)``: whether the text ends inside a string, a bracket
            or a backslash continuation (so the next line continues it), and whether its
            last logical line is a decorator (so a ``def`` may follow at column 0).
        """
        parsed = self.parse(first, stop)
        if isinstance(parsed, ast.Module):
            return False, False
        if any(sign in parsed.msg for sign in _OPEN_AT_EOF):
            return True, False  # a shortcut for long strings and brackets: no tokenizing
        source = "".join(self.lines[first:stop])
        readline = io.StringIO(source).readline
        skipped = {tokenize.NL, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT}
        first_of_last_line: str | None = None
        at_line_start = True
        try:
            for token in tokenize.generate_tokens(readline):
                if token.type in skipped:
                    continue
                if token.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
                    at_line_start = True
                elif at_line_start:
                    first_of_last_line = token.string
                    at_line_start = False
        except tokenize.TokenError as error:
            # "EOF in multi-line string/statement" (3.11); 3.12+ also reports lexical
            # errors this way, and those end nothing: only the EOF kinds mean "open".
            message = str(error.args[0]) if error.args else ""
            if "EOF" in message or "unterminated" in message:
                return True, False
        except SyntaxError:  # e.g. an inconsistent dedent: nothing later can repair it
            return False, False
        return False, first_of_last_line == "@"

    def offset(self, lineno: int, col_offset: int) -> int:
        """The text offset of an AST position (``col_offset`` counts UTF-8 bytes)."""
        line = self.lines[lineno - 1]
        if not line.isascii():
            col_offset = len(line.encode()[:col_offset].decode(errors="replace"))
        return self.line_starts[lineno - 1] + col_offset

    def slice(self, start: int, end: int) -> str:
        """``self.text[start:end]``, from the complete lines only."""
        first = bisect.bisect_right(self.line_starts, start) - 1
        last = bisect.bisect_left(self.line_starts, end)
        return "".join(self.lines[first:last])[
            start - self.line_starts[first] : end - self.line_starts[first]
        ]
