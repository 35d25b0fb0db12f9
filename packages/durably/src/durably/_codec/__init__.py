"""The safe value codec: Python values <-> canonical JSON documents and content-addressed blobs.

It stores the namespaces of call-stack frames and agent state at every checkpoint. The
format, and the promises it keeps (safe, deterministic, identity preserving,
incremental), are described in :mod:`durably._codec._format`; the modules are:

* ``_format``: the format's description, constants and types (no behaviour);
* ``_lookup``: finding classes among imported modules, never importing;
* ``_chunking``: content-defined chunking into blobs, and reading them back;
* ``_encode`` / ``_decode``: values to nodes and back;
* ``_valuecodec``: :class:`ValueCodec`, the one entry point.
"""

from durably._codec._format import BlobGetter, DecodeHook, Encoded, EncodeHook, Unresolved
from durably._codec._lookup import lookup_imported
from durably._codec._valuecodec import ValueCodec

__all__ = [
    "BlobGetter",
    "DecodeHook",
    "EncodeHook",
    "Encoded",
    "Unresolved",
    "ValueCodec",
    "lookup_imported",
]
