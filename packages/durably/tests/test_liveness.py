"""Owner identity and the "provably dead" verdict (durably._liveness), with real processes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from typing import ClassVar

import pytest

from durably._liveness import OwnerIdentity, acquire_lease, judge, this_owner
from durably.errors import LeaseHeldError, UnsupportedError
from durably.storage import Capability, Lease

from memstore import MemoryStore

LINUX = sys.platform.startswith("linux")


def _lease(owner: OwnerIdentity | str, *, ttl: float = 60, released: bool = False) -> Lease:
    text = owner if isinstance(owner, str) else owner.encode()
    return Lease("run-1", text, 7, time.time() + ttl, released=released)


def _gone_pid() -> int:
    """The pid of a process that exited and was reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_an_owner_string_round_trips_and_stays_short() -> None:
    me = this_owner(locked=True)
    text = me.encode()
    assert len(text) <= 200
    assert OwnerIdentity.parse(text) == me
    assert me.pid == os.getpid()
    assert me.locked
    assert text.startswith(f"{me.host}:{os.getpid()}:")
    if LINUX:
        assert me.start is not None
        assert me.boot is not None
    assert this_owner().nonce != this_owner().nonce


@pytest.mark.parametrize("foreign", ["worker-a", "host:12:zz", "a b:1:ab", ""])
def test_owners_that_are_not_durablys_are_not_parsed(foreign: str) -> None:
    assert OwnerIdentity.parse(foreign) is None
    state = judge(Lease("run-1", foreign or "x", 1, time.time() + 60), lock_free=None)
    assert state.liveness == "unknown"
    assert state.status == "running"


def test_this_process_is_alive() -> None:
    state = judge(_lease(this_owner()), lock_free=None)
    assert state.liveness == "alive", state.reason
    assert state.status == "running"
    assert not state.claimable


def test_a_reaped_process_is_dead() -> None:
    owner = dataclasses.replace(this_owner(), pid=_gone_pid(), start=None)
    state = judge(_lease(owner), lock_free=None)
    assert state.liveness == "dead", state.reason
    assert state.status == "crashed"
    assert state.claimable
    assert f"process {owner.pid} is gone" in state.reason


@pytest.mark.skipif(not LINUX, reason="zombies are read from /proc")
def test_a_killed_but_unreaped_process_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = dataclasses.replace(this_owner(), pid=child.pid, start=None)
        assert judge(_lease(alive), lock_free=None).liveness == "alive"
        child.kill()
        deadline = time.monotonic() + 10
        while judge(_lease(alive), lock_free=None).liveness != "dead":
            assert time.monotonic() < deadline, "a SIGKILLed zombie still looks alive"
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(not LINUX, reason="start times are read from /proc")
def test_a_reused_pid_is_not_the_owner() -> None:
    me = this_owner()
    assert me.start is not None
    impostor = dataclasses.replace(me, start=me.start + 1)
    state = judge(_lease(impostor), lock_free=None)
    assert state.liveness == "dead"
    assert "another process" in state.reason


def test_another_host_cannot_be_checked_until_its_lease_expires() -> None:
    far = dataclasses.replace(this_owner(), machine="000000000000", pid=_gone_pid())
    live = judge(_lease(far), lock_free=None)
    assert live.liveness == "unknown"
    assert live.status == "running"
    assert not live.claimable
    expired = judge(_lease(far, ttl=-1), lock_free=None)
    assert expired.status == "stale"
    assert expired.claimable


def test_a_rebooted_host_means_a_dead_owner() -> None:
    me = this_owner()
    if me.boot is None:
        pytest.skip("no boot id on this platform")
    before = dataclasses.replace(me, boot="00000000")
    assert judge(_lease(before), lock_free=None).liveness == "dead"


def test_a_free_owner_lock_proves_death_on_any_host() -> None:
    far = dataclasses.replace(this_owner(locked=True), machine="000000000000")
    assert judge(_lease(far), lock_free=True).liveness == "dead"
    assert judge(_lease(far), lock_free=False).liveness == "alive"
    # An owner that never held the lock proves nothing by a free lock.
    unlocked = dataclasses.replace(far, locked=False)
    assert judge(_lease(unlocked), lock_free=True).liveness == "unknown"


def test_a_live_process_on_this_host_is_alive_even_if_its_lock_is_free() -> None:
    """A lock connection that dropped (idle timeout, failover) does not make a running
    owner dead: this host sees the process."""
    me = this_owner(locked=True)
    state = judge(_lease(me), lock_free=True)
    assert state.liveness == "alive"
    assert str(os.getpid()) in state.reason


def test_a_process_hidden_by_proc_is_not_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """With hidepid, another user's /proc entry is missing or unreadable: the process is
    confirmed with kill(pid, 0), never judged gone."""
    import builtins

    from durably import _liveness

    real_open = builtins.open

    def hidden(path: object, *args: object, **kwargs: object) -> object:
        if str(path).startswith("/proc/") and str(path).endswith("/stat"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", hidden)
    assert _liveness._proc_stat(os.getpid()) == ("?", None)
    assert _liveness._proc_stat(_gone_pid()) is None


def test_a_released_lease_is_stopped_not_crashed() -> None:
    owner = dataclasses.replace(this_owner(), pid=_gone_pid())
    state = judge(_lease(owner, ttl=0, released=True), lock_free=None)
    assert state.status == "stopped"
    assert state.claimable


class TakeoverStore(MemoryStore):
    """The test store, with the TAKEOVER capability."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.TAKEOVER})

    async def _take_over(self, lease: Lease, owner: str, ttl: float) -> Lease:
        current = self.leases.get(lease.execution_id)
        if current is not None and (current.owner, current.epoch) == (lease.owner, lease.epoch):
            self.released.add(lease.execution_id)
        return await self._claim(lease.execution_id, owner, ttl)


def test_a_dead_owners_lease_is_taken_over_with_a_new_epoch() -> None:
    async def main() -> None:
        store = TakeoverStore()
        dead = dataclasses.replace(this_owner(), pid=_gone_pid()).encode()
        old = await store.claim("run-1", dead, ttl=600)
        held = await acquire_lease(store, "run-1", 600)
        assert held.lease.epoch > old.epoch
        assert held.took_over is not None
        assert held.took_over.liveness == "dead"
        assert OwnerIdentity.parse(held.lease.owner) is not None
        # The winner is alive: a second resumer is refused, and told why and what to do.
        with pytest.raises(LeaseHeldError) as refused:
            await acquire_lease(store, "run-1", 600)
        message = str(refused.value)
        assert refused.value.owner_alive is True
        assert "running in another process" in message
        assert "is running on this host" in message
        assert "expires in" in message
        assert "durably resume run-1 --wait" in message

    asyncio.run(main())


def test_without_takeover_a_dead_owner_waits_for_expiry() -> None:
    async def main() -> None:
        store = MemoryStore()
        dead = dataclasses.replace(this_owner(), pid=_gone_pid()).encode()
        await store.claim("run-1", dead, ttl=600)
        with pytest.raises(LeaseHeldError):
            await acquire_lease(store, "run-1", 600)
        with pytest.raises(UnsupportedError, match="takeover"):
            await store.take_over(Lease("run-1", dead, 1, 0), "me", ttl=1)
        with pytest.raises(UnsupportedError, match="owner_lock"):
            await store.lock_owner("run-1")

    asyncio.run(main())
