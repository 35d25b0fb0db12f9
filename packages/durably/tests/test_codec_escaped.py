"""The encoder reuses the escaped text of long str values from the previous encode.

A snapshot of an agent mostly holds the str objects the previous one held; the codec
keeps their JSON text (:class:`durably._codec._encode.EscapedStrings`) for the next
encode. The document must not depend on it: a codec that encoded before writes the same
bytes and blobs as a fresh one, whatever changed in between, and what it keeps is bounded.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from durably._codec import ValueCodec
from durably._codec._encode import LONG_STR, EscapedStrings

THRESHOLD = 4096


def _fresh(roots: dict[str, Any]) -> tuple[bytes, dict[str, bytes]]:
    encoded = ValueCodec(blob_threshold=THRESHOLD).encode(roots)
    return encoded.data, dict(encoded.blobs)


def _long(text: str, n: int = LONG_STR) -> str:
    return (text * (n // max(1, len(text)) + 1))[:n]


_LONG = st.builds(
    lambda text, n: _long(text, n),
    st.text(min_size=1, max_size=40),
    st.integers(min_value=LONG_STR, max_value=3 * THRESHOLD),
)
_LEAVES = st.one_of(st.text(max_size=20), _LONG, st.integers(), st.none(), st.booleans())
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(_VALUES, min_size=1, max_size=8),
    st.lists(st.tuples(st.integers(min_value=0), _VALUES), max_size=12),
)
def test_a_codec_that_encoded_before_writes_what_a_fresh_one_writes(
    items: list[Any], changes: list[tuple[int, Any]]
) -> None:
    """Snapshots of one list, some items replaced between them: each encode of the warm
    codec equals a fresh codec's (same document, same blobs)."""
    codec = ValueCodec(blob_threshold=THRESHOLD)
    state = {"items": items}
    encoded = codec.encode({"state": state})
    assert (encoded.data, dict(encoded.blobs)) == _fresh({"state": state})
    for position, value in changes:
        items[position % len(items)] = value
        encoded = codec.encode({"state": state})
        assert (encoded.data, dict(encoded.blobs)) == _fresh({"state": state})


def test_the_same_long_string_is_escaped_once() -> None:
    text = _long('a "quoted" \\ line\n with é and 😀 ', 2000)
    codec = ValueCodec(blob_threshold=THRESHOLD)
    # over the threshold: the general encoder (small plain documents take a fast path
    # that escapes their few short strings directly)
    chat = [text, _long("other ", 3000)]
    first = codec.encode({"state": {"chat": chat}}).data
    cache = codec._escaped
    assert id(text) in cache._now
    escaped = cache._now[id(text)][1]
    cache.next_generation()
    assert cache.escape(text, THRESHOLD) is escaped  # reused, not escaped again
    assert codec.encode({"state": {"chat": chat}}).data == first


def test_an_equal_string_that_is_another_object_is_escaped_anew() -> None:
    cache = EscapedStrings()
    one = _long("x", 300)
    cache.escape(one, THRESHOLD)
    cache.next_generation()
    other = "".join(["x"] * 300)
    assert other == one
    assert other is not one
    assert cache.escape(other, THRESHOLD) == cache.escape(one, THRESHOLD)
    assert id(other) in cache._now


class _Str(str):
    """A str that can be weakly referenced, to see when the cache lets go of it."""


def test_only_the_latest_encode_is_kept() -> None:
    """A string the next encode does not use is let go of: the cache never holds more
    than the strings of one encode."""
    cache = EscapedStrings()
    gone = _Str(_long("gone ", 400))
    ref = weakref.ref(gone)
    cache.escape(gone, THRESHOLD)
    kept = _long("kept ", 400)
    for _ in range(2):
        cache.next_generation()
        cache.escape(kept, THRESHOLD)
    del gone
    gc.collect()
    assert ref() is None


def test_the_cache_is_bounded_and_skips_strings_over_the_threshold() -> None:
    cache = EscapedStrings(max_chars=1000)
    strings = [_long(str(i), 300) for i in range(10)]
    for text in strings:
        cache.escape(text, THRESHOLD)
    assert 1000 <= cache._chars < 1000 + 302  # stops once over the bound
    assert len(cache._now) == 4
    big = _long("b", THRESHOLD + 1)
    fresh = EscapedStrings()
    fresh.escape(big, THRESHOLD)
    assert not fresh._now  # chunked from its pieces instead: nothing to reuse


def test_strings_in_dict_values_and_nested_containers_are_reused_too() -> None:
    text = _long("nested ", 500)
    filler = [_long(str(i), 1000) for i in range(5)]  # over the threshold: general encoder
    state = {"doc": {"body": text, "parts": [{"t": text}]}, "title": text, "more": filler}
    codec = ValueCodec(blob_threshold=THRESHOLD)
    codec.encode({"state": state})
    assert id(text) in codec._escaped._now
    again = codec.encode({"state": state})
    assert (again.data, dict(again.blobs)) == _fresh({"state": state})
    assert codec.decode(again.data, dict(again.blobs).__getitem__) == {"state": state}
