"""The safe value codec: Python values <-> canonical JSON documents and content-addressed blobs.

It stores the namespaces of call-stack frames and agent state at every checkpoint, so it is

* **safe**: decoding never imports a module and never runs code named by the data. A
  class path ``"module:Qual"`` is looked up only among modules already imported
  (``sys.modules``: the program file, the libraries it imported, registered plugins), by
  plain dictionary lookups that cannot trigger a lazy import; the only classes ever
  instantiated are dataclasses, pydantic models, enums and named tuples (checked before any
  instance exists), plus a fixed set of standard-library types. A class that is not
  imported is an error, or, when the caller asks for it (inspection), an inert
  :class:`Unresolved` placeholder. Pickle is used only when a ``pickle_key`` is
  configured, and then only for data whose HMAC-SHA256 verifies.
* **deterministic**: the same value gives the same bytes (dict order is kept, sets are
  sorted by the encoded form of their elements).
* **identity preserving**: within one :meth:`ValueCodec.encode` call (across all its roots),
  an object reached twice is decoded as one object, and cycles round-trip.
* **incremental**: nodes larger than ``blob_threshold`` are split into content-addressed
  blobs, so a checkpoint of a large, mostly unchanged state writes only a few new blobs.

Format (version 1)
------------------

The root document is compact ASCII JSON::

    {"durably": 1, "roots": {"<root name>": <node>, ...}}      # encode()
    {"durably": 1, "value": <node>}                             # encode_value()

A node is a JSON ``null``/``true``/``false``/number/string standing for itself (an ``int``
with ``abs(value) < 2**64``, a finite ``float``, a ``str``), or an array whose first element
is a tag:

=====================================  =====================================================
``["i", "-0x1f"]``                     an int too large for a plain JSON number
``["f", "nan" | "inf" | "-inf"]``      a non-finite float
``["b", b64, ...]``                    bytes (the base64 pieces are concatenated)
``["ba", b64, ...]``                   bytearray *
``["lf", b64, ...]``                   a list * of 16 or more floats (only), packed as
                                       little-endian binary64 (bit exact, and fast)
``["str", piece, ...]``                a str split into pieces (only inside ``"C"``)
``["l", x, ...]`` / ``["t", x, ...]``  list * / tuple
``["d", k, v, k, v, ...]``             dict * (any encodable hashable keys, in order)
``["s", x, ...]`` / ``["fs", x, ...]`` set * / frozenset, elements sorted by encoding
``["od"|"ctr", k, v, ...]``            OrderedDict * / Counter *
``["dd", factory, k, v, ...]``         defaultdict * (factory: a builtin type name or null)
``["dq", maxlen, x, ...]``             deque *
``["dt", iso, fold, tz]``              datetime (iso without offset); ``["tm", ...]`` time
``["da", iso]`` / ``["td", d, s, us]`` date / timedelta
tz: ``null`` | ``["tz", d, s, us, name | null]`` | ``["zi", key]``  (timezone / ZoneInfo)
``["dec", str]`` ``["u", hex]``        Decimal / UUID
``["fr", n, d]`` ``["cx", re, im]``    Fraction / complex
``["pp", class name, str]``            a concrete pathlib class
``["E", "mod:Qual", name]``            an enum member (``["EV", path, value]`` for flag
                                       combinations that have no name)
``["N", "mod:Qual", x, ...]``          a named tuple
``["D", "mod:Qual", name, v, ...]``    a dataclass instance * (fields, then extra
                                       ``__dict__`` entries)
``["P", "mod:Qual", [fields set], extra, private, name, v, ...]``
                                       a pydantic v2 model instance *
``["h", tag, payload]``                a value encoded by ``encode_hook`` *
``["x", tag, payload]``                a value encoded by ``encode_fallback`` *
``["p", hmac hex, bytes node]``        a signed pickle *
``["r", n]``                           a reference to the n-th object marked * above
``["C", tag, header..., digest, ...]`` a chunked node (see below)
=====================================  =====================================================

**Identity.** Objects marked * are numbered implicitly, in the order the encoder enters them
(depth first, document order, across roots). The first occurrence is written in full, with
no marker; every later occurrence is ``["r", n]``. Immutable values (str, tuple, frozenset,
...) are never numbered, so their encoding depends only on their value. Because definitions
carry no marker, a blob's bytes depend on its content only (plus the numbers of any
references it contains).

**Chunking.** A node whose encoding exceeds ``blob_threshold`` characters is written as
``["C", tag, header..., "sha256:<hex>", ...]``: its items (elements, or key/value pairs for
mappings and attribute pairs for objects) are grouped into chunk blobs ``["c", item, ...]``.
Chunk boundaries are content defined at item granularity: once a chunk holds at least 1/16
of the threshold, it ends after an item whose CRC-32 falls below
``2**32 * len(item) / (3/16 * blob_threshold)`` (so chunks average about a quarter of the
threshold); and it ends before an item that would make it exceed the threshold. A boundary
therefore depends only on the items of the chunk it closes: appending items changes only the
last chunk, editing one item changes only its chunk (and possibly the next one), and an
insertion or deletion is resynchronised at the next content-defined boundary. Children
larger than the threshold were already chunked themselves, so this is recursive. If the list
of digests is itself too long, it is grouped the same way into index blobs
``["cc", digest, ...]``. Large strings and bytes are cut into pieces at fixed positions (half
the threshold), so appending to a log string rewrites only its last piece. Decoding
``["C", tag, header..., digests]`` is exactly decoding ``[tag, header..., *items]``.
Every blob is canonical ASCII JSON, named by the SHA-256 of its bytes, and verified on read.
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
import math
import pathlib
import pickle
import struct
import sys
import uuid
import warnings
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass
from dataclasses import fields as _dc_fields
from json.encoder import encode_basestring_ascii as _esc
from typing import Any, Final, Literal
from zlib import crc32
from zoneinfo import ZoneInfo

from durably.errors import (
    CorruptObjectError,
    DurablyWarning,
    SerializationError,
    SignatureError,
    UnsupportedFormatError,
)

__all__ = [
    "BlobGetter",
    "DecodeHook",
    "EncodeHook",
    "Encoded",
    "Unresolved",
    "ValueCodec",
    "lookup_imported",
]

BlobGetter = Callable[[str], bytes]
"""``digest -> canonical bytes`` of that blob (``digest`` is ``"sha256:<hex>"``)."""

EncodeHook = Callable[[Any], "tuple[str, Any] | None"]
"""``value -> (tag, payload)`` or None when the hook does not handle the value."""

DecodeHook = Callable[[str, Any], Any]
"""``(tag, payload) -> value``; returns None when the tag is not its own."""


@dataclass(frozen=True)
class Encoded:
    """The result of :meth:`ValueCodec.encode`.

    Attributes:
        data: The root document (compact ASCII JSON), which references blobs by digest.
        blobs: ``"sha256:<hex>" -> bytes`` for every blob the document references,
            transitively, whether or not the store already has it.
        skipped: Paths of the variables left out under ``on_unserializable="skip"``,
            e.g. ``"Main frame local 'conn'"``.
    """

    data: bytes
    blobs: dict[str, bytes]
    skipped: tuple[str, ...]


class Unresolved:
    """A stored instance of a class that is not imported in this process (inspection only).

    Decoding never imports the module a stored value names; :meth:`ValueCodec.decode` with
    ``unresolved=`` given returns this inert stand-in instead of failing. It holds the
    decoded field values and does nothing else.

    Attributes:
        path: The stored class path, ``"module:QualName"``.
        kind: ``"dataclass"``, ``"pydantic model"``, ``"named tuple"``, ``"enum"``,
            ``"flag"``, or ``"pickle"`` (a signed pickle: never loaded by inspection).
        fields: Field name -> value (positional values of a named tuple are numbered
            ``"0"``, ``"1"``, ...; an enum member has ``{"name": ...}`` or ``{"value": ...}``).
    """

    __slots__ = ("fields", "kind", "path")

    def __init__(self, path: str, kind: str, fields: dict[str, Any]) -> None:
        self.path = path
        self.kind = kind
        self.fields = fields

    def __repr__(self) -> str:
        name = self.path.rpartition(":")[2] or self.path
        if self.kind in ("enum", "flag"):
            member = self.fields.get("name", self.fields.get("value"))
            return f"<{name}.{member} (not imported: {self.path})>"
        inner = ", ".join(f"{k}={_short_repr(v)}" for k, v in self.fields.items())
        return f"<{name}({inner}) (not imported: {self.path})>"


def lookup_imported(path: str) -> Any:
    """The object named ``"module:Qual.Name"`` if ``module`` is already imported, else None.

    Only dictionary lookups (``sys.modules``, then each ``__dict__``): no import, no module
    ``__getattr__`` (which may import lazily), no descriptor, no code named by ``path``.
    """
    module, _, qualname = path.partition(":")
    obj: Any = sys.modules.get(module)
    if obj is None or not qualname:
        return None
    for part in qualname.split("."):
        namespace = getattr(obj, "__dict__", None)
        if not isinstance(namespace, Mapping):
            return None
        obj = namespace.get(part)
        if obj is None:
            return None
    return obj


_BIG_INT: Final = 1 << 64
_MIN_THRESHOLD: Final = 256
_DIGEST_UNIT: Final = len('"sha256:"') + 64 + 1
_NO_LIMIT: Final = sys.maxsize
_MAX_INDEX_DEPTH: Final = 16
_FLOAT_RUN: Final = 16  # lists of at least this many floats (only) are packed as binary64
_FLOAT_ONLY: Final = {float}

# Positional header items that precede the items of a node, and how many JSON elements make
# one chunking unit. Only these tags may be chunked.
_HEADER: Final[dict[str, int]] = {
    "l": 0, "t": 0, "s": 0, "fs": 0, "str": 0, "b": 0, "ba": 0, "lf": 0, "d": 0, "od": 0,
    "ctr": 0,
    "dd": 1, "dq": 1, "N": 1, "D": 1, "P": 4,
}

_DD_FACTORIES: Final[dict[str, type]] = {
    t.__name__: t
    for t in (list, dict, set, frozenset, tuple, int, float, complex, str, bytes, bytearray,
              bool, OrderedDict, Counter, deque)
}
_DD_NAMES: Final[dict[Any, str]] = {t: n for n, t in _DD_FACTORIES.items()}

_PATH_TYPES: Final[dict[str, type[pathlib.PurePath]]] = {
    t.__name__: t
    for t in (pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.PosixPath,
              pathlib.WindowsPath)
}
_NONFINITE: Final[dict[str, float]] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class _Fail(Exception):
    """Internal: a value cannot be encoded/decoded. Collects the path on its way up."""

    def __init__(self, reason: str, kind: type[Exception] = SerializationError) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.parts: list[str] = []

    def located(self, prefix: str) -> Exception:
        """Build the public exception, with the path ``prefix`` + collected subscripts."""
        path = prefix + "".join(reversed(self.parts))
        if issubclass(self.kind, SerializationError):
            return self.kind(path, self.reason)
        return self.kind(f"{path}: {self.reason}" if path else self.reason)


def _corrupt(reason: str) -> _Fail:
    return _Fail(f"malformed data: {reason}", CorruptObjectError)


def _short_repr(value: object, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _class_path(cls: type) -> str | None:
    """``"module:QualName"`` if importing ``module`` and walking ``QualName`` finds ``cls``."""
    module = getattr(cls, "__module__", None)
    qualname = getattr(cls, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    parts = qualname.split(".")
    if not all(p.isidentifier() and not p.startswith("__") for p in parts):
        return None  # "<locals>", generic aliases like "Model[int]", dunders: not importable
    obj: Any = sys.modules.get(module)
    if obj is None:
        return None
    for part in parts:
        obj = getattr(obj, part, None)
    return f"{module}:{qualname}" if obj is cls else None


def _b64(data: bytes | bytearray | memoryview) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _e_float(value: float) -> str:
    if value - value == 0.0:  # finite
        return float.__repr__(value)
    return '["f","nan"]' if value != value else ('["f","inf"]' if value > 0 else '["f","-inf"]')


def _e_int(value: int) -> str:
    if -_BIG_INT < value < _BIG_INT:
        return int.__repr__(value)
    return '["i","' + hex(value) + '"]'


def _e_tz(tz: _dt.tzinfo | None) -> str | None:
    if tz is None:
        return "null"
    if type(tz) is _dt.timezone:
        off = tz.utcoffset(None)
        name = tz.tzname(None)
        if off is None or name is None:  # pragma: no cover - timezone always has both
            return None
        plain = _dt.timezone(off).tzname(None)
        return (f'["tz",{off.days},{off.seconds},{off.microseconds},'
                f'{"null" if name == plain else _esc(name)}]')
    if type(tz) is ZoneInfo and tz.key:
        return '["zi",' + _esc(tz.key) + "]"
    return None


class _Encoder:
    """State of one encode call: the identity memo, the blobs, the class-path cache."""

    __slots__ = (
        "avg", "blob_log", "blobs", "cls_cache", "codec", "fallback", "fields", "hook", "keying",
        "late", "limit", "lo", "memo", "nrefs", "objs", "pickle_key",
    )

    def __init__(self, codec: ValueCodec, limit: int, *, keying: bool = False,
                 cls_cache: dict[type, str | None] | None = None) -> None:
        self.codec = codec
        self.hook = codec._encode_hook
        self.fallback = codec._encode_fallback
        self.pickle_key = codec._pickle_key
        self.limit = limit
        self.lo = limit // 16  # no content-defined boundary in the first 1/16 of a chunk
        self.avg = max(1, limit * 3 // 16)  # so that chunks average ~1/4 of the threshold
        self.keying = keying
        self.memo: dict[int, int] = {}  # id(obj) -> number
        self.objs: list[object] = []  # number -> obj; keeps every numbered object alive
        self.late: set[int] = set()  # numbers of hook-encoded objects being encoded
        self.nrefs = 0
        self.blobs: dict[str, bytes] = {}
        self.blob_log: list[str] = []
        self.cls_cache: dict[type, str | None] = {} if cls_cache is None else cls_cache
        self.fields: dict[type, tuple[str, ...]] = {}  # dataclass -> field names

    # -- dispatch -----------------------------------------------------------------------

    def enc(self, value: Any) -> str:
        """Encode one value to its JSON fragment."""
        t = type(value)
        if t is str:
            s: str = _esc(value)
            return s if len(s) <= self.limit else self._big_str(value)
        f = _ENCODERS.get(t)
        if f is not None:
            return f(self, value)
        return self._other(value)

    def _ref(self, number: int) -> str:
        if number in self.late:
            raise _Fail("a value handled by an encode hook refers back to itself; "
                        "such cycles cannot be restored")
        self.nrefs += 1
        return f'["r",{number}]'

    def _new(self, obj: object) -> None:
        self.memo[id(obj)] = len(self.objs)
        self.objs.append(obj)

    def _checkpoint(self) -> tuple[int, int]:
        return len(self.objs), len(self.blob_log)

    def _rollback(self, cp: tuple[int, int]) -> None:
        nobjs, nblobs = cp
        memo = self.memo
        for obj in self.objs[nobjs:]:
            del memo[id(obj)]
        del self.objs[nobjs:]
        for digest in self.blob_log[nblobs:]:
            del self.blobs[digest]
        del self.blob_log[nblobs:]

    def _cls(self, cls: type) -> str | None:
        try:
            return self.cls_cache[cls]
        except KeyError:
            path = self.cls_cache[cls] = _class_path(cls)
            return path

    # -- containers ---------------------------------------------------------------------

    def _node(self, tag: str, items: list[str], header: str = "", width: int = 1) -> str:
        """``[tag, header..., items...]``, chunked when longer than the threshold."""
        body = ",".join(items)
        s = f'["{tag}"{header},{body}]' if items else f'["{tag}"{header}]'
        if len(s) > self.limit:
            if width == 2:
                items = [items[i] + "," + items[i + 1] for i in range(0, len(items), 2)]
            return self._chunked(tag, header, items)
        return s

    def _seq(self, value: Iterable[Any]) -> list[str]:
        enc, limit, big, irepr, frepr = self.enc, self.limit, _BIG_INT, int.__repr__, float.__repr__
        encoders = _ENCODERS
        out: list[str] = []
        append = out.append
        try:
            for item in value:  # the common leaves inline: this loop is the hot path
                t = type(item)
                if t is str:
                    s = _esc(item)
                    append(s if len(s) <= limit else self._big_str(item))
                elif t is int and -big < item < big:
                    append(irepr(item))
                elif item is None:
                    append("null")
                elif t is float and item - item == 0.0:
                    append(frepr(item))
                elif t is bool:
                    append("true" if item else "false")
                else:
                    f = encoders.get(t)
                    append(f(self, item) if f is not None else enc(item))
        except _Fail as exc:
            exc.parts.append(f"[{len(out)}]")
            raise
        return out

    def _pairs(self, value: Mapping[Any, Any], out: list[str] | None = None) -> list[str]:
        enc, limit, big, irepr, frepr = self.enc, self.limit, _BIG_INT, int.__repr__, float.__repr__
        encoders = _ENCODERS
        out = [] if out is None else out
        append = out.append
        key: Any = None
        try:
            for key, item in value.items():
                append(_esc(key) if type(key) is str else enc(key))
                t = type(item)
                if t is str:
                    s = _esc(item)
                    append(s if len(s) <= limit else self._big_str(item))
                elif t is int and -big < item < big:
                    append(irepr(item))
                elif item is None:
                    append("null")
                elif t is float and item - item == 0.0:
                    append(frepr(item))
                elif t is bool:
                    append("true" if item else "false")
                else:
                    f = encoders.get(t)
                    append(f(self, item) if f is not None else enc(item))
        except _Fail as exc:
            exc.parts.append(f"[{_short_repr(key)}]")
            raise
        return out

    def _attrs(self, pairs: Iterable[tuple[str, Any]], out: list[str]) -> list[str]:
        enc = self.enc
        name = ""
        try:
            for name, item in pairs:
                out.append(_esc(name))
                out.append(enc(item))
        except _Fail as exc:
            exc.parts.append(f".{name}")
            raise
        return out

    def _set(self, tag: str, value: set[Any] | frozenset[Any]) -> str:
        cp = self._checkpoint()
        nrefs = self.nrefs
        enc = self.enc
        try:
            items = [enc(x) for x in value]
            if not self.keying and (len(self.objs) != cp[0] or self.nrefs != nrefs):
                # Elements with identity: encode again in a value-determined order, so that
                # the numbering follows the order the decoder will see.
                self._rollback(cp)
                self.nrefs = nrefs
                keyer = _Encoder(self.codec, _NO_LIMIT, keying=True, cls_cache=self.cls_cache)
                ordered = sorted(value, key=keyer.enc)
                items = [enc(x) for x in ordered]
            else:
                items.sort()
        except _Fail as exc:
            exc.parts.append("{...}")
            raise
        return self._node(tag, items)

    # -- blobs --------------------------------------------------------------------------

    def _store(self, text: str) -> str:
        data = text.encode("ascii")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if digest not in self.blobs:
            self.blobs[digest] = data
            self.blob_log.append(digest)
        return digest

    def _cdc(self, units: list[str], prefix: str, min_units: int) -> list[str]:
        """Group ``units`` into content-defined chunks; store each; return the digests."""
        limit, lo, avg, store = self.limit, self.lo, self.avg, self._store
        out: list[str] = []
        cur: list[str] = []
        acc = 0
        for unit in units:
            n = len(unit) + 1
            if acc + n > limit and len(cur) >= min_units:
                out.append(store(prefix + ",".join(cur) + "]"))
                cur = []
                acc = 0
            cur.append(unit)
            acc += n
            if len(cur) >= min_units and acc >= lo and (
                n >= avg or crc32(unit.encode("ascii")) * avg < n << 32
            ):
                out.append(store(prefix + ",".join(cur) + "]"))
                cur = []
                acc = 0
        if cur:
            out.append(store(prefix + ",".join(cur) + "]"))
        return out

    def _chunked(self, tag: str, header: str, units: list[str]) -> str:
        digests = self._cdc(units, '["c",', 1)
        while len(digests) * _DIGEST_UNIT > self.limit:
            digests = self._cdc([f'"{d}"' for d in digests], '["cc",', 2)
        return f'["C","{tag}"{header},' + ",".join(f'"{d}"' for d in digests) + "]"

    def _big_str(self, value: str) -> str:
        step = max(1, self.limit // 2)
        return self._chunked(
            "str", "", [_esc(value[i : i + step]) for i in range(0, len(value), step)]
        )

    def _bytes(self, tag: str, value: bytes | bytearray) -> str:
        s = f'["{tag}","{_b64(value)}"]'
        if len(s) <= self.limit:
            return s
        step = max(3, self.limit // 2 // 4 * 3)
        mv = memoryview(value)
        return self._chunked(
            tag, "", [f'"{_b64(mv[i : i + step])}"' for i in range(0, len(value), step)]
        )

    # -- everything else ----------------------------------------------------------------

    def _other(self, value: Any) -> str:
        number = self.memo.get(id(value))
        if number is not None:
            return self._ref(number)
        t = type(value)
        if isinstance(value, enum.Enum):
            return self._enum(value, t)
        if isinstance(value, tuple) and hasattr(t, "_fields"):
            path = self._cls(t)
            if path is not None:
                items = self._attrs(zip(t._fields, value, strict=False), [])
                return self._node("N", items[1::2], "," + _esc(path))
        elif hasattr(t, "__dataclass_fields__") and not isinstance(value, type):
            path = self._cls(t)
            if path is not None:
                return self._dataclass(value, t, path)
        else:
            pyd = sys.modules.get("pydantic")
            base = getattr(pyd, "BaseModel", None) if pyd is not None else None
            if isinstance(base, type) and isinstance(value, base):
                path = self._cls(t)
                if path is not None:
                    return self._pydantic(value, path)
        return self._custom(value)

    def _enum(self, value: enum.Enum, t: type[enum.Enum]) -> str:
        path = self._cls(t)
        if path is not None:
            name = value._name_
            if name is not None and t.__members__.get(name) is value:
                return f'["E",{_esc(path)},{_esc(name)}]'
            if isinstance(value, enum.Flag):
                return f'["EV",{_esc(path)},{self.enc(value._value_)}]'
        return self._custom(value)

    def _dataclass(self, value: Any, t: type, path: str) -> str:
        self._new(value)
        names = self.fields.get(t)
        if names is None:
            names = self.fields[t] = tuple(f.name for f in _dc_fields(value))
        pairs: list[tuple[str, Any]] = []
        for name in names:
            try:
                pairs.append((name, getattr(value, name)))
            except AttributeError:  # an init=False field that was never set
                continue
        extra = getattr(value, "__dict__", None)
        if extra:
            known = set(names)
            pairs.extend(
                (k, v) for k, v in extra.items()
                if type(k) is str and k not in known and not (k[:2] == "__" == k[-2:])
            )
        return self._node("D", self._attrs(pairs, []), "," + _esc(path), 2)

    def _pydantic(self, value: Any, path: str) -> str:
        self._new(value)
        state = value.__getstate__()
        fields_set = ",".join(_esc(n) for n in sorted(state.get("__pydantic_fields_set__", ())))
        try:
            extra = self.enc(state.get("__pydantic_extra__"))
            private = self.enc(state.get("__pydantic_private__"))
        except _Fail as exc:
            exc.parts.append(".<extra or private attributes>")
            raise
        header = f",{_esc(path)},[{fields_set}],{extra},{private}"
        return self._node("P", self._attrs(state["__dict__"].items(), []), header, 2)

    def _custom(self, value: Any) -> str:
        for tag, hook, what in (("h", self.hook, "encode_hook"),
                                ("x", self.fallback, "encode_fallback")):
            if hook is None:
                continue
            try:
                result = hook(value)
            except Exception as exc:
                raise _Fail(f"{what} failed on {type(value).__name__}: {exc!r}") from exc
            if result is None:
                continue
            if (not isinstance(result, tuple) or len(result) != 2
                    or not isinstance(result[0], str)):
                raise _Fail(f"{what} returned {_short_repr(result)} for "
                            f"{type(value).__name__}; expected (tag, payload) or None")
            self._new(value)
            number = len(self.objs) - 1
            self.late.add(number)
            try:
                payload = self.enc(result[1])
            finally:
                self.late.discard(number)
            return f'["{tag}",{_esc(result[0])},{payload}]'
        if self.pickle_key is not None:
            try:
                data = pickle.dumps(value, protocol=5)
            except Exception as exc:
                raise _Fail(f"{type(value).__name__} is not serializable "
                            f"(pickle failed: {exc})") from exc
            self._new(value)
            sig = hmac.new(self.pickle_key, data, hashlib.sha256).hexdigest()
            return f'["p","{sig}",{self._bytes("b", data)}]'
        raise _Fail(f"{type(value).__name__} is not serializable")

    # -- roots --------------------------------------------------------------------------

    def root(self, value: Any, label: str, skip: bool, skipped: list[str]) -> str | None:
        """Encode one root; a dict's keys are variables (each skippable on its own)."""
        if type(value) is not dict or id(value) in self.memo:
            cp = self._checkpoint()
            try:
                return self.enc(value)
            except (_Fail, RecursionError) as exc:
                self._give_up(exc, label, skip, skipped, cp)
                return None
        self._new(value)
        items: list[str] = []
        for key, item in value.items():
            cp = self._checkpoint()
            try:
                kf = _esc(key) if type(key) is str else self.enc(key)
                vf = self.enc(item)
            except (_Fail, RecursionError) as exc:
                self._give_up(exc, f"{label} {_short_repr(key)}", skip, skipped, cp)
                continue
            items.append(kf)
            items.append(vf)
        return self._node("d", items, "", 2)

    def _give_up(self, exc: _Fail | RecursionError, var: str, skip: bool, skipped: list[str],
                 cp: tuple[int, int]) -> None:
        """Raise the located error, or (skip policy) forget the variable ``var`` and warn."""
        fail = exc if isinstance(exc, _Fail) else _Fail("nested too deeply to serialize")
        error = fail.located(var)
        if not skip:
            raise error from (exc if isinstance(exc, RecursionError) else exc.__cause__)
        self._rollback(cp)
        skipped.append(var)
        warnings.warn(f"{var} was not saved: {error}", DurablyWarning, stacklevel=4)


def _e_list(e: _Encoder, v: list[Any]) -> str:
    memo, objs, key = e.memo, e.objs, id(v)
    number = memo.get(key)
    if number is not None:
        return e._ref(number)
    memo[key] = len(objs)
    objs.append(v)
    if len(v) >= _FLOAT_RUN and type(v[0]) is float and set(map(type, v)) == _FLOAT_ONLY:
        return e._bytes("lf", _pack_floats(v))
    return e._node("l", e._seq(v))


def _pack_floats(v: list[float]) -> bytes:
    return struct.pack(f"<{len(v)}d", *v)


def _e_dict(e: _Encoder, v: dict[Any, Any]) -> str:
    memo, objs, key = e.memo, e.objs, id(v)
    number = memo.get(key)
    if number is not None:
        return e._ref(number)
    memo[key] = len(objs)
    objs.append(v)
    return e._node("d", e._pairs(v), "", 2)


def _e_set(e: _Encoder, v: set[Any]) -> str:
    number = e.memo.get(id(v))
    if number is not None:
        return e._ref(number)
    e._new(v)
    return e._set("s", v)


def _e_bytearray(e: _Encoder, v: bytearray) -> str:
    number = e.memo.get(id(v))
    if number is not None:
        return e._ref(number)
    e._new(v)
    return e._bytes("ba", v)


def _e_mapping(tag: str) -> Callable[[_Encoder, Any], str]:
    def encode(e: _Encoder, v: Any) -> str:
        number = e.memo.get(id(v))
        if number is not None:
            return e._ref(number)
        e._new(v)
        return e._node(tag, e._pairs(v), "", 2)

    return encode


def _e_defaultdict(e: _Encoder, v: defaultdict[Any, Any]) -> str:
    number = e.memo.get(id(v))
    if number is not None:
        return e._ref(number)
    factory = v.default_factory
    name = None if factory is None else _DD_NAMES.get(factory)
    if factory is not None and name is None:
        return e._custom(v)
    e._new(v)
    return e._node("dd", e._pairs(v), "," + ("null" if name is None else _esc(name)), 2)


def _e_deque(e: _Encoder, v: deque[Any]) -> str:
    number = e.memo.get(id(v))
    if number is not None:
        return e._ref(number)
    e._new(v)
    return e._node("dq", e._seq(v), "," + ("null" if v.maxlen is None else str(v.maxlen)))


def _e_datetime(e: _Encoder, v: _dt.datetime) -> str:
    tz = _e_tz(v.tzinfo)
    if tz is None:
        return e._custom(v)
    return f'["dt","{v.replace(tzinfo=None).isoformat()}",{v.fold},{tz}]'


def _e_time(e: _Encoder, v: _dt.time) -> str:
    tz = _e_tz(v.tzinfo)
    if tz is None:
        return e._custom(v)
    return f'["tm","{v.replace(tzinfo=None).isoformat()}",{v.fold},{tz}]'


def _e_path(e: _Encoder, v: pathlib.PurePath) -> str:
    return f'["pp","{type(v).__name__}",{_esc(str(v))}]'


_ENCODERS: Final[dict[type, Callable[[_Encoder, Any], str]]] = {
    type(None): lambda e, v: "null",
    bool: lambda e, v: "true" if v else "false",
    int: lambda e, v: _e_int(v),
    float: lambda e, v: _e_float(v),
    bytes: lambda e, v: e._bytes("b", v),
    bytearray: _e_bytearray,
    list: _e_list,
    tuple: lambda e, v: e._node("t", e._seq(v)),
    dict: _e_dict,
    set: _e_set,
    frozenset: lambda e, v: e._set("fs", v),
    OrderedDict: _e_mapping("od"),
    Counter: _e_mapping("ctr"),
    defaultdict: _e_defaultdict,
    deque: _e_deque,
    _dt.datetime: _e_datetime,
    _dt.date: lambda e, v: f'["da","{v.isoformat()}"]',
    _dt.time: _e_time,
    _dt.timedelta: lambda e, v: f'["td",{v.days},{v.seconds},{v.microseconds}]',
    decimal.Decimal: lambda e, v: f'["dec",{_esc(str(v))}]',
    uuid.UUID: lambda e, v: f'["u","{v.hex}"]',
    fractions.Fraction: lambda e, v: f'["fr",{_e_int(v.numerator)},{_e_int(v.denominator)}]',
    complex: lambda e, v: f'["cx",{_e_float(v.real)},{_e_float(v.imag)}]',
    **dict.fromkeys(_PATH_TYPES.values(), _e_path),
}


# ---------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------

_PENDING: Final = object()
_HEX = frozenset("0123456789abcdef")


def _digest_ok(digest: object) -> bool:
    return (type(digest) is str and len(digest) == 71 and digest.startswith("sha256:")
            and _HEX.issuperset(digest[7:]))


class _Decoder:
    """State of one decode call: numbered objects, parsed blobs, resolved classes."""

    __slots__ = ("blob_cache", "classes", "codec", "get_blob", "objs", "unresolved")

    def __init__(self, codec: ValueCodec, get_blob: BlobGetter | None,
                 unresolved: list[str] | None = None) -> None:
        self.codec = codec
        self.get_blob = get_blob
        self.objs: list[Any] = []
        self.blob_cache: dict[str, list[Any]] = {}
        self.classes: dict[tuple[str, str], Any] = {}
        self.unresolved = unresolved

    def dec(self, node: Any) -> Any:
        """Decode one node."""
        if type(node) is list:
            tag = node[0] if node else None
            f = _DECODERS.get(tag) if type(tag) is str else None
            if f is None:
                raise _corrupt(f"unknown node {_short_repr(node)}")
            try:
                return f(self, node)
            except (_Fail, CorruptObjectError, RecursionError):
                raise
            except Exception as exc:
                raise _corrupt(f"bad {tag!r} node: {type(exc).__name__}: {exc}") from exc
        if type(node) is dict:
            raise _corrupt("unexpected JSON object")
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
        except _Fail as exc:
            exc.parts.append(f"[{len(out)}]")
            raise
        return out

    def _fill(self, out: Any, node: list[Any], start: int) -> Any:
        dec = self.dec
        if (len(node) - start) % 2:
            raise _corrupt("odd number of key/value items")
        key: Any = None
        try:
            for i in range(start, len(node), 2):
                k = node[i]
                key = k if type(k) is str else dec(k)
                out[key] = dec(node[i + 1])
        except _Fail as exc:
            exc.parts.append(f"[{_short_repr(key)}]")
            raise
        return out

    def _attrs(self, node: list[Any], start: int) -> list[tuple[str, Any]]:
        if (len(node) - start) % 2:
            raise _corrupt("odd number of attribute items")
        dec = self.dec
        out: list[tuple[str, Any]] = []
        name: Any = ""
        try:
            for i in range(start, len(node), 2):
                name = node[i]
                if type(name) is not str or (name.startswith("__") and name.endswith("__")):
                    raise _corrupt(f"bad attribute name {_short_repr(name)}")
                out.append((name, dec(node[i + 1])))
        except _Fail as exc:
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
            raise _corrupt(f"bad class path {_short_repr(path)}")
        try:
            return self.classes[path, kind]
        except KeyError:
            pass
        module, _, qualname = path.partition(":")
        parts = qualname.split(".")
        if not all(p.isidentifier() for p in module.split(".")) or any(
            not p.isidentifier() or p.startswith("__") for p in parts
        ):
            raise _Fail(f"refusing to resolve class path {path!r}")
        obj = lookup_imported(path)
        if obj is None:
            if self.unresolved is not None:
                self.unresolved.append(path)
                return None
            if module not in sys.modules:
                raise _Fail(f"class {path!r} cannot be restored: module {module!r} is not "
                            "imported (durably never imports a module named by stored data; "
                            "import it in the program file)")
            raise _Fail(f"class {path!r} not found: module {module!r} has no "
                        f"attribute path {qualname!r}")
        if not isinstance(obj, type) or not _KIND_CHECKS[kind](obj):
            raise _Fail(f"refusing to instantiate {path!r}: it is not a {kind} class")
        self.classes[path, kind] = obj
        return obj

    def blob(self, digest: Any) -> list[Any]:
        """Fetch, verify and parse one chunk blob."""
        if not _digest_ok(digest):
            raise _corrupt(f"bad blob digest {_short_repr(digest)}")
        cached = self.blob_cache.get(digest)
        if cached is not None:
            return cached
        if self.get_blob is None:
            raise _corrupt("a chunked node in a single-value document")
        try:
            data = self.get_blob(digest)
        except Exception as exc:
            raise CorruptObjectError(f"blob {digest} is unavailable: {exc!r}") from exc
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise CorruptObjectError(f"blob {digest}: the getter returned "
                                     f"{type(data).__name__}, not bytes")
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(actual, digest):
            raise CorruptObjectError(f"blob {digest} is corrupt: its content hashes to {actual}")
        try:
            content = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise CorruptObjectError(f"blob {digest} is not valid JSON: {exc}") from None
        if type(content) is not list or not content or content[0] not in ("c", "cc"):
            raise CorruptObjectError(f"blob {digest} is not a chunk")
        self.blob_cache[digest] = content
        return content

    def expand(self, digest: Any, out: list[Any], depth: int) -> None:
        """Append the items of the chunk ``digest`` (recursively for index chunks) to out."""
        content = self.blob(digest)
        if content[0] == "c":
            out.extend(content[1:])
            return
        if depth >= _MAX_INDEX_DEPTH:
            raise _corrupt("chunk index nested too deeply")
        for sub in content[1:]:
            self.expand(sub, out, depth + 1)

    def hooked(self, node: list[Any], hook: DecodeHook | None, what: str) -> Any:
        if len(node) != 3 or type(node[1]) is not str:
            raise _corrupt(f"bad {node[0]!r} node")
        number = self._reserve()
        tag, payload = node[1], self.dec(node[2])
        if hook is None:
            raise _Fail(f"cannot decode custom tag {tag!r}: no {what} is configured")
        try:
            value = hook(tag, payload)
        except Exception as exc:
            raise _Fail(f"{what} failed for tag {tag!r}: {exc!r}") from exc
        if value is None:
            raise _Fail(f"no {what} knows the custom tag {tag!r}")
        self.objs[number] = value
        return value


def _kind_namedtuple(cls: type) -> bool:
    return issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple)


def _kind_pydantic(cls: type) -> bool:
    pyd = sys.modules.get("pydantic")
    base = getattr(pyd, "BaseModel", None) if pyd is not None else None
    return (isinstance(base, type) and issubclass(cls, base) and cls is not base
            and hasattr(cls, "__setstate__"))


_KIND_CHECKS: Final[dict[str, Callable[[type], bool]]] = {
    "dataclass": lambda cls: hasattr(cls, "__dataclass_fields__"),
    "enum": lambda cls: issubclass(cls, enum.Enum),
    "flag": lambda cls: issubclass(cls, enum.Flag),
    "named tuple": _kind_namedtuple,
    "pydantic model": _kind_pydantic,
}


def _arity(node: list[Any], n: int) -> None:
    if len(node) != n:
        raise _corrupt(f"{node[0]!r} node has {len(node)} items, expected {n}")


def _d_list(d: _Decoder, n: list[Any]) -> list[Any]:
    out: list[Any] = []
    d.objs.append(out)
    out.extend(d._seq(n, 1))
    return out


def _d_dict(d: _Decoder, n: list[Any]) -> Any:
    out: dict[Any, Any] = {}
    d.objs.append(out)
    return d._fill(out, n, 1)


def _d_set(d: _Decoder, n: list[Any]) -> set[Any]:
    out: set[Any] = set()
    d.objs.append(out)
    out.update(d._seq(n, 1))
    return out


def _d_bytes(n: list[Any]) -> bytes:
    if not all(type(p) is str for p in n[1:]):
        raise _corrupt("bytes pieces must be strings")
    return b"".join(binascii.a2b_base64(p, strict_mode=True) for p in n[1:])


def _d_bytearray(d: _Decoder, n: list[Any]) -> bytearray:
    out = bytearray(_d_bytes(n))
    d.objs.append(out)
    return out


def _d_floats(d: _Decoder, n: list[Any]) -> list[float]:
    data = _d_bytes(n)
    if len(data) % 8:
        raise _corrupt("packed floats are not a multiple of 8 bytes")
    out = list(struct.unpack(f"<{len(data) // 8}d", data))
    d.objs.append(out)
    return out


def _d_str(d: _Decoder, n: list[Any]) -> str:
    if not all(type(p) is str for p in n[1:]):
        raise _corrupt("str pieces must be strings")
    return "".join(n[1:])


def _d_int(d: _Decoder, n: list[Any]) -> int:
    _arity(n, 2)
    if type(n[1]) is not str or len(n[1]) > 100_000:
        raise _corrupt("bad big int")
    return int(n[1], 16)


def _d_float(d: _Decoder, n: list[Any]) -> float:
    _arity(n, 2)
    return _NONFINITE[n[1]]


def _d_ref(d: _Decoder, n: list[Any]) -> Any:
    _arity(n, 2)
    number = n[1]
    if type(number) is not int or not 0 <= number < len(d.objs):
        raise _corrupt(f"reference to unknown object {_short_repr(number)}")
    obj = d.objs[number]
    if obj is _PENDING:
        raise _corrupt("reference to an object that is still being decoded")
    return obj


def _d_tz(node: Any) -> _dt.tzinfo | None:
    if node is None:
        return None
    if type(node) is list and node and node[0] == "zi" and len(node) == 2:
        if type(node[1]) is not str:
            raise _corrupt("bad zone key")
        return ZoneInfo(node[1])
    if type(node) is list and node and node[0] == "tz" and len(node) == 5:
        days, secs, micros, name = node[1:]
        if not all(type(x) is int for x in (days, secs, micros)):
            raise _corrupt("bad timezone offset")
        off = _dt.timedelta(days, secs, micros)
        if name is None:
            return _dt.timezone(off)
        if type(name) is not str:
            raise _corrupt("bad timezone name")
        return _dt.timezone(off, name)
    raise _corrupt(f"bad tzinfo {_short_repr(node)}")


def _d_datetime(d: _Decoder, n: list[Any]) -> _dt.datetime:
    _arity(n, 4)
    if type(n[1]) is not str or n[2] not in (0, 1):
        raise _corrupt("bad datetime")
    return _dt.datetime.fromisoformat(n[1]).replace(tzinfo=_d_tz(n[3]), fold=n[2])


def _d_time(d: _Decoder, n: list[Any]) -> _dt.time:
    _arity(n, 4)
    if type(n[1]) is not str or n[2] not in (0, 1):
        raise _corrupt("bad time")
    return _dt.time.fromisoformat(n[1]).replace(tzinfo=_d_tz(n[3]), fold=n[2])


def _d_date(d: _Decoder, n: list[Any]) -> _dt.date:
    _arity(n, 2)
    if type(n[1]) is not str:
        raise _corrupt("bad date")
    return _dt.date.fromisoformat(n[1])


def _ints(n: list[Any], count: int) -> list[int]:
    _arity(n, count + 1)
    if not all(type(x) is int for x in n[1:]):
        raise _corrupt(f"{n[0]!r} node needs integers")
    return n[1:]


def _d_timedelta(d: _Decoder, n: list[Any]) -> _dt.timedelta:
    days, secs, micros = _ints(n, 3)
    return _dt.timedelta(days, secs, micros)


def _d_decimal(d: _Decoder, n: list[Any]) -> decimal.Decimal:
    _arity(n, 2)
    if type(n[1]) is not str:
        raise _corrupt("bad decimal")
    return decimal.Decimal(n[1])


def _d_uuid(d: _Decoder, n: list[Any]) -> uuid.UUID:
    _arity(n, 2)
    if type(n[1]) is not str:
        raise _corrupt("bad uuid")
    return uuid.UUID(hex=n[1])


def _d_fraction(d: _Decoder, n: list[Any]) -> fractions.Fraction:
    _arity(n, 3)
    num, den = d.dec(n[1]), d.dec(n[2])
    if type(num) is not int or type(den) is not int:
        raise _corrupt("bad fraction")
    return fractions.Fraction(num, den)


def _d_complex(d: _Decoder, n: list[Any]) -> complex:
    _arity(n, 3)
    re, im = d.dec(n[1]), d.dec(n[2])
    if type(re) is not float or type(im) is not float:
        raise _corrupt("bad complex")
    return complex(re, im)


def _d_path(d: _Decoder, n: list[Any]) -> pathlib.PurePath:
    _arity(n, 3)
    cls = _PATH_TYPES.get(n[1]) if type(n[1]) is str else None
    if cls is None or type(n[2]) is not str:
        raise _corrupt(f"bad path node {_short_repr(n)}")
    return cls(n[2])


def _d_enum(d: _Decoder, n: list[Any]) -> enum.Enum:
    _arity(n, 3)
    cls = d.resolve(n[1], "enum")
    if cls is None:
        return Unresolved(n[1], "enum", {"name": n[2]})  # type: ignore[return-value]
    member: enum.Enum | None = cls.__members__.get(n[2]) if type(n[2]) is str else None
    if member is None:
        raise _Fail(f"enum {n[1]!r} has no member {_short_repr(n[2])}")
    return member


def _d_flag(d: _Decoder, n: list[Any]) -> enum.Enum:
    _arity(n, 3)
    cls = d.resolve(n[1], "flag")
    value = d.dec(n[2])
    if cls is None:
        return Unresolved(n[1], "flag", {"value": value})  # type: ignore[return-value]
    try:
        member: enum.Enum = cls(value)
        return member
    except ValueError as exc:
        raise _Fail(f"flag {n[1]!r} has no value {_short_repr(value)}") from exc


def _d_namedtuple(d: _Decoder, n: list[Any]) -> tuple[Any, ...]:
    if len(n) < 2:
        raise _corrupt("bad named tuple")
    cls = d.resolve(n[1], "named tuple")
    values = d._seq(n, 2)
    if cls is None:
        return Unresolved(n[1], "named tuple",  # type: ignore[return-value]
                          {str(i): v for i, v in enumerate(values)})
    if len(values) != len(cls._fields):
        raise _Fail(f"named tuple {n[1]!r} now has {len(cls._fields)} fields, "
                    f"the stored value has {len(values)}")
    value: tuple[Any, ...] = tuple.__new__(cls, values)
    return value


def _d_dataclass(d: _Decoder, n: list[Any]) -> Any:
    if len(n) < 2:
        raise _corrupt("bad dataclass")
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


def _d_pydantic(d: _Decoder, n: list[Any]) -> Any:
    if len(n) < 5:
        raise _corrupt("bad pydantic node")
    cls = d.resolve(n[1], "pydantic model")
    fields_set = n[2]
    if type(fields_set) is not list or not all(type(x) is str for x in fields_set):
        raise _corrupt("bad pydantic fields set")
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
    if not (extra is None or type(extra) is dict) or not (private is None or type(private)
                                                          is dict):
        raise _corrupt("bad pydantic extra/private attributes")
    obj.__setstate__({
        "__dict__": dict(d._attrs(n, 5)),
        "__pydantic_fields_set__": set(fields_set),
        "__pydantic_extra__": extra,
        "__pydantic_private__": private,
    })
    return obj


def _d_mapping(factory: Callable[[], Any]) -> Callable[[_Decoder, list[Any]], Any]:
    def decode(d: _Decoder, n: list[Any]) -> Any:
        out = factory()
        d.objs.append(out)
        return d._fill(out, n, 1)

    return decode


def _d_defaultdict(d: _Decoder, n: list[Any]) -> defaultdict[Any, Any]:
    if len(n) < 2 or not (n[1] is None or n[1] in _DD_FACTORIES):
        raise _corrupt("bad defaultdict factory")
    out: defaultdict[Any, Any] = defaultdict(None if n[1] is None else _DD_FACTORIES[n[1]])
    d.objs.append(out)
    return d._fill(out, n, 2)  # type: ignore[no-any-return]


def _d_deque(d: _Decoder, n: list[Any]) -> deque[Any]:
    if len(n) < 2 or not (n[1] is None or (type(n[1]) is int and n[1] >= 0)):
        raise _corrupt("bad deque maxlen")
    out: deque[Any] = deque(maxlen=n[1])
    d.objs.append(out)
    out.extend(d._seq(n, 2))
    return out


def _d_pickle(d: _Decoder, n: list[Any]) -> Any:
    _arity(n, 3)
    number = d._reserve()
    sig = n[1]
    data = d.dec(n[2])
    if type(data) is not bytes or type(sig) is not str:
        raise _corrupt("bad pickle node")
    if d.unresolved is not None:  # inspection never unpickles, even signed data
        d.unresolved.append("pickle:value")
        placeholder = Unresolved("pickle:value", "pickle", {"bytes": len(data)})
        d.objs[number] = placeholder
        return placeholder
    key = d.codec._pickle_key
    if key is None:
        raise _Fail("the data holds a pickled value but no pickle_key is configured; "
                    "refusing to unpickle")
    expected = hmac.new(key, data, hashlib.sha256).hexdigest()
    if not (sig.isascii() and hmac.compare_digest(expected, sig)):
        raise _Fail("pickled value has a bad signature; refusing to unpickle", SignatureError)
    try:
        value = pickle.loads(data)
    except Exception as exc:
        raise _Fail(f"signed pickle failed to load: {exc!r}") from exc
    d.objs[number] = value
    return value


def _d_chunked(d: _Decoder, n: list[Any]) -> Any:
    tag = n[1] if len(n) > 1 else None
    header = _HEADER.get(tag) if type(tag) is str else None
    if header is None or len(n) < 2 + header:
        raise _corrupt(f"bad chunked node {_short_repr(n)}")
    flat = n[1 : 2 + header]
    for digest in n[2 + header :]:
        d.expand(digest, flat, 0)
    return d.dec(flat)


_DECODERS: Final[dict[str, Callable[[_Decoder, list[Any]], Any]]] = {
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


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------


class ValueCodec:
    """Encodes namespaces of Python values into a root document plus blobs, and back.

    Args:
        blob_threshold: Nodes whose encoding is longer than this many bytes are split
            into content-addressed blobs (see the module docstring). At least 256.
        encode_hook: ``value -> (tag, payload) | None`` for types the codec does not
            support natively (the plugins' ``durably_encode_value``). The payload is
            encoded recursively.
        decode_hook: ``(tag, payload) -> value | None`` (None: unknown tag).
        encode_fallback: Tried after ``encode_hook``, same contract; the executor uses it
            for functions and classes defined by LLM code.
        decode_fallback: The decoder matching ``encode_fallback``.
        pickle_key: Opt in to pickling values nothing else handles. Pickles are signed with
            HMAC-SHA256 under this key and verified before they are unpickled. Without a
            key, pickled data is refused.
        on_unserializable: ``"error"`` raises :class:`SerializationError`; ``"skip"``
            leaves the whole variable out, warns with :class:`DurablyWarning` and records
            it in :attr:`Encoded.skipped`.

    Raises:
        ValueError: For a threshold below 256 or an unknown policy.
    """

    FORMAT = 1

    def __init__(
        self,
        *,
        blob_threshold: int = 16 * 1024,
        encode_hook: EncodeHook | None = None,
        decode_hook: DecodeHook | None = None,
        encode_fallback: EncodeHook | None = None,
        decode_fallback: DecodeHook | None = None,
        pickle_key: bytes | None = None,
        on_unserializable: Literal["error", "skip"] = "error",
    ) -> None:
        if blob_threshold < _MIN_THRESHOLD:
            raise ValueError(f"blob_threshold must be at least {_MIN_THRESHOLD}")
        if on_unserializable not in ("error", "skip"):
            raise ValueError("on_unserializable must be 'error' or 'skip'")
        if pickle_key is not None and not (isinstance(pickle_key, bytes) and pickle_key):
            raise ValueError("pickle_key must be non-empty bytes")
        self._blob_threshold: int = blob_threshold
        self._encode_hook: EncodeHook | None = encode_hook
        self._decode_hook: DecodeHook | None = decode_hook
        self._encode_fallback: EncodeHook | None = encode_fallback
        self._decode_fallback: DecodeHook | None = decode_fallback
        self._pickle_key: bytes | None = pickle_key
        self._skip: bool = on_unserializable == "skip"

    def encode(self, roots: Mapping[str, Any], labels: Mapping[str, str] | None = None
               ) -> Encoded:
        """Encode named roots (e.g. ``{"frame0": locals_dict, "state": state_dict}``).

        Identity is shared across all roots: an object reachable from two roots is
        restored as one object. A root whose value is a dict is a namespace: its keys are
        variable names, and under ``on_unserializable="skip"`` each variable is skipped on
        its own (a non-dict root is skipped whole).

        Args:
            roots: Root name -> value, in the order to encode (and decode) them.
            labels: Root name -> human label used in error paths, e.g.
                ``{"frame0": "Main frame local"}`` gives ``"Main frame local 'conn'"``.
                Defaults to the root name.

        Returns:
            The root document, every blob it references, and the skipped variables.

        Raises:
            SerializationError: A value cannot be encoded (``on_unserializable="error"``).
            TypeError: A root name is not a str.
        """
        enc = _Encoder(self, self._blob_threshold)
        skipped: list[str] = []
        labels = labels or {}
        parts = []
        for name, value in roots.items():
            if type(name) is not str:
                raise TypeError(f"root names must be str, not {type(name).__name__}")
            node = enc.root(value, labels.get(name, name), self._skip, skipped)
            if node is not None:
                parts.append(_esc(name) + ":" + node)
        data = f'{{"durably":{self.FORMAT},"roots":{{{",".join(parts)}}}}}'
        return Encoded(data.encode("ascii"), enc.blobs, tuple(skipped))

    def decode(self, data: bytes, get_blob: BlobGetter, *,
               unresolved: list[str] | None = None) -> dict[str, Any]:
        """Decode a root document made by :meth:`encode`.

        Decoding never imports: classes are looked up among the modules already imported.

        Args:
            data: The root document.
            get_blob: Returns a blob's bytes by digest. Every blob is verified against its
                digest before it is parsed.
            unresolved: If given (inspection), an instance of a class that is not
                imported, and any pickled value, decode to an inert :class:`Unresolved`
                and the class path (``"pickle:value"`` for a pickle) is appended here;
                otherwise such a class is a :class:`SerializationError`.

        Returns:
            Root name -> value (roots skipped whole at encode time are absent).

        Raises:
            UnsupportedFormatError: The document has an unknown format version.
            CorruptObjectError: Malformed document or blob, digest mismatch, missing blob.
            SignatureError: A pickled value's signature does not verify.
            SerializationError: A value cannot be rebuilt (unknown class or hook tag, a
                class that is not allowed to be instantiated, pickle without a key).
        """
        roots = self._document(data).get("roots")
        if type(roots) is not dict:
            raise CorruptObjectError("malformed data: the document has no 'roots' object")
        dec = _Decoder(self, get_blob, unresolved)
        out: dict[str, Any] = {}
        for name, node in roots.items():
            out[name] = self._decode_root(dec, node, name)
        return out

    def encode_value(self, value: Any) -> bytes:
        """Encode a single value into one self-contained document (no blobs).

        Args:
            value: The value.

        Returns:
            The document bytes.

        Raises:
            SerializationError: The value (or part of it) cannot be encoded, whatever
                the ``on_unserializable`` policy.
        """
        enc = _Encoder(self, _NO_LIMIT)
        try:
            node = enc.enc(value)
        except _Fail as exc:
            raise exc.located("value") from exc.__cause__
        except RecursionError as exc:
            raise SerializationError("value", "nested too deeply to serialize") from exc
        return f'{{"durably":{self.FORMAT},"value":{node}}}'.encode("ascii")

    def decode_value(self, data: bytes, *, unresolved: list[str] | None = None) -> Any:
        """Decode a document made by :meth:`encode_value` (``unresolved`` as in
        :meth:`decode`).

        Raises:
            UnsupportedFormatError: Unknown format version.
            CorruptObjectError: Malformed document.
            SignatureError: A pickled value's signature does not verify.
            SerializationError: A value cannot be rebuilt.
        """
        doc = self._document(data)
        if "value" not in doc:
            raise CorruptObjectError("malformed data: the document has no 'value'")
        return self._decode_root(_Decoder(self, None, unresolved), doc["value"], "value")

    # -- helpers ------------------------------------------------------------------------

    def _document(self, data: bytes) -> dict[str, Any]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes, not {type(data).__name__}")
        try:
            doc = json.loads(bytes(data))
        except (ValueError, RecursionError) as exc:
            raise CorruptObjectError(f"malformed data: not a valid JSON document: {exc}"
                                     ) from None
        if type(doc) is not dict or "durably" not in doc:
            raise CorruptObjectError("malformed data: not a durably value document")
        version = doc["durably"]
        if type(version) is not int or version != self.FORMAT:
            raise UnsupportedFormatError(
                f"value document format {_short_repr(version)} is not supported "
                f"(this durably reads format {self.FORMAT}); upgrade durably"
            )
        return doc

    @staticmethod
    def _decode_root(dec: _Decoder, node: Any, name: str) -> Any:
        try:
            return dec.dec(node)
        except _Fail as exc:
            raise exc.located(name) from exc.__cause__
        except RecursionError as exc:
            raise CorruptObjectError(f"{name}: data nested too deeply to decode") from exc

