"""The safe value codec: exact round trips, identity, determinism, blobs, safety."""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import enum
import fractions
import hashlib
import json
import math
import os
import pathlib
import pickle
import random
import re
import socket
import subprocess
import sys
import uuid
import warnings
from collections import Counter, OrderedDict, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from durably._codec import Encoded, Unresolved, ValueCodec
from durably._codec._format import HEADER as _HEADER
from durably.errors import (
    CorruptObjectError,
    DurablyWarning,
    SerializationError,
    SignatureError,
    UnsupportedFormatError,
)

try:
    import pydantic
except ImportError:  # pragma: no cover - pydantic is a dev dependency
    pydantic = None  # type: ignore[assignment]

SRC = str(pathlib.Path(__file__).resolve().parents[1] / "src")
NO_BLOBS: dict[str, bytes] = {}


# --------------------------------------------------------------------------- test types


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"
    CRIMSON = "red"  # an alias of RED


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Perm(enum.Flag):
    R = 1
    W = 2
    X = 4


class Point(NamedTuple):
    x: int
    y: int = 0


Pair = collections.namedtuple("Pair", ["left", "right"])


@dataclass
class Item:
    name: str
    tags: list[str] = field(default_factory=list)
    parent: Item | None = None


@dataclass(frozen=True)
class Frozen:
    x: int
    children: list[Any] = field(default_factory=list)


@dataclass(slots=True)
class Slotted:
    a: int
    b: Any = None


@dataclass
class Outer:
    @dataclass
    class Inner:
        v: int

    inner: Inner


@dataclass(frozen=True)
class Key:
    x: int
    tag: tuple[Any, ...] = ()


@dataclass(eq=False)
class Node:
    label: str
    peers: set[Any] = field(default_factory=set)


class Opaque:
    """Not supported natively: only hooks or pickle can store it."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.v == self.v

    __hash__ = None  # type: ignore[assignment]


if pydantic is not None:

    class Address(pydantic.BaseModel):
        city: str
        zip: str | None = None

    class User(pydantic.BaseModel):
        name: str
        age: int = 0
        address: Address | None = None
        tags: list[str] = pydantic.Field(default_factory=list)
        _secret: str = pydantic.PrivateAttr(default="s")

    class Loose(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="allow")
        a: int

    class FrozenModel(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(frozen=True)
        a: int
        items: list[Any] = pydantic.Field(default_factory=list)

    class IntList(pydantic.RootModel[list[int]]):
        pass


# ----------------------------------------------------------------------------- helpers


def same(a: Any, b: Any, seen: set[int] | None = None) -> bool:
    """Equal, with identical types all the way down and NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    seen = set() if seen is None else seen
    if id(a) in seen:
        return True
    if isinstance(a, (list, tuple, deque)):
        seen.add(id(a))
        return len(a) == len(b) and all(same(x, y, seen) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        seen.add(id(a))
        return (
            list(a) == list(b)
            and all(same(k, k2, seen) for k, k2 in zip(a, b, strict=True))
            and all(same(a[k], b[k], seen) for k in a)
        )
    return bool(a == b)


def roundtrip(value: Any, codec: ValueCodec | None = None) -> Any:
    codec = codec or ValueCodec()
    return codec.decode_value(codec.encode_value(value))


def roundtrip_roots(roots: dict[str, Any], codec: ValueCodec | None = None) -> dict[str, Any]:
    codec = codec or ValueCodec()
    enc = codec.encode(roots)
    return codec.decode(enc.data, enc.blobs.__getitem__)


def doc(node: Any) -> bytes:
    return json.dumps({"durably": 1, "value": node}).encode()


def new_blob_bytes(old: Encoded, new: Encoded) -> int:
    return sum(len(b) for d, b in new.blobs.items() if d not in old.blobs)


def referenced(data: bytes, blobs: dict[str, bytes]) -> set[str]:
    """Every digest reachable from a document, following chunk and index blobs."""
    found: set[str] = set()

    def node(n: Any) -> None:
        if isinstance(n, list) and n and n[0] == "C":
            header = _HEADER[n[1]]
            for x in n[2 : 2 + header]:
                node(x)
            for digest in n[2 + header :]:
                chunk(digest)
        elif isinstance(n, list):
            for x in n[1:]:
                node(x)

    def chunk(digest: str) -> None:
        found.add(digest)
        content = json.loads(blobs[digest])
        for x in content[1:]:
            if content[0] == "cc":
                chunk(x)
            else:
                node(x)

    for root in json.loads(data)["roots"].values():
        node(root)
    return found


# ------------------------------------------------------------------ round trip of types


SAMPLES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    -(2**64),
    2**64,
    10**400,
    -(7**999),
    0.0,
    -0.0,
    1.5,
    1e300,
    5e-324,
    math.inf,
    -math.inf,
    math.nan,
    "",
    "héllo wörld ✓ 🐍",
    "\ud800lone surrogate",
    '\x00\n"\\',
    b"",
    bytes(range(256)),
    bytearray(b"\x00mutable"),
    [],
    [1, [2, [3]]],
    (),
    (1,),
    (1, "a", (2.5, None)),
    {},
    {"a": 1, "b": [1, 2]},
    {1: "int key", (1, 2): "tuple key", None: 0, 2.5: "f", frozenset({1}): "fs", b"k": "bytes"},
    set(),
    {3, 1, 2},
    {"b", "a", (1, 2)},
    frozenset(),
    frozenset({1, "x", (2,)}),
    dt.datetime(2024, 5, 6, 7, 8, 9, 123456),
    dt.datetime(2024, 5, 6, tzinfo=dt.UTC),
    dt.datetime(2024, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
    dt.datetime(2024, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2), "CEST")),
    dt.datetime(2024, 10, 27, 2, 30, tzinfo=ZoneInfo("Europe/Paris"), fold=1),
    dt.datetime(1, 1, 1),
    dt.datetime.max,
    dt.date(2024, 2, 29),
    dt.date.min,
    dt.time(),
    dt.time(23, 59, 59, 999999),
    dt.time(12, tzinfo=dt.UTC),
    dt.time(1, 2, tzinfo=ZoneInfo("America/New_York"), fold=1),
    dt.timedelta(),
    dt.timedelta(days=-3, seconds=5, microseconds=7),
    dt.timedelta.max,
    decimal.Decimal("3.14159265358979323846264338327950288"),
    decimal.Decimal("-0.00"),
    decimal.Decimal("1E+1000"),
    decimal.Decimal("-Infinity"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    fractions.Fraction(1, 3),
    fractions.Fraction(-(10**50), 7),
    complex(1, -2),
    complex(math.inf, -0.0),
    pathlib.PurePosixPath("a/b/c.txt"),
    pathlib.PureWindowsPath(r"C:\Users\x"),
    pathlib.Path("/tmp/x"),
    pathlib.Path("relative"),
    Color.RED,
    Color.GREEN,
    Level.HIGH,
    Perm.R,
    Perm.R | Perm.W,
    Perm(0),
    Point(1, 2),
    Pair("l", [1]),
    Item("a", ["t"]),
    Frozen(1, [2]),
    Slotted(1, {"x": 2}),
    Outer(Outer.Inner(3)),
    OrderedDict([("b", 1), ("a", 2)]),
    Counter("abracadabra"),
    defaultdict(list, {"k": [1]}),
    defaultdict(None, {1: 2}),
    deque([1, 2, 3], maxlen=5),
    deque(),
    [0.5] * 40,
    [float(i) / 3 for i in range(100)] + [math.nan, -0.0, math.inf],
    range(0),
    range(2, 10, 3),
    range(10**30, -5, -7),
    slice(1, None),
    slice(None, None, -1),
    slice("a", (1, 2), [3]),
    ...,
    re.compile(r"(\w+)@(\w+)", re.IGNORECASE | re.MULTILINE),
    re.compile(b"x.y", re.DOTALL),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_round_trip_is_exact_including_type(value: Any) -> None:
    out = roundtrip(value)
    assert same(out, value), (value, out)
    if isinstance(value, defaultdict):
        assert out.default_factory is value.default_factory
    if isinstance(value, deque):
        assert out.maxlen == value.maxlen
    if isinstance(value, dt.datetime | dt.time):
        assert out.fold == value.fold
        assert type(out.tzinfo) is type(value.tzinfo)
        assert out.tzname() == value.tzname()


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_round_trip_through_chunks(value: Any) -> None:
    # Every sample, repeated into a structure large enough to be split into blobs.
    codec = ValueCodec(blob_threshold=256)
    big = {"xs": [value] * 40, "ys": [[value, i] for i in range(40)]}
    enc = codec.encode({"s": big})
    assert enc.blobs
    out = codec.decode(enc.data, enc.blobs.__getitem__)["s"]
    assert same(out["xs"][0], value)
    assert all(x is out["xs"][0] or not isinstance(x, list | dict | set) for x in out["xs"])
    assert same(out["ys"][39][0], value)


class PyInitError(Exception):
    """An exception whose ``__init__`` takes other arguments than its ``args``."""

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass
class ApiError(Exception):
    """An exception that is a dataclass too: stored as an exception (args kept)."""

    code: int
    reason: str

    def __post_init__(self) -> None:
        super().__init__(self.code, self.reason)


class PyNewError(Exception):
    """An exception whose ``__new__`` is Python code: never instantiated by decoding."""

    def __new__(cls, *args: Any) -> PyNewError:
        return super().__new__(cls, *args)


def test_exceptions_round_trip_with_args_attributes_and_identity() -> None:
    key = KeyError("k")
    value = ValueError("bad word", 3)
    value.note = {"seen": [1]}  # type: ignore[attr-defined]
    stop = StopIteration(5)
    missing = FileNotFoundError(2, "No such file", "/x")
    custom = PyInitError(7, "broken")
    try:
        json.loads("{bad")
    except json.JSONDecodeError as exc:
        parse = exc
    out = roundtrip([key, value, stop, missing, custom, parse, value])
    assert [type(x) for x in out] == [
        KeyError,
        ValueError,
        StopIteration,
        FileNotFoundError,
        PyInitError,
        json.JSONDecodeError,
        ValueError,
    ]
    assert out[6] is out[1]  # one object, as before
    assert str(out[0]) == str(key)
    assert out[0].args == ("k",)
    assert out[1].args == ("bad word", 3)
    assert out[1].note == {"seen": [1]}
    assert out[2].value == 5  # set by StopIteration's native __init__
    assert (out[3].errno, out[3].strerror, out[3].filename) == (2, "No such file", "/x")
    assert str(out[3]) == str(missing)  # no "-> None" for the unset second file name
    # A Python __init__ is not run: args and attributes are put back as they were.
    assert str(out[4]) == "7: broken"
    assert (out[4].code, out[4].detail) == (7, "broken")
    assert (out[5].msg, out[5].pos, out[5].lineno, str(out[5])) == (
        parse.msg,
        parse.pos,
        parse.lineno,
        str(parse),
    )


def test_exceptions_whose_new_is_python_code_are_not_serializable() -> None:
    with pytest.raises(SerializationError, match="PyNewError"):
        ValueCodec().encode_value(PyNewError("x"))


def test_an_exception_referring_to_itself_through_its_args_is_refused() -> None:
    exc = ValueError()
    exc.args = (exc,)
    with pytest.raises(SerializationError, match="refers back to itself"):
        ValueCodec().encode_value(exc)
    cyclic = ValueError("fine")
    cyclic.me = cyclic  # type: ignore[attr-defined]
    out = roundtrip(cyclic)
    assert out.me is out


def test_enum_members_are_the_singletons() -> None:
    assert roundtrip(Color.RED) is Color.RED
    assert roundtrip(Color.CRIMSON) is Color.RED
    assert roundtrip(Level.LOW) is Level.LOW
    assert roundtrip(Perm.R | Perm.X) == Perm.R | Perm.X


def test_dataclass_restore_does_not_rerun_init_and_keeps_extra_attributes() -> None:
    item = Item("a")
    item.cached = 42  # type: ignore[attr-defined]
    out = roundtrip(item)
    assert out == item
    assert out.cached == 42
    frozen = roundtrip(Frozen(5))
    assert frozen == Frozen(5)
    with pytest.raises(AttributeError):
        frozen.x = 6


def test_dataclass_defined_in_a_function_is_not_serializable() -> None:
    @dataclass
    class Local:
        x: int

    with pytest.raises(SerializationError, match="Local is not serializable"):
        ValueCodec().encode_value(Local(1))


def test_missing_dataclass_fields_get_their_defaults() -> None:
    # Data written before ``Item`` gained its ``tags`` and ``parent`` fields.
    out = ValueCodec().decode_value(doc(["D", f"{__name__}:Item", "name", "old"]))
    assert out == Item("old", [], None)


# --------------------------------------------------------------------------- pydantic


needs_pydantic = pytest.mark.skipif(pydantic is None, reason="pydantic is not installed")


@needs_pydantic
def test_pydantic_models_round_trip_with_fields_set_extra_and_private() -> None:
    user = User(name="ann", address=Address(city="Paris"), tags=["x"])
    user._secret = "hush"
    loose = Loose(a=1, b=[2], c={"d": 3})  # type: ignore[call-arg]
    frozen = FrozenModel(a=1)
    root = IntList([1, 2, 3])
    out = roundtrip([user, loose, frozen, root])
    assert out == [user, loose, frozen, root]
    assert [type(x) for x in out] == [User, Loose, FrozenModel, IntList]
    assert type(out[0].address) is Address
    assert out[0].model_fields_set == user.model_fields_set == {"name", "address", "tags"}
    assert out[0]._secret == "hush"
    assert out[1].model_extra == {"b": [2], "c": {"d": 3}}
    with pytest.raises(pydantic.ValidationError):
        out[2].a = 2
    assert out[0].model_dump() == user.model_dump()


@needs_pydantic
def test_pydantic_identity_and_cycles() -> None:
    shared = Address(city="Oslo")
    model = FrozenModel(a=1, items=[shared, shared])
    model.items.append(model)  # a cycle through a frozen model
    out = roundtrip(model)
    assert out.items[0] is out.items[1]
    assert out.items[2] is out


@needs_pydantic
def test_parametrized_generic_models_are_not_importable_so_not_serializable() -> None:
    with pytest.raises(SerializationError, match=r"RootModel\[list\[str\]\] is not serial"):
        ValueCodec().encode_value(pydantic.RootModel[list[str]](["a"]))


def test_codec_module_does_not_import_pydantic() -> None:
    code = "import sys, durably._codec; assert 'pydantic' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": SRC})


# --------------------------------------------------------------------------- hypothesis


hashables = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=4),
    max_leaves=8,
)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary() | hashables,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(hashables, inner, max_size=6)
        | st.dictionaries(st.text(), inner, max_size=6)
        | st.sets(hashables, max_size=6)
        | st.lists(st.floats(), min_size=16, max_size=40)
    ),
    max_leaves=40,
)


@settings(max_examples=150, deadline=None)
@given(values)
def test_any_nested_value_round_trips(value: Any) -> None:
    assert same(roundtrip(value), value)


@settings(max_examples=60, deadline=None)
@given(st.lists(values, min_size=1, max_size=30))
def test_any_nested_value_round_trips_through_blobs(value: list[Any]) -> None:
    codec = ValueCodec(blob_threshold=256)
    enc = codec.encode({"frame": {"v": value, "again": value}})
    assert referenced(enc.data, enc.blobs) == set(enc.blobs)
    out = codec.decode(enc.data, enc.blobs.__getitem__)["frame"]
    assert same(out["v"], value)
    assert out["again"] is out["v"]


@settings(max_examples=100, deadline=None)
@given(st.lists(hashables, max_size=20), st.randoms(use_true_random=False))
@example([None, ((False, False), False), ((False, False), 0)], random.Random(0))
def test_set_encoding_does_not_depend_on_insertion_order(items: list[Any], rnd: Any) -> None:
    # One element per equality class: of `False` and `0` (equal, different types) a set
    # keeps whichever came first, so building it in two orders would give two different
    # values, which rightly encode differently. The same elements in any order must not.
    items = list(dict.fromkeys(items))
    shuffled = list(items)
    rnd.shuffle(shuffled)
    codec = ValueCodec()
    assert codec.encode_value(set(items)) == codec.encode_value(set(shuffled))
    assert codec.encode_value(frozenset(items)) == codec.encode_value(frozenset(shuffled))


# -------------------------------------------------------------------------- determinism


def test_encoding_twice_gives_the_same_bytes() -> None:
    codec = ValueCodec(blob_threshold=1024)
    state = {
        "xs": list(range(3000)),
        "d": {str(i): [i, {i}] for i in range(200)},
        "item": Item("x", ["y"]),
    }
    a = codec.encode({"state": state, "frame0": {"s": state}})
    b = codec.encode({"state": state, "frame0": {"s": state}})
    assert a == b


def test_dict_order_is_kept_and_is_part_of_the_encoding() -> None:
    codec = ValueCodec()
    assert list(roundtrip({"b": 1, "a": 2})) == ["b", "a"]
    assert codec.encode_value({"b": 1, "a": 2}) != codec.encode_value({"a": 2, "b": 1})


def test_sets_of_objects_with_identity_are_sorted_by_content() -> None:
    codec = ValueCodec()
    keys = [Key(i, ("t", i)) for i in range(30)]
    assert codec.encode_value(set(keys)) == codec.encode_value(set(reversed(keys)))
    nodes = [Node(str(i)) for i in range(30)]
    assert codec.encode_value(set(nodes)) == codec.encode_value(set(reversed(nodes)))
    a, b = Node("a"), Node("b")
    a.peers.add(b)
    out = roundtrip([{b, a}, a.peers, b.peers])
    by_label = {n.label: n for n in out[0]}
    assert by_label["a"].peers is out[1]
    assert by_label["b"].peers is out[2]
    assert next(iter(out[1])) is by_label["b"]


def test_encoding_is_the_same_in_processes_with_different_hash_seeds() -> None:
    code = (
        "import sys\n"
        "from durably._codec import ValueCodec\n"
        "v = {'s': {'apple', 'pear', 'fig', ('a', 1), frozenset({'x', 'y', 'z'})},"
        " 'd': {str(i): i for i in range(50)}}\n"
        "sys.stdout.write(ValueCodec().encode_value(v).hex())\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": SRC, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1


# ------------------------------------------------------------------ identity and cycles


def test_shared_objects_stay_shared_across_variables_and_roots() -> None:
    a = [1]
    d = {"k": a}
    out = roundtrip_roots({"frame0": {"a": a, "b": a, "d": d}, "state": {"again": d, "x": a}})
    f, s = out["frame0"], out["state"]
    assert f["b"] is f["a"]
    assert f["d"]["k"] is f["a"]
    assert s["again"] is f["d"]
    assert s["x"] is f["a"]


def test_equal_but_distinct_objects_stay_distinct() -> None:
    out = roundtrip([[1], [1]])
    assert out[0] == out[1]
    assert out[0] is not out[1]


def test_cycles_round_trip() -> None:
    lst: list[Any] = [1]
    lst.append(lst)
    d: dict[str, Any] = {}
    d["self"] = d
    t_list: list[Any] = []
    tup = (t_list,)
    t_list.append(tup)
    parent = Item("parent")
    child = Item("child", parent=parent)
    parent.tags.append(child)  # type: ignore[arg-type]
    frozen = Frozen(1)
    frozen.children.append(frozen)
    node = Node("n")
    node.peers.add(node)
    out = roundtrip([lst, d, tup, parent, frozen, node])
    assert out[0][1] is out[0]
    assert out[1]["self"] is out[1]
    assert out[2][0][0][0] is out[2][0]
    assert out[3].tags[0].parent is out[3]
    assert out[4].children[0] is out[4]
    assert next(iter(out[5].peers)) is out[5]


def test_mutable_containers_of_every_kind_keep_identity() -> None:
    ba = bytearray(b"x")
    floats = [0.5] * 20
    od: OrderedDict[str, int] = OrderedDict(a=1)
    dd: defaultdict[str, list[int]] = defaultdict(list)
    dq: deque[int] = deque([1])
    ctr = Counter("ab")
    s = {1}
    item = Item("i")
    values = [ba, floats, od, dd, dq, ctr, s, item]
    out = roundtrip(values + values)
    for i in range(len(values)):
        assert out[i] is out[i + len(values)]


# --------------------------------------------------------------------- blob splitting


def make_state(n_messages: int = 100, size: int = 1000, seed: int = 7) -> dict[str, Any]:
    rnd = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "tool", "call", "result", "the", "a", "of"]

    def text(n: int) -> str:
        return " ".join(rnd.choice(words) for _ in range(n // 5))

    return {
        "messages": [
            {"role": ("user", "assistant")[i % 2], "content": text(size), "n": i}
            for i in range(n_messages)
        ],
        "config": {"model": "m", "temperature": 0.5},
        "step": 3,
    }


@pytest.mark.parametrize("position", [0, 37, 99])
def test_changing_1kb_of_a_100kb_state_writes_only_a_few_kb(position: int) -> None:
    codec = ValueCodec(blob_threshold=4096)
    state = make_state()
    old = codec.encode({"state": state})
    assert len(json.dumps(state)) > 100_000
    state["messages"][position]["content"] = make_state(1, 1000, seed=position)["messages"][0][
        "content"
    ]
    new = codec.encode({"state": state})
    assert new.data != old.data
    assert 0 < new_blob_bytes(old, new) < 10_000
    assert len(new.data) < 4096
    assert codec.decode(new.data, new.blobs.__getitem__)["state"] == state


def test_with_the_default_threshold_a_small_change_rewrites_a_small_fraction() -> None:
    codec = ValueCodec()
    state = make_state(n_messages=200)
    old = codec.encode({"state": state})
    state["messages"][120]["content"] += " one more sentence"
    new = codec.encode({"state": state})
    assert new_blob_bytes(old, new) < 32_000 < sum(map(len, new.blobs.values())) / 4


def test_appending_to_a_long_list_changes_only_the_last_chunk() -> None:
    codec = ValueCodec()
    xs = [{"i": i, "v": f"value {i}"} for i in range(5000)]
    old = codec.encode({"s": {"xs": xs}})
    xs.append({"i": 5000, "v": "new"})
    new = codec.encode({"s": {"xs": xs}})
    old_chunks = json.loads(old.data)["roots"]["s"][2][2:]
    new_chunks = json.loads(new.data)["roots"]["s"][2][2:]
    assert len(old_chunks) > 5
    assert new_chunks[: len(old_chunks) - 1] == old_chunks[:-1]
    assert new_chunks[len(old_chunks) - 1] != old_chunks[-1]
    assert len(new_chunks) - len(old_chunks) in (0, 1)
    assert set(new.blobs) - set(old.blobs) == set(new_chunks[len(old_chunks) - 1 :])


def test_inserting_in_the_middle_of_a_list_resynchronises_chunks() -> None:
    codec = ValueCodec()
    xs = [f"line {i} " * 3 for i in range(20000)]
    old = codec.encode({"s": {"xs": xs}})
    xs.insert(10000, "inserted")
    new = codec.encode({"s": {"xs": xs}})
    assert new_blob_bytes(old, new) < 3 * 16 * 1024 + 3000  # a chunk or two and the index


def test_appending_to_a_long_string_rewrites_only_its_last_piece() -> None:
    codec = ValueCodec()
    log = "".join(f"log line {i}\n" for i in range(20000))
    old = codec.encode({"s": {"log": log}})
    new = codec.encode({"s": {"log": log + "one more line\n"}})
    assert new_blob_bytes(old, new) <= 16 * 1024
    assert codec.decode(new.data, new.blobs.__getitem__)["s"]["log"] == log + "one more line\n"


def test_huge_values_are_split_recursively_into_bounded_blobs() -> None:
    codec = ValueCodec(blob_threshold=1024)
    state = {
        "grid": [[i * j for j in range(50)] for i in range(300)],
        "blob": os.urandom(200_000),
        "floats": [i / 7 for i in range(30_000)],
        "many": {str(i): i for i in range(5000)},
    }
    enc = codec.encode({"state": state})
    assert len(enc.data) < 2048
    assert max(map(len, enc.blobs.values())) < 2048
    assert referenced(enc.data, enc.blobs) == set(enc.blobs)
    assert any(json.loads(b)[0] == "cc" for b in enc.blobs.values())  # an index level
    for digest, data in enc.blobs.items():
        assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert same(codec.decode(enc.data, enc.blobs.__getitem__)["state"], state)


def test_equal_subtrees_share_blobs() -> None:
    codec = ValueCodec(blob_threshold=1024)
    big = list(range(2000))
    one = codec.encode({"s": {"a": big}})
    two = codec.encode({"s": {"a": big, "b": list(big)}})
    assert set(one.blobs) <= set(two.blobs)
    new = [two.blobs[d] for d in two.blobs if d not in one.blobs]
    # Only the chunks of the (now larger) outer dict are new: each just refers to the list.
    assert 0 < len(new) <= 2
    assert all(b'["C","l"' in blob and len(blob) < 1024 for blob in new)


def test_encode_value_never_splits() -> None:
    codec = ValueCodec(blob_threshold=256)
    data = codec.encode_value(list(range(10_000)))
    assert b'"C"' not in data
    assert codec.decode_value(data) == list(range(10_000))


# ----------------------------------------------------------------- corruption, versions


def test_a_corrupted_blob_is_detected() -> None:
    codec = ValueCodec(blob_threshold=1024)
    enc = codec.encode({"s": {"xs": list(range(5000))}})
    digest = next(iter(enc.blobs))
    bad = dict(enc.blobs)
    bad[digest] = bad[digest].replace(b"1", b"2", 1)
    with pytest.raises(CorruptObjectError, match="corrupt"):
        codec.decode(enc.data, bad.__getitem__)
    del bad[digest]
    with pytest.raises(CorruptObjectError, match="unavailable"):
        codec.decode(enc.data, bad.__getitem__)


def test_a_blob_that_hashes_right_but_is_not_a_chunk_is_rejected() -> None:
    codec = ValueCodec()
    payload = b'{"not": "a chunk"}'
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    data = json.dumps({"durably": 1, "roots": {"r": ["C", "l", digest]}}).encode()
    with pytest.raises(CorruptObjectError, match="not a chunk"):
        codec.decode(data, {digest: payload}.__getitem__)


def test_unknown_format_version_is_refused() -> None:
    codec = ValueCodec()
    with pytest.raises(UnsupportedFormatError, match="format 2"):
        codec.decode(b'{"durably":2,"roots":{}}', NO_BLOBS.__getitem__)
    with pytest.raises(UnsupportedFormatError):
        codec.decode_value(b'{"durably":"1","value":1}')


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b'{"durably":1,"value":["l",1',
        b"[1,2]",
        b'{"durably":1}',
        b"\xff\xfe",
        doc(["zz", 1]),
        doc([]),
        doc([1, 2]),
        doc({"a": 1}),
        doc(["d", "k"]),
        doc(["r", 0]),
        doc(["r", "x"]),
        doc(["l", ["r", 5]]),
        doc(["f", "big"]),
        doc(["i", "xyz"]),
        doc(["b", "!!!"]),
        doc(["b", 5]),
        doc(["dt", "nope", 0, None]),
        doc(["dt", "2024-01-01T00:00:00", 0, ["tz", "a", 0, 0, None]]),
        doc(["dt", "2024-01-01T00:00:00", 0, ["zi", "No/Such_Zone"]]),
        doc(["u", "short"]),
        doc(["td", 1, 2]),
        doc(["dec", "abc"]),
        doc(["fr", 1, 0]),
        doc(["cx", 1, 2]),
        doc(["pp", "Popen", "x"]),
        doc(["dd", "eval", "k", 1]),
        doc(["dq", -1]),
        doc(["C", "l", "sha256:zz"]),
        doc(["C", "nope"]),
        doc(["C", "l", "sha256:" + "0" * 64]),
        doc(["s", ["l"]]),
        doc(["d", ["l"], 1]),
        doc(["E", 5, "RED"]),
        doc(["D", f"{__name__}:Item", 5, 1]),
        doc(["D", f"{__name__}:Item", "name"]),
        doc(["P"]),
        doc(["h", 1, 2]),
        doc(["p", "sig", ["l"]]),
        doc(["lf", "AAAA"]),
        doc(["str", 1]),
        doc(["rg", 1, 2, 0]),
        doc(["rg", 1, 2]),
        doc(["rg", "a", 1, 1]),
        doc(["sl", 1]),
        doc(["el", 1]),
        doc(["re", "(", 0]),
        doc(["re", 1, 0]),
        doc(["re", "a", "i"]),
        doc(["X", "builtins:ValueError", ["l"]]),
        doc(["X", "builtins:ValueError"]),
        doc(["X", "os:system", ["t"]]),
        doc(["X", "builtins:dict", ["t"]]),
        doc(["X", f"{__name__}:PyNewError", ["t"]]),
        doc(["X", "builtins:ValueError", ["t"], "__class__", 1]),
        doc(["X", "builtins:UnicodeDecodeError", ["t", 1]]),
        doc(
            [
                "X",
                "builtins:UnicodeDecodeError",
                ["t", "utf-8", ["b", "eA=="], 0, 1, "r"],
                "start",
                "not a number",
            ]
        ),
        b'{"durably":1,"roots":[]}',
        b'{"durably":1,"roots":{"a":' + b"[" * 100_000 + b"}",
    ],
)
def test_malformed_input_raises_a_typed_error(data: bytes) -> None:
    codec = ValueCodec()
    for decode in (codec.decode_value, lambda d: codec.decode(d, NO_BLOBS.__getitem__)):
        with pytest.raises((CorruptObjectError, SerializationError, UnsupportedFormatError)):
            decode(data)


node_strategy = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.tuples(
            st.sampled_from(
                [
                    "l",
                    "t",
                    "d",
                    "s",
                    "fs",
                    "b",
                    "ba",
                    "lf",
                    "str",
                    "i",
                    "f",
                    "r",
                    "od",
                    "ctr",
                    "dd",
                    "dq",
                    "dt",
                    "tm",
                    "da",
                    "td",
                    "dec",
                    "u",
                    "fr",
                    "cx",
                    "pp",
                    "E",
                    "EV",
                    "N",
                    "D",
                    "P",
                    "h",
                    "x",
                    "p",
                    "C",
                    "zz",
                ]
            ),
            st.lists(
                inner
                | st.sampled_from(
                    [
                        "os:system",
                        "subprocess:Popen",
                        f"{__name__}:Item",
                        f"{__name__}:Color",
                        "RED",
                    ]
                ),
                max_size=5,
            ),
        ).map(lambda t: [t[0], *t[1]])
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(node_strategy)
def test_fuzzed_documents_raise_only_typed_errors(node: Any) -> None:
    try:
        ValueCodec().decode_value(doc(node))
    except (CorruptObjectError, SerializationError, UnsupportedFormatError):
        pass


# ------------------------------------------------------------ unserializable values


def test_unserializable_value_names_its_path() -> None:
    codec = ValueCodec()
    with socket.socket() as conn:
        with pytest.raises(SerializationError) as info:
            codec.encode({"frame0": {"ok": 1, "conn": conn}}, {"frame0": "Main frame local"})
        assert str(info.value) == "Main frame local 'conn': socket is not serializable"
        assert info.value.path == "Main frame local 'conn'"
        assert info.value.reason == "socket is not serializable"

        with pytest.raises(SerializationError) as info:
            codec.encode(
                {"frame0": {"data": {"items": [0, 1, 2, conn]}}}, {"frame0": "Main frame local"}
            )
        assert info.value.path == "Main frame local 'data'['items'][3]"

        with pytest.raises(SerializationError) as info:
            codec.encode({"state": {"x": Slotted(1, conn)}}, {"state": "agent 1000 state"})
        assert info.value.path == "agent 1000 state 'x'.b"

        with pytest.raises(SerializationError) as info:
            codec.encode({"frame1": {"s": {1: (conn,)}}})
        assert info.value.path == "frame1 's'[1][0]"

        with pytest.raises(SerializationError) as info:
            codec.encode({"r": conn})
        assert info.value.path == "r"

        with pytest.raises(SerializationError, match=r"^value\[1\]: socket"):
            codec.encode_value([1, conn])


def test_skip_policy_drops_the_variable_warns_and_records_it() -> None:
    codec = ValueCodec(on_unserializable="skip")
    shared = [1, 2]
    with socket.socket() as conn, pytest.warns(DurablyWarning) as caught:
        enc = codec.encode(
            {
                "frame0": {"a": 1, "bad": [shared, {"c": conn}], "b": shared},
                "whole": conn,
                "state": {"x": shared},
            },
            {"frame0": "Main frame local"},
        )
    assert [str(w.message) for w in caught] == [
        "Main frame local 'bad' was not saved: "
        "Main frame local 'bad'[1]['c']: socket is not serializable",
        "whole was not saved: whole: socket is not serializable",
    ]
    assert caught[0].filename == __file__
    assert enc.skipped == ("Main frame local 'bad'", "whole")
    out = codec.decode(enc.data, enc.blobs.__getitem__)
    assert out == {"frame0": {"a": 1, "b": [1, 2]}, "state": {"x": [1, 2]}}
    assert out["state"]["x"] is out["frame0"]["b"]


def test_skip_policy_discards_blobs_of_skipped_variables() -> None:
    codec = ValueCodec(on_unserializable="skip", blob_threshold=1024)
    with warnings.catch_warnings(), socket.socket() as conn:
        warnings.simplefilter("ignore", DurablyWarning)
        enc = codec.encode({"f": {"bad": [list(range(5000)), conn], "ok": list(range(3000))}})
    assert referenced(enc.data, enc.blobs) == set(enc.blobs)


def test_too_deep_nesting_is_a_serialization_error() -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(SerializationError, match="nested too deeply"):
        ValueCodec().encode({"f": {"deep": deep}})


# ---------------------------------------------------------------------------- hooks


def opaque_hook(value: Any) -> tuple[str, Any] | None:
    return ("test.Opaque", {"v": value.v}) if isinstance(value, Opaque) else None


def opaque_decoder(tag: str, payload: Any) -> Any:
    return Opaque(payload["v"]) if tag == "test.Opaque" else None


def test_hooks_encode_unsupported_types_and_keep_identity() -> None:
    codec = ValueCodec(encode_hook=opaque_hook, decode_hook=opaque_decoder)
    o = Opaque(3)
    out = roundtrip({"a": o, "b": o, "c": [Opaque(4)]}, codec)
    assert out["a"] == Opaque(3)
    assert out["b"] is out["a"]
    assert out["c"] == [Opaque(4)]


def test_fallback_is_tried_after_the_hook() -> None:
    def fn() -> None:
        pass

    calls: list[str] = []

    def hook(value: Any) -> tuple[str, Any] | None:
        calls.append("hook")
        return None

    def fallback(value: Any) -> tuple[str, Any] | None:
        calls.append("fallback")
        return ("fn", value.__name__) if callable(value) else None

    codec = ValueCodec(
        encode_hook=hook,
        encode_fallback=fallback,
        decode_fallback=lambda tag, p: f"restored {p}" if tag == "fn" else None,
    )
    assert roundtrip(fn, codec) == "restored fn"
    assert calls == ["hook", "fallback"]


def test_unknown_hook_tag_and_missing_decode_hook_are_errors() -> None:
    data = ValueCodec(encode_hook=opaque_hook).encode_value([Opaque(1)])
    with pytest.raises(SerializationError, match="no decode_hook is configured"):
        ValueCodec().decode_value(data)
    with pytest.raises(SerializationError, match=r"'test\.Opaque'"):
        ValueCodec(decode_hook=lambda tag, payload: None).decode_value(data)


def test_a_failing_or_misbehaving_hook_is_reported_with_the_path() -> None:
    def boom(value: Any) -> tuple[str, Any] | None:
        raise RuntimeError("boom")

    with pytest.raises(SerializationError, match="encode_hook failed") as info:
        ValueCodec(encode_hook=boom).encode({"f": {"o": Opaque(1)}})
    assert info.value.path == "f 'o'"
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(SerializationError, match="expected \\(tag, payload\\)"):
        ValueCodec(encode_hook=lambda v: "bad").encode_value(Opaque(1))  # type: ignore[arg-type,return-value]


def test_a_hook_cycle_is_refused_at_encode_time() -> None:
    o = Opaque(1)
    codec = ValueCodec(encode_hook=lambda v: ("self", [v]) if isinstance(v, Opaque) else None)
    with pytest.raises(SerializationError, match="refers back to itself"):
        codec.encode_value(o)


# --------------------------------------------------------------------------- pickle


KEY = b"k" * 32


def test_pickle_is_opt_in() -> None:
    with pytest.raises(SerializationError, match="Opaque is not serializable"):
        ValueCodec().encode_value(Opaque(1))


def test_signed_pickle_round_trips_and_keeps_identity() -> None:
    codec = ValueCodec(pickle_key=KEY)
    o = Opaque(7)
    out = roundtrip([o, o, {"x": 1}], codec)
    assert out[0] == Opaque(7)
    assert out[1] is out[0]
    assert out[2] == {"x": 1}


def test_hooks_take_precedence_over_pickle() -> None:
    codec = ValueCodec(pickle_key=KEY, encode_hook=opaque_hook, decode_hook=opaque_decoder)
    assert b'"h"' in codec.encode_value(Opaque(1))


def test_bad_signature_or_missing_key_never_unpickles(monkeypatch: pytest.MonkeyPatch) -> None:
    data = ValueCodec(pickle_key=KEY).encode_value(Opaque(1))

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "loads", forbidden)
    with pytest.raises(SignatureError):
        ValueCodec(pickle_key=b"other key").decode_value(data)
    node = json.loads(data)
    node["value"][1] = "0" * 64
    with pytest.raises(SignatureError):
        ValueCodec(pickle_key=KEY).decode_value(json.dumps(node).encode())
    with pytest.raises(SerializationError, match="no pickle_key") as info:
        ValueCodec().decode_value(data)
    assert not isinstance(info.value, SignatureError)


def test_tampered_pickle_bytes_fail_verification() -> None:
    data = json.loads(ValueCodec(pickle_key=KEY).encode_value(Opaque(1)))
    evil = pickle.dumps(Opaque(666))
    data["value"][2] = ["b", __import__("base64").b64encode(evil).decode()]
    with pytest.raises(SignatureError):
        ValueCodec(pickle_key=KEY).decode_value(json.dumps(data).encode())


# ------------------------------------------------------------------ class allow-list


@pytest.mark.parametrize(
    "node",
    [
        ["D", "os:system", "command", "echo pwned"],
        ["D", "subprocess:Popen", "args", ["echo"]],
        ["P", "subprocess:Popen", [], None, None],
        ["N", "subprocess:Popen", "echo"],
        ["E", "subprocess:Popen", "x"],
        ["EV", f"{__name__}:Color", 1],
        ["N", "builtins:tuple", 1],
        ["D", "builtins:eval", "x", 1],
        ["D", f"{__name__}:Opaque", "v", 1],
        ["D", f"{__name__}:Item.__init__.__globals__", "x", 1],
        ["D", f"{__name__}:make_state", "x", 1],
    ],
)
def test_non_allowed_classes_are_never_instantiated(
    node: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subprocess.Popen, "__init__", lambda *a, **k: pytest.fail("called"))
    monkeypatch.setattr(os, "system", lambda *a: pytest.fail("called"))
    with pytest.raises(SerializationError, match="refusing"):
        ValueCodec().decode_value(doc(node))


def test_unresolvable_classes_are_clear_errors() -> None:
    codec = ValueCodec()
    with pytest.raises(SerializationError, match="module 'no_such_module_xyz' is not imported"):
        codec.decode_value(doc(["D", "no_such_module_xyz:Thing", "x", 1]))
    with pytest.raises(SerializationError, match="not found"):
        codec.decode_value(doc(["D", f"{__name__}:Missing", "x", 1]))
    with pytest.raises(SerializationError, match="has no member 'BLUE'"):
        codec.decode_value(doc(["E", f"{__name__}:Color", "BLUE"]))
    with pytest.raises(SerializationError, match="now has 2 fields"):
        codec.decode_value(doc(["N", f"{__name__}:Point", 1, 2, 3]))


@pytest.fixture
def canary(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """An importable module ``durably_canary_codec`` that records being imported (in a
    file) and a lazy module ``durably_canary_lazy`` whose ``__getattr__`` records use."""
    marker = tmp_path / "imported"
    (tmp_path / "durably_canary_codec.py").write_text(
        f"open({str(marker)!r}, 'a').write('imported\\n')\n"
        "import dataclasses\n@dataclasses.dataclass\nclass Thing:\n    x: int = 0\n"
    )
    (tmp_path / "durably_canary_lazy.py").write_text(
        f"def __getattr__(name):\n    open({str(marker)!r}, 'a').write('getattr ' + name)\n"
        "    raise AttributeError(name)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("durably_canary_codec", "durably_canary_lazy"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return marker


@pytest.mark.parametrize(
    "node",
    [
        ["D", "durably_canary_codec:Thing", "x", 1],
        ["P", "durably_canary_codec:Thing", [], None, None, "x", 1],
        ["N", "durably_canary_codec:Thing", 1],
        ["E", "durably_canary_codec:Thing", "A"],
        ["EV", "durably_canary_codec:Thing", 1],
    ],
)
def test_decoding_never_imports_the_module_a_class_path_names(
    node: list[Any], canary: pathlib.Path
) -> None:
    with pytest.raises(SerializationError, match="is not imported"):
        ValueCodec().decode_value(doc(node))
    unresolved: list[str] = []
    value = ValueCodec().decode_value(doc(node), unresolved=unresolved)
    assert unresolved == ["durably_canary_codec:Thing"]
    assert isinstance(value, Unresolved)
    assert value.path == "durably_canary_codec:Thing"
    assert "not imported" in repr(value)
    assert "durably_canary_codec" not in sys.modules
    assert not canary.exists()


def test_decoding_never_triggers_a_lazy_module_getattr(canary: pathlib.Path) -> None:
    import importlib

    importlib.import_module("durably_canary_lazy")
    with pytest.raises(SerializationError, match="not found"):
        ValueCodec().decode_value(doc(["D", "durably_canary_lazy:Thing", "x", 1]))
    assert not canary.exists()


def test_imported_classes_resolve_and_placeholders_keep_identity(canary: pathlib.Path) -> None:
    import importlib

    module = importlib.import_module("durably_canary_codec")
    assert canary.read_text() == "imported\n"
    node = ["l", ["D", "durably_canary_codec:Thing", "x", 1], ["r", 1]]
    value = ValueCodec().decode_value(doc(node))
    assert value[0] == module.Thing(1)
    assert value[0] is value[1]
    del sys.modules["durably_canary_codec"]
    placeholders = ValueCodec().decode_value(doc(node), unresolved=[])
    assert placeholders[0] is placeholders[1]
    assert placeholders[0].fields == {"x": 1}


def test_dunder_attribute_names_are_refused() -> None:
    with pytest.raises(CorruptObjectError, match="bad attribute name"):
        ValueCodec().decode_value(doc(["D", f"{__name__}:Item", "__class__", 1]))


# ------------------------------------------------------------------------------ misc


def test_invalid_configuration() -> None:
    with pytest.raises(ValueError, match="at least 256"):
        ValueCodec(blob_threshold=100)
    with pytest.raises(ValueError, match="on_unserializable"):
        ValueCodec(on_unserializable="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pickle_key"):
        ValueCodec(pickle_key=b"")
    with pytest.raises(TypeError, match="root names"):
        ValueCodec().encode({1: 2})  # type: ignore[dict-item]


def test_the_document_format() -> None:
    codec = ValueCodec()
    enc = codec.encode({"frame0": {"x": 1, "y": [1, "a", None]}, "n": 5})
    assert enc.data == b'{"durably":1,"roots":{"frame0":["d","x",1,"y",["l",1,"a",null]],"n":5}}'
    assert enc.blobs == {}
    assert enc.skipped == ()
    assert ValueCodec.FORMAT == 1
    assert codec.decode(enc.data, NO_BLOBS.__getitem__) == {
        "frame0": {"x": 1, "y": [1, "a", None]},
        "n": 5,
    }


def test_inspection_never_unpickles_even_signed_data(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = ValueCodec(pickle_key=KEY)
    data = codec.encode_value([Opaque(1), "x"])

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unpickled")

    monkeypatch.setattr(pickle, "loads", forbidden)
    unresolved: list[str] = []
    value = codec.decode_value(data, unresolved=unresolved)
    assert isinstance(value[0], Unresolved)
    assert value[0].kind == "pickle"
    assert value[1] == "x"
    assert unresolved == ["pickle:value"]


def test_check_raises_where_encode_would_and_writes_nothing() -> None:
    codec = ValueCodec(blob_threshold=1024)
    state = {"log": ["x" * 3000, "y" * 3000], "n": 1}
    codec.check({"state": state})  # no error, no blob
    with pytest.raises(SerializationError, match=r"^Main frame local 'gen': generator"):
        codec.check({"locals": {"gen": (i for i in range(3))}}, {"locals": "Main frame local"})
    skipping = ValueCodec(on_unserializable="skip")
    with pytest.raises(SerializationError):  # whatever the policy says
        skipping.check({"locals": {"gen": (i for i in range(3))}})


def test_exception_groups_and_dataclass_exceptions_round_trip() -> None:
    inner = [ValueError("a"), KeyError("b")]
    group = ExceptionGroup("several", inner)
    out = roundtrip(group)
    assert type(out) is ExceptionGroup
    assert str(out) == str(group)
    assert [type(e) for e in out.exceptions] == [ValueError, KeyError]
    assert out.message == "several"
    error = ApiError(404, "not found")
    back = roundtrip(error)
    assert type(back) is ApiError
    assert back.args == error.args
    assert str(back) == str(error)
    assert (back.code, back.reason) == (404, "not found")


def test_a_debug_pattern_prints_nothing_when_decoded(capsys: pytest.CaptureFixture[str]) -> None:
    codec = ValueCodec()
    data = doc(["re", "a+b", re.DEBUG])
    capsys.readouterr()
    out = codec.decode_value(data)
    assert out.pattern == "a+b"
    assert capsys.readouterr().out == ""
