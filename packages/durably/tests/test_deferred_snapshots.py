"""``on_unserializable = "replay"``: a frame variable no snapshot can hold (a
generator, ``zip(...)``, a dict view) makes the agent's snapshots wait until it is gone.
Every operation is journaled as always, so a resume replays from the snapshot before and
ends as the uninterrupted run; under ``"error"`` the same program fails the checkpoint."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import test_resume_points as points

from durably._metadata import META_KIND
from durably.errors import DurablyWarning

HERE = Path(__file__).parent
REPLAY = {"on_unserializable": "replay"}

CODE = (
    "names = ['ann', 'bob', 'cy']\n"
    "pairs = zip(names, range(3))\n"
    "first = next(pairs)\n"
    "await self.Say('user', f'first {first}')\n"
    "squares = (n * n for n in range(5))\n"
    "await self.Say('user', f'{next(squares)} {next(squares)}')\n"
    "rest = list(pairs)\n"
    "await self.Say('user', f'rest {rest}')\n"
    "del pairs\n"
    "total = sum(squares)\n"
    "del squares\n"
    "await self.Say('user', f'total {total}')\n"
    "view = {'a': 1}.items()\n"
    "await self.Say('user', f'view {list(view)}')\n"
    "del view\n"
    "await self.Say('user', 'done')\n"
    "await self.Return([total, rest])\n"
)


def _program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "deferred.scripted.json"
    halves = ["```python\nawait self.Return(n // 2)\n```"] * 10
    script.write_text(json.dumps({"Looper.Main": [f"```python\n{CODE}```"], "Looper.Half": halves}))
    monkeypatch.setitem(points.PROGRAMS, "deferred", (HERE / "programs/loops.py", str(script), []))


def _kinds(store: points.CrashingStore) -> list[str]:
    stored = store.checkpoints["run"]
    return [stored[seq][0].metadata[META_KIND] for seq in sorted(stored)]


@pytest.mark.asyncio
@pytest.mark.filterwarnings("ignore::durably.errors.DurablyWarning")
@pytest.mark.parametrize("keep_last", [0, 2])
async def test_a_value_no_snapshot_can_hold_defers_snapshots_and_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_last: int
) -> None:
    """Crashed after every checkpoint (with retention pruning too: it keeps what a resume
    from the older snapshot needs), each resume equals the uninterrupted run."""
    _program(tmp_path, monkeypatch)
    reference = await points.run("deferred", points.CrashingStore(), every=1, options=REPLAY)
    assert (reference.status, reference.value) == ("completed", [29, [("bob", 1), ("cy", 2)]])
    probe = points.CrashingStore()
    await points.run("deferred", probe, every=1, options=REPLAY)
    kinds = _kinds(probe)
    # Snapshots after every statement, except while pairs, squares or view lived: the
    # Says of "first", the two squares and "rest", and "view" are followed by deltas only.
    assert kinds.count("snapshot") < kinds.count("delta"), kinds
    for k in range(1, probe.saves):
        store = points.CrashingStore()
        first = await points.run(
            "deferred", store, every=1, crash_at=k, keep_last=keep_last, options=REPLAY
        )
        assert first.status == "failed"
        second = await points.run(
            "deferred", store, every=1, resume=True, keep_last=keep_last, options=REPLAY
        )
        assert (second.status, second.value) == (reference.status, reference.value), k
        assert first.until(k)[0] + second.said == reference.said, k
        assert second.transcript == reference.transcript, k


@pytest.mark.asyncio
async def test_each_variable_that_defers_a_snapshot_is_warned_about_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _program(tmp_path, monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = await points.run("deferred", points.CrashingStore(), every=1, options=REPLAY)
    assert outcome.status == "completed"
    messages = [str(w.message) for w in caught if issubclass(w.category, DurablyWarning)]
    assert len(messages) == 3, messages
    assert any("Main frame local 'pairs': zip is not serializable" in m for m in messages)
    assert any("'squares': generator is not serializable" in m for m in messages)
    assert any("'view': dict_items is not serializable" in m for m in messages)
    assert all("not snapshotted while it holds this value" in m for m in messages)


@pytest.mark.asyncio
async def test_under_error_the_same_program_fails_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _program(tmp_path, monkeypatch)
    outcome = await points.run(
        "deferred", points.CrashingStore(), every=1, options={"on_unserializable": "error"}
    )
    assert outcome.status == "failed"
    assert "Main frame local 'pairs': zip is not serializable" in str(outcome.value)


@pytest.mark.asyncio
async def test_a_state_value_no_snapshot_can_hold_still_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "state.scripted.json"
    code = "self.state.gen = (n for n in range(3))\nawait self.Say('user', 'x')\n"
    script.write_text(json.dumps({"Looper.Main": [f"```python\n{code}await self.Return(1)\n```"]}))
    monkeypatch.setitem(points.PROGRAMS, "state", (HERE / "programs/loops.py", str(script), []))
    outcome = await points.run("state", points.CrashingStore(), every=1, options=REPLAY)
    assert outcome.status == "failed"
    assert "state 'gen': generator is not serializable" in str(outcome.value)
