"""durably-redis: durably's Redis storage provider (``redis://`` and ``rediss://`` URLs).

Configure it with ``store = "redis://host:6379/0"`` and, optionally, a
``[durability.redis]`` table (see ``docs/providers/redis.md``). Every write is one Lua
script -- one round trip, one atomic step -- and leases are timed by the server's
clock. Durability is the server's: run Redis with ``appendonly yes``.

Test helpers (finding or starting a server, a raw-storage backdoor) live in
:mod:`durably_redis.testing`.
"""

from __future__ import annotations

from durably_redis._options import RedisOptions
from durably_redis._provider import RedisProvider
from durably_redis._server import Persistence, ServerInfo

__version__ = "0.1.0"

__all__ = [
    "Persistence",
    "RedisOptions",
    "RedisProvider",
    "ServerInfo",
    "__version__",
]
