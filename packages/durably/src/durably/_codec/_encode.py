"""Encoding: Python values to the nodes of :mod:`durably._codec._format`."""

from __future__ import annotations

import datetime as _dt
import decimal
import enum
import fractions
import hashlib
import hmac
import pathlib
import pickle
import re
import struct
import sys
import uuid
import warnings
from collections import Counter, OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields as _dc_fields
from json.encoder import encode_basestring_ascii as _esc
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

from durably._codec._chunking import ChunkWriter
from durably._codec._format import (
    BIG_INT,
    DD_NAMES,
    FLOAT_ONLY,
    FLOAT_RUN,
    NO_LIMIT,
    PATH_TYPES,
    Fail,
    short_repr,
)
from durably._codec._lookup import class_path, exception_class, native_attributes
from durably.errors import DurablyWarning

if TYPE_CHECKING:
    from durably._codec._valuecodec import ValueCodec

__all__ = ["ENCODERS", "Encoder", "EscapedStrings"]


def _e_float(value: float) -> str:
    if value - value == 0.0:  # finite
        return float.__repr__(value)
    return '["f","nan"]' if value != value else ('["f","inf"]' if value > 0 else '["f","-inf"]')


def _e_int(value: int) -> str:
    if -BIG_INT < value < BIG_INT:
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
        return (
            f'["tz",{off.days},{off.seconds},{off.microseconds},'
            f"{'null' if name == plain else _esc(name)}]"
        )
    if type(tz) is ZoneInfo and tz.key:
        return '["zi",' + _esc(tz.key) + "]"
    return None


LONG_STR = 256
"""A str at least this long is looked up in (and added to) :class:`EscapedStrings`."""


class EscapedStrings:
    """The JSON text of the long str values of an execution's latest snapshot.

    Snapshots of the same agent mostly hold the same str objects (a transcript, a
    document, items of a list of which one changed): escaping each again is most of the
    encoder's time for such a state. A str is immutable, so its escaped text can be
    reused whenever the *same object* comes back. Entries hold the str itself, so its
    ``id`` cannot be reused while the entry exists, and a hit is checked with ``is``.

    Bounded: what is kept is the strings of the latest encode that had any (an encode
    of a small document in between does not drop them) and those of the encode
    running, each generation at most ``max_chars`` characters of escaped text (8 Mi by
    default); a str whose text is longer than the blob threshold is chunked from its
    pieces instead (not kept).
    """

    __slots__ = ("_before", "_chars", "_now", "max_chars")

    def __init__(self, max_chars: int = 8 * 1024 * 1024) -> None:
        self.max_chars = max_chars
        self._before: dict[int, tuple[str, str]] = {}
        self._now: dict[int, tuple[str, str]] = {}
        self._chars = 0

    def next_generation(self) -> None:
        """Start an encode: what the last one used (if anything) is what it can reuse."""
        if self._now:
            self._before, self._now, self._chars = self._now, {}, 0

    def escape(self, value: str, limit: int) -> str:
        """``value``'s JSON text (``encode_basestring_ascii``), reused when cached."""
        key = id(value)
        hit = self._before.get(key)
        s = hit[1] if hit is not None and hit[0] is value else _esc(value)
        if len(s) <= limit and self._chars < self.max_chars and key not in self._now:
            self._now[key] = (value, s)
            self._chars += len(s)
        return s


_NO_STRINGS = EscapedStrings(max_chars=0)
"""For an encoder without a cache: finds nothing, keeps nothing."""


class Encoder:
    """State of one encode call: the identity memo, the blobs, the class-path cache."""

    __slots__ = (
        "chunks",
        "cls_cache",
        "codec",
        "escaped",
        "fallback",
        "fields",
        "hook",
        "keying",
        "late",
        "limit",
        "memo",
        "nrefs",
        "objs",
        "pickle_key",
    )

    def __init__(
        self,
        codec: ValueCodec,
        limit: int,
        *,
        keying: bool = False,
        cls_cache: dict[type, str | None] | None = None,
        escaped: EscapedStrings | None = None,
    ) -> None:
        self.codec = codec
        self.hook = codec._encode_hook
        self.fallback = codec._encode_fallback
        self.pickle_key = codec._pickle_key
        self.limit = limit
        self.keying = keying
        self.memo: dict[int, int] = {}  # id(obj) -> number
        self.objs: list[object] = []  # number -> obj; keeps every numbered object alive
        self.late: set[int] = set()  # numbers of hook-encoded objects being encoded
        self.nrefs = 0
        self.chunks = ChunkWriter(limit)
        self.cls_cache: dict[type, str | None] = {} if cls_cache is None else cls_cache
        self.fields: dict[type, tuple[str, ...]] = {}  # dataclass -> field names
        self.escaped = _NO_STRINGS if escaped is None else escaped

    # -- dispatch -----------------------------------------------------------------------

    def enc(self, value: Any) -> str:
        """Encode one value to its JSON fragment."""
        t = type(value)
        if t is str:
            s: str = (
                _esc(value) if len(value) < LONG_STR else self.escaped.escape(value, self.limit)
            )
            return s if len(s) <= self.limit else self.chunks.big_str(value)
        f = ENCODERS.get(t)
        if f is not None:
            return f(self, value)
        return self._other(value)

    def _ref(self, number: int) -> str:
        if number in self.late:
            raise Fail(
                "a value handled by an encode hook refers back to itself; "
                "such cycles cannot be restored"
            )
        self.nrefs += 1
        return f'["r",{number}]'

    def _new(self, obj: object) -> None:
        self.memo[id(obj)] = len(self.objs)
        self.objs.append(obj)

    def _checkpoint(self) -> tuple[int, int]:
        return len(self.objs), self.chunks.mark()

    def _rollback(self, cp: tuple[int, int]) -> None:
        nobjs, nblobs = cp
        memo = self.memo
        for obj in self.objs[nobjs:]:
            del memo[id(obj)]
        del self.objs[nobjs:]
        self.chunks.rollback(nblobs)

    def _cls(self, cls: type) -> str | None:
        try:
            return self.cls_cache[cls]
        except KeyError:
            path = self.cls_cache[cls] = class_path(cls)
            return path

    # -- containers ---------------------------------------------------------------------

    def _node(self, tag: str, items: list[str], header: str = "", width: int = 1) -> str:
        """``[tag, header..., items...]``, chunked when longer than the threshold."""
        body = ",".join(items)
        s = f'["{tag}"{header},{body}]' if items else f'["{tag}"{header}]'
        if len(s) > self.limit:
            if width == 2:
                items = [items[i] + "," + items[i + 1] for i in range(0, len(items), 2)]
            return self.chunks.chunked(tag, header, items)
        return s

    # The hot path. The inline leaves (str, small int, None, finite float, bool) are written
    # out in both _seq and _pairs on purpose: a shared loop (over chain.from_iterable of
    # the items, or over a flattened key/value list) encoded 20,000 small dicts 15-25%
    # slower (40 ms -> 45-50 ms, 2026-12-05), and a call per leaf is slower still.

    def _seq(self, value: Iterable[Any]) -> list[str]:
        enc, limit, big, irepr, frepr = self.enc, self.limit, BIG_INT, int.__repr__, float.__repr__
        encoders = ENCODERS
        escape = self.escaped.escape
        out: list[str] = []
        append = out.append
        try:
            for item in value:  # the common leaves inline: this loop is the hot path
                t = type(item)
                if t is str:
                    s = _esc(item) if len(item) < LONG_STR else escape(item, limit)
                    append(s if len(s) <= limit else self.chunks.big_str(item))
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
        except Fail as exc:
            exc.parts.append(f"[{len(out)}]")
            raise
        return out

    def _pairs(self, value: Mapping[Any, Any], out: list[str] | None = None) -> list[str]:
        enc, limit, big, irepr, frepr = self.enc, self.limit, BIG_INT, int.__repr__, float.__repr__
        encoders = ENCODERS
        escape = self.escaped.escape
        out = [] if out is None else out
        append = out.append
        key: Any = None
        try:
            for key, item in value.items():
                append(_esc(key) if type(key) is str else enc(key))
                t = type(item)
                if t is str:
                    s = _esc(item) if len(item) < LONG_STR else escape(item, limit)
                    append(s if len(s) <= limit else self.chunks.big_str(item))
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
        except Fail as exc:
            exc.parts.append(f"[{short_repr(key)}]")
            raise
        return out

    def _attrs(self, pairs: Iterable[tuple[str, Any]], out: list[str]) -> list[str]:
        enc = self.enc
        name = ""
        try:
            for name, item in pairs:
                out.append(_esc(name))
                out.append(enc(item))
        except Fail as exc:
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
                keyer = Encoder(self.codec, NO_LIMIT, keying=True, cls_cache=self.cls_cache)
                ordered = sorted(value, key=keyer.enc)
                items = [enc(x) for x in ordered]
            else:
                items.sort()
        except Fail as exc:
            exc.parts.append("{...}")
            raise
        return self._node(tag, items)

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
        elif isinstance(value, BaseException):  # before dataclasses: an exception may be one
            path = self._cls(t)
            if path is not None and exception_class(t):
                return self._exception(value, path)
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
                (k, v)
                for k, v in extra.items()
                if type(k) is str and k not in known and not (k[:2] == "__" == k[-2:])
            )
        return self._node("D", self._attrs(pairs, []), "," + _esc(path), 2)

    def _exception(self, value: BaseException, path: str) -> str:
        self._new(value)
        number = len(self.objs) - 1
        self.late.add(number)  # the decoder makes the exception from its args
        try:
            args = self.enc(value.args)
        except Fail as exc:
            exc.parts.append(".args")
            raise
        finally:
            self.late.discard(number)
        cls: Any = type(value)
        pairs = [
            (name, item)
            for name in sorted(native_attributes(cls))
            # None is what an unset slot reads as (OSError.filename2): setting it to None
            # would not be the same (str() of an OSError then shows "-> None").
            if (item := getattr(value, name, None)) is not None
        ]
        extra = getattr(value, "__dict__", None) or {}
        pairs.extend((k, v) for k, v in extra.items() if type(k) is str and not _dunder(k))
        return self._node("X", self._attrs(pairs, []), f",{_esc(path)},{args}", 2)

    def _pydantic(self, value: Any, path: str) -> str:
        self._new(value)
        state = value.__getstate__()
        fields_set = ",".join(_esc(n) for n in sorted(state.get("__pydantic_fields_set__", ())))
        try:
            extra = self.enc(state.get("__pydantic_extra__"))
            private = self.enc(state.get("__pydantic_private__"))
        except Fail as exc:
            exc.parts.append(".<extra or private attributes>")
            raise
        header = f",{_esc(path)},[{fields_set}],{extra},{private}"
        attrs = self._attrs(state["__dict__"].items(), [])
        return self._node("P", attrs, header, 2)

    def _custom(self, value: Any) -> str:
        for tag, hook, what in (
            ("h", self.hook, "encode_hook"),
            ("x", self.fallback, "encode_fallback"),
        ):
            if hook is None:
                continue
            try:
                result = hook(value)
            except Exception as exc:
                raise Fail(f"{what} failed on {type(value).__name__}: {exc!r}") from exc
            if result is None:
                continue
            if not isinstance(result, tuple) or len(result) != 2 or not isinstance(result[0], str):
                raise Fail(
                    f"{what} returned {short_repr(result)} for "
                    f"{type(value).__name__}; expected (tag, payload) or None"
                )
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
                raise Fail(
                    f"{type(value).__name__} is not serializable (pickle failed: {exc})"
                ) from exc
            self._new(value)
            sig = hmac.new(self.pickle_key, data, hashlib.sha256).hexdigest()
            return f'["p","{sig}",{self.chunks.binary("b", data)}]'
        raise Fail(f"{type(value).__name__} is not serializable")

    # -- roots --------------------------------------------------------------------------

    def root(self, value: Any, label: str, skip: bool, skipped: list[str]) -> str | None:
        """Encode one root; a dict's keys are variables (each skippable on its own)."""
        if type(value) is not dict or id(value) in self.memo:
            cp = self._checkpoint()
            try:
                return self.enc(value)
            except (Fail, RecursionError) as exc:
                self._give_up(exc, label, skip, skipped, cp)
                return None
        self._new(value)
        if not skip:
            return self._node("d", self._variables(value, label), "", 2)
        items: list[str] = []
        for key, item in value.items():
            cp = self._checkpoint()
            try:
                kf = _esc(key) if type(key) is str else self.enc(key)
                vf = self.enc(item)
            except (Fail, RecursionError) as exc:
                self._give_up(exc, f"{label} {short_repr(key)}", skip, skipped, cp)
                continue
            items.append(kf)
            items.append(vf)
        return self._node("d", items, "", 2)

    def _variables(self, value: dict[Any, Any], label: str) -> list[str]:
        """A namespace's key and value fragments when a failure raises (the ``"error"``
        policy): nothing is rolled back, so no checkpoint is taken per variable."""
        items: list[str] = []
        append, enc = items.append, self.enc
        key: Any = None
        try:
            for key, item in value.items():
                append(_esc(key) if type(key) is str else enc(key))
                append(enc(item))
        except (Fail, RecursionError) as exc:
            self._give_up(exc, f"{label} {short_repr(key)}", False, [], None)
        return items

    def _give_up(
        self,
        exc: Fail | RecursionError,
        var: str,
        skip: bool,
        skipped: list[str],
        cp: tuple[int, int] | None,
    ) -> None:
        """Raise the located error, or (skip policy) roll back to ``cp``, forget the
        variable ``var`` and warn."""
        fail = exc if isinstance(exc, Fail) else Fail("nested too deeply to serialize")
        error = fail.located(var)
        if not skip or cp is None:
            raise error from (exc if isinstance(exc, RecursionError) else exc.__cause__)
        self._rollback(cp)
        skipped.append(var)
        warnings.warn(f"{var} was not saved: {error}", DurablyWarning, stacklevel=5)


def _e_list(e: Encoder, v: list[Any]) -> str:
    memo, objs, key = e.memo, e.objs, id(v)
    number = memo.get(key)
    if number is not None:
        return e._ref(number)
    memo[key] = len(objs)
    objs.append(v)
    if len(v) >= FLOAT_RUN and type(v[0]) is float and set(map(type, v)) == FLOAT_ONLY:
        return e.chunks.binary("lf", _pack_floats(v))
    items = e._seq(v)
    s = '["l",' + ",".join(items) + "]" if items else '["l"]'  # Encoder._node, inline
    return s if len(s) <= e.limit else e._node("l", items)


def _pack_floats(v: list[float]) -> bytes:
    return struct.pack(f"<{len(v)}d", *v)


def _e_dict(e: Encoder, v: dict[Any, Any]) -> str:
    memo, objs, key = e.memo, e.objs, id(v)
    number = memo.get(key)
    if number is not None:
        return e._ref(number)
    memo[key] = len(objs)
    objs.append(v)
    items = e._pairs(v)
    s = '["d",' + ",".join(items) + "]" if items else '["d"]'  # Encoder._node, inline
    return s if len(s) <= e.limit else e._node("d", items, "", 2)


def _e_set(e: Encoder, v: set[Any]) -> str:
    number = e.memo.get(id(v))
    if number is not None:
        return e._ref(number)
    e._new(v)
    return e._set("s", v)


def _e_bytearray(e: Encoder, v: bytearray) -> str:
    number = e.memo.get(id(v))
    if number is not None:
        return e._ref(number)
    e._new(v)
    return e.chunks.binary("ba", v)


def _e_mapping(tag: str) -> Callable[[Encoder, Any], str]:
    def encode(e: Encoder, v: Any) -> str:
        number = e.memo.get(id(v))
        if number is not None:
            return e._ref(number)
        e._new(v)
        return e._node(tag, e._pairs(v), "", 2)

    return encode


def _e_defaultdict(e: Encoder, v: defaultdict[Any, Any]) -> str:
    number = e.memo.get(id(v))
    if number is not None:
        return e._ref(number)
    factory = v.default_factory
    name = None if factory is None else DD_NAMES.get(factory)
    if factory is not None and name is None:
        return e._custom(v)
    e._new(v)
    header = "," + ("null" if name is None else _esc(name))
    return e._node("dd", e._pairs(v), header, 2)


def _e_deque(e: Encoder, v: deque[Any]) -> str:
    number = e.memo.get(id(v))
    if number is not None:
        return e._ref(number)
    e._new(v)
    return e._node("dq", e._seq(v), "," + ("null" if v.maxlen is None else str(v.maxlen)))


def _e_datetime(e: Encoder, v: _dt.datetime) -> str:
    tz = _e_tz(v.tzinfo)
    if tz is None:
        return e._custom(v)
    return f'["dt","{v.replace(tzinfo=None).isoformat()}",{v.fold},{tz}]'


def _e_time(e: Encoder, v: _dt.time) -> str:
    tz = _e_tz(v.tzinfo)
    if tz is None:
        return e._custom(v)
    return f'["tm","{v.replace(tzinfo=None).isoformat()}",{v.fold},{tz}]'


def _dunder(name: str) -> bool:
    return name[:2] == "__" == name[-2:]


def _e_range(e: Encoder, v: range) -> str:
    return f'["rg",{_e_int(v.start)},{_e_int(v.stop)},{_e_int(v.step)}]'


def _e_slice(e: Encoder, v: slice) -> str:
    try:
        return f'["sl",{e.enc(v.start)},{e.enc(v.stop)},{e.enc(v.step)}]'
    except Fail as exc:
        exc.parts.append("<slice>")
        raise


def _e_pattern(e: Encoder, v: re.Pattern[Any]) -> str:
    return f'["re",{e.enc(v.pattern)},{v.flags}]'


def _e_path(e: Encoder, v: pathlib.PurePath) -> str:
    return f'["pp","{type(v).__name__}",{_esc(str(v))}]'


ENCODERS: Final[dict[type, Callable[[Encoder, Any], str]]] = {
    type(None): lambda e, v: "null",
    bool: lambda e, v: "true" if v else "false",
    int: lambda e, v: _e_int(v),
    float: lambda e, v: _e_float(v),
    bytes: lambda e, v: e.chunks.binary("b", v),
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
    range: _e_range,
    slice: _e_slice,
    type(...): lambda e, v: '["el"]',
    re.Pattern: _e_pattern,
    **dict.fromkeys(PATH_TYPES.values(), _e_path),
}
