"""The fast path of :meth:`ValueCodec.encode` for small documents of plain values.

Most checkpoints hold only what JSON holds -- dicts with str keys, lists, str, small
int, bool and None -- and are small: an agent's delta at an ``await`` (its journal entry
and the manifest). For those the general :class:`~durably._codec._encode.Encoder` (an
identity memo, hooks, chunking, a dispatch table, a rollback point per variable) writes
exactly what :func:`plain_document` writes in one pass: no container appears twice (so
none is written as a reference), no node is longer than the blob threshold (so none is
chunked) and no value goes to a hook. :func:`plain_document` writes that document, or
gives up (None) at the first value that is anything else -- a float, a tuple, a big int,
a container seen before, a node over the threshold -- and the general encoder writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import repeat
from json.encoder import encode_basestring_ascii as _esc
from typing import Any

from durably._codec._format import BIG_INT

__all__ = ["plain_document"]

_MAX_DEPTH = 32
"""Deeper values go to the general encoder (which also locates one nested too deeply)."""


class _NotPlain(Exception):
    """The document is not plain, or not small: the general encoder writes it."""


def plain_document(roots: Mapping[str, Any], limit: int, version: int) -> bytes | None:
    """The root document :meth:`ValueCodec.encode` makes of ``roots``, or None.

    Args:
        roots: Root name -> value (a dict or a list: a namespace, a document).
        limit: The blob threshold: a node longer than this is chunked, which this fast
            path leaves to the general encoder.
        version: The codec format written in the document.

    Returns:
        The document's bytes when every value is plain and every node fits, else None.
    """
    seen: set[int] = set()
    parts = []
    try:
        for name, value in roots.items():
            if type(name) is not str:
                return None
            parts.append(_esc(name) + ":" + _node(value, seen, limit, 0))
    except _NotPlain:
        return None
    return f'{{"durably":{version},"roots":{{{",".join(parts)}}}}}'.encode("ascii")


_NO_KEY = object()
"""Stands for the key of a list's item (a dict's key may be None)."""


def _node(value: Any, seen: set[int], limit: int, depth: int) -> str:
    """A dict's or a list's node as the general encoder writes it (``["d", key, value,
    ...]``, ``["l", item, ...]``), its plain leaves inline; raises :class:`_NotPlain`."""
    t = type(value)
    if (t is not dict and t is not list) or depth >= _MAX_DEPTH or id(value) in seen:
        raise _NotPlain
    seen.add(id(value))
    if t is dict:
        parts = ['["d"']
        pairs = value.items()
    else:
        parts = ['["l"']
        pairs = zip(repeat(_NO_KEY), value)
    append = parts.append
    size = 0  # the node's length so far: give up as soon as it cannot fit
    for key, item in pairs:
        if key is not _NO_KEY:
            if type(key) is not str:
                raise _NotPlain
            text = _esc(key)
            size += len(text) + 1
            append(text)
        kind = type(item)
        if kind is str:
            text = _esc(item)
        elif kind is int and -BIG_INT < item < BIG_INT:
            text = int.__repr__(item)
        elif item is None:
            text = "null"
        elif kind is bool:
            text = "true" if item else "false"
        else:
            text = _node(item, seen, limit, depth + 1)
        size += len(text) + 1
        if size > limit:
            raise _NotPlain
        append(text)
    text = ",".join(parts) + "]"
    if len(text) > limit:
        raise _NotPlain
    return text
