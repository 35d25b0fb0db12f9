"""The suite's own rules: every test is async, marked, cites its clause, and is documented.

The clauses and the tests map onto each other both ways: every clause of the
specification has at least one test, every test is listed under the clause it cites,
and every test the specification lists exists. The specification the distribution
ships (``durably_conformance/conformance.md``, which failing tests quote) is the
repository's ``docs/spec/conformance.md``, byte for byte.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from durably.storage import Capability
from durably_conformance import CAPABILITY_MARKERS, CLAUSES, ProviderSuite
from durably_conformance._clauses import SPEC_FILE, parse_clauses, spec_text

SPEC = Path(__file__).resolve().parents[3] / "docs" / "spec" / "conformance.md"
GUIDE = Path(__file__).resolve().parents[3] / "docs" / "guides" / "writing-a-provider.md"

TESTS: dict[str, Callable[..., Any]] = {
    name: getattr(ProviderSuite, name) for name in dir(ProviderSuite) if name.startswith("test_")
}


def _marks(function: Callable[..., Any]) -> dict[str, pytest.Mark]:
    return {mark.name: mark for mark in getattr(function, "pytestmark", [])}


def _clause_of(function: Callable[..., Any]) -> int:
    return int(_marks(function)["durably_clause"].args[0])


@pytest.mark.parametrize("name", sorted(TESTS))
def test_every_test_is_async_marked_and_cites_its_clause(name: str) -> None:
    function = TESTS[name]
    marks = _marks(function)
    assert inspect.iscoroutinefunction(function), f"{name} must be async"
    assert "asyncio" in marks, f"{name} needs @pytest.mark.asyncio (strict mode)"
    assert marks["asyncio"].kwargs.get("loop_scope") == "function"
    assert "durably_clause" in marks, f"{name} needs @pytest.mark.durably_clause(n)"
    clause = _clause_of(function)
    assert clause in CLAUSES
    assert name.startswith(f"test_c{clause:02d}_"), f"{name} must be named test_c{clause:02d}_..."
    docstring = function.__doc__ or ""
    assert docstring.startswith(f"[C{clause}]"), f"{name}'s docstring must start with [C{clause}]"


def test_every_clause_has_tests() -> None:
    covered = {_clause_of(function) for function in TESTS.values()}
    assert covered == set(CLAUSES)


def test_capability_clauses_are_marked() -> None:
    for name, function in TESTS.items():
        clause = CLAUSES[_clause_of(function)]
        if clause.capability is not None:
            marker = CAPABILITY_MARKERS[Capability(clause.capability)]
            assert marker in _marks(function), f"{name} needs @pytest.mark.{marker}"


def _spec_sections() -> dict[int, tuple[str, str]]:
    if not SPEC.is_file():
        pytest.skip(f"{SPEC} is not in this checkout")
    text = SPEC.read_text()
    headings = list(re.finditer(r"^### C(\d+)\. (.+)$", text, flags=re.MULTILINE))
    sections = {}
    for index, heading in enumerate(headings):
        end = headings[index + 1].start() if index + 1 < len(headings) else len(text)
        sections[int(heading.group(1))] = (heading.group(2).strip(), text[heading.end() : end])
    return sections


def test_the_shipped_spec_is_the_repository_spec() -> None:
    if not SPEC.is_file():
        pytest.skip(f"{SPEC} is not in this checkout")
    assert spec_text() == SPEC.read_text(), (
        f"durably_conformance/{SPEC_FILE} differs from docs/spec/conformance.md; copy it: "
        f"cp docs/spec/conformance.md packages/durably-conformance/src/durably_conformance/"
        f"{SPEC_FILE}"
    )


def test_the_shipped_clauses_have_texts_and_list_every_test() -> None:
    assert sorted(CLAUSES) == list(range(1, len(CLAUSES) + 1))
    listed: dict[str, int] = {}
    for number, clause in CLAUSES.items():
        assert clause.text.count("MUST") >= 1, f"C{number} states no requirement"
        assert "Tests:" not in clause.text, f"C{number}'s text includes its test list"
        assert clause.tests, f"C{number} lists no test"
        for name in clause.tests:
            listed[name] = number
    assert set(listed) == set(TESTS), (
        f"tests the spec does not list: {sorted(set(TESTS) - set(listed))}; "
        f"listed tests that do not exist: {sorted(set(listed) - set(TESTS))}"
    )
    for name, number in listed.items():
        assert _clause_of(TESTS[name]) == number, f"{name} is listed under C{number}"


def test_clause_texts_parse_from_markdown() -> None:
    clauses = parse_clauses(
        "# Spec\n\n## Clauses\n\n### C1. First\n\nIt MUST work\nwell.\n\n"
        "Capability: `SHARED`. Tests: `test_c01_a`,\n`test_c01_b`.\n\n"
        "### C2. Second\n\nA MUST.\n\nCapability: none (`test_c02_x` needs `PERSISTENT`). "
        "Tests: `test_c02_x`.\n\n## Interpretations\n\n- `test_c09_not_a_clause_test`\n"
    )
    assert sorted(clauses) == [1, 2]
    assert clauses[1].title == "First"
    assert clauses[1].text == "It MUST work well."
    assert clauses[1].capability == "shared"
    assert clauses[1].tests == ("test_c01_a", "test_c01_b")
    assert clauses[2].capability is None
    assert clauses[2].tests == ("test_c02_x",)
    assert clauses[1].explain().startswith("C1. First\n\nIt MUST work well.")


def test_the_spec_numbers_and_titles_match_the_suite() -> None:
    sections = _spec_sections()
    assert sorted(sections) == sorted(CLAUSES)
    for number, (title, _body) in sections.items():
        assert title == CLAUSES[number].title, f"C{number}: spec says {title!r}"


def test_the_spec_names_the_tests_of_each_clause() -> None:
    sections = _spec_sections()
    for name, function in TESTS.items():
        number = _clause_of(function)
        assert f"`{name}`" in sections[number][1], f"the spec's C{number} does not list {name}"
    for number, (_title, body) in sections.items():
        for listed in re.findall(r"`(test_c\d+_\w+)`", body):
            assert listed in TESTS, f"the spec's C{number} lists unknown test {listed}"


def test_the_guide_shows_the_boilerplate_the_example_uses() -> None:
    if not GUIDE.is_file():
        pytest.skip(f"{GUIDE} is not in this checkout")
    guide = GUIDE.read_text()
    for needle in (
        "class TestMyProvider(ProviderSuite):",
        "def make_provider(self",
        "def backdoor(self",
        "-p durably_conformance.plugin",
        '[project.entry-points."durably.providers"]',
    ):
        assert needle in guide, needle


def test_the_guide_lists_every_type_and_helper_with_its_signature() -> None:
    if not GUIDE.is_file():
        pytest.skip(f"{GUIDE} is not in this checkout")
    import guide_reference

    assert guide_reference.current(GUIDE.read_text()) == guide_reference.render(), (
        "the reference section of docs/guides/writing-a-provider.md is out of date; "
        "regenerate it: uv run python packages/durably-conformance/tests/guide_reference.py"
    )
