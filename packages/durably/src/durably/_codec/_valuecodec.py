"""The codec's public face: :class:`ValueCodec`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii as _esc
from typing import Any, Literal

from durably._codec._decode import Decoder
from durably._codec._encode import Encoder, EscapedStrings
from durably._codec._format import (
    FORMAT,
    MIN_THRESHOLD,
    NO_LIMIT,
    BlobGetter,
    DecodeHook,
    Encoded,
    EncodeHook,
    Fail,
    short_repr,
)
from durably._codec._plain import plain_document
from durably.errors import CorruptObjectError, SerializationError, UnsupportedFormatError

__all__ = ["ValueCodec"]


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

    FORMAT = FORMAT

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
        if blob_threshold < MIN_THRESHOLD:
            raise ValueError(f"blob_threshold must be at least {MIN_THRESHOLD}")
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
        self._escaped = EscapedStrings()
        """The escaped text of the latest encode's long strings, reused by the next."""

    def encode(self, roots: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> Encoded:
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
        data = plain_document(roots, self._blob_threshold, self.FORMAT)
        if data is not None:  # the same bytes the general encoder writes, in one pass
            return Encoded(data, {}, ())
        return self._encode_general(roots, labels)

    def check(self, roots: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> None:
        """Raise :class:`SerializationError` where :meth:`encode` would (whatever the
        ``on_unserializable`` policy), building no blob and leaving what the next
        :meth:`encode` reuses as it is: a question asked before a snapshot.

        Raises:
            SerializationError: A value cannot be encoded.
        """
        if plain_document(roots, self._blob_threshold, self.FORMAT) is not None:
            return
        enc = Encoder(self, NO_LIMIT)
        labels = labels or {}
        for name, value in roots.items():
            enc.root(value, labels.get(name, name), False, [])

    def _encode_general(
        self, roots: Mapping[str, Any], labels: Mapping[str, str] | None
    ) -> Encoded:
        """:meth:`encode` by the general encoder (any value, any size)."""
        self._escaped.next_generation()
        enc = Encoder(self, self._blob_threshold, escaped=self._escaped)
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
        return Encoded(data.encode("ascii"), enc.chunks.blobs, tuple(skipped))

    def decode(
        self, data: bytes, get_blob: BlobGetter, *, unresolved: list[str] | None = None
    ) -> dict[str, Any]:
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
        dec = Decoder(self, get_blob, unresolved)
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
        enc = Encoder(self, NO_LIMIT)
        try:
            node = enc.enc(value)
        except Fail as exc:
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
        return self._decode_root(Decoder(self, None, unresolved), doc["value"], "value")

    # -- helpers ------------------------------------------------------------------------

    def _document(self, data: bytes) -> dict[str, Any]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"expected bytes, not {type(data).__name__}")
        try:
            doc = json.loads(bytes(data))
        except (ValueError, RecursionError) as exc:
            raise CorruptObjectError(f"malformed data: not a valid JSON document: {exc}") from None
        if type(doc) is not dict or "durably" not in doc:
            raise CorruptObjectError("malformed data: not a durably value document")
        version = doc["durably"]
        if type(version) is not int or version != self.FORMAT:
            raise UnsupportedFormatError(
                f"value document format {short_repr(version)} is not supported "
                f"(this durably reads format {self.FORMAT}); upgrade durably"
            )
        return doc

    @staticmethod
    def _decode_root(dec: Decoder, node: Any, name: str) -> Any:
        try:
            return dec.dec(node)
        except Fail as exc:
            raise exc.located(name) from exc.__cause__
        except RecursionError as exc:
            raise CorruptObjectError(f"{name}: data nested too deeply to decode") from exc
