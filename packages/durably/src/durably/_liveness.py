"""Who owns an execution's lease, and whether that owner is provably dead.

An owner string names a process so that another process can check it::

    vm:16729:bf3d0a83 [m=5f0c2a9e71d4 b=c5956acc t=1234567 l=1]

``vm`` is the hostname, ``16729`` the pid, ``bf3d0a83`` a random part (unique per
claim). In brackets: ``m`` a digest of the machine id (``/etc/machine-id``, else the
hostname; ``DURABLY_MACHINE_ID`` overrides it), the hostname and the pid namespace, so
two containers sharing a kernel are different hosts; ``b`` the kernel's boot id; ``t``
the process start time in clock ticks since boot (``/proc/<pid>/stat``), so that a pid
reused by another process is not mistaken for the owner; ``l=1`` when the owner holds
the provider's owner lock (see :attr:`durably.storage.Capability.OWNER_LOCK`).

An owner is *provably dead* when:

* it declared ``l=1`` and its owner lock is free (the store freed it when the process
  or its connection died) -- on any host;
* it ran on this host before the last reboot (same ``m``, another ``b``);
* it ran on this host and its pid is gone, is a zombie, or belongs to a process started
  at another time.

Everything else is alive (same host, process running) or unknown (another host, no owner
lock): such leases are taken over only once they expired. A take-over goes through
:meth:`~durably.storage.CheckpointProvider.take_over`, which bumps the epoch, so an owner
judged dead by mistake is fenced and cannot write again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from durably.errors import FencedError, LeaseHeldError
from durably.storage import Capability, CheckpointProvider, Lease, OwnerLock

__all__ = [
    "HANDOFF",
    "HeldLease",
    "OwnerIdentity",
    "OwnerState",
    "acquire_lease",
    "describe_wait",
    "inspect_owner",
    "judge",
    "this_owner",
]

HANDOFF: ContextVar[Lease | None] = ContextVar("durably_handoff", default=None)
"""A lease another process claimed for this one (a worker's ``claim_next``, handed to
the child that runs the attempt). :func:`acquire_lease` takes it over atomically
(``take_over``, conditional on it still being current) instead of claiming anew, so
that no other worker can claim the execution in between."""

MACHINE_ENV = "DURABLY_MACHINE_ID"
_OWNER_RE = re.compile(
    r"(?P<host>[^:\s\[\]]{1,64}):(?P<pid>\d{1,10}):(?P<nonce>[0-9a-f]{1,32})"
    r"(?: \[(?P<fields>[^\[\]]*)\])?"
)
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")


@dataclass(frozen=True, slots=True)
class OwnerIdentity:
    """A lease owner, as encoded in its owner string."""

    host: str
    pid: int
    nonce: str
    machine: str | None = None
    """Digest of machine id, hostname and pid namespace (None: not recorded)."""
    boot: str | None = None
    start: int | None = None
    """Process start time in clock ticks since boot (None: unknown on this platform)."""
    locked: bool = False
    """The owner holds the provider's owner lock."""

    def encode(self) -> str:
        """The owner string (at most ~110 characters)."""
        fields = [
            f"m={self.machine}" if self.machine else "",
            f"b={self.boot}" if self.boot else "",
            f"t={self.start}" if self.start is not None else "",
            f"l={int(self.locked)}",
        ]
        return f"{self.host}:{self.pid}:{self.nonce} [{' '.join(f for f in fields if f)}]"

    @classmethod
    def parse(cls, owner: str) -> OwnerIdentity | None:
        """The identity in an owner string, or None for owners that are not durably's."""
        match = _OWNER_RE.fullmatch(owner)
        if match is None:
            return None
        values: dict[str, str] = {}
        for item in (match["fields"] or "").split():
            key, _, value = item.partition("=")
            values[key] = value
        start = values.get("t", "")
        return cls(
            match["host"],
            int(match["pid"]),
            match["nonce"],
            machine=values.get("m") or None,
            boot=values.get("b") or None,
            start=int(start) if start.isdigit() else None,
            locked=values.get("l") == "1",
        )

    @property
    def label(self) -> str:
        """``host:pid``, for people."""
        return f"{self.host}:{self.pid}"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read().strip() or None
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, int | None] | None:
    """(state letter, start time in ticks) of a process from /proc, or None if gone.

    Where /proc hides other users' processes (``hidepid``, systemd ``ProtectProc``), a
    missing or unreadable entry is confirmed with ``kill(pid, 0)``: a process that exists
    but cannot be inspected is ``("?", None)``, never "gone".
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            raw = file.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return "?", None
        return "?", None
    rest = raw[raw.rindex(b")") + 2 :].split()
    return rest[0].decode(), int(rest[19])


def _has_proc() -> bool:
    return os.path.isdir("/proc/self")


@dataclass(frozen=True, slots=True)
class _Host:
    machine: str
    boot: str | None


_host_cache: _Host | None = None


def _this_host() -> _Host:
    global _host_cache
    if _host_cache is None:
        machine_id = (
            os.environ.get(MACHINE_ENV)
            or _read("/etc/machine-id")
            or _read("/var/lib/dbus/machine-id")
            or ""
        )
        try:
            pid_ns = os.readlink("/proc/self/ns/pid")
        except OSError:
            pid_ns = ""
        boot = _read("/proc/sys/kernel/random/boot_id")
        # Without a machine id (many container images), a hostname and a namespace inode
        # may repeat on other nodes: the kernel's boot id, unique per node and boot, then
        # stands in for it (a reboot makes another "host", judged by expiry, never dead).
        unique = machine_id or f"boot:{boot or ''}"
        digest = hashlib.sha256(f"{unique}|{socket.gethostname()}|{pid_ns}".encode()).hexdigest()[
            :12
        ]
        _host_cache = _Host(digest, boot.replace("-", "")[:8] if boot else None)
    return _host_cache


def this_owner(*, locked: bool = False) -> OwnerIdentity:
    """This process as a lease owner (a fresh random part each call)."""
    host = _this_host()
    pid = os.getpid()
    stat = _proc_stat(pid) if _has_proc() else None
    name = _HOST_UNSAFE.sub("-", socket.gethostname())[:64] or "host"
    return OwnerIdentity(
        name,
        pid,
        uuid.uuid4().hex[:8],
        machine=host.machine,
        boot=host.boot,
        start=stat[1] if stat else None,
        locked=locked,
    )


Liveness = Literal["none", "released", "alive", "dead", "unknown"]


@dataclass(frozen=True, slots=True)
class OwnerState:
    """What is known about an execution's lease holder."""

    lease: Lease | None
    identity: OwnerIdentity | None
    liveness: Liveness
    reason: str
    """Why, for people: ``process 123 is gone``, ``on another host``, ..."""
    now: float

    @property
    def expired(self) -> bool:
        return self.lease is not None and self.lease.expires_at <= self.now

    @property
    def claimable(self) -> bool:
        """Whether a resumer gets the execution now (claim or take-over)."""
        return self.liveness in ("none", "released", "dead") or self.expired

    @property
    def status(self) -> str:
        """``running``, ``crashed`` (owner provably dead), ``stale`` (lease expired,
        owner not provably dead) or ``stopped`` (lease released, or never claimed)."""
        if self.liveness == "dead":
            return "crashed"
        if self.liveness in ("none", "released"):
            return "stopped"
        return "stale" if self.expired else "running"

    @property
    def owner_label(self) -> str:
        if self.identity is not None:
            return self.identity.label
        return self.lease.owner if self.lease is not None else "nobody"

    def as_json(self) -> dict[str, object]:
        """The lease part of ``show --json``."""
        lease = self.lease
        ident = self.identity
        return {
            "owner": lease.owner if lease else None,
            "host": ident.host if ident else None,
            "pid": ident.pid if ident else None,
            "started_ticks": ident.start if ident else None,
            "epoch": lease.epoch if lease else None,
            "expires_at": lease.expires_at if lease else None,
            "owner_alive": {"alive": True, "dead": False}.get(self.liveness),
            "liveness": self.liveness,
            "reason": self.reason,
        }


def _same_host_verdict(ident: OwnerIdentity) -> tuple[Liveness, str]:
    host = _this_host()
    if ident.machine is None or ident.machine != host.machine:
        return "unknown", f"it runs on another host ({ident.host}), which cannot be checked"
    if ident.boot and host.boot and ident.boot != host.boot:
        return "dead", "this host restarted since"
    if _has_proc():
        stat = _proc_stat(ident.pid)
        if stat is None:
            return "dead", f"process {ident.pid} is gone"
        state, start = stat
        if state in ("Z", "X"):
            return "dead", f"process {ident.pid} exited"
        if ident.start is not None and start is not None and start != ident.start:
            return "dead", f"process {ident.pid} is gone (the pid now names another process)"
        return "alive", f"process {ident.pid} is running on this host"
    try:
        os.kill(ident.pid, 0)
    except ProcessLookupError:
        return "dead", f"process {ident.pid} is gone"
    except PermissionError:
        pass
    return "alive", f"process {ident.pid} is running on this host"


def judge(lease: Lease | None, *, lock_free: bool | None, now: float | None = None) -> OwnerState:
    """What is known about ``lease``'s holder.

    Args:
        lease: The execution's current lease (None: never claimed).
        lock_free: Whether the provider's owner lock is free (None: no owner lock, or
            not probed).
    """
    now = time.time() if now is None else now
    if lease is None:
        return OwnerState(None, None, "none", "never claimed", now)
    ident = OwnerIdentity.parse(lease.owner)
    if lease.released:
        return OwnerState(lease, ident, "released", "its owner released it", now)
    if ident is None:
        return OwnerState(lease, None, "unknown", "an owner durably cannot check", now)
    # What this host can see of its own processes comes first: a free owner lock only
    # means the lock's connection is gone, which a live owner survives (and is fenced).
    liveness, reason = _same_host_verdict(ident)
    if liveness == "unknown" and ident.locked and lock_free:
        liveness, reason = "dead", "its owner lock is free (the process or its connection is gone)"
    elif liveness == "unknown" and ident.locked and lock_free is False:
        liveness, reason = "alive", "it holds the execution's owner lock"
    return OwnerState(lease, ident, liveness, reason, now)


async def inspect_owner(
    provider: CheckpointProvider, execution_id: str, *, lease: Lease | None = None
) -> OwnerState:
    """Judge the holder of an execution's lease (probing the owner lock if there is one)."""
    if lease is None:
        lease = await provider.get_lease(execution_id)
    lock_free: bool | None = None
    if lease is not None and Capability.OWNER_LOCK in provider.capabilities:
        lock_free = await provider.owner_lock_free(execution_id)
    return judge(lease, lock_free=lock_free)


def describe_wait(execution_id: str, state: OwnerState) -> str:
    """The one-line refusal of a resume that must wait for a live lease."""
    lease = state.lease
    remaining = max(0.0, lease.expires_at - state.now) if lease else 0.0
    alive = {"alive": "alive", "unknown": "maybe alive"}.get(state.liveness, state.liveness)
    return (
        f"execution {execution_id!r} is running in another process: "
        f"{state.owner_label} ({alive}: {state.reason}); its lease expires in "
        f"{remaining:.0f} s unless renewed. To wait for it: "
        f"durably resume {execution_id} --wait"
    )


@dataclass(slots=True)
class HeldLease:
    """A lease this process claimed, and the owner lock it holds (if any)."""

    lease: Lease
    lock: OwnerLock | None
    took_over: OwnerState | None = None
    """The dead owner whose live lease was taken over (None: a plain claim)."""

    async def release_lock(self) -> None:
        lock, self.lock = self.lock, None
        if lock is not None:
            await lock.release()


async def acquire_lease(provider: CheckpointProvider, execution_id: str, ttl: float) -> HeldLease:
    """Claim an execution for this process, taking a provably dead owner's lease over.

    Takes the owner lock first (when the provider has one), then claims; if a live lease
    is in the way and its holder is provably dead, takes it over (epoch bump, fencing).

    Raises:
        LeaseHeldError: The holder is alive or cannot be checked; the message says who,
            whether alive, when the lease expires and that ``--wait`` waits.
    """
    lock: OwnerLock | None = None
    if Capability.OWNER_LOCK in provider.capabilities:
        lock = await provider.lock_owner(execution_id)
    owner = this_owner(locked=lock is not None).encode()
    try:
        handoff = HANDOFF.get()
        if handoff is not None and handoff.execution_id == execution_id:
            HANDOFF.set(None)  # used once
            if Capability.TAKEOVER in provider.capabilities:
                try:
                    lease = await provider.take_over(handoff, owner, ttl=ttl)
                    return HeldLease(lease, lock)
                except (LeaseHeldError, FencedError):
                    pass  # no longer current: claim as anyone would
            else:
                # Without a conditional take-over: give it back right before our claim.
                with contextlib.suppress(FencedError):
                    await provider.release(handoff)
        for _ in range(5):
            try:
                lease = await provider.claim(execution_id, owner, ttl=ttl)
                return HeldLease(lease, lock)
            except LeaseHeldError as exc:
                held = exc
            current = await provider.get_lease(execution_id)
            if current is None or current.expired():
                continue  # released or expired in between: claim again
            state = judge(current, lock_free=True if lock is not None else None)
            if (
                state.liveness == "unknown"
                and Capability.OWNER_LOCK in provider.capabilities
                and lock is None
            ):
                state = judge(current, lock_free=False)
            if state.liveness == "dead" and Capability.TAKEOVER in provider.capabilities:
                try:
                    lease = await provider.take_over(current, owner, ttl=ttl)
                except LeaseHeldError as exc:
                    held = exc
                    continue  # somebody else took it over first: judge the new holder
                return HeldLease(lease, lock, took_over=state)
            raise LeaseHeldError(
                describe_wait(execution_id, state),
                owner=current.owner,
                expires_at=current.expires_at,
                owner_alive=True if state.liveness == "alive" else None,
            ) from held
        raise LeaseHeldError(
            f"execution {execution_id!r} is contended: its lease keeps changing hands; try again",
            owner=None,
            expires_at=None,
        )
    except BaseException:
        if lock is not None:
            with contextlib.suppress(Exception):
                await lock.release()
        raise
