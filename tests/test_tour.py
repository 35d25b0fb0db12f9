"""`docs/guides/tour.md` is what the commands it shows print: the page is regenerated
from fresh runs (by `docs/guides/tour.py`, as its maintainer would) and compared with the
committed one, with what differs between any two runs masked (times, ages, the dead
owner's host and pid, byte counts that carry the owner's pid)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from conftest import ROOT

SCRIPT = ROOT / "docs" / "guides" / "tour.py"
PAGE = ROOT / "docs" / "guides" / "tour.md"

MASKS = [
    (r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d", "TIME"),
    (r"\b\d+ (?:s|min|h|d) ago\b", "AGO"),
    (r"over from \S+: process \d+ is gone", "over from HOST:PID: process PID is gone"),
    (r"\b\d{1,3}(?:,\d{3})+\b", "BYTES"),
    (r"[ \t]+", " "),  # columns realign around masked values of another width
]


def mask(text: str) -> str:
    for pattern, replacement in MASKS:
        text = re.sub(pattern, replacement, text)
    return text


def test_the_tour_page_is_what_the_commands_print(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("durably_tour", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    tour = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tour)
    out = tmp_path / "tour.md"
    assert tour.main(["--output", str(out)]) == 0
    fresh = out.read_text()
    for needle in (
        "kitchen-2 crashed",
        "killed by signal 9",
        "took execution kitchen-2 over",
        "kitchen-2 completed",
        "final (completed)",
        "no difference in state, transcript, inputs, LLM calls or result",
    ):
        assert needle in re.sub(r"[ \t]+", " ", fresh), needle
    assert mask(PAGE.read_text()) == mask(fresh), (
        "docs/guides/tour.md is out of date: run `uv run python docs/guides/tour.py`"
    )


def test_the_masks_keep_what_matters() -> None:
    """The comparison is not vacuous: a changed word or a missing line is a difference."""
    page = PAGE.read_text()
    assert mask(page) != mask(page.replace("crashed", "stopped", 1))
    assert mask(page) != mask(page.replace("Concierge: Welcome!", "Concierge: Hello!", 1))
    lines = page.splitlines()
    assert mask(page) != mask("\n".join(lines[:-3] + lines[-2:]))
