"""Decoding: the nodes of :mod:`durably._codec._format` back to Python values.

Decoding never imports and never runs code named by the data (see
:mod:`durably._codec._lookup`); a malformed node is a :class:`~durably.errors.CorruptObjectError`.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import decimal
import enum
import fractions
import hashlib
import hmac
import json
import pathlib
import pickle
import re
import struct
import uuid
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable
from dataclasses import MISSING
from dataclasses import fields as _dc_fields
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

from durably._codec._chunking import ChunkReader
from durably._codec._format import (
    DD_FACTORIES,
    FORMAT,
    HEADER,
    NONFINITE,
    PATH_TYPES,
    BlobGetter,
    DecodeHook,
    Fail,
    Unresolved,
    corrupt,
    short_repr,
)
from durably._codec._lookup import native_attributes, native_init, resolve_class
from durably.errors import CorruptObjectError, SignatureError

if TYPE_CHECKING:
    from durably._codec._valuecodec import ValueCodec

__all__ = ["DECODERS", "Decoder", "decode_plain"]

_PENDING: Final = object()


class Decoder:
    """State of one decode call: numbered objects, parsed blobs, resolved classes."""

    __slots__ = ("chunks", "classes", "codec", "objs", "unresolved")

    def __init__(
        self, codec: ValueCodec, get_blob: BlobGetter | None, unresolved: list[str] | None = None
    ) -> None:
        self.codec = codec
        self.chunks = ChunkReader(get_blob)
        self.objs: list[Any] = []
        self.classes: dict[tuple[str, str], Any] = {}
        self.unresolved = unresolved

    def dec(self, node: Any) -> Any:
        """Decode one node."""
        if type(node) is list:
            tag = node[0] if node else None
            f = DECODERS.get(tag) if type(tag) is str else None
            if f is None:
                raise corrupt(f"unknown node {short_repr(node)}")
            try:
                return f(self, node)
            except (Fail, CorruptObjectError, RecursionError):
                raise
            except Exception as exc:
                raise corrupt(f"bad {tag!r} node: {type(exc).__name__}: {exc}") from exc
        if type(node) is dict:
            raise corrupt("unexpected JSON object")
        return node

    def _reserve(self) -> int:
        self.objs.append(_PENDING)
        return len(self.objs) - 1

    def _seq(self, items: list[Any], start: int) -> list[Any]:
        dec = self.dec
        out: list[Any] = []
        try:
            for i in range(start, len(items)):
                out.append(dec(items[i]))
        except Fail as exc:
            exc.parts.append(f"[{len(out)}]")
            raise
        return out

    def _fill(self, out: Any, node: list[Any], start: int) -> Any:
        dec = self.dec
        if (len(node) - start) % 2:
            raise corrupt("odd number of key/value items")
        key: Any = None
        try:
            for i in range(start, len(node), 2):
                k = node[i]
                key = k if type(k) is str else dec(k)
                out[key] = dec(node[i + 1])
        except Fail as exc:
            exc.parts.append(f"[{short_repr(key)}]")
            raise
        return out

    def _attrs(self, node: list[Any], start: int) -> list[tuple[str, Any]]:
        if (len(node) - start) % 2:
            raise corrupt("odd number of attribute items")
        dec = self.dec
        out: list[tuple[str, Any]] = []
        name: Any = ""
        try:
            for i in range(start, len(node), 2):
                name = node[i]
                if type(name) is not str or (name.startswith("__") and name.endswith("__")):
                    raise corrupt(f"bad attribute name {short_repr(name)}")
                out.append((name, dec(node[i + 1])))
        except Fail as exc:
            exc.parts.append(f".{name}")
            raise
        return out

    def resolve(self, path: Any, kind: str) -> Any:
        """The already-imported class named ``"module:Qual.Name"``, checked to be of ``kind``.

        Never imports: a class whose module is not in ``sys.modules`` is an error, or None
        (the caller then builds an :class:`Unresolved`) when this decode collects
        unresolved paths.
        """
        if type(path) is not str:
            raise corrupt(f"bad class path {short_repr(path)}")
        try:
            return self.classes[path, kind]
        except KeyError:
            pass
        obj = resolve_class(path, kind, lenient=self.unresolved is not None)
        if obj is None and self.unresolved is not None:
            self.unresolved.append(path)
            return None
        self.classes[path, kind] = obj
        return obj

    def hooked(self, node: list[Any], hook: DecodeHook | None, what: str) -> Any:
        if len(node) != 3 or type(node[1]) is not str:
            raise corrupt(f"bad {node[0]!r} node")
        number = self._reserve()
        tag, payload = node[1], self.dec(node[2])
        if hook is None:
            raise Fail(f"cannot decode custom tag {tag!r}: no {what} is configured")
        try:
            value = hook(tag, payload)
        except Exception as exc:
            raise Fail(f"{what} failed for tag {tag!r}: {exc!r}") from exc
        if value is None:
            raise Fail(f"no {what} knows the custom tag {tag!r}")
        self.objs[number] = value
        return value


class _NotPlain(Exception):
    """A node outside the plain subset (see :func:`decode_plain`).

    Raised as a new instance every time: an exception instance raised again keeps the
    traceback of its earlier raises and adds to it, so a shared one would keep every
    frame it ever left -- and through their callers every checkpoint a loader held --
    alive for the life of the process.
    """


def _plain(node: Any) -> Any:
    """A plain node's value: ``"d"`` with string keys, ``"l"``, JSON scalars."""
    if type(node) is list and node:
        tag = node[0]
        if tag == "d":
            size = len(node)
            if not size & 1:
                raise _NotPlain
            out: dict[str, Any] = {}
            for i in range(1, size, 2):
                key = node[i]
                value = node[i + 1]
                if type(key) is not str:
                    raise _NotPlain
                t = type(value)
                out[key] = _plain(value) if t is list or t is dict else value
            return out
        if tag == "l":
            return [
                _plain(item) if type(item) is list or type(item) is dict else item
                for item in node[1:]
            ]
    raise _NotPlain


def decode_plain(data: bytes) -> dict[str, Any] | None:
    """The roots of a document whose values are all plain, or None.

    Plain values are what JSON holds: dicts with string keys (``"d"`` nodes), lists
    (``"l"``), strings, numbers, booleans and None, with no object shared between two
    places (that would be a reference). Journal documents are plain; decoding them here
    skips the general :class:`Decoder` (no blob, class or hook can be involved) and
    gives the same values it gives. Anything else -- another node, a reference, a blob,
    a malformed or foreign document -- returns None: decode it with
    :meth:`~durably._codec.ValueCodec.decode`, which also reports what is wrong.
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if type(doc) is not dict:
        return None
    version = doc.get("durably")
    roots = doc.get("roots")
    if type(version) is not int or version != FORMAT or type(roots) is not dict:
        return None
    try:
        return {
            name: _plain(node) if type(node) is list or type(node) is dict else node
            for name, node in roots.items()
        }
    except (_NotPlain, RecursionError):
        return None


def _arity(node: list[Any], n: int) -> None:
    if len(node) != n:
        raise corrupt(f"{node[0]!r} node has {len(node)} items, expected {n}")


def _d_list(d: Decoder, n: list[Any]) -> list[Any]:
    out: list[Any] = []
    d.objs.append(out)
    out.extend(d._seq(n, 1))
    return out


def _d_dict(d: Decoder, n: list[Any]) -> Any:
    out: dict[Any, Any] = {}
    d.objs.append(out)
    return d._fill(out, n, 1)


def _d_set(d: Decoder, n: list[Any]) -> set[Any]:
    out: set[Any] = set()
    d.objs.append(out)
    out.update(d._seq(n, 1))
    return out


def _d_bytes(n: list[Any]) -> bytes:
    if not all(type(p) is str for p in n[1:]):
        raise corrupt("bytes pieces must be strings")
    return b"".join(binascii.a2b_base64(p, strict_mode=True) for p in n[1:])


def _d_bytearray(d: Decoder, n: list[Any]) -> bytearray:
    out = bytearray(_d_bytes(n))
    d.objs.append(out)
    return out


def _d_floats(d: Decoder, n: list[Any]) -> list[float]:
    data = _d_bytes(n)
    if len(data) % 8:
        raise corrupt("packed floats are not a multiple of 8 bytes")
    out = list(struct.unpack(f"<{len(data) // 8}d", data))
    d.objs.append(out)
    return out


def _d_str(d: Decoder, n: list[Any]) -> str:
    if not all(type(p) is str for p in n[1:]):
        raise corrupt("str pieces must be strings")
    return "".join(n[1:])


def _d_int(d: Decoder, n: list[Any]) -> int:
    _arity(n, 2)
    if type(n[1]) is not str or len(n[1]) > 100_000:
        raise corrupt("bad big int")
    return int(n[1], 16)


def _d_float(d: Decoder, n: list[Any]) -> float:
    _arity(n, 2)
    return NONFINITE[n[1]]


def _d_ref(d: Decoder, n: list[Any]) -> Any:
    _arity(n, 2)
    number = n[1]
    if type(number) is not int or not 0 <= number < len(d.objs):
        raise corrupt(f"reference to unknown object {short_repr(number)}")
    obj = d.objs[number]
    if obj is _PENDING:
        raise corrupt("reference to an object that is still being decoded")
    return obj


def _d_tz(node: Any) -> _dt.tzinfo | None:
    if node is None:
        return None
    if type(node) is list and node and node[0] == "zi" and len(node) == 2:
        if type(node[1]) is not str:
            raise corrupt("bad zone key")
        return ZoneInfo(node[1])
    if type(node) is list and node and node[0] == "tz" and len(node) == 5:
        days, secs, micros, name = node[1:]
        if not all(type(x) is int for x in (days, secs, micros)):
            raise corrupt("bad timezone offset")
        off = _dt.timedelta(days, secs, micros)
        if name is None:
            return _dt.timezone(off)
        if type(name) is not str:
            raise corrupt("bad timezone name")
        return _dt.timezone(off, name)
    raise corrupt(f"bad tzinfo {short_repr(node)}")


def _d_datetime(d: Decoder, n: list[Any]) -> _dt.datetime:
    _arity(n, 4)
    if type(n[1]) is not str or n[2] not in (0, 1):
        raise corrupt("bad datetime")
    return _dt.datetime.fromisoformat(n[1]).replace(tzinfo=_d_tz(n[3]), fold=n[2])


def _d_time(d: Decoder, n: list[Any]) -> _dt.time:
    _arity(n, 4)
    if type(n[1]) is not str or n[2] not in (0, 1):
        raise corrupt("bad time")
    return _dt.time.fromisoformat(n[1]).replace(tzinfo=_d_tz(n[3]), fold=n[2])


def _d_date(d: Decoder, n: list[Any]) -> _dt.date:
    _arity(n, 2)
    if type(n[1]) is not str:
        raise corrupt("bad date")
    return _dt.date.fromisoformat(n[1])


def _ints(n: list[Any], count: int) -> list[int]:
    _arity(n, count + 1)
    if not all(type(x) is int for x in n[1:]):
        raise corrupt(f"{n[0]!r} node needs integers")
    return n[1:]


def _d_timedelta(d: Decoder, n: list[Any]) -> _dt.timedelta:
    days, secs, micros = _ints(n, 3)
    return _dt.timedelta(days, secs, micros)


def _d_decimal(d: Decoder, n: list[Any]) -> decimal.Decimal:
    _arity(n, 2)
    if type(n[1]) is not str:
        raise corrupt("bad decimal")
    return decimal.Decimal(n[1])


def _d_uuid(d: Decoder, n: list[Any]) -> uuid.UUID:
    _arity(n, 2)
    if type(n[1]) is not str:
        raise corrupt("bad uuid")
    return uuid.UUID(hex=n[1])


def _d_fraction(d: Decoder, n: list[Any]) -> fractions.Fraction:
    _arity(n, 3)
    num, den = d.dec(n[1]), d.dec(n[2])
    if type(num) is not int or type(den) is not int:
        raise corrupt("bad fraction")
    return fractions.Fraction(num, den)


def _d_complex(d: Decoder, n: list[Any]) -> complex:
    _arity(n, 3)
    re, im = d.dec(n[1]), d.dec(n[2])
    if type(re) is not float or type(im) is not float:
        raise corrupt("bad complex")
    return complex(re, im)


def _d_range(d: Decoder, n: list[Any]) -> range:
    _arity(n, 4)
    start, stop, step = (d.dec(x) for x in n[1:])
    if not (type(start) is type(stop) is type(step) is int) or step == 0:
        raise corrupt("bad range")
    return range(start, stop, step)


def _d_slice(d: Decoder, n: list[Any]) -> slice:
    _arity(n, 4)
    return slice(d.dec(n[1]), d.dec(n[2]), d.dec(n[3]))


def _d_ellipsis(d: Decoder, n: list[Any]) -> Any:
    _arity(n, 1)
    return ...


def _d_pattern(d: Decoder, n: list[Any]) -> re.Pattern[Any]:
    _arity(n, 3)
    pattern, flags = d.dec(n[1]), n[2]
    if type(pattern) not in (str, bytes) or type(flags) is not int:
        raise corrupt("bad pattern")
    try:  # re.DEBUG would print the pattern (while inspecting, too)
        return re.compile(pattern, flags & ~re.DEBUG)
    except (re.error, ValueError) as exc:
        raise corrupt(f"bad pattern: {exc}") from exc


_SAME_BY_VALUE = (tuple, str, int, float, bytes)
"""Types whose ``==`` runs no Python code of the stored data (a tuple's items compared
are exceptions, compared by identity, or these)."""


def _d_exception(d: Decoder, n: list[Any]) -> Any:
    if len(n) < 3:
        raise corrupt("bad exception node")
    cls = d.resolve(n[1], "exception")
    number = d._reserve()
    args = d.dec(n[2])
    if type(args) is not tuple:
        raise corrupt("bad exception arguments")
    if cls is None:
        placeholder = Unresolved(n[1], "exception", {"args": args})
        d.objs[number] = placeholder
        placeholder.fields.update(d._attrs(n, 3))
        return placeholder
    # No Python code of the class runs: its __new__ is native (checked by resolve), and
    # its __init__ is called only when native too; the stored attributes are then set
    # directly (the C slots of builtin exceptions through their native setters).
    try:
        obj = cls.__new__(cls, *args)
        if native_init(cls):
            obj.__init__(*args)
        else:
            obj.args = args
    except Exception as exc:
        raise Fail(f"cannot restore {n[1]!r} from its arguments: {exc!r}") from exc
    d.objs[number] = obj
    native = native_attributes(cls)
    for name, value in d._attrs(n, 3):
        if name not in native:
            obj.__dict__[name] = value
            continue
        current = getattr(obj, name, None)
        if current is value or (type(current) in _SAME_BY_VALUE and current == value):
            continue  # made from args (ExceptionGroup.exceptions: read-only)
        try:
            setattr(obj, name, value)  # a C slot: its setter checks the value
        except (TypeError, ValueError, AttributeError) as exc:
            raise corrupt(f"bad attribute {name!r} of {n[1]!r}: {exc}") from exc
    return obj


def _d_path(d: Decoder, n: list[Any]) -> pathlib.PurePath:
    _arity(n, 3)
    cls = PATH_TYPES.get(n[1]) if type(n[1]) is str else None
    if cls is None or type(n[2]) is not str:
        raise corrupt(f"bad path node {short_repr(n)}")
    return cls(n[2])


def _d_enum(d: Decoder, n: list[Any]) -> enum.Enum:
    _arity(n, 3)
    cls = d.resolve(n[1], "enum")
    if cls is None:
        return Unresolved(n[1], "enum", {"name": n[2]})  # type: ignore[return-value]
    member: enum.Enum | None = cls.__members__.get(n[2]) if type(n[2]) is str else None
    if member is None:
        raise Fail(f"enum {n[1]!r} has no member {short_repr(n[2])}")
    return member


def _d_flag(d: Decoder, n: list[Any]) -> enum.Enum:
    _arity(n, 3)
    cls = d.resolve(n[1], "flag")
    value = d.dec(n[2])
    if cls is None:
        return Unresolved(n[1], "flag", {"value": value})  # type: ignore[return-value]
    try:
        member: enum.Enum = cls(value)
        return member
    except ValueError as exc:
        raise Fail(f"flag {n[1]!r} has no value {short_repr(value)}") from exc


def _d_namedtuple(d: Decoder, n: list[Any]) -> tuple[Any, ...]:
    if len(n) < 2:
        raise corrupt("bad named tuple")
    cls = d.resolve(n[1], "named tuple")
    values = d._seq(n, 2)
    if cls is None:
        return Unresolved(
            n[1],
            "named tuple",  # type: ignore[return-value]
            {str(i): v for i, v in enumerate(values)},
        )
    if len(values) != len(cls._fields):
        raise Fail(
            f"named tuple {n[1]!r} now has {len(cls._fields)} fields, "
            f"the stored value has {len(values)}"
        )
    value: tuple[Any, ...] = tuple.__new__(cls, values)
    return value


def _d_dataclass(d: Decoder, n: list[Any]) -> Any:
    if len(n) < 2:
        raise corrupt("bad dataclass")
    cls = d.resolve(n[1], "dataclass")
    if cls is None:
        placeholder = Unresolved(n[1], "dataclass", {})
        d.objs.append(placeholder)
        placeholder.fields.update(d._attrs(n, 2))
        return placeholder
    obj = cls.__new__(cls)
    d.objs.append(obj)
    seen = set()
    for name, value in d._attrs(n, 2):
        object.__setattr__(obj, name, value)
        seen.add(name)
    for f in _dc_fields(cls):
        if f.name in seen:
            continue
        if f.default is not MISSING:
            object.__setattr__(obj, f.name, f.default)
        elif f.default_factory is not MISSING:
            object.__setattr__(obj, f.name, f.default_factory())
    return obj


def _d_pydantic(d: Decoder, n: list[Any]) -> Any:
    if len(n) < 5:
        raise corrupt("bad pydantic node")
    cls = d.resolve(n[1], "pydantic model")
    fields_set = n[2]
    if type(fields_set) is not list or not all(type(x) is str for x in fields_set):
        raise corrupt("bad pydantic fields set")
    if cls is None:
        placeholder = Unresolved(n[1], "pydantic model", {})
        d.objs.append(placeholder)
        for extra in n[3:5]:  # decoded for the object numbering only
            d.dec(extra)
        placeholder.fields.update(d._attrs(n, 5))
        return placeholder
    obj = cls.__new__(cls)
    d.objs.append(obj)
    extra, private = d.dec(n[3]), d.dec(n[4])
    if not (extra is None or type(extra) is dict) or not (private is None or type(private) is dict):
        raise corrupt("bad pydantic extra/private attributes")
    obj.__setstate__(
        {
            "__dict__": dict(d._attrs(n, 5)),
            "__pydantic_fields_set__": set(fields_set),
            "__pydantic_extra__": extra,
            "__pydantic_private__": private,
        }
    )
    return obj


def _d_mapping(factory: Callable[[], Any]) -> Callable[[Decoder, list[Any]], Any]:
    def decode(d: Decoder, n: list[Any]) -> Any:
        out = factory()
        d.objs.append(out)
        return d._fill(out, n, 1)

    return decode


def _d_defaultdict(d: Decoder, n: list[Any]) -> defaultdict[Any, Any]:
    if len(n) < 2 or not (n[1] is None or n[1] in DD_FACTORIES):
        raise corrupt("bad defaultdict factory")
    out: defaultdict[Any, Any] = defaultdict(None if n[1] is None else DD_FACTORIES[n[1]])
    d.objs.append(out)
    return d._fill(out, n, 2)  # type: ignore[no-any-return]


def _d_deque(d: Decoder, n: list[Any]) -> deque[Any]:
    if len(n) < 2 or not (n[1] is None or (type(n[1]) is int and n[1] >= 0)):
        raise corrupt("bad deque maxlen")
    out: deque[Any] = deque(maxlen=n[1])
    d.objs.append(out)
    out.extend(d._seq(n, 2))
    return out


def _d_pickle(d: Decoder, n: list[Any]) -> Any:
    _arity(n, 3)
    number = d._reserve()
    sig = n[1]
    data = d.dec(n[2])
    if type(data) is not bytes or type(sig) is not str:
        raise corrupt("bad pickle node")
    if d.unresolved is not None:  # inspection never unpickles, even signed data
        d.unresolved.append("pickle:value")
        placeholder = Unresolved("pickle:value", "pickle", {"bytes": len(data)})
        d.objs[number] = placeholder
        return placeholder
    key = d.codec._pickle_key
    if key is None:
        raise Fail(
            "the data holds a pickled value but no pickle_key is configured; refusing to unpickle"
        )
    expected = hmac.new(key, data, hashlib.sha256).hexdigest()
    if not (sig.isascii() and hmac.compare_digest(expected, sig)):
        raise Fail("pickled value has a bad signature; refusing to unpickle", SignatureError)
    try:
        value = pickle.loads(data)
    except Exception as exc:
        raise Fail(f"signed pickle failed to load: {exc!r}") from exc
    d.objs[number] = value
    return value


def _d_chunked(d: Decoder, n: list[Any]) -> Any:
    tag = n[1] if len(n) > 1 else None
    header = HEADER.get(tag) if type(tag) is str else None
    if header is None or len(n) < 2 + header:
        raise corrupt(f"bad chunked node {short_repr(n)}")
    flat = n[1 : 2 + header]
    for digest in n[2 + header :]:
        d.chunks.expand(digest, flat)
    return d.dec(flat)


DECODERS: Final[dict[str, Callable[[Decoder, list[Any]], Any]]] = {
    "l": _d_list,
    "t": lambda d, n: tuple(d._seq(n, 1)),
    "d": _d_dict,
    "s": _d_set,
    "fs": lambda d, n: frozenset(d._seq(n, 1)),
    "b": lambda d, n: _d_bytes(n),
    "ba": _d_bytearray,
    "lf": _d_floats,
    "str": _d_str,
    "i": _d_int,
    "f": _d_float,
    "r": _d_ref,
    "od": _d_mapping(OrderedDict),
    "ctr": _d_mapping(Counter),
    "dd": _d_defaultdict,
    "dq": _d_deque,
    "dt": _d_datetime,
    "tm": _d_time,
    "da": _d_date,
    "td": _d_timedelta,
    "dec": _d_decimal,
    "u": _d_uuid,
    "fr": _d_fraction,
    "cx": _d_complex,
    "pp": _d_path,
    "rg": _d_range,
    "sl": _d_slice,
    "el": _d_ellipsis,
    "re": _d_pattern,
    "X": _d_exception,
    "E": _d_enum,
    "EV": _d_flag,
    "N": _d_namedtuple,
    "D": _d_dataclass,
    "P": _d_pydantic,
    "h": lambda d, n: d.hooked(n, d.codec._decode_hook, "decode_hook"),
    "x": lambda d, n: d.hooked(n, d.codec._decode_fallback, "decode_fallback"),
    "p": _d_pickle,
    "C": _d_chunked,
}
