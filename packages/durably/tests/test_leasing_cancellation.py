"""The lease context absorbs only the cancellation it sent its task itself (the lease was
lost: the run ends as a take-over). Any other -- Ctrl-C, which ``asyncio.run`` turns into
cancelling the main task -- goes on: the run stops as interrupted, never exits 0 (found at
load, where renewals come late and a lease is lost now and then)."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator

import pytest

from durably._leasing import leased
from durably.checkpoint import CheckpointManager
from durably.errors import FencedError
from durably.storage import Lease

from memstore import MemoryStore


class TakenOverStore(MemoryStore):
    """The test store: the first renewal finds the lease taken over (FencedError), and
    the look-up of the new holder, the release or that renewal can be held up until told.
    """

    def __init__(self, *, hold: str | None = None, slow_renewal: bool = False) -> None:
        super().__init__()
        self.hold = hold
        """``"get_lease"`` or ``"release"``: that call waits for :attr:`go_on`."""
        self.slow_renewal = slow_renewal
        """The renewal waits for :attr:`renewal_go` (set :attr:`renewing` first)."""
        self.holding = asyncio.Event()
        self.go_on = asyncio.Event()
        self.renewing = asyncio.Event()
        self.renewal_go = asyncio.Event()

    async def _renew(self, lease: Lease, ttl: float) -> Lease:
        self.renewing.set()
        if self.slow_renewal:
            await self.renewal_go.wait()
        self.leases[lease.execution_id] = Lease(
            lease.execution_id, "another-host:4242", lease.epoch + 1, lease.expires_at + 60
        )
        return await super()._renew(lease, ttl)  # fenced: the epoch moved on

    async def _held(self, call: str) -> None:
        if self.hold == call:
            self.holding.set()
            await self.go_on.wait()

    async def _get_lease(self, eid: str) -> Lease | None:
        await self._held("get_lease")
        return await super()._get_lease(eid)

    async def _release(self, lease: Lease) -> None:
        await self._held("release")
        await super()._release(lease)


def _ctrl_c_when_held(store: TakenOverStore) -> asyncio.Task[None]:
    """Press Ctrl-C (a real SIGINT: ``asyncio.run`` cancels the main task) once the store
    holds the call up, then let the call go on."""

    async def press() -> None:
        await store.holding.wait()
        signal.raise_signal(signal.SIGINT)  # its handler has run when this returns
        store.go_on.set()

    return asyncio.create_task(press())


@pytest.fixture(autouse=True)
def _python_handles_ctrl_c() -> Iterator[None]:
    """asyncio.run cancels the main task on SIGINT only while Python's own handler is set
    (not where SIGINT is ignored: pytest run as a background job of a shell)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _lose_the_lease(store: TakenOverStore) -> tuple[str, int]:
    """Hold the lease on ``store`` until the heartbeat finds it taken over: (the
    FencedError's message, cancellations still pending on the task afterwards)."""

    async def main() -> tuple[str, int]:
        manager = CheckpointManager("lost", store)
        forever = asyncio.Event()
        with pytest.raises(FencedError) as stopped:
            async with leased(manager, 0.3, asyncio.current_task()):
                # cancelled by the heartbeat's first renewal; the timeout only bounds a failure
                await asyncio.wait_for(forever.wait(), timeout=10)
        task = asyncio.current_task()
        assert task is not None
        return str(stopped.value), task.cancelling()

    return asyncio.run(main())


def test_a_lost_lease_alone_is_a_take_over_and_its_cancellation_is_withdrawn() -> None:
    message, pending = _lose_the_lease(TakenOverStore())
    assert "another-host:4242" in message
    assert pending == 0  # nothing left pending that was not asked for


def test_ctrl_c_while_the_take_over_is_looked_up_interrupts_the_run() -> None:
    """Lease lost, the run unwinding to report the take-over, then Ctrl-C: interrupted."""

    async def main() -> None:
        store = TakenOverStore(hold="get_lease")
        manager = CheckpointManager("lost", store)
        presser = _ctrl_c_when_held(store)
        forever = asyncio.Event()
        try:
            async with leased(manager, 0.3, asyncio.current_task()):
                await asyncio.wait_for(forever.wait(), timeout=10)
        finally:
            await presser

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())


@pytest.mark.parametrize("cancels_the_body", [True, False], ids=["run", "submit"])
def test_ctrl_c_after_a_lease_lost_at_the_end_interrupts_the_run(cancels_the_body: bool) -> None:
    """The lease was lost as the body ended (too late to cancel it; `durably submit` never
    does), then Ctrl-C while the lease is released: interrupted, not an exit 0 as if
    nothing happened."""

    async def main() -> None:
        store = TakenOverStore(hold="release", slow_renewal=True)
        manager = CheckpointManager("lost", store)
        presser = _ctrl_c_when_held(store)
        on_lost = asyncio.current_task() if cancels_the_body else None
        try:
            async with leased(manager, 0.3, on_lost):
                # the timeout only bounds a failure: the heartbeat renews after 0.1 s
                await asyncio.wait_for(store.renewing.wait(), timeout=10)
                store.renewal_go.set()  # fenced, once the body ended
        finally:
            await presser

    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())


class CancelledReleaseStore(MemoryStore):
    """The test store, whose release ends cancelled by itself (its task is not)."""

    async def _release(self, lease: Lease) -> None:
        raise asyncio.CancelledError


def test_a_store_call_cancelled_by_itself_is_not_waited_for_again() -> None:
    """Only a cancellation of the task is absorbed: a call that ended cancelled is over."""
    raised: list[BaseException] = []

    async def main() -> None:
        manager = CheckpointManager("released", CancelledReleaseStore())
        try:
            async with leased(manager, 0.3, asyncio.current_task()):
                pass
        except BaseException as exc:
            raised.append(exc)

    # In a thread: waiting for the cancelled call again would spin without yielding.
    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the context waits for the cancelled release for ever"
    assert len(raised) == 1
    assert isinstance(raised[0], asyncio.CancelledError)


class CancelledLookUpStore(TakenOverStore):
    """The test store: the lease is taken over, and the look-up of the new holder ends
    cancelled by itself (its task is not)."""

    async def _get_lease(self, eid: str) -> Lease | None:
        raise asyncio.CancelledError


def test_a_take_over_whose_holder_look_up_ends_cancelled_is_still_a_take_over() -> None:
    """Not a plain cancellation (the CLI's "cancelled from within", exit 1): the lease was
    lost, so the run ends with FencedError (exit 3), its new holder unknown."""

    message, pending = _lose_the_lease(CancelledLookUpStore())
    assert "another process" in message
    assert pending == 0
