"""Tests for the incremental statement splitter (``durably._statements``).

The central property is chunk invariance: however a response is cut into chunks, the
splitter returns the same statements, each from the ``feed()`` call whose chunk holds the
character that completes it. Simple statements complete at the newline ending their logical
line; compound statements once the next column-0 line shows it is not a continuation clause.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durably._statements import (
    IncompleteCodeError,
    Statement,
    StatementSplitter,
    StatementSyntaxError,
)

COMPOUND_NODES = (
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
FAST = settings(max_examples=200, deadline=None)

# -- helpers ------------------------------------------------------------------------------

Event = tuple[Statement, int | None]  # a statement and the raw offset fed when it came out


@dataclass
class Run:
    """What one way of feeding a response produced."""

    events: list[Event]
    error: SyntaxError | None
    splitter: StatementSplitter

    @property
    def statements(self) -> list[Statement]:
        return [statement for statement, _ in self.events]


def run(text: str, cuts: list[int] | range | None = None) -> Run:
    """Feed ``text`` cut at ``cuts`` (None: one chunk); statements come with the raw offset
    fed so far when they were returned (None: returned by finish())."""
    bounds = sorted({cut for cut in cuts or () if 0 < cut < len(text)} | {len(text)})
    splitter = StatementSplitter()
    events: list[Event] = []
    previous = 0
    try:
        for bound in bounds:
            events += [(s, bound) for s in splitter.feed(text[previous:bound])]
            previous = bound
        events += [(s, None) for s in splitter.finish()]
    except SyntaxError as error:
        return Run(events, error, splitter)
    return Run(events, None, splitter)


def one_char_at_a_time(text: str) -> Run:
    return run(text, range(len(text)))


def sources(text: str) -> list[str]:
    result = run(text)
    assert result.error is None, result.error
    return [s.source for s in result.statements]


def assert_chunk_invariant(text: str, cuts: list[int]) -> Run:
    """The statements and their emission points are the same for one-char, one-chunk and
    ``cuts`` feeding: each statement comes out of the first call that has fed the character
    which completes it (found by feeding one character at a time)."""
    reference = one_char_at_a_time(text)
    for other_cuts in (cuts, None):
        other = run(text, other_cuts)
        assert other.statements == reference.statements
        bounds = sorted({c for c in other_cuts or () if 0 < c < len(text)} | {len(text)})
        for (_, at), (_, at_reference) in zip(other.events, reference.events, strict=True):
            expected = None if at_reference is None else min(b for b in bounds if b >= at_reference)
            assert at == expected
        assert type(other.error) is type(reference.error)
        if reference.error is not None:
            assert other.error is not None
            assert (other.error.lineno, other.error.msg) == (
                reference.error.lineno,
                reference.error.msg,
            )
        assert other.splitter.text == reference.splitter.text
        assert other.splitter.code_closed == reference.splitter.code_closed
    return reference


def assert_consistent(splitter: StatementSplitter, statements: list[Statement]) -> None:
    """Indexes, offsets, sources and line numbers agree with ``splitter.text``."""
    text = splitter.text
    for index, statement in enumerate(statements):
        assert statement.index == index
        assert statement.source == text[statement.start : statement.end]
        assert statement.start == 0 or text[statement.start - 1] == "\n"
        assert statement.lineno == text.count("\n", 0, statement.start) + 1
        assert statement.source == statement.source.rstrip()
        assert ast.parse(statement.source).body


def is_compound(statement: Statement) -> bool:
    return isinstance(ast.parse(statement.source).body[0], COMPOUND_NODES)


def assert_emitted_on_time(text: str) -> None:
    """Feeding one character at a time, each statement comes out exactly when it is complete:
    a simple one at the newline ending its logical line, a compound one after the first
    character of the next column-0 code line (or fence) and by the end of that line; a
    statement that only finish() can complete has no such line after it."""
    splitter = StatementSplitter()
    emitted: list[tuple[Statement, int | None]] = []
    for char in text:
        emitted += [(s, len(splitter.text)) for s in splitter.feed(char)]
    emitted += [(s, None) for s in splitter.finish()]
    norm = splitter.text
    for statement, at in emitted:
        if not is_compound(statement):
            newline = norm.find("\n", statement.end)
            assert at == (None if newline < 0 else newline + 1)
            continue
        line_start = norm.find("\n", statement.end - 1)
        while line_start >= 0:
            line_start += 1
            if line_start < len(norm) and norm[line_start] not in " \t\n#":
                break
            line_start = norm.find("\n", line_start)
        if line_start < 0 or line_start >= len(norm):
            assert at is None
        else:
            line_end = norm.find("\n", line_start)
            assert at is not None
            assert line_start + 1 <= at <= (len(norm) if line_end < 0 else line_end + 1)


def fenced_code(text: str) -> str:
    """The code between the fences of a reference response."""
    lines = text.splitlines(keepends=True)
    assert lines[0].startswith("```")
    assert lines[-1].strip() == "```"
    return "".join(lines[1:-1])


def same_ast(statements: list[Statement], code: str) -> None:
    joined = "\n".join(s.source for s in statements)
    assert ast.dump(ast.parse(joined)) == ast.dump(ast.parse(code))


def cut_points(max_len: int = 2000) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, max_len), max_size=30)


# -- the reference responses ----------------------------------------------------------------

# Verbatim copies of /work/shared/reference/playbooks-style/*.response.txt (the worked
# example of LLM code in the Playbooks style), so that these tests need nothing outside
# the repository.
RESPONSES: dict[str, str] = {
    "01_concierge-1000_Main_exec1": """\
```python
# execution_id: 1
# recap: beginning at Main:01:QUE
# plan: welcome the user, then gather their preferences with GatherPreferences
# trig? no
await self.Step("Main:01:QUE")
await self.Say("user", "Welcome! I'm your kitchen concierge. Let's figure out what you can cook tonight with what you already have.")
# trig? no
# yld? no, Main:02:QUE does not depend on anything the user says to the welcome
await self.Step("Main:02:QUE")
self.state.preferences = await self.GatherPreferences()
# trig? no
# yld? yes, Main:04:QUE needs $preferences returned by GatherPreferences
await self.Step("Main:03:YLD")
await self.Yield("call")
```
""",  # noqa: E501
    "02_concierge-1000_GatherPreferences_exec2": """\
```python
# execution_id: 2
# recap: Main called GatherPreferences(); beginning at GatherPreferences:01:QUE
# plan: ask the user for their ingredients and diet, then wait for the answer
# trig? no
await self.Step("GatherPreferences:01:QUE")
await self.Say("user", "What ingredients do you have on hand? And do you follow any particular diet (vegetarian, vegan, gluten-free, ...)?")
# trig? no
# yld? yes, GatherPreferences:03:RET needs the user's answer
await self.Step("GatherPreferences:02:YLD")
answer = await self.Yield("user")
```
""",  # noqa: E501
    "03_concierge-1000_GatherPreferences_exec3": """\
```python
# execution_id: 3
# recap: user has chickpeas, spinach, a can of tomatoes and rice, and is vegetarian
# plan: GatherPreferences:02:YLD done, execute GatherPreferences:03:RET and return the preferences
# trig? no
await self.Step("GatherPreferences:03:RET")
# think: answer = "I've got chickpeas, a bag of spinach, a can of tomatoes and some rice. I'm vegetarian." -> four ingredients, diet is vegetarian
self.state.ingredients = ["chickpeas", "spinach", "canned tomatoes", "rice"]
self.state.diet = "vegetarian"
self.state.__ = "GatherPreferences() asked the user for ingredients and diet; the user has chickpeas, spinach, canned tomatoes and rice and is vegetarian"
await self.Return({"ingredients": self.state.ingredients, "diet": self.state.diet})
```
""",  # noqa: E501
    "04_concierge-1000_Main_exec4": """\
```python
# execution_id: 4
# recap: GatherPreferences returned {'ingredients': ['chickpeas', 'spinach', 'canned tomatoes', 'rice'], 'diet': 'vegetarian'}
# plan: Main:03:YLD done, execute Main:04:QUE and ask the chef for a dish suggestion
# trig? no
await self.Step("Main:04:QUE")
# think: No Chef agent is running yet, so get_or_create will start one. Step 04 says to ask the chef, so I will message the chef directly and then wait for the reply.
chef = await Chef.get_or_create(requester=self)
await self.Say(chef.id, f"Hi Chef! Could you suggest one {self.state.preferences['diet']} dish using: {', '.join(self.state.preferences['ingredients'])}? Please include a one-line description and the cooking time.")
await self.Say("user", "Great, let me ask our chef what you could make with that...")
# trig? no
# yld? yes, Main:06:QUE needs the chef's reply
await self.Step("Main:05:YLD")
chef_reply = await self.Yield(f"agent {chef.id}")
```
""",  # noqa: E501
    "05_chef-1001_ProcessMessages_exec1": """\
```python
# execution_id: 1
# recap: beginning at ProcessMessages:01:CND with one direct message from Concierge(1000) asking for a vegetarian dish suggestion
# plan: the message matches my SuggestDish trigger, run SuggestDish and then reply to Concierge(1000)
# trig? no
await self.Step("ProcessMessages:01:CND")
# think: The message is a direct message, not a meeting message, so 01.01 does not apply.
await self.Step("ProcessMessages:01.02:EXE")
# trig? yes, Concierge(1000) asks me to suggest a dish, so SuggestDish:T1:EVT matches
await self.LogTrigger("SuggestDish:T1:EVT")
await self.Step("ProcessMessages:01.03:CND")
await self.Step("ProcessMessages:01.03.01:QUE")
self.state._busy = True
dish = await self.SuggestDish(ingredients=["chickpeas", "spinach", "canned tomatoes", "rice"], diet="vegetarian")
# trig? no
# yld? yes, ProcessMessages:01.03.02:QUE needs the result of SuggestDish before replying
await self.Yield("call")
```
""",  # noqa: E501
    "06_chef-1001_SuggestDish_exec2": """\
```python
# execution_id: 2
# recap: ProcessMessages triggered SuggestDish(ingredients=['chickpeas', 'spinach', 'canned tomatoes', 'rice'], diet='vegetarian'); beginning at SuggestDish:01:TNK
# plan: pick one vegetarian dish that uses these ingredients, build $dish and return it
# trig? no
await self.Step("SuggestDish:01:TNK")
# think: Chickpeas + spinach + canned tomatoes is the base of a chickpea and spinach curry; rice is the natural side. Everything is vegetarian and it takes about 30 minutes.
# trig? no
# yld? no
await self.Step("SuggestDish:02:EXE")
self.state.dish = {"name": "Chickpea & Spinach Tomato Curry with Rice", "description": "Chickpeas and spinach simmered in a spiced tomato sauce, served over fluffy rice.", "minutes": 30}
# trig? no
# yld? no, returning
await self.Step("SuggestDish:03:RET")
self.state.__ = "SuggestDish() suggested a 30-minute vegetarian Chickpea & Spinach Tomato Curry with Rice"
await self.Return(self.state.dish)
```
""",  # noqa: E501
    "07_concierge-1000_Main_exec5": """\
```python
# execution_id: 5
# recap: asked Chef(1001) for a vegetarian dish suggestion; System says agent 1001 hasn't replied in 5 seconds
# plan: still at Main:05:YLD; the chef is probably still working on it, keep waiting
# trig? no
await self.Step("Main:05:YLD")
# think: Working out a recipe can reasonably take more than 5 seconds and there is nothing else to do for the user meanwhile, so I keep waiting for the chef.
# yld? yes, Main:06:QUE needs the chef's reply
chef_reply = await self.Yield("agent 1001")
```
""",  # noqa: E501
    "07b_VARIANT_concierge-1000_Main_exec5_ifelse": """\
```python
# execution_id: 5
# recap: asked Chef(1001) for a vegetarian dish suggestion and waited; the reply may be a real answer or a System timeout notice
# plan: if the chef has not answered yet keep waiting at Main:05:YLD, otherwise execute Main:06:QUE
# trig? no
await self.Step("Main:05:YLD")
if chef_reply is None or "hasn't replied" in chef_reply:
    # think: no real answer yet, keep waiting for the chef
    chef_reply = await self.Yield("agent 1001")
else:
    await self.Step("Main:06:QUE")
    await self.Say("user", f"Our chef suggests: {chef_reply}")
# trig? no
# yld? yes, need a fresh LLM turn to look at the reply
await self.Yield("call")
```
""",  # noqa: E501
    "08_chef-1001_ProcessMessages_exec3": """\
```python
# execution_id: 3
# recap: SuggestDish returned Chickpea & Spinach Tomato Curry with Rice (30 minutes)
# plan: ProcessMessages:01.03.01:QUE done, execute ProcessMessages:01.03.02:QUE and reply to Concierge(1000), then return
# trig? no
await self.Step("ProcessMessages:01.03.02:QUE")
await self.Say("agent 1000", f"How about {dish['name']}? {dish['description']} It takes about {dish['minutes']} minutes.")
# trig? no
# yld? no, nothing else to do for this message
await self.Step("ProcessMessages:01.03.03:RET")
self.state.__ = "ProcessMessages() handled Concierge(1000)'s request by running SuggestDish and replying with the suggestion"
await self.Return(dish)
```
""",  # noqa: E501
    "09_concierge-1000_Main_exec6": """\
```python
# execution_id: 6
# recap: Chef(1001) suggested Chickpea & Spinach Tomato Curry with Rice, about 30 minutes
# plan: Main:05:YLD done, execute Main:06:QUE to tell the user, then Main:07:YLD to exit
# trig? no
await self.Step("Main:06:QUE")
await self.Say("user", "Our chef suggests a Chickpea & Spinach Tomato Curry with Rice: chickpeas and spinach simmered in a spiced tomato sauce, served over fluffy rice. It takes about 30 minutes. Enjoy your dinner!")
# trig? no
# yld? yes, Main:07:YLD exits the program
await self.Step("Main:07:YLD")
self.state.__ = "Main() welcomed the user, gathered their ingredients and diet, got a dish suggestion from Chef(1001) and shared it with the user"
await self.Yield("exit")
```
""",  # noqa: E501
}

NAMES = sorted(RESPONSES)
SHARED_REFERENCE = Path("/work/shared/reference/playbooks-style")

EXPECTED_01 = [
    'await self.Step("Main:01:QUE")',
    'await self.Say("user", "Welcome! I\'m your kitchen concierge. Let\'s figure out what you'
    ' can cook tonight with what you already have.")',
    'await self.Step("Main:02:QUE")',
    "self.state.preferences = await self.GatherPreferences()",
    'await self.Step("Main:03:YLD")',
    'await self.Yield("call")',
]
EXPECTED_07B = [
    'await self.Step("Main:05:YLD")',
    'if chef_reply is None or "hasn\'t replied" in chef_reply:\n'
    "    # think: no real answer yet, keep waiting for the chef\n"
    '    chef_reply = await self.Yield("agent 1001")\n'
    "else:\n"
    '    await self.Step("Main:06:QUE")\n'
    '    await self.Say("user", f"Our chef suggests: {chef_reply}")',
    'await self.Yield("call")',
]


def read_response(prefix: str) -> str:
    (name,) = [name for name in NAMES if name.startswith(prefix)]
    return RESPONSES[name]


@pytest.mark.skipif(
    not SHARED_REFERENCE.is_dir(),
    reason="the shared reference directory is not on this machine (the embedded copies are used)",
)
def test_embedded_responses_match_the_shared_reference() -> None:
    """The embedded responses are verbatim copies of the shared reference data."""
    files = SHARED_REFERENCE.glob("*.response.txt")
    assert {p.name.removesuffix(".response.txt"): p.read_text() for p in files} == RESPONSES


def test_response_01_exact_statements() -> None:
    """01: six simple statements; header and '# trig?' comments are skipped."""
    text = read_response("01_")
    assert sources(text) == EXPECTED_01
    assert [s.source for s in one_char_at_a_time(text).statements] == EXPECTED_01


def test_response_07b_exact_statements() -> None:
    """07b: the if/else is ONE statement; the final Yield is neither lost nor glued to it."""
    text = read_response("07b_")
    assert sources(text) == EXPECTED_07B
    result = one_char_at_a_time(text)
    assert [s.source for s in result.statements] == EXPECTED_07B
    assert result.splitter.code_closed
    assert [s.lineno for s in result.statements] == [6, 7, 15]
    # The if/else comes out at the first character of the next column-0 code line (the
    # 'a' of the final await), never at the col-0 comments between them; the last
    # statement at its newline, before the closing fence.
    if_at = result.events[1][1]
    final_line = text.index('await self.Yield("call")')
    assert if_at == final_line + 1
    assert result.events[2][1] == text.index("\n", final_line) + 1


@pytest.mark.parametrize("name", NAMES)
def test_reference_response_matches_ast(name: str) -> None:
    """Every reference response: one statement per top-level AST node, with ast's source."""
    text = RESPONSES[name]
    code = fenced_code(text)
    expected = [ast.get_source_segment(code, node) for node in ast.parse(code).body]
    result = run(text)
    assert result.error is None
    assert [s.source for s in result.statements] == expected
    assert_consistent(result.splitter, result.statements)
    same_ast(result.statements, code)
    assert_emitted_on_time(text)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_reference_response_line_endings(name: str, newline: str) -> None:
    """CRLF and lone CR give the same statements (the text is normalized to LF)."""
    text = RESPONSES[name]
    converted = text.replace("\n", newline)
    assert one_char_at_a_time(converted).statements == run(text).statements
    assert sources(converted) == sources(text)


@FAST
@given(name=st.sampled_from(NAMES), cuts=cut_points())
def test_reference_chunk_invariance(name: str, cuts: list[int]) -> None:
    """Any split of any reference response: same statements, same emission points."""
    assert_chunk_invariant(RESPONSES[name], cuts)


@FAST
@given(cuts=cut_points(800), newline=st.sampled_from(["\n", "\r\n", "\r"]))
def test_07b_chunk_invariance(cuts: list[int], newline: str) -> None:
    """07b in any chunks and line endings: if/else is one statement, then the final Yield."""
    text = read_response("07b_").replace("\n", newline)
    reference = assert_chunk_invariant(text, cuts)
    assert [s.source for s in reference.statements] == EXPECTED_07B
    assert [s.source for s in run(text, cuts).statements] == EXPECTED_07B


# -- block completion -----------------------------------------------------------------------


def test_block_is_not_run_before_its_last_clause() -> None:
    """if/else: nothing until a col-0 line that is not a continuation; then both at once."""
    splitter = StatementSplitter()
    assert splitter.feed("if x:\n    a()\n") == []
    assert splitter.feed("else:\n    b()\n") == []
    statements = splitter.feed("c()\n")
    assert [s.source for s in statements] == ["if x:\n    a()\nelse:\n    b()", "c()"]
    assert splitter.finish() == []


def test_col0_comment_inside_block_does_not_end_it() -> None:
    """A comment at column 0 between the if body and its else keeps the block open."""
    splitter = StatementSplitter()
    assert splitter.feed("if x:\n    a()\n# a comment\n\n") == []
    assert splitter.feed("else:\n    b()\n# another\n") == []
    assert [s.source for s in splitter.feed("c")] == [
        "if x:\n    a()\n# a comment\n\nelse:\n    b()"
    ]


@pytest.mark.parametrize(
    ("after", "emitted_at"),
    [
        ("exit()\n", "exi"),  # "ex" could still be "except"
        ("else_ = 1\n", "else_"),  # word boundary: not the else clause
        ("e = 1\n", "e "),
        ("finally_done()\n", "finally_"),
        ("fin\n", "fin\n"),
        ("(x)\n", "("),
        ('"doc"\n', '"'),
        ("_x = 1\n", "_"),
        ("```\n", "`"),
    ],
)
def test_compound_ends_at_first_decisive_character(after: str, emitted_at: str) -> None:
    """A block ends as soon as the next col-0 line's start shows it is no continuation."""
    splitter = StatementSplitter()
    assert splitter.feed("for v in x:\n    a(v)\n") == []
    for length in range(1, len(after) + 1):
        statements = splitter.feed(after[length - 1])
        if after[:length] == emitted_at:
            assert [s.source for s in statements][:1] == ["for v in x:\n    a(v)"]
            break
        assert statements == []
    else:
        pytest.fail("never emitted")


@pytest.mark.parametrize("clause", ["elif y:", "else:", "except E:", "except* E:", "finally:"])
def test_continuation_clauses_keep_the_block_open(clause: str) -> None:
    """elif/else/except/except*/finally at column 0 continue the compound statement."""
    header = "if x:" if clause.startswith("el") else "try:"
    splitter = StatementSplitter()
    assert splitter.feed(f"{header}\n    a()\n{clause}\n    b()\n") == []
    assert len(splitter.finish()) == 1


def test_decorators_join_their_definition() -> None:
    """Decorator lines (even multi-line ones, with comments between) join the def/class."""
    text = "@dec\n@dec2(1,\n2)\n# note\nasync def f():\n    pass\n@d\nclass C:\n    x = 1\ny()\n"
    assert sources(text) == [
        "@dec\n@dec2(1,\n2)\n# note\nasync def f():\n    pass",
        "@d\nclass C:\n    x = 1",
        "y()",
    ]


def test_match_statement_and_soft_keyword() -> None:
    """match/case is one compound statement; 'match' as a name is a simple statement."""
    text = "match = 1\nmatch x:\n    case 1:\n        a()\n    case _:\n        b()\nz = 2\n"
    splitter = StatementSplitter()
    assert [s.source for s in splitter.feed(text[:10])] == ["match = 1"]
    assert splitter.feed(text[10:-6]) == []
    assert [s.source for s in splitter.feed(text[-6:])] == [
        "match x:\n    case 1:\n        a()\n    case _:\n        b()",
        "z = 2",
    ]


def test_one_line_compound_waits_for_its_else() -> None:
    """'if x: a()' may still get an 'else:' line, so it waits like any block."""
    splitter = StatementSplitter()
    assert splitter.feed("if x: a()\n") == []
    assert splitter.feed("else: b()\n") == []
    assert [s.source for s in splitter.feed("c()\n")] == ["if x: a()\nelse: b()", "c()"]


# -- simple statements ----------------------------------------------------------------------


def test_simple_statement_completes_at_its_newline() -> None:
    """A simple statement comes out with its newline, not before."""
    splitter = StatementSplitter()
    assert splitter.feed("x = 1") == []
    assert [s.source for s in splitter.feed("\n")] == ["x = 1"]


def test_statements_on_one_line_are_one_unit() -> None:
    """'a; b' (also across a backslash continuation) is one statement; a trailing ';' and
    comment are not part of the source."""
    text = "a = 1; b = 2\nc(); \\\n  d()\ne = 3;  # done\n"
    assert sources(text) == ["a = 1; b = 2", "c(); \\\n  d()", "e = 3"]


@pytest.mark.parametrize(
    "text",
    [
        "x = (1,\n2,\n    3)\n",
        "x = [v for v in y\nif v]\n",
        "x = 1 + \\\n2\n",
        "x = '''\nelse:\ny = 1\n```\n# not a comment\n'''\n",
        'x = f"""\n{y!r:>{w}}\n```python\n"""\n',
        "x = 'a\\\nb'\n",
        "call(\n    'a',\n)  # trailing comment\n",
    ],
)
def test_multiline_simple_statement(text: str) -> None:
    """Brackets, long strings (with col-0 code and fence lookalikes) and backslash
    continuations keep the statement open until its logical line ends."""
    result = one_char_at_a_time(text)
    assert len(result.statements) == 1
    assert result.events[0][1] == len(text)
    same_ast(result.statements, text)


def test_non_ascii_offsets_are_characters() -> None:
    """end is a character offset even when the line holds multi-byte characters."""
    text = 'x = "héllo ✓ 🙂"  # comment\ny = "ü"; z = 1\n'
    splitter = StatementSplitter()
    statements = splitter.feed(text)
    assert [s.source for s in statements] == ['x = "héllo ✓ 🙂"', 'y = "ü"; z = 1']
    assert_consistent(splitter, statements)


def test_tabs_and_trailing_whitespace() -> None:
    """Tab indentation and trailing whitespace work."""
    text = "if x:   \n\ta()\t\n\tif y:\n\t\tb()\nelse:\n\tc()\nz = 1   \n"
    assert sources(text) == ["if x:   \n\ta()\t\n\tif y:\n\t\tb()\nelse:\n\tc()", "z = 1"]


# -- fences, line endings, odd responses ----------------------------------------------------


@pytest.mark.parametrize("opening", ["```python", "```py", "``` python ", "```", "  ```python"])
def test_opening_fence_variants(opening: str) -> None:
    """The first non-blank line starting with ``` is a fence, not code."""
    splitter = StatementSplitter()
    assert splitter.feed(f"\n  \n{opening}\nx = 1\n") == [
        Statement(0, len(opening) + 5, len(opening) + 10, "x = 1", 4)
    ]
    assert splitter.feed("```\nafter = 'ignored'\n") == []
    assert splitter.code_closed
    assert splitter.finish() == []


def test_first_line_must_be_complete_to_know_about_the_fence() -> None:
    """Nothing is decided before the first non-blank line is complete."""
    splitter = StatementSplitter()
    assert splitter.feed("``") == []
    assert splitter.feed("`python") == []
    assert splitter.feed("\n") == []
    assert not splitter.code_closed


def test_closing_fence_ends_code_and_pending_block() -> None:
    """The closing fence completes the last block; later text (even code) is ignored."""
    splitter = StatementSplitter()
    assert splitter.feed("```python\nwhile x:\n    a()\n") == []
    assert [s.source for s in splitter.feed("```")] == ["while x:\n    a()"]
    assert not splitter.code_closed  # "```python" could still follow
    assert splitter.feed("\nb()\n```python\nc()\n") == []
    assert splitter.finish() == []
    assert splitter.text.endswith("c()\n")


def test_indented_closing_fence_and_longer_fence() -> None:
    """A backtick-only line (whitespace around it, 3+ backticks) closes the code."""
    assert sources("```python\nif x:\n    a()\n    ```\ny()\n") == ["if x:\n    a()"]
    assert sources("````python\nx()\n````\ny()\n") == ["x()"]


def test_no_fence_means_all_code_and_fence_still_closes() -> None:
    """Without an opening fence everything is code; a ``` line still closes it."""
    splitter = StatementSplitter()
    assert [s.source for s in splitter.feed("x = 1\n```\ny = 2\n")] == ["x = 1"]
    assert splitter.code_closed


def test_fence_inside_string_is_code() -> None:
    """A ``` line inside a triple-quoted string (even inside a block) is not a fence."""
    text = "```python\ndef f():\n    s = '''\n```\n'''\n    return s\n```\n"
    assert sources(text) == ["def f():\n    s = '''\n```\n'''\n    return s"]


def test_final_statement_without_newline_comes_from_finish() -> None:
    """The last statement with no trailing newline is returned by finish()."""
    splitter = StatementSplitter()
    assert splitter.feed("a()\nb()") == [Statement(0, 0, 3, "a()", 1)]
    assert splitter.finish() == [Statement(1, 4, 7, "b()", 2)]
    assert splitter.finish() == []


@pytest.mark.parametrize("tail", ["else", "e", "fin", "```", "  ```"])
def test_unterminated_last_line_after_block(tail: str) -> None:
    """At finish() an unterminated last line is decided like any other line."""
    result = run(f"if x:\n    a()\n{tail}")
    if tail == "else":
        assert isinstance(result.error, IncompleteCodeError)
    else:
        assert result.error is None
        expected = ["if x:\n    a()"] + ([tail] if "`" not in tail else [])
        assert [s.source for s in result.statements] == expected


@pytest.mark.parametrize(
    "text", ["", "\n\n", "```python\n```\n", "# only\n# comments\n", "```python\n# c\n```"]
)
def test_responses_without_statements(text: str) -> None:
    """Empty responses and comment-only responses give no statements and no error."""
    result = one_char_at_a_time(text)
    assert result.error is None
    assert result.statements == []


def test_carriage_return_split_across_chunks_is_one_newline() -> None:
    """'\\r' ending a chunk and '\\n' starting the next are one newline."""
    splitter = StatementSplitter()
    assert [s.source for s in splitter.feed("x = 1\r")] == ["x = 1"]
    assert splitter.feed("\ny = 2\r\r\n") == [Statement(1, 6, 11, "y = 2", 2)]
    assert splitter.feed("") == []
    assert splitter.feed("\n") == []
    assert splitter.text == "x = 1\ny = 2\n\n\n"


@FAST
@given(
    text=st.text(alphabet="ab\r\n", max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=10),
)
def test_text_normalization_is_chunk_invariant(text: str, cuts: list[int]) -> None:
    """text is the input with CRLF and lone CR as LF, however it is chunked."""
    splitter = StatementSplitter()
    bounds = sorted({c for c in cuts if 0 < c < len(text)} | {len(text)})
    previous = 0
    for bound in bounds:
        try:
            splitter.feed(text[previous:bound])
        except SyntaxError:
            break
        previous = bound
    else:
        assert splitter.text == text.replace("\r\n", "\n").replace("\r", "\n")


# -- invalid code ---------------------------------------------------------------------------


def test_certainly_invalid_code_raises_from_feed() -> None:
    """A col-0 line after a unit that cannot parse (nothing open) raises at once."""
    splitter = StatementSplitter()
    assert splitter.feed("```python\n# execution_id: 1\nx = 1\nif x:\n") == [
        Statement(0, 28, 33, "x = 1", 3)
    ]
    with pytest.raises(StatementSyntaxError) as caught:
        splitter.feed("y = 2\n")
    assert not isinstance(caught.value, IncompleteCodeError)
    assert caught.value.lineno == 4  # relative to text, fence and comments included
    assert "line 4" in str(caught.value)
    assert isinstance(caught.value, SyntaxError)
    with pytest.raises(StatementSyntaxError):  # the error sticks
        splitter.feed("z = 3\n")
    with pytest.raises(StatementSyntaxError):
        splitter.finish()


@pytest.mark.parametrize(
    "text",
    [
        "x = (1,\ny = 2\n",  # still inside a bracket: y = 2 may be an argument
        "x = '''\ny = 2\n",  # inside a string
        "x = 1 + \\\ny = 2\n",  # backslash continuation (invalid, but only later)
        "@dec\ndef f():\n    pass\n",  # a decorator waits for its def
        "@dec\n\n# c\n@dec2\nclass C: pass\n",
    ],
)
def test_no_error_while_code_may_still_become_valid(text: str) -> None:
    """feed() does not raise while the pending code can still become valid."""
    StatementSplitter().feed(text)


@pytest.mark.parametrize(
    ("text", "lineno"),
    [
        ("x = = 1\ny = 2\n", 1),
        ("@dec\nx = 1\ny = 2\n", 2),
        ("try:\n    a()\nb()\n", 2),  # Python reports the last body line
        ("    x = 1\ny = 2\n", 1),
        ("Here is the code:\n```python\nx = 1\n```\n", 1),
    ],
)
def test_invalid_code_error_line(text: str, lineno: int) -> None:
    """StatementSyntaxError carries the line number within text, whatever the chunking."""
    for result in (run(text), one_char_at_a_time(text)):
        assert isinstance(result.error, StatementSyntaxError)
        assert not isinstance(result.error, IncompleteCodeError)
        assert result.error.lineno == lineno


@pytest.mark.parametrize(
    ("text", "lineno"),
    [
        ("a()\nx = (1,\n", 2),
        ("a()\nif x:\n", 2),
        ("a()\nif x:\n    y = '''\n", 3),
        ("```python\na()\nif x:\n```\nmore text\n", 3),
        ("```python\na()\ntry:\n    b()\n```", 4),
    ],
)
def test_incomplete_code_at_end(text: str, lineno: int) -> None:
    """finish() (or the closing fence) in the middle of a statement: IncompleteCodeError,
    after every statement completed before it was returned, whatever the chunking."""
    for result in (run(text), one_char_at_a_time(text)):
        assert [s.source for s in result.statements] == ["a()"]
        assert isinstance(result.error, IncompleteCodeError)
        assert isinstance(result.error, SyntaxError)
        assert result.error.lineno == lineno
        assert f"line {lineno}" in str(result.error)


def test_null_byte_is_a_syntax_error() -> None:
    """A NUL character gives a StatementSyntaxError, not ValueError (Python 3.11 parse)."""
    result = run("a()\nx = '\0'\ny = 1\n")
    assert [s.source for s in result.statements] == ["a()"]
    assert isinstance(result.error, StatementSyntaxError)
    assert result.error.lineno == 2


def test_invalid_escape_does_not_warn() -> None:
    """Repeated parsing does not emit the invalid-escape warning (compiling will)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sources("x = '\\d'\nif x:\n    y = '\\d'\nz = 1\n") == [
            "x = '\\d'",
            "if x:\n    y = '\\d'",
            "z = 1",
        ]


def test_error_after_statements_in_the_same_chunk_is_deferred() -> None:
    """Statements completed before an error are returned; the next call raises."""
    splitter = StatementSplitter()
    assert [s.source for s in splitter.feed("a()\nif x:\nb()\nc()\n")] == ["a()"]
    with pytest.raises(StatementSyntaxError):
        splitter.feed("")


def test_feed_after_finish_is_an_error() -> None:
    splitter = StatementSplitter()
    splitter.finish()
    with pytest.raises(RuntimeError):
        splitter.feed("x = 1\n")


def test_statement_is_frozen() -> None:
    statement = Statement(0, 0, 1, "x", 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        statement.index = 1  # type: ignore[misc]


# -- generated programs ---------------------------------------------------------------------

# (template, number of statements); "{i}" is replaced by a unique number.
SIMPLE_TEMPLATES = [
    ("x{i} = {i}", 1),
    ('await self.Step("Main:{i}:QUE")', 1),
    ("a{i} = 1; b{i} = 2", 1),
    ("a{i} = 1;", 1),
    ("y{i} = (1,\n2,\n    3)", 1),
    ("s{i} = '''\n```\nelse:\nx = 1\n# not a comment\n'''", 1),
    ('t{i} = f"""\n{x!r:>{w}}\n```python\nelif y:\n"""', 1),
    ("z{i} = 1 + \\\n2", 1),
    ("call{i}(\n    'a',\n)  # trailing comment", 1),
    ("c{i} = [v for v in range(3)\nif v]", 1),
    ("else_{i} = 1", 1),
    ("e = {i}", 1),
    ("fin{i} = 1", 1),
    ("exc = {i}", 1),
    ("elsewhere = {i}", 1),
    ("finally_ = {i}", 1),
    ("match = {i}", 1),
    ("q{i} = 'a\\\nb'", 1),
    ("w{i} = f\"{{x}} {x}\" f'{y!r}'", 1),
    ('u{i} = "héllo ✓"  # non-ASCII', 1),
    ("p{i}(); \\\n  r{i}()", 1),
]
COMPOUND_TEMPLATES = [
    ("if c{i}:\n    a()\nelif d:\n    b()\n# col-0 comment inside\nelse:\n    c()", 1),
    ("for v{i} in x:\n    a(v{i})\nelse:\n    b()", 1),
    ("while w{i}:\n    break", 1),
    (
        "try:\n    a()\n# comment\nexcept ValueError as exc:\n    b(exc)\n"
        "else:\n    c()\nfinally:\n    d()",
        1,
    ),
    ("try:\n    a()\nexcept* OSError:\n    b()", 1),
    ("with open(p{i}) as f, lock:\n    f.read()", 1),
    ("async for v in y{i}:\n    await z(v)\nelse:\n    pass", 1),
    ("async with lock{i}:\n    pass", 1),
    ("async def f{i}():\n    return await g()", 1),
    (
        "@dec\n@dec2(1,\n2)\n# comment\ndef g{i}(a,\n       b):\n"
        "    '''doc\n```\nx = 1\n'''\n    return a",
        1,
    ),
    ("class C{i}(Base):\n    x = 1\n\n    def m(self):\n        pass", 1),
    ("match cmd{i}:\n    case [a, b]:\n        pass\n    case _:\n        pass", 1),
    ("if x{i}: a()", 1),
    ("if x{i}:\n    s = '''\nelse:\nfoo()\n'''\nelse:\n    pass", 1),
    ("def h{i}():\n    return (1,\n2)", 1),
    ("if (a{i} and\nb):\n    pass", 1),
    ("if x{i}:\n    pass\nelse_ = 1", 2),
    ("for k in d{i}: pass\nelse: pass", 1),
    ("while True:\n    if x:\n        break\n    else:\n        continue", 1),
]
SEPARATORS = ["", "\n", "# comment\n", "\n\n# c\n   \n", "    # indented comment\n", "\t\n"]


@dataclass
class Program:
    """A generated response: ``raw`` is fed, ``code`` is its code with LF newlines."""

    raw: str
    code: str
    count: int
    fenced: bool


@st.composite
def programs(draw: st.DrawFn, bad: str | None = None) -> Program:
    """A response made of random templates; ``bad`` is inserted between two of them."""
    templates = draw(st.lists(st.sampled_from(SIMPLE_TEMPLATES + COMPOUND_TEMPLATES), max_size=7))
    units = [template.replace("{i}", str(number)) for number, (template, _) in enumerate(templates)]
    if bad is not None:
        units.insert(draw(st.integers(0, len(units))), bad)
    parts: list[str] = []
    if draw(st.booleans()):
        parts.append("# execution_id: 1\n# recap: ...\n")
    for unit in units:
        parts.append(unit + "\n")
        parts.append(draw(st.sampled_from(SEPARATORS)))
    code = "".join(parts)
    if draw(st.booleans()):
        code = re.sub(r"(?m)^((?:    )+)", lambda m: "\t" * (len(m.group(1)) // 4), code)
    fenced = draw(st.booleans())
    if fenced:
        opening = draw(st.sampled_from(["```python\n", "\n```py\n", "``` python\n"]))
        closing = draw(st.sampled_from(["```\n", "```", "```\nSome prose.\n```python\nx(\n"]))
        text = opening + code + closing
    elif draw(st.booleans()):
        text = code.rstrip("\n")  # the last statement has no newline
    else:
        text = code
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    count = sum(n for _, n in templates)
    return Program(text.replace("\n", newline), code, count, fenced)


@FAST
@given(program=programs(), cuts=cut_points(1500))
def test_generated_programs(program: Program, cuts: list[int]) -> None:
    """Random compositions of statement templates: chunk invariance, one statement per
    unit, consistent offsets, the statements re-joined have the AST of the whole code,
    and each statement comes out exactly when it is complete."""
    result = assert_chunk_invariant(program.raw, cuts)
    assert result.error is None, result.error
    assert len(result.statements) == program.count
    assert result.splitter.code_closed == program.fenced
    assert_consistent(result.splitter, result.statements)
    same_ast(result.statements, program.code)
    assert_emitted_on_time(program.raw)


# Each can never become valid, whatever follows it.
INVALID_UNITS = ["if x:", "x = = 1", "def f(:", "try:\n    a()", "@dec\nx = 1", "y = (1,", "else:"]


@FAST
@given(data=st.data(), bad=st.sampled_from(INVALID_UNITS), cuts=cut_points(1500))
def test_generated_invalid_programs(data: st.DataObject, bad: str, cuts: list[int]) -> None:
    """An invalid unit between random templates: the same statements, then the same error
    (class, line, message), however the response is chunked."""
    program = data.draw(programs(bad))
    result = assert_chunk_invariant(program.raw, cuts)
    assert isinstance(result.error, StatementSyntaxError)
    assert_consistent(result.splitter, result.statements)
