"""The codec's fast path for small plain documents writes what the general encoder writes.

:func:`durably._codec._plain.plain_document` writes most checkpoints (an agent's delta at
an ``await``) in one pass; for anything else it gives up and the general encoder writes
the document. Either way :meth:`ValueCodec.encode` must give the same bytes as the
general encoder alone: the checkpoint format does not depend on which path wrote it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durably._codec import ValueCodec
from durably._codec._format import BIG_INT
from durably._codec._plain import plain_document
from durably.errors import SerializationError

THRESHOLD = 256  # the smallest blob threshold: nodes over it are chunked

DELTA = {
    "type": "delta",
    "agent": "1000",
    "entries": [{"i": 3, "k": "step", "d": "15271d0c02fbe853", "r": None}],
    "llm": [],
    "manifest": {"1000": 0},
    "next_agent_id": 1001,
}


def _general(codec: ValueCodec, roots: dict[str, Any]) -> bytes:
    return codec._encode_general(roots, None).data


def _same(codec: ValueCodec, roots: dict[str, Any]) -> bytes | None:
    """Check that encode() gives the general encoder's bytes; return the fast path's."""
    general = _general(codec, roots)
    assert codec.encode(roots).data == general
    fast = plain_document(roots, codec._blob_threshold, codec.FORMAT)
    assert fast is None or fast == general
    return fast


def test_a_delta_takes_the_fast_path_and_reads_back() -> None:
    codec = ValueCodec()
    fast = _same(codec, {"doc": DELTA})
    assert fast is not None
    assert codec.decode(fast, lambda digest: b"") == {"doc": DELTA}


@pytest.mark.parametrize(
    "value",
    [
        "",
        'héllo "q" \\ \n\t \x00 \u2028 😀',
        0,
        -1,
        BIG_INT - 1,
        -BIG_INT + 1,
        True,
        False,
        None,
        [],
        {},
        [[], {}, [[]]],
        {"a": {"b": {"c": [1, "x", None, True]}}},
        {"": 2},
        "x" * (THRESHOLD - 12),  # ["d","x","xx...x"]: exactly the threshold
    ],
)
def test_plain_values_take_the_fast_path(value: Any) -> None:
    assert _same(ValueCodec(blob_threshold=THRESHOLD), {"v": {"x": value}})


class _Str(str):
    pass


class _Dict(dict[str, Any]):
    pass


def _shared() -> dict[str, Any]:
    inner = [1, 2]
    return {"a": inner, "b": inner}


def _deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        1.5,
        BIG_INT,
        -BIG_INT,
        (1, 2),
        {1, 2},
        b"bytes",
        {1: "int key"},
        {None: "None key"},
        OrderedDict(a=1),
        _shared(),  # the second occurrence is a reference
        _deep(40),
        "x" * (THRESHOLD - 11),  # the node is one character over the threshold
        ["x" * 100, "y" * 100, "z" * 100],  # the list's node is chunked
    ],
)
def test_other_values_take_the_general_encoder(value: Any) -> None:
    assert _same(ValueCodec(blob_threshold=THRESHOLD), {"v": {"x": value}}) is None


@pytest.mark.parametrize("value", [_Str("a str subclass"), _Dict(a=1)])
def test_subclasses_of_plain_types_are_not_plain(value: Any) -> None:
    roots = {"v": {"x": value}}
    assert plain_document(roots, THRESHOLD, ValueCodec.FORMAT) is None
    with pytest.raises(SerializationError, match="is not serializable"):
        ValueCodec().encode(roots)


def test_a_root_that_is_not_a_container_takes_the_general_encoder() -> None:
    assert _same(ValueCodec(), {"v": "text", "n": 1}) is None


def test_a_container_in_two_roots_is_a_reference() -> None:
    shared = {"k": [1]}
    assert _same(ValueCodec(), {"state": shared, "locals": {"s": shared}}) is None


def test_non_str_root_names_still_raise() -> None:
    with pytest.raises(TypeError, match="root names must be str"):
        ValueCodec().encode({1: "x"})  # type: ignore[dict-item]


_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(BIG_INT + 4), max_value=BIG_INT + 4)
    | st.integers(min_value=-1000, max_value=1000)
    | st.text(max_size=40)
    | st.text(alphabet="ab", min_size=100, max_size=300)
    | st.floats(allow_nan=True)
)
_VALUES = st.recursive(
    _LEAVES,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=8), children, max_size=6)
        | st.dictionaries(st.integers(0, 3), children, max_size=2)
        | st.tuples(children, children)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["doc", "state", "locals"]), _VALUES, max_size=3))
def test_encode_gives_the_general_encoders_bytes(roots: dict[str, Any]) -> None:
    _same(ValueCodec(blob_threshold=THRESHOLD), roots)
    _same(ValueCodec(), roots)


class _Held:
    """Stands for what a caller holds while it decodes (a loader's checkpoints)."""


def _decode_and_encode_giving_up() -> Any:
    import weakref

    from durably._codec._decode import decode_plain
    from durably._codec._format import FORMAT

    held = _Held()
    for _ in range(3):  # the leak grew with every give-up
        assert decode_plain(b'{"durably":%d,"roots":{"x":["z",1]}}' % FORMAT) is None
        assert plain_document({"x": [1.5]}, THRESHOLD, FORMAT) is None
    return weakref.ref(held)


def test_giving_up_on_a_document_keeps_no_frame_alive() -> None:
    """Both fast paths give up by raising inside; what they raise must not outlive the
    call. A shared exception instance, raised again and again, kept the traceback of
    every raise, so every frame it had left and, through each frame's caller, all a
    loader held: a long-running process (a worker resuming executions) grew without
    bound -- 24 GB in a fuzz campaign of 150 programs."""
    import gc

    ref = _decode_and_encode_giving_up()
    gc.collect()
    assert ref() is None, "a frame of the caller is still alive"
