"""What the suite's self-tests share: the reference's location, outcome helpers and the
module that runs the reference suite against a variant of the example provider."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "memory_provider"
REFERENCE_TESTS = EXAMPLE / "tests" / "test_conformance.py"


def function_name(nodeid: str) -> str:
    """``test_c07_x`` of ``test_variant.py::TestVariant::test_c07_x[param]``."""
    return nodeid.rsplit("::", 1)[-1].split("[", 1)[0]


def clause_of(name: str) -> int:
    """The clause number a suite test's name cites (``test_c07_...`` -> 7)."""
    assert name.startswith("test_c"), name
    return int(name[len("test_c") :].split("_", 1)[0])


def outcomes(
    reprec: pytest.HookRecorder,
) -> tuple[list[pytest.TestReport], list[pytest.TestReport], list[pytest.TestReport]]:
    """The passed, skipped and failed reports of an inline run."""
    passed, skipped, failed = reprec.listoutcomes()
    return (
        list(passed),
        list(skipped),  # type: ignore[arg-type]
        list(failed),  # type: ignore[arg-type]
    )


def variant_module(source: str) -> str:
    """A test module running the reference suite against ``Provider`` (and ``Backdoor``)
    defined by ``source``, which may subclass ``MemoryProvider`` and ``MemoryBackdoor``."""
    header = textwrap.dedent("""
        import dataclasses

        import pytest
        from durably.storage import Capability, Page
        from durably_memory import MemoryProvider, MemoryStore
        from test_reference import MemoryBackdoor
        from test_reference import TestMemoryProvider as Reference

        Backdoor = MemoryBackdoor
    """)
    footer = textwrap.dedent("""

        class TestVariant(Reference):
            @pytest.fixture
            def make_provider(self, store):
                return lambda: Provider(store)

            @pytest.fixture
            def backdoor(self, store):
                return Backdoor(store)
    """)
    return header + textwrap.dedent(source) + footer
