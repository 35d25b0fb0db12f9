"""How the suite and its child processes exchange calls and results (JSON lines).

Arguments and results of provider calls are JSON values, with the storage types tagged:
``{"$bytes": base64}``, ``{"$lease": [...]}``, ``{"$expected": version}``,
``{"$info": {...}}`` (a :class:`~durably.storage.CheckpointInfo`) and
``{"$stored": {...}}`` (a :class:`~durably.storage.StoredCheckpoint`). An exception
travels as ``{"type": name, "message": text}`` and comes back as an instance of the
``durably.errors`` (or built-in) class of that name.
"""

from __future__ import annotations

import base64
import builtins
from types import MappingProxyType
from typing import Any

__all__ = ["decode", "decode_error", "encode", "encode_error"]


def encode(value: Any) -> Any:
    """A JSON-serializable form of ``value`` (see the module docstring)."""
    from durably.storage import CheckpointInfo, ExpectedVersion, Lease, StoredCheckpoint

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Lease):
        return {
            "$lease": [
                value.execution_id,
                value.owner,
                value.epoch,
                value.expires_at,
                value.released,
            ]
        }
    if isinstance(value, ExpectedVersion):
        return {"$expected": value.version}
    if isinstance(value, CheckpointInfo):
        return {
            "$info": {
                "execution_id": value.execution_id,
                "seq": value.seq,
                "version": value.version,
                "size": value.size,
                "created_at": value.created_at,
                "metadata": dict(value.metadata),
            }
        }
    if isinstance(value, StoredCheckpoint):
        return {"$stored": {"info": encode(value.info), "data": encode(value.data)}}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {str(key): encode(item) for key, item in value.items()}
    raise TypeError(f"cannot send a {type(value).__name__} to or from a child process")


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`."""
    from durably.storage import CheckpointInfo, ExpectedVersion, Lease, StoredCheckpoint

    if isinstance(value, list):
        return [decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    if "$bytes" in value:
        return base64.b64decode(value["$bytes"])
    if "$lease" in value:
        execution_id, owner, epoch, expires_at, released = value["$lease"]
        return Lease(execution_id, owner, epoch, expires_at, released=released)
    if "$expected" in value:
        return ExpectedVersion(value["$expected"])
    if "$info" in value:
        fields = dict(value["$info"])
        fields["metadata"] = MappingProxyType(dict(fields["metadata"]))
        return CheckpointInfo(**fields)
    if "$stored" in value:
        return StoredCheckpoint(decode(value["$stored"]["info"]), decode(value["$stored"]["data"]))
    return {key: decode(item) for key, item in value.items()}


def encode_error(exc: BaseException) -> dict[str, str]:
    """What a child reports for an exception."""
    return {"type": type(exc).__name__, "message": str(exc)}


def decode_error(error: dict[str, str]) -> BaseException:
    """An exception of the reported class: a ``durably.errors`` class, a built-in one, or
    :class:`RuntimeError` naming the class."""
    import durably.errors

    name, message = error["type"], error["message"]
    cls = getattr(durably.errors, name, None) or getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        try:
            return cls(message)
        except TypeError:  # a constructor with other required arguments
            pass
    return RuntimeError(f"{name} in a child process: {message}")
