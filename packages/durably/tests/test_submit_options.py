"""``submit_program`` (``durably submit``) gives the ``[llm]`` options to the program
loader: a ``.pb`` is compiled at submit time, by the configured client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from durably.config import DurabilityConfig
from durably.runner import Program, submit_program

HERE = Path(__file__).parent


@pytest.mark.asyncio
async def test_submit_gives_the_llm_options_to_the_loader(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: list[dict[str, Any]] = []
    load = Program.load.__func__  # type: ignore[attr-defined]

    def spy(cls: type[Program], path: Any, **kwargs: Any) -> Program:
        seen.append(kwargs)
        program: Program = load(cls, path, **kwargs)
        return program

    monkeypatch.setattr(Program, "load", classmethod(spy))
    spec = f"scripted:{HERE / 'programs/counter.scripted.json'}"
    options = {"base_url": "http://127.0.0.1:9", "max_calls": 5}
    execution_id = await submit_program(
        HERE / "programs/counter.py",
        llm=spec,
        llm_options=options,
        store=f"file://{tmp_path}/store",
        config=DurabilityConfig(),
    )
    assert execution_id
    assert seen == [{"llm": spec, "llm_options": options}]
