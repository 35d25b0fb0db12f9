"""The numbered clauses of the conformance specification, as data.

The specification ships inside this distribution (``conformance.md``, a verbatim copy
of the repository's ``docs/spec/conformance.md``, checked by the suite's own tests) so
that a provider author who installed the suite from PyPI reads the clause a failing
test cites: the plugin prints its text under the failure.

Tests cite a clause with ``@pytest.mark.durably_clause(n)`` and name it in their
name (``test_c07_...``) so that ``-k c07`` selects one clause.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from importlib import resources

__all__ = ["CLAUSES", "SPEC_FILE", "Clause", "parse_clauses", "spec_text"]

SPEC_FILE = "conformance.md"
"""The specification's file name inside this package."""

_HEADING = re.compile(r"^### C(\d+)\. (.+)$", flags=re.MULTILINE)
_CAPABILITY = re.compile(r"^Capability: `([A-Z_]+)`")


@dataclass(frozen=True, slots=True)
class Clause:
    """One clause of the conformance specification."""

    number: int
    title: str
    capability: str | None = None
    """The :class:`durably.storage.Capability` value the whole clause needs, if any."""
    text: str = ""
    """What the clause requires (its paragraphs, without the list of its tests)."""
    tests: tuple[str, ...] = ()
    """The suite's tests the specification lists for it."""

    @property
    def tag(self) -> str:
        """``"C7"``."""
        return f"C{self.number}"

    def explain(self, width: int = 88) -> str:
        """The clause as printed under a failing test: heading, then the text wrapped."""
        paragraphs = [textwrap.fill(p, width) for p in self.text.split("\n\n") if p]
        return "\n\n".join([f"{self.tag}. {self.title}", *paragraphs])


def spec_text() -> str:
    """The specification shipped with this distribution (Markdown)."""
    return resources.files(__package__).joinpath(SPEC_FILE).read_text(encoding="utf-8")


def parse_clauses(markdown: str) -> dict[int, Clause]:
    """The clauses of a specification text: every ``### C<n>. <title>`` section of its
    ``## Clauses`` part, with the capability named in its ``Capability:`` paragraph."""
    start = markdown.index("\n## Clauses")
    end = markdown.find("\n## ", start + 1)
    part = markdown[start:] if end < 0 else markdown[start:end]
    headings = list(_HEADING.finditer(part))
    clauses: dict[int, Clause] = {}
    for index, heading in enumerate(headings):
        stop = headings[index + 1].start() if index + 1 < len(headings) else len(part)
        body = part[heading.end() : stop]
        paragraphs = [" ".join(p.split()) for p in body.strip().split("\n\n") if p.strip()]
        requirement = [p for p in paragraphs if not p.startswith("Capability:")]
        listing = " ".join(p for p in paragraphs if p.startswith("Capability:"))
        found = _CAPABILITY.match(listing)
        number = int(heading.group(1))
        clauses[number] = Clause(
            number=number,
            title=heading.group(2).strip(),
            capability=found.group(1).lower() if found else None,
            text="\n\n".join(requirement),
            tests=tuple(dict.fromkeys(re.findall(r"`(test_c\d+_\w+)`", body))),
        )
    return clauses


CLAUSES: dict[int, Clause] = parse_clauses(spec_text())
"""Clause number -> clause, from the specification shipped with this distribution."""
