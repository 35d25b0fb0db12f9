"""Cleaning a chat model's continuation of a cut-off response.

When a response was cut off (a crash, a dropped stream), the runtime asks the client for
the rest with ``prefix`` set to the text already journaled, and appends what the client
streams to it verbatim. A chat model asked to continue does not always answer with
exactly the rest; :func:`clean_continuation` sits between the model and the runtime and
repairs the usual deviations, or refuses the continuation when it cannot be repaired:

* a **prose preamble** (``Sure, continuing:``) and/or a **re-opened code fence**
  (a ```` ```python ```` line) at the start: stripped. A bare ```` ``` ```` line that
  starts the continuation of a prefix that stopped at the start of a line inside an open
  code block is the fence that *closes* the block, and is kept.
* a **repeat of the prefix's tail** (the model restarted the line it was cut off in, or
  repeated the last lines): dropped, but only an exact, line-aligned repeat, and only
  when it is at least :data:`MIN_OVERLAP` characters long or the model re-opened the
  code block (which means it started over at a line start): honest code may repeat
  itself, so a short repeat is kept.
* a **restart of the whole answer** that does not repeat it exactly (it starts with the
  prefix's first line, the ``# execution_id:`` header): :class:`~durably.llm.ContinuationError`.
  An exact restart is taken as a repeat and dropped.
* a continuation that is **only prose**: :class:`~durably.llm.ContinuationError`.

Nothing is cleaned when the prefix is not inside an open code block (it stopped before
the fence, or after the closing one), nor fence/prose stripping when it stopped inside a
triple-quoted string (where a fence or a prose line is honest content).

The start of the continuation is buffered until it can be decided (a few lines at most,
longer only while it still repeats the prefix exactly). An error raised by the source
while the start is still undecided is raised without yielding the undecided text: the
runtime will ask again from the same prefix.
"""

from __future__ import annotations

import ast
import io
import keyword
import re
import tokenize
import warnings
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from durably._llmtypes import ContinuationError, Finish

__all__ = ["CONTINUE_NOTE", "MIN_OVERLAP", "clean_continuation", "continuation_messages"]

MIN_OVERLAP = 20
"""A repeat of the prefix's tail shorter than this is kept unless the model re-opened the
code block: honest code may repeat a short piece of itself."""

CONTINUE_NOTE = (
    "Your previous answer was cut off. Continue it exactly where it stopped: output only "
    "the rest, character for character, as it would have followed. Do not repeat anything, "
    "do not add a preamble and do not open a new code block: what you write is appended "
    "to the cut-off text as it is."
)
"""The user message that asks a chat model (without assistant prefill) for the rest."""

_FENCE = re.compile(r"[ \t]*```[ \t]*([A-Za-z0-9_+.-]*)[ \t]*\r?")
_WINDOW_LINES = 5
_WINDOW_CHARS = 400
_HEADER = "# execution_id:"


def continuation_messages(messages: list[dict[str, str]], prefix: str) -> list[dict[str, str]]:
    """The chat messages that ask for the rest of a cut-off response.

    The cut-off text becomes the assistant's turn, followed by :data:`CONTINUE_NOTE` as
    the user's, so the conversation still alternates and ends with the user.

    Args:
        messages: The runtime's messages for the call (ending with a user message).
        prefix: The text of the response already received.

    Returns:
        ``messages`` unchanged when ``prefix`` is empty, else extended.
    """
    if not prefix:
        return list(messages)
    return [
        *messages,
        {"role": "assistant", "content": prefix},
        {"role": "user", "content": CONTINUE_NOTE},
    ]


@dataclass(frozen=True)
class _Prefix:
    """What matters about the journaled prefix."""

    text: str
    inside: bool
    """It stopped inside an open code block."""
    body_start: int
    """Where the code of that block starts in ``text``."""
    in_string: bool
    """The code stopped inside a triple-quoted string."""
    mid_line: bool
    """It stopped in a line holding more than indentation."""
    head: str | None
    """The block's first line, when it is complete and distinctive (10+ characters)."""

    @classmethod
    def of(cls, text: str) -> _Prefix:
        inside = False
        body_start = 0
        position = 0
        for line in text.split("\n")[:-1]:  # complete lines only
            position += len(line) + 1
            if _FENCE.fullmatch(line):
                inside = not inside
                body_start = position
        body = text[body_start:] if inside else ""
        current = text[text.rfind("\n") + 1 :]
        head = None
        if inside and "\n" in body:
            first = body.split("\n", 1)[0]
            if len(first.strip()) >= 10:
                head = first
        return cls(
            text, inside, body_start, inside and _in_open_string(body), bool(current.strip()), head
        )


def _in_open_string(code: str) -> bool:
    """Whether ``code`` stops inside a triple-quoted string."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in tokenize.generate_tokens(io.StringIO(code).readline):
                pass
    except (tokenize.TokenError, SyntaxError) as exc:
        # Python 3.11's tokenizer says "EOF in multi-line string"; 3.12+ say that too, or
        # "unterminated triple-quoted f-string literal". An unterminated *single-quoted*
        # string (a line cut off mid-string) is no error on 3.11 and "unterminated string
        # literal" on 3.12+: it is not a triple-quoted string, so it must not count.
        message = str(exc).lower()
        return "multi-line string" in message or "triple-quoted" in message
    except Exception:  # a tokenizer quirk: assume no string (clean as usual)
        return False
    return False


def _is_prose(line: str) -> bool:
    """Whether a line reads as a sentence rather than Python code."""
    text = line.strip()
    if not text or len(text) > 300 or not text[0].isalpha():
        return False
    if any(c in text for c in "()[]{}=`#"):
        return False
    first = re.split(r"[^A-Za-z0-9_]", text, maxsplit=1)[0]
    if keyword.iskeyword(first) or keyword.issoftkeyword(first):
        return False
    try:
        compile(
            text, "<continuation>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
    except SyntaxError:
        return True
    except Exception:
        return False
    return False


@dataclass
class _Stripped:
    text: str
    reopened: bool


def _strip(shape: _Prefix, text: str, final: bool) -> _Stripped | None:
    """Strip a prose preamble and/or a re-opened fence from the start of ``text``.

    Returns ``None`` while more text is needed to decide.
    """
    if shape.in_string:
        return _Stripped(text, False)
    lines = text.split("\n")
    complete = lines if final else lines[:-1]
    prose: list[int] = []
    for number, line in enumerate(complete[:_WINDOW_LINES]):
        match = _FENCE.fullmatch(line)
        if match is not None:
            after = "\n".join(lines[number + 1 :])
            if number == 0:
                if match[1] or shape.mid_line:
                    return _Stripped(after, True)
                return _Stripped(text, False)  # the fence that closes the block
            if prose:
                return _Stripped(after, True)
            return _Stripped(text, False)
        if not line.strip():
            continue
        if _is_prose(line) and len(prose) < 3:
            prose.append(number)
            continue
        # Code: a preamble without a fence is stripped only at a line start and when it
        # introduces what follows ("Sure, here is the rest:").
        if prose and not shape.mid_line and complete[prose[-1]].rstrip().endswith(":"):
            return _Stripped("\n".join(lines[number:]), True)
        return _Stripped(text, False)
    if prose and final and not any(_FENCE.fullmatch(x) for x in lines):
        raise ContinuationError(
            "the model answered the request to continue its cut-off response with prose "
            f"({_excerpt(text)}) instead of the rest of its code"
        )
    if final or len(complete) >= _WINDOW_LINES or len(text) >= _WINDOW_CHARS:
        return _Stripped(text, False)
    return None


def _overlap(shape: _Prefix, text: str, reopened: bool, final: bool) -> str | None:
    """Drop a repeat of the prefix's tail from ``text``; ``None`` while undecided."""
    prefix = shape.text
    starts = [shape.body_start] + [
        i + 1 for i in range(shape.body_start, len(prefix) - 1) if prefix[i] == "\n"
    ]
    at_line_start = reopened or not shape.mid_line

    def acceptable(start: int) -> bool:
        tail = prefix[start:]
        if not tail:
            return False
        if start == shape.body_start and shape.head is not None:
            return True  # the whole block so far, repeated: an exact restart
        if shape.mid_line:
            return reopened or len(tail) >= MIN_OVERLAP
        return reopened and len(tail) >= MIN_OVERLAP

    candidates = [s for s in starts if acceptable(s)]
    if not final and any(
        len(prefix) - s > len(text) and prefix[s:].startswith(text) for s in candidates
    ):
        return None  # still a possible repeat: wait
    for start in candidates:  # longest first
        if text.startswith(prefix[start:]):
            return text[len(prefix) - start :]
    if at_line_start and shape.head is not None:
        if not final and len(text) <= len(shape.head) and shape.head.startswith(text):
            return None
        if (
            text.startswith(shape.head + "\n")
            or text.startswith(shape.head + "\r")
            or (text.startswith(_HEADER) and _HEADER in prefix[shape.body_start :])
        ):
            raise ContinuationError(
                "the model restarted its cut-off response instead of continuing it (its "
                f"continuation starts again with {_excerpt(shape.head)}) and the restart "
                "differs from what was already received"
            )
    return text


def _excerpt(text: str, limit: int = 60) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _decide(shape: _Prefix, text: str, final: bool) -> str | None:
    """The cleaned start of the continuation, or ``None`` while undecided."""
    if not shape.inside:
        return text
    stripped = _strip(shape, text, final)
    if stripped is None:
        return None
    return _overlap(shape, stripped.text, stripped.reopened, final)


async def clean_continuation(
    prefix: str, chunks: AsyncIterable[str | Finish]
) -> AsyncIterator[str | Finish]:
    """The model's continuation of ``prefix``, cleaned to be exactly the rest.

    Args:
        prefix: The text of the response already received (journaled).
        chunks: What the model streams after being asked to continue: text chunks and,
            last, possibly a :class:`~durably.llm.Finish` (passed through).

    Yields:
        Text chunks that extend ``prefix``, then the ``Finish`` if one came.

    Raises:
        ContinuationError: The model restarted the answer differently, or answered with
            prose only.
    """
    shape = _Prefix.of(prefix)
    buffer = ""
    decided = False
    async for item in chunks:
        if decided:
            if not isinstance(item, str) or item:
                yield item
            continue
        if isinstance(item, str):
            buffer += item
            out = _decide(shape, buffer, final=False)
            if out is None:
                continue
        else:
            out = _decide(shape, buffer, final=True)
        decided = True
        if out:
            yield out
        if not isinstance(item, str):
            yield item
    if not decided:
        out = _decide(shape, buffer, final=True)
        if out:
            yield out
