"""The value codec's format: the one description of what it writes, its constants and types.

The codec (:class:`~durably._codec.ValueCodec`) stores the namespaces of call-stack frames
and agent state at every checkpoint, so it is

* **safe**: decoding never imports a module and never runs code named by the data. A
  class path ``"module:Qual"`` is looked up only among modules already imported
  (``sys.modules``: the program file, the libraries it imported, registered plugins), by
  plain dictionary lookups that cannot trigger a lazy import; the only classes ever
  instantiated are dataclasses, pydantic models, enums, named tuples and exceptions whose
  ``__new__`` is native (checked before any instance exists; an exception's ``__init__`` is
  called only when native too), plus a fixed set of standard-library types. A class that is not
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
``["rg", start, stop, step]``          range
``["sl", start, stop, step]``          slice; ``["el"]``: Ellipsis
``["re", pattern, flags]``             a compiled regular expression (``re.compile``)
``["E", "mod:Qual", name]``            an enum member (``["EV", path, value]`` for flag
                                       combinations that have no name)
``["N", "mod:Qual", x, ...]``          a named tuple
``["D", "mod:Qual", name, v, ...]``    a dataclass instance * (fields, then extra
                                       ``__dict__`` entries)
``["X", "mod:Qual", args, name, v, ...]``
                                       an exception * (``args``, then the attributes
                                       builtin exceptions keep in C slots, such as
                                       ``OSError.filename``, and ``__dict__`` entries;
                                       no traceback, cause, context or notes)
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
import math
import pathlib
import sys
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from durably.errors import CorruptObjectError, SerializationError

__all__ = [
    "BlobGetter",
    "DecodeHook",
    "EncodeHook",
    "Encoded",
    "Unresolved",
]

FORMAT: Final = 1
"""The version in every document's ``"durably"`` key."""

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
            ``"flag"``, ``"exception"`` (fields: ``args`` and attributes), or
            ``"pickle"`` (a signed pickle: never loaded by inspection).
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
        inner = ", ".join(f"{k}={short_repr(v)}" for k, v in self.fields.items())
        return f"<{name}({inner}) (not imported: {self.path})>"


BIG_INT: Final = 1 << 64
MIN_THRESHOLD: Final = 256
DIGEST_UNIT: Final = len('"sha256:"') + 64 + 1
NO_LIMIT: Final = sys.maxsize
MAX_INDEX_DEPTH: Final = 16
FLOAT_RUN: Final = 16  # lists of at least this many floats (only) are packed as binary64
FLOAT_ONLY: Final = {float}

# Positional header items that precede the items of a node, and how many JSON elements make
# one chunking unit. Only these tags may be chunked.
HEADER: Final[dict[str, int]] = {
    "l": 0,
    "t": 0,
    "s": 0,
    "fs": 0,
    "str": 0,
    "b": 0,
    "ba": 0,
    "lf": 0,
    "d": 0,
    "od": 0,
    "ctr": 0,
    "dd": 1,
    "dq": 1,
    "N": 1,
    "D": 1,
    "P": 4,
}

DD_FACTORIES: Final[dict[str, type]] = {
    t.__name__: t
    for t in (
        list,
        dict,
        set,
        frozenset,
        tuple,
        int,
        float,
        complex,
        str,
        bytes,
        bytearray,
        bool,
        OrderedDict,
        Counter,
        deque,
    )
}
DD_NAMES: Final[dict[Any, str]] = {t: n for n, t in DD_FACTORIES.items()}

PATH_TYPES: Final[dict[str, type[pathlib.PurePath]]] = {
    t.__name__: t
    for t in (
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
        pathlib.PosixPath,
        pathlib.WindowsPath,
    )
}
NONFINITE: Final[dict[str, float]] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class Fail(Exception):
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


def corrupt(reason: str) -> Fail:
    return Fail(f"malformed data: {reason}", CorruptObjectError)


def short_repr(value: object, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def b64(data: bytes | bytearray | memoryview) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


_HEX = frozenset("0123456789abcdef")


def digest_ok(digest: object) -> bool:
    return (
        type(digest) is str
        and len(digest) == 71
        and digest.startswith("sha256:")
        and _HEX.issuperset(digest[7:])
    )
