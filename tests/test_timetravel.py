"""Resume from any call: fork at every LLM call, resume, compare; fork and diverge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import KITCHEN, PROGRAM_CASES, durably, show

COMPARED = ("transcript", "agents", "llm_calls", "result")


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    store = f"file://{tmp_path_factory.mktemp('tt')}/store"
    case = PROGRAM_CASES["kitchen"]
    done = durably(*case.run_args(store, "original"))
    assert done.code == 0, done.err
    return store, show(store, "original")


def test_history_lists_checkpoints_with_llm_call_numbers(
    original: tuple[str, dict[str, object]],
) -> None:
    store, data = original
    listing = durably("history", "original", "--json", "--store", store)
    assert listing.code == 0, listing.err
    points = json.loads(listing.out)
    assert [p["seq"] for p in points] == list(range(len(points)))
    counts = [p["llm_calls"] for p in points]
    assert counts == sorted(counts)
    assert counts[-1] == len(data["llm_calls"]) == 8  # type: ignore[arg-type]


@pytest.mark.parametrize("call", range(1, 9))
def test_fork_at_every_llm_call_and_resume_equals_the_original(
    original: tuple[str, dict[str, object]],
    call: int,
) -> None:
    store, data = original
    forked = durably(
        "fork",
        "original",
        "--at-llm-call",
        str(call),
        "--execution-id",
        f"fork-{call}",
        "--store",
        store,
    )
    assert forked.code == 0, forked.err
    assert forked.out.strip() == f"fork-{call}"
    resumed = durably("resume", f"fork-{call}", "--store", store)
    assert resumed.code == 0, resumed.err
    branch = show(store, f"fork-{call}")
    for key in COMPARED:
        assert branch[key] == data[key], (call, key)
    # the original is untouched
    assert show(store, "original") == data


def test_fork_then_another_script_diverges_and_the_original_is_unchanged(
    original: tuple[str, dict[str, object]],
    tmp_path: Path,
) -> None:
    store, data = original
    script = json.loads((KITCHEN / "kitchen.scripted.json").read_text())
    last = script["Concierge.Main"][2]
    script["Concierge.Main"][2] = last.replace("Our chef suggests", "Tonight, try")
    changed = tmp_path / "changed.json"
    changed.write_text(json.dumps(script))
    # right after call 7 (the chef's reply was received), before Main's last call
    forked = durably(
        "fork", "original", "--at-llm-call", "7", "--execution-id", "branch", "--store", store
    )
    assert forked.code == 0, forked.err
    resumed = durably("resume", "branch", "--llm", f"scripted:{changed}", "--store", store)
    assert resumed.code == 0, resumed.err
    assert "Tonight, try" in resumed.out
    branch = show(store, "branch")
    assert branch["transcript"][:-1] == data["transcript"][:-1]  # type: ignore[index]
    assert branch["transcript"][-1]["text"].startswith("Tonight, try")
    assert branch["llm_calls"][:7] == data["llm_calls"][:7]  # type: ignore[index]
    assert branch["llm_calls"][7]["response"] != data["llm_calls"][7]["response"]  # type: ignore[index]
    assert show(store, "original") == data


def test_fork_at_a_checkpoint_number_and_show_and_diff(
    original: tuple[str, dict[str, object]],
) -> None:
    store, data = original
    at = durably("show", "original", "--at", "12", "--json", "--store", store)
    assert at.code == 0, at.err
    then = json.loads(at.out)
    assert len(then["transcript"]) < len(data["transcript"])  # type: ignore[arg-type]
    diffed = durably("diff", "original", "3", "20", "--json", "--store", store)
    assert diffed.code == 0, diffed.err
    change = json.loads(diffed.out)
    assert change["agents"]["Concierge"]["state"]["added"]["diet"] == "vegetarian"
    assert any(e["kind"] == "yield" for e in change["journal"])
    assert change["llm_calls"] > 0
    forked = durably("fork", "original", "--at", "12", "--execution-id", "at-12", "--store", store)
    assert forked.code == 0, forked.err
    assert durably("resume", "at-12", "--store", store).code == 0
    assert {k: show(store, "at-12")[k] for k in COMPARED} == {k: data[k] for k in COMPARED}


def test_fork_at_the_end_is_refused(original: tuple[str, dict[str, object]]) -> None:
    store, data = original
    last = int(data["latest_seq"])  # type: ignore[call-overload]
    refused = durably("fork", "original", "--at", str(last), "--store", store)
    assert refused.code == 1
    assert "nothing left to run" in refused.err
