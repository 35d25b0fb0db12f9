"""Top-level loops that durably steps through (durably._loops): snapshots between
iterations, so that a resume replays at most ``snapshot_every`` operations and one
iteration's, not the whole loop; the format that records it; Python's semantics.

The crash-after-every-checkpoint property for loops of every kind is the ``loops``
program of ``test_resume_points.py``; with real processes and SIGKILL, the generated
programs of ``tests/fuzz``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import test_resume_points as points

from durably._codec import ValueCodec
from durably._executor import StreamingPythonExecutor
from durably._journal import Frame, LoopPosition, SnapshotDoc, upgrade
from durably._loops import LOOP_BYTES_PER_OPERATION, loop_of
from durably._metadata import META_KIND
from durably.errors import CorruptObjectError, UnsupportedFormatError

HERE = Path(__file__).parent


def _long_loop(tmp_path: Path, awaits: int, kind: str = "for") -> str:
    """A Looper program whose only response is one loop of ``awaits`` awaits."""
    head = f"for i in range({awaits}):\n" if kind == "for" else f"i = 0\nwhile i < {awaits}:\n"
    step = "" if kind == "for" else "    i += 1\n"
    code = (
        "```python\n"
        "self.state.seen = []\n"
        f"{head}{step}"
        "    self.state.seen.append(i)\n"
        "    await self.Step('Main:01:EXE')\n"
        "await self.Return(len(self.state.seen))\n"
        "```"
    )
    script = tmp_path / "long.scripted.json"
    script.write_text(json.dumps({"Looper.Main": [code]}))
    return str(script)


def _kinds(store: points.CrashingStore) -> list[str]:
    stored = store.checkpoints["run"]
    return [stored[seq][0].metadata[META_KIND] for seq in sorted(stored)]


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["for", "while"])
async def test_a_long_loop_resumes_from_a_snapshot_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """300 awaits in one ``for`` (or ``while``): snapshots every 16 operations inside it,
    so a crash near its end resumes from a snapshot at most 16 operations back and
    replays only those; the resumed run ends as the uninterrupted one."""
    script = _long_loop(tmp_path, 300, kind)
    monkeypatch.setitem(points.PROGRAMS, "long", (HERE / "programs/loops.py", script, []))
    reference = await points.run("long", points.CrashingStore(), every=16)
    assert (reference.status, reference.value) == ("completed", 300)

    store = points.CrashingStore()
    crash_at = 290
    first = await points.run("long", store, every=16, crash_at=crash_at)
    assert first.status == "failed"
    kinds = _kinds(store)
    assert len(kinds) == crash_at
    latest = max(seq for seq, kind in enumerate(kinds) if kind == "snapshot")
    assert crash_at - 1 - latest <= 16, f"replays {crash_at - 1 - latest} operations"
    assert kinds.count("snapshot") >= 280 // 16

    second = await points.run("long", store, every=16, resume=True)
    assert (second.status, second.value) == ("completed", 300)
    assert second.states == reference.states


def test_a_snapshot_inside_a_loop_is_format_2_and_no_other_is() -> None:
    """An older durably would resume the loop from its start over a namespace already
    inside it: a snapshot holding a loop position is format 2, which it refuses; every
    other document stays format 1, which it reads."""
    frame = Frame("Main", {})
    plain = SnapshotDoc(
        "1000", "Looper", 3, "begin", frame.to_doc(), [], [], [], [], [], {}, None, False, 0
    ).to_doc()
    assert "v" not in plain
    frame.loop = LoopPosition(0, 5, range(10))
    looping = SnapshotDoc(
        "1000", "Looper", 3, "begin", frame.to_doc(), [], [], [], [], [], {}, None, False, 0
    ).to_doc()
    assert looping["v"] == 2
    assert upgrade(looping) is looping
    restored = SnapshotDoc.from_doc(looping)
    assert restored.frame is not None
    assert Frame.from_doc(restored.frame, {}, default_number=0).loop == frame.loop
    with pytest.raises(UnsupportedFormatError, match="format 3"):
        upgrade({**looping, "v": 3})


@pytest.mark.parametrize(
    "sequence", [range(3, 40, 4), range(0), [1, "a", None], ("x", 2), "text", []]
)
def test_a_loop_position_goes_through_the_codec(sequence: Any) -> None:
    position = LoopPosition(7, 0, sequence)
    codec = ValueCodec()
    enc = codec.encode({"frame": position.to_doc()})
    back = LoopPosition.from_doc(codec.decode(enc.data, enc.blobs.__getitem__)["frame"])
    assert back == position
    assert type(back.sequence) is type(sequence)


def test_the_sequence_a_loop_shares_with_the_namespace_stays_one_object() -> None:
    """A loop over a list the namespace (or the state) holds, which its body appends to:
    restored, the loop goes on over the same list object, as the appends need."""
    items = ["a", "b"]
    codec = ValueCodec()
    roots = {"frame": LoopPosition(0, 1, items).to_doc(), "locals": {"items": items}}
    enc = codec.encode(roots)
    back = codec.decode(enc.data, enc.blobs.__getitem__)
    assert LoopPosition.from_doc(back["frame"]).sequence is back["locals"]["items"]


@pytest.mark.parametrize(
    "doc",
    [
        {"statement": 0, "next": 1, "seq": {"range": [0, 5]}},
        {"statement": 0, "next": 1, "seq": {"range": [0, 5, 1], "x": 1}},
        {"statement": 0, "next": 1, "seq": {"a": 1}},
        {"statement": 0, "next": 1, "seq": 5},
        {"statement": "0", "next": 1, "seq": [1]},
        {"statement": 0, "next": -1, "seq": [1]},
        {"statement": 0, "seq": [1]},
    ],
)
def test_a_damaged_loop_position_is_a_typed_error(doc: dict[str, Any]) -> None:
    with pytest.raises(CorruptObjectError, match="loop position is damaged"):
        LoopPosition.from_doc(doc)


def test_a_position_past_the_end_of_its_list_is_not_damage() -> None:
    """A body that empties the list it loops over leaves the next index past its end:
    the loop ends there, after a resume as without one."""
    assert LoopPosition.from_doc({"statement": 0, "next": 3, "seq": [1]}).next == 3


@pytest.mark.asyncio
async def test_stepping_changes_nothing_a_program_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loops program run with its loops stepped and as plain Python statements: the
    same result, lines, states, transcript and LLM prompts (the crash tests compare
    stepped runs with each other; this compares them with Python)."""
    stepped = await points.run("loops", points.CrashingStore(), every=1)
    monkeypatch.setattr(StreamingPythonExecutor, "_stepped", lambda self, source: None)
    plain = await points.run("loops", points.CrashingStore(), every=1)
    assert stepped.status == plain.status == "completed"
    assert stepped.value == plain.value
    assert stepped.said == plain.said
    assert stepped.states == plain.states
    assert stepped.transcript == plain.transcript
    assert [p[3] for p in stepped.prompts] == [p[3] for p in plain.prompts]


@pytest.mark.asyncio
async def test_a_loop_over_a_large_namespace_snapshots_less_often(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each snapshot encodes the whole namespace: inside a loop, one is due once
    snapshot_every operations were journaled and one per LOOP_BYTES_PER_OPERATION bytes
    the latest snapshot took, so a loop of cheap awaits over a 400 KB state does not
    re-encode it every 16 operations -- and replay stays bounded by that number."""
    code = (
        "```python\n"
        "self.state.rows = [f'{k:04d}' * 256 for k in range(400)]\n"
        "for i in range(600):\n"
        "    await self.Step('Main:01:EXE')\n"
        "await self.Return(i)\n"
        "```"
    )
    script = tmp_path / "rows.scripted.json"
    script.write_text(json.dumps({"Looper.Main": [code]}))
    monkeypatch.setitem(points.PROGRAMS, "rows", (HERE / "programs/loops.py", str(script), []))
    store = points.CrashingStore()
    crash_at = 560
    first = await points.run("rows", store, every=16, crash_at=crash_at)
    assert first.status == "failed"
    kinds = _kinds(store)
    due = 400 * 1024 // LOOP_BYTES_PER_OPERATION  # ~100 operations
    inside = kinds.count("snapshot") - 2  # the first one and the one before the loop
    assert 1 <= inside <= crash_at // due + 1, kinds.count("snapshot")
    latest = max(seq for seq, kind in enumerate(kinds) if kind == "snapshot")
    assert crash_at - 1 - latest <= due + 16
    second = await points.run("rows", store, every=16, resume=True)
    assert (second.status, second.value) == ("completed", 599)


@pytest.mark.parametrize(
    ("source", "stepped"),
    [
        ("for i in range(3):\n    await f()", True),
        ("for i in x:\n    pass\nelse:\n    await f()", True),
        ("for i in x:\n    async with y:\n        pass", True),
        ("for i in range(3):\n    g(i)", False),  # no await: nothing to gain
        ("async for i in x:\n    await f()", False),  # an async iterator's position
        ("while True:\n    await f()", True),
        ("while await f():\n    pass", True),
        ("while x:\n    g()", False),
        ("x = 1", False),
        ("for i in (:", False),  # the executor reports the syntax error
    ],
)
def test_which_loops_are_stepped(source: str, stepped: bool) -> None:
    assert (loop_of(source) is not None) is stepped
