"""StatementSplitter(resume=...): splitting from a restored frame's last statement gives
what splitting from the start gives for the statements after it, and nothing before."""

from __future__ import annotations

import pytest
from test_statements import RESPONSES

from durably._statements import Statement, StatementSplitter

EXTRA = {
    "semicolons": "```python\na = 1;  # one\nb = 2; c = 3\nif a:\n    d = 4;\ne = 5\n```\n",
    "no fence": "x = 1\nif x:\n    y = 2\n# comment\nelse:\n    y = 3\nz = [\n  1,\n]\nw = z",
    "tail of code": "a = 1; \\\n  b = 2\nc = 3\n",
    "crlf": "```python\r\na = 1\r\nfor i in range(2):\r\n    a += i\r\nb = a\r\n```\r\n",
    "decorated": "```python\n@dec\ndef f():\n    pass\n\n\nclass C:\n    x = 1\nf()\n```",
    "error after": "```python\na = 1\nb = 2\nc = (\n```\n",
}
CASES = {**RESPONSES, **EXTRA}


def split(splitter: StatementSplitter, chunks: list[str]) -> tuple[list[Statement], str]:
    out: list[Statement] = []
    try:
        for chunk in chunks:
            out += splitter.feed(chunk)
        out += splitter.finish()
    except SyntaxError as error:
        return out, f"{type(error).__name__}: {error.msg} line {error.lineno}"
    return out, ""


@pytest.mark.parametrize("name", sorted(CASES))
def test_resume_after_every_statement_matches_a_full_split(name: str) -> None:
    text = CASES[name]
    reference = StatementSplitter()
    full, error = split(reference, [text])
    resumed_any = False
    for count in range(1, len(full) + 1):
        end = full[count - 1].end
        if not StatementSplitter.can_resume(text, end):
            continue
        resumed_any = True
        line_end = text.index("\n", end) + 1
        for chunks in ([text], [text[:line_end], *text[line_end:]]):
            splitter = StatementSplitter(resume=(end, count))
            got, got_error = split(splitter, list(chunks))
            assert got == full[count:], (name, count)
            assert got_error == error
            assert splitter.text == text.replace("\r\n", "\n").replace("\r", "\n")
            assert splitter.fenced == reference.fenced
            assert splitter.code_closed == reference.code_closed
    assert resumed_any or not full


def test_can_resume_only_at_the_end_of_a_line_of_code() -> None:
    text = "a = 1; \\\n  b = 2\nc = 3  # x\nd = 4;\ne"
    assert not StatementSplitter.can_resume(text, 0)
    assert not StatementSplitter.can_resume(text, 5)  # "; \\": a continuation follows
    assert StatementSplitter.can_resume(text, text.index("3") + 1)
    assert StatementSplitter.can_resume(text, text.index("4") + 1)
    assert not StatementSplitter.can_resume(text, len(text))  # the line is not complete
    assert not StatementSplitter.can_resume("a = 1; b = 2\n", 5)


def test_a_resumed_splitter_keeps_line_numbers_and_fence() -> None:
    text = "```python\na = 1\nb = (\n  2)\nc = )\n```\n"
    reference = StatementSplitter()
    full, error = split(reference, [text])
    splitter = StatementSplitter(resume=(full[0].end, 1))
    got, got_error = split(splitter, [text])
    assert got == full[1:]
    assert got_error == error
    assert "line 5" in got_error
    assert splitter.fenced
    assert splitter.code_closed == reference.code_closed
    closed = "```python\na = 1\nb = 2\n```\nprose\n"
    splitter = StatementSplitter(resume=(closed.index("1") + 1, 1))
    assert [s.source for s in split(splitter, [closed])[0]] == ["b = 2"]
    assert splitter.code_closed
