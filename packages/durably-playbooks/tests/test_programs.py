"""What each program of ``test_crash_points.py`` does when it is not interrupted (the
crash tests compare with this run, so it must be the run the program is about), and
``self.state`` as Playbooks' LLM code uses it."""

from __future__ import annotations

from pathlib import Path

import pytest
from crashpoints import StoreKind, run
from test_crash_points import CASES

from durably.config import DurabilityConfig
from durably_playbooks._agent import PlaybooksState


def uninterrupted(name: str, tmp_path: Path) -> tuple[list[str], dict[str, object]]:
    outcome = run(CASES[name], StoreKind(tmp_path), DurabilityConfig(), record=False)
    assert outcome.status == "completed", outcome.result
    return outcome.said, outcome.data


def calls(data: dict[str, object]) -> list[str]:
    return [f"{c['agent']}.{c['playbook']}" for c in data["llm_calls"]]  # type: ignore[attr-defined,index]


@pytest.mark.filterwarnings("ignore:the file store")
def test_trip_nests_three_playbooks_and_asks_the_user_in_the_innermost(tmp_path: Path) -> None:
    said, data = uninterrupted("trip", tmp_path)
    assert said == [
        "Planner: Where would you like to go?",
        "Planner: How many of you are going?",
        "Planner: A day at the lighthouse for 3: the fare is 36 euros.",
    ]
    # Main's one response spans PlanDay's two calls, which span Ask's two.
    assert sorted(calls(data)) == sorted(
        ["Planner.Main"] + ["Planner.PlanDay"] * 2 + ["Planner.Ask"] * 2
    )
    state = data["agents"]["Planner"]["state"]  # type: ignore[index]
    assert state["plan"] == {"place": "lighthouse", "people": 3}
    assert state["fare"] == 36


@pytest.mark.filterwarnings("ignore:the file store")
def test_cake_continues_after_yield_call_through_if_and_else(tmp_path: Path) -> None:
    said, data = uninterrupted("cake", tmp_path)
    assert said == [
        "Baker: Which flavour of cake would you like, and for how many guests?",
        "Baker: We do not bake that one today; may I offer vanilla?",
        "Baker: I suggest 3 tiers for 24 guests.",
        "Baker: Your vanilla cake is ordered.",
    ]
    assert calls(data) == ["Baker.TakeOrder"] * 3
    state = data["agents"]["Baker"]["state"]  # type: ignore[index]
    # The statement after Yield("call") in the if branch did not run.
    assert state["__"] == "TakeOrder() took an order"
    assert (state["flavour"], state["guests"], state["tiers"]) == ("vanilla", 24, 3)


@pytest.mark.filterwarnings("ignore:the file store")
def test_quiz_messages_pick_a_trigger_each(tmp_path: Path) -> None:
    said, data = uninterrupted("quiz", tmp_path)
    assert said == [
        "Host: Question: which planet is known as the red planet?",
        "Host: The judge says: 3 points, well done!",
    ]
    # The greeting ran Welcome, the request to score ran Score (chosen in ProcessMessages).
    assert sorted(calls(data)) == sorted(
        ["Host.Start"] * 2 + ["Judge.ProcessMessages"] * 3 + ["Judge.Welcome", "Judge.Score"]
    )
    agents = data["agents"]
    assert agents["Host"]["state"]["greeting"] == "Good evening, agent 1000! I am ready."  # type: ignore[index]
    assert agents["Judge"]["state"]["total"] == 3  # type: ignore[index]


def test_state_is_a_box_and_an_object() -> None:
    state = PlaybooksState()
    state.a = 1
    state["b"] = 2
    assert (state["a"], state.b, state.get("c"), state.get("c", 5)) == (1, 2, None, 5)
    assert state.setdefault("c", []) == []
    state.c.append(3)
    assert dict(state.items()) == {"a": 1, "b": 2, "c": [3]} == state.to_dict()
    assert (list(state.keys()), len(state), "a" in state) == (["a", "b", "c"], 3, True)
    del state["a"]
    with pytest.raises(KeyError):
        state["a"]
    with pytest.raises(AttributeError):
        state.a  # noqa: B018
