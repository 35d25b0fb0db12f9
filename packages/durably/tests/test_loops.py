"""Top-level loops that durably steps through (durably._loops): snapshots between
iterations, so that a resume replays at most ``snapshot_every`` operations and one
iteration's, not the whole loop; the format that records it; Python's semantics.

The crash-after-every-checkpoint property for loops of every kind is the ``loops``
program of ``test_resume_points.py``; with real processes and SIGKILL, the generated
programs of ``tests/fuzz``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import test_resume_points as points

from durably._codec import ValueCodec
from durably._executor import StreamingPythonExecutor
from durably._journal import Frame, LoopPosition, SnapshotDoc, upgrade
from durably._loops import loop_of
from durably._metadata import META_KIND
from durably._snapshots import SNAPSHOT_BYTES_PER_OPERATION
from durably.errors import CorruptObjectError, UnsupportedFormatError

HERE = Path(__file__).parent


def _long_loop(tmp_path: Path, awaits: int, kind: str = "for") -> str:
    """A Looper program whose only response is one loop of ``awaits`` awaits."""
    head = {
        "for": f"for i in range({awaits}):\n",
        "while": f"i = 0\nwhile i < {awaits}:\n",
        "enumerate": f"for i, _ in enumerate([None] * {awaits}):\n",
    }[kind]
    step = "    i += 1\n" if kind == "while" else ""
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
@pytest.mark.parametrize("kind", ["for", "while", "enumerate"])
async def test_a_long_loop_resumes_from_a_snapshot_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """300 awaits in one ``for`` (over a range or an enumerated list) or ``while``:
    snapshots every 16 operations inside it,
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
    other document stays format 1, which it reads. (A loop over ``enumerate``: format 3,
    below.)"""
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
    with pytest.raises(UnsupportedFormatError, match="format 4"):
        upgrade({**looping, "v": 4})


def test_a_snapshot_inside_an_enumerate_loop_is_format_3() -> None:
    """A format-2 reader would skip the position's start and hand the loop the items
    instead of (index, item) pairs: such a snapshot is format 3, the others keep theirs."""
    frame = Frame("Main", {})
    frame.loop = LoopPosition(0, 1, ["a", "b"], start=5)
    doc = SnapshotDoc(
        "1000", "Looper", 3, "begin", frame.to_doc(), [], [], [], [], [], {}, None, False, 0
    ).to_doc()
    assert doc["v"] == 3
    restored = SnapshotDoc.from_doc(doc)
    assert restored.frame is not None
    assert Frame.from_doc(restored.frame, {}, default_number=0).loop == frame.loop


@pytest.mark.parametrize("start", [None, 0, -3])
@pytest.mark.parametrize(
    "sequence", [range(3, 40, 4), range(0), [1, "a", None], ("x", 2), "text", []]
)
def test_a_loop_position_goes_through_the_codec(sequence: Any, start: int | None) -> None:
    position = LoopPosition(7, 0, sequence, start)
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
        {"statement": 0, "next": 1, "seq": [1], "start": "0"},
        {"statement": 0, "next": 1, "seq": [1], "start": True},
        {"statement": 0, "next": 1, "seq": None, "start": 0},
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
@pytest.mark.parametrize("shape", ["loop", "statements"])
async def test_a_large_namespace_is_snapshotted_less_often(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    """Each snapshot encodes the whole namespace: at a quiet point (between two
    iterations of a stepped loop, or two statements), one is due once snapshot_every
    operations were journaled and one per SNAPSHOT_BYTES_PER_OPERATION bytes the latest
    snapshot took, so cheap awaits over a 400 KB state do not re-encode it every 16
    operations -- and replay stays bounded by that number."""
    if shape == "loop":
        body = "for i in range(600):\n    await self.Step('Main:01:EXE')\n"
    else:
        body = "i = 0\n" + "await self.Step('Main:01:EXE')\ni += 1\n" * 600
    code = (
        "```python\n"
        "self.state.rows = [f'{k:04d}' * 256 for k in range(400)]\n"
        f"{body}"
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
    due = 400 * 1024 // SNAPSHOT_BYTES_PER_OPERATION  # ~100 operations
    inside = kinds.count("snapshot") - 2  # the first one and the one before the awaits
    assert 1 <= inside <= crash_at // due + 1, kinds.count("snapshot")
    latest = max(seq for seq, kind in enumerate(kinds) if kind == "snapshot")
    assert crash_at - 1 - latest <= due + 16
    second = await points.run("rows", store, every=16, resume=True)
    assert (second.status, second.value) == ("completed", 599 if shape == "loop" else 600)
    # The resumed process knows the restored snapshot's size: it snapshots where the
    # run that never crashed did (the same history, and `show` says the same).
    uninterrupted = points.CrashingStore()
    await points.run("rows", uninterrupted, every=16)
    assert _kinds(store) == _kinds(uninterrupted)


def _program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, *codes: str) -> None:
    """Program ``name``: the Looper agent, whose Main responses are ``codes``."""
    responses = [f"```python\n{code.strip()}\n```" for code in codes]
    script = tmp_path / f"{name}.scripted.json"
    halves = ["```python\nawait self.Return(n // 2)\n```"] * 100
    script.write_text(json.dumps({"Looper.Main": responses, "Looper.Half": halves}))
    monkeypatch.setitem(points.PROGRAMS, name, (HERE / "programs/loops.py", str(script), []))


@pytest.mark.asyncio
@pytest.mark.parametrize("cadence", ["size", "setting"])
@pytest.mark.parametrize("shape", ["loop", "statements"])
async def test_a_crash_during_replay_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shape: str, cadence: str
) -> None:
    """Crash after checkpoint k, resume, crash again at the resumed run's first
    checkpoint, resume: the end equals the uninterrupted run, no line shown twice, no
    LLM call made twice. A resumed run may ask for a snapshot where the run before it
    took none -- while it still replays: when ``snapshot_every`` was changed between the
    two processes ("setting"), or if it did not know the restored snapshot's size (the
    interval of a large namespace, "size"). Such a snapshot would hide the journal
    entries after it (they are in older deltas) and the second resume would run them
    again; none is taken while replay lasts."""
    first_every = 16 if cadence == "setting" else 1
    if shape == "loop":
        body = (
            "for i in range(12):\n"
            "    out.append(await self.Half(i))\n"
            "    await self.Say('user', f'row {i}')\n"
        )
    else:
        body = "".join(
            f"out.append(await self.Half({i}))\nawait self.Say('user', 'row {i}')\n"
            for i in range(12)
        )
    _program(
        tmp_path,
        monkeypatch,
        "twice",
        "self.state.rows = [f'{k:05d}' * 20 for k in range(1000)]\nout = []\n"
        + body
        + "await self.Return(sum(out))",
    )
    reference = await points.run("twice", points.CrashingStore(), every=1)
    assert (reference.status, reference.value) == ("completed", sum(i // 2 for i in range(12)))
    expected = Counter((call[0], call[1]) for call in reference.llm.calls)
    probe = points.CrashingStore()
    await points.run("twice", probe, every=first_every)
    for k in range(2, probe.saves):
        store = points.CrashingStore()
        first = await points.run("twice", store, every=first_every, crash_at=k)
        base = store.saves
        second = await points.run("twice", store, every=1, crash_at=base + 1, resume=True)
        if second.status != "failed":
            continue
        third = await points.run("twice", store, every=1, resume=True)
        said, calls = first.until(k)
        more_said, more_calls = second.until(base + 1)
        assert (third.status, third.value) == (reference.status, reference.value), k
        assert said + more_said + third.said == reference.said, k
        fresh = Counter((c[0], c[1]) for c in calls + more_calls + third.llm.calls if not c[2])
        assert fresh == expected, f"k={k}: LLM calls made twice: {fresh - expected}"


@pytest.mark.asyncio
@pytest.mark.parametrize("policy", ["error", "skip"])
@pytest.mark.filterwarnings("ignore:Main frame local 'job' was not saved")
async def test_a_sequence_no_snapshot_can_hold_runs_as_plain_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    """An iteration puts a value no snapshot can hold (a function, a regex match) in the
    items of the list it goes through: from then on the loop has no quiet point, as it
    would run without durably -- never a failure where Python completes, and, with
    ``on_unserializable = "skip"``, never a snapshot that skipped the frame's position
    (so lost the frame). Crashed after every checkpoint, each resume equals the
    uninterrupted run."""
    jobs = (
        # Under "skip" only: the last job's function is in `job` after the loop, where
        # "error" fails the checkpoint with or without stepping.
        "for job in [{'n': 1}, {'n': 2}, {'n': 3}]:\n"
        "    job['fmt'] = lambda v: f'<{v}>'\n"
        "    await self.Say('user', job['fmt'](job['n']))\n"
        "    done.append(job['n'])\n"
        if policy == "skip"
        else "done.extend([1, 2, 3])\n"
    )
    _program(
        tmp_path,
        monkeypatch,
        "unheld",
        "import re\nfound = []\n"
        "for rec in [{'text': 'a1'}, {'text': 'b2'}, {'text': 'cc'}]:\n"
        "    rec['m'] = re.search(r'[0-9]', rec['text'])\n"
        "    await self.Say('user', f\"{rec['text']} {bool(rec['m'])}\")\n"
        "    found.append(rec['text'])\n"
        "done = []\n" + jobs + "await self.Return([found, done])",
    )
    options = {"on_unserializable": policy}
    reference = await points.run("unheld", points.CrashingStore(), every=1, options=options)
    assert (reference.status, reference.value) == ("completed", [["a1", "b2", "cc"], [1, 2, 3]])
    probe = points.CrashingStore()
    await points.run("unheld", probe, every=1, options=options)
    for k in range(1, probe.saves):
        store = points.CrashingStore()
        first = await points.run("unheld", store, every=1, crash_at=k, options=options)
        assert first.status == "failed"
        second = await points.run("unheld", store, every=1, resume=True, options=options)
        assert (second.status, second.value) == (reference.status, reference.value), k
        assert first.until(k)[0] + second.said == reference.said, k


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
