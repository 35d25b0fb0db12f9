"""``show`` at any checkpoint lists the LLM calls that had not ended yet: a response still
streaming, or one received in full whose code was still running. Their call records are
written only when they end, so a view built from the records alone showed no call at all
while the first response's code ran (checkpoints 1-21 of the counter program)."""

from __future__ import annotations

import pytest
from test_history import EID, run_counter

from durably import CheckpointManager
from durably._inspect import describe_execution, render_show

from memstore import MemoryStore


@pytest.mark.asyncio
async def test_every_checkpoint_shows_the_calls_in_progress() -> None:
    store = MemoryStore()
    await run_counter(store)
    manager = CheckpointManager(EID, store)
    views = [await describe_execution(manager, at=seq) for seq in sorted(store.checkpoints[EID])]
    final = views[-1]
    assert final["llm_calls_in_progress"] == []
    ended = {(c["id"], c["index"]): c for c in final["llm_calls"]}

    complete_seen = 0
    for seq, view in enumerate(views):
        assert view is not None
        shown = view["llm_calls"] + view["llm_calls_in_progress"]
        if seq > 0:  # checkpoint 0 is the execution's start, before any LLM call
            assert shown, f"checkpoint {seq}: no LLM call shown while the program runs"
        for call in view["llm_calls_in_progress"]:
            # The same call ends later, with the text received so far as its prefix.
            record = ended[(call["id"], call["index"])]
            assert (record["playbook"], record["prompt"]) == (call["playbook"], call["prompt"])
            # Both are prefixes of what the LLM sent: the record keeps the response up to
            # the statement that ended it (a Return, a Yield), the view what had arrived.
            response, received = record["response"], call["response"]
            assert response.startswith(received) or received.startswith(response), seq
            if call["complete"]:
                complete_seen += 1
                assert received.startswith(response), seq
        text = render_show(view)
        for call in view["llm_calls_in_progress"]:
            how = "its code running" if call["complete"] else "streaming"
            assert f"in progress: {call['agent']}.{call['playbook']} (" in text
            assert how in text
    assert complete_seen > 0, "no checkpoint with a whole response whose code still ran"
