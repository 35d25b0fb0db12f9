"""Reading a history in bulk (issue 19, resume of long histories): the provider's optional
``_load_many`` and its default, ``load_checkpoints``, the plain-JSON fast path of the
decoder, and a load through a provider that reads many checkpoints at once giving what a
load one checkpoint at a time gives."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import pytest
from test_history import EID, run_counter

from durably import CheckpointManager
from durably._codec import ValueCodec
from durably._codec._decode import decode_plain
from durably._loading import PAGE
from durably.errors import CorruptHistoryError, CorruptObjectError
from durably.storage import CheckpointInfo

from memstore import MemoryStore

PLAIN: list[dict[str, Any]] = [
    {"doc": {"type": "delta", "agent": "1000", "entries": [{"i": 1, "k": "step", "r": None}]}},
    {"a": [1, 2.5, -3, True, False, None, "x"], "b": {"nested": {"deeper": [[], {}, [[1]]]}}},
    {"unicode": "héllo \u2603 \x00 \ud7ff", "big": 2**62, "neg": -(2**62), "f": 1e-300},
    {"empty": {}, "list": [], "zero": 0.0, "negzero": -0.0},
    {"x": 1, "y": "not a root dict"},
    {},
]

NOT_PLAIN: list[dict[str, Any]] = [
    {"t": (1, 2)},
    {"s": {1, 2}},
    {"keys": {1: "int key"}},
    {"b": b"bytes"},
    {"od": OrderedDict(a=1)},
    {"shared": (lambda x: {"one": x, "two": x})([1, 2])},
    {"huge": 2**80},
    {"nan": math.nan},
    {"inf": math.inf},
]


@pytest.mark.parametrize("roots", PLAIN)
def test_plain_documents_decode_as_the_general_decoder_decodes_them(
    roots: dict[str, Any],
) -> None:
    codec = ValueCodec()
    data = codec.encode(roots).data
    fast = decode_plain(data)
    assert fast is not None
    general = codec.decode(data, lambda digest: b"")
    assert fast == general
    assert list(fast) == list(general)
    assert repr(fast) == repr(general)  # the same types, the same order


@pytest.mark.parametrize("roots", NOT_PLAIN)
def test_other_documents_are_left_to_the_general_decoder(roots: dict[str, Any]) -> None:
    codec = ValueCodec()
    data = codec.encode(roots).data
    assert decode_plain(data) is None
    codec.decode(data, lambda digest: b"")  # still decodable the general way


def test_values_split_into_blobs_are_left_to_the_general_decoder() -> None:
    codec = ValueCodec(blob_threshold=256)
    encoded = codec.encode({"big": ["x" * 100 for _ in range(50)]})
    assert encoded.blobs
    assert decode_plain(encoded.data) is None
    assert codec.decode(encoded.data, encoded.blobs.__getitem__)["big"][0] == "x" * 100


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"roots": {}}',
        b'{"durably": 2, "roots": {}}',
        b'{"durably": true, "roots": {}}',
        b'{"durably": 1, "roots": []}',
        b'{"durably": 1, "roots": {"a": {"k": 1}}}',
        b'{"durably": 1, "roots": {"a": ["d", "k"]}}',
        b'{"durably": 1, "roots": {"a": ["d", 1, 2]}}',
        b'{"durably": 1, "roots": {"a": ["zz", 1]}}',
        b'{"durably": 1, "roots": {"a": []}}',
        b'{"durably": 1, "roots": {"a": ["l", ["r", 0]]}}',
    ],
)
def test_malformed_or_foreign_documents_are_left_to_the_general_decoder(data: bytes) -> None:
    assert decode_plain(data) is None


class CountingStore(MemoryStore):
    """Counts the provider calls; optionally reads many checkpoints in one call."""

    def __init__(self, *, bulk: bool) -> None:
        super().__init__()
        self.bulk = bulk
        self.loads = 0
        self.pages: list[list[int]] = []

    async def _load(self, eid: str, seq: int) -> tuple[CheckpointInfo, bytes] | None:
        self.loads += 1
        return await super()._load(eid, seq)

    async def _load_many(
        self, eid: str, seqs: Sequence[int]
    ) -> list[tuple[CheckpointInfo, bytes] | None]:
        self.pages.append(list(seqs))
        if not self.bulk:
            return await super()._load_many(eid, seqs)
        stored = self.checkpoints.get(eid, {})
        return [stored.get(seq) for seq in seqs]


@pytest.mark.asyncio
async def test_load_checkpoints_returns_each_asked_for_in_order_or_none() -> None:
    store = CountingStore(bulk=False)
    await run_counter(store, stop_after=14)
    del store.checkpoints[EID][5]
    found = await store.load_checkpoints(EID, [3, 5, 7, 99])
    assert [None if s is None else s.seq for s in found] == [3, None, 7, None]
    assert found[0] is not None
    assert found[0].data == (await store.load_checkpoint(EID, 3)).data
    assert await store.load_checkpoints(EID, []) == []
    with pytest.raises(ValueError, match="ascending"):
        await store.load_checkpoints(EID, [3, 3])
    with pytest.raises(ValueError, match="ascending"):
        await store.load_checkpoints(EID, [4, 3])


@pytest.mark.asyncio
async def test_a_bulk_read_that_returns_other_checkpoints_is_refused() -> None:
    class Wrong(MemoryStore):
        async def _load_many(
            self, eid: str, seqs: Sequence[int]
        ) -> list[tuple[CheckpointInfo, bytes] | None]:
            found = [self.checkpoints[eid].get(seq) for seq in seqs]
            return found[::-1]

    store = Wrong()
    await run_counter(store, stop_after=14)
    with pytest.raises(CorruptObjectError, match="in order"):
        await store.load_checkpoints(EID, [1, 2])
    with pytest.raises(CorruptObjectError):
        await CheckpointManager(EID, store).load_execution()


@pytest.mark.asyncio
async def test_a_bulk_read_gives_the_same_load_in_pages() -> None:
    one_by_one = CountingStore(bulk=False)
    await run_counter(one_by_one, stop_after=14)
    bulk = CountingStore(bulk=True)
    bulk.checkpoints = {EID: dict(one_by_one.checkpoints[EID])}
    a = await CheckpointManager(EID, one_by_one).load_execution()
    b = await CheckpointManager(EID, bulk).load_execution()
    assert a is not None
    assert b is not None
    assert (a.latest_seq, a.snapshots, a.deltas, a.header, a.status) == (
        b.latest_seq,
        b.snapshots,
        b.deltas,
        b.header,
        b.status,
    )
    assert bulk.loads == 0
    assert one_by_one.loads > 0
    assert all(len(page) <= PAGE for page in bulk.pages)
    flat = [seq for page in bulk.pages for seq in page]
    assert flat == sorted(set(flat))


@pytest.mark.asyncio
@pytest.mark.parametrize("bulk", [False, True])
async def test_the_chain_is_as_strict_through_a_bulk_read(bulk: bool) -> None:
    store = CountingStore(bulk=bulk)
    await run_counter(store, stop_after=14)
    stored = store.checkpoints[EID]
    info, data = stored[8]
    stored[8] = (info, stored[7][1])  # another checkpoint's bytes: decodable, not linked
    with pytest.raises(CorruptHistoryError):
        await CheckpointManager(EID, store).load_execution()
    stored[8] = (info, data)
    del stored[6]
    with pytest.raises(CorruptHistoryError) as missing:
        await CheckpointManager(EID, store).load_execution()
    assert missing.value.missing == (6,)
