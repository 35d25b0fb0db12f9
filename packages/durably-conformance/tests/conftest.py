"""Fixtures of the suite's self-tests (which run inner pytest sessions with pytester)."""

from __future__ import annotations

import pytest
from selftest_kit import EXAMPLE, REFERENCE_TESTS


@pytest.fixture
def suite_dir(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory holding the reference test module (as ``test_reference.py``),
    configured as the guide tells third parties to configure theirs."""
    if not REFERENCE_TESTS.is_file():
        pytest.skip(f"the example provider is not in this checkout ({EXAMPLE})")
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.syspathinsert(EXAMPLE / "src")
    pytester.makepyfile(test_reference=REFERENCE_TESTS.read_text())
    return pytester
