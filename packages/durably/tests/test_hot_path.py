"""The per-await path's shortcuts give what the general code gives (issue 19, goal 1).

Each await writes one checkpoint; the work done for it is cut where it repeats itself
(a digest's JSON built by hand for plain arguments, metadata keys checked once, the
lease's metadata built once per lease). These tests pin that the results are the same.
"""

from __future__ import annotations

import json

import pytest

from durably._journal import digest
from durably._journal._records import _DIGEST_JSON, _plain_text
from durably._storetypes import MAX_METADATA_BYTES
from durably.checkpoint import CheckpointManager
from durably.config import DurabilityConfig
from durably.storage import validate_metadata

from memstore import MemoryStore

PLAIN_ARGS = [
    ["step", "Main:01:EXE"],
    ["say", ["user", 'héllo "quoted" \\ back\nline\ttab \x00 \x1f \u2028 😀']],
    ["trigger", "T1"],
    ["x", []],
    ["y", ["", "a"]],
    [],
]
OTHER_ARGS = [
    ["tool:Cook", {"b": 1, "a": [1, 2]}],
    ["n", 1],
    ["nested", [["a"], ["b"]]],
    ["set", {"a", "b"}],
    "not a list",
    ("tuple", "args"),
]


@pytest.mark.parametrize("value", PLAIN_ARGS)
def test_plain_arguments_are_digested_from_the_same_text(value: object) -> None:
    assert _plain_text(value) == _DIGEST_JSON.encode(value)
    assert _plain_text(value) == json.dumps(value, sort_keys=True, ensure_ascii=False)


@pytest.mark.parametrize("value", OTHER_ARGS)
def test_other_arguments_take_the_json_encoder(value: object) -> None:
    assert _plain_text(value) is None
    assert len(digest(value)) == 16


def test_digests_of_plain_arguments_are_unchanged() -> None:
    """Digests are journaled: the same arguments keep the digest older runs recorded."""
    assert digest(["step", "Main:1:EXE"]) == "d15a092c609452f1"
    assert digest(["say", ["user", 'héllo "q" \n\t \x00 \u2028 😀']]) == "f87d910eeca715e7"


def test_arguments_json_cannot_hold_have_a_digest_too() -> None:
    # A dict with tuple keys, or with keys JSON cannot sort (1 beside "b"), passed to a
    # playbook: digesting its call raised TypeError into the LLM's code.
    tuple_keys = {(1, 2): "a", (3, 4): "b"}
    mixed = {1: "a", "b": 2}
    cyclic: list[object] = [1]
    cyclic.append(cyclic)
    for value in (tuple_keys, mixed, cyclic):
        assert len(digest(["tool:Size", [[value], {}]])) == 16
    # stable: the same content in another order or another process gives the same digest
    assert digest([{(3, 4): "b", (1, 2): "a"}]) == digest([tuple_keys])
    assert digest([{"b": 2, 1: "a"}]) == digest([mixed])
    assert digest([tuple_keys]) != digest([{(1, 2): "a", (3, 4): "c"}])
    assert digest([{(1, 2): "a"}]) == "55470d2db2573a47"  # journaled: must not change


def test_metadata_keys_are_checked_every_time() -> None:
    good = {"durably.kind": "delta", "durably.prev": "sha256:" + "0" * 64}
    for _ in range(3):
        assert validate_metadata(good) == good
    with pytest.raises(ValueError, match="invalid metadata key"):
        validate_metadata({**good, "Durably.Kind": "x"})
    with pytest.raises(ValueError, match="invalid metadata key"):
        validate_metadata({**good, 3: "x"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="must be str"):
        validate_metadata({"durably.kind": 3})  # type: ignore[dict-item]


def test_metadata_size_counts_utf8_bytes() -> None:
    key = "k"
    fits = "é" * ((MAX_METADATA_BYTES - len(key)) // 2)  # two bytes a character
    assert validate_metadata({key: fits}) == {key: fits}
    with pytest.raises(ValueError, match="limit"):
        validate_metadata({key: fits + "éé"})
    with pytest.raises(ValueError, match="not valid Unicode"):
        validate_metadata({key: "\ud800"})


class _Info:
    def __init__(self) -> None:
        self.header: dict[str, object] = {}
        self.next_agent_id = 1001

    def manifest(self) -> dict[str, int]:
        return {"1000": 0}


@pytest.mark.asyncio
async def test_owner_metadata_follows_a_new_lease() -> None:
    store = MemoryStore()
    manager = CheckpointManager("run-1", store, config=DurabilityConfig())
    manager.lease = await store.claim("run-1", "first", ttl=60)
    await manager.write(_Info(), "1000", {"type": "snapshot"}, kind="snapshot")
    await manager.write(_Info(), "1000", {"type": "delta"}, kind="delta")
    store.released.add("run-1")
    manager.lease = await store.claim("run-1", "second", ttl=60)
    await manager.write(_Info(), "1000", {"type": "delta"}, kind="delta")
    owners = [
        (info.metadata["durably.owner"], info.metadata["durably.epoch"])
        for info, _ in store.checkpoints["run-1"].values()
    ]
    assert owners == [("first", "1"), ("first", "1"), ("second", "2")]


@pytest.mark.parametrize("ascii_only", [False, True])
def test_metadata_json_is_what_json_dumps_writes(ascii_only: bool) -> None:
    from types import MappingProxyType

    from durably.storage import decode_metadata, encode_metadata

    for metadata in (
        {"durably.kind": "delta", "a.reason": 'é "quoted"\n\u2028 😀'},
        MappingProxyType({"z": "1", "a": "2"}),
    ):
        text = encode_metadata(metadata, ascii_only=ascii_only)
        expected = json.dumps(
            dict(metadata), ensure_ascii=ascii_only, separators=(",", ":"), sort_keys=True
        )
        assert text == expected
        assert decode_metadata(text, "checkpoint 0") == dict(metadata)
    assert encode_metadata({}, ascii_only=ascii_only) == ""
