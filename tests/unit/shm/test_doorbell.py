"""The adaptive wait: spinning and sleeping both see the condition, timeouts end waits, a lost peer ends them."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from freeflow.shm import Doorbell, PeerClosed, ShmError, Waiter, fence

COUNTER, CLOSED, SLEEPING = 0, 8, 16  # slots on cache lines of their own, as in a ring's header


class Flags:
    """A counter, a closed flag and a sleeping flag in 8-byte slots, standing in for a ring's header."""

    def __init__(self) -> None:
        self.words = memoryview(bytearray(8 * 24)).cast("Q")

    @property
    def ready(self) -> bool:
        return self.words[COUNTER] != 0

    @property
    def sleeping(self) -> bool:
        return self.words[SLEEPING] != 0

    def wait(self, waiter: Waiter, timeout: float | None) -> bool:
        """Wait for the counter to move off 0 or the closed flag."""
        return waiter.wait(self.words, COUNTER, 0, CLOSED, SLEEPING, timeout)

    def set_and_ring(self, bell: Doorbell) -> None:
        """What the peer does: publish, barrier, ring only if the waiter announced it sleeps."""
        self.words[COUNTER] = 1
        fence()
        if self.words[SLEEPING]:
            bell.ring()


@pytest.fixture
def bells() -> Iterator[tuple[Doorbell, Doorbell]]:
    """The waiter's end and the peer's end of one doorbell."""
    mine, theirs = Doorbell.pair()
    yield mine, theirs
    mine.close()
    theirs.close()


def test_ready_while_spinning_returns_without_sleeping(bells: tuple[Doorbell, Doorbell]) -> None:
    mine, _ = bells
    flags = Flags()
    flags.words[COUNTER] = 1
    assert flags.wait(Waiter(mine), timeout=None)
    assert not flags.sleeping


@pytest.mark.parametrize("spin", [0.0, 0.5])
def test_the_closed_flag_ends_a_wait(bells: tuple[Doorbell, Doorbell], spin: float) -> None:
    mine, _ = bells
    flags = Flags()
    flags.words[CLOSED] = 1
    assert flags.wait(Waiter(mine, spin=spin), timeout=5)


@pytest.mark.parametrize("spin", [0.0, 50e-6, 0.5])
def test_a_wait_times_out(bells: tuple[Doorbell, Doorbell], spin: float) -> None:
    mine, _ = bells
    flags = Flags()
    start = time.monotonic()
    assert not flags.wait(Waiter(mine, spin=spin), timeout=0.05)
    assert time.monotonic() - start >= 0.05, "a timeout never ends a wait early"
    assert not flags.sleeping


@pytest.mark.parametrize("spin", [0.0, 50e-6, 2.0])
def test_a_change_from_another_thread_ends_the_wait(bells: tuple[Doorbell, Doorbell], spin: float) -> None:
    mine, theirs = bells
    flags = Flags()
    timer = threading.Timer(0.05, flags.set_and_ring, (theirs,))
    timer.start()
    assert flags.wait(Waiter(mine, spin=spin), timeout=5)
    assert flags.ready
    timer.join()


def test_sleep_mode_loses_no_wake_up(bells: tuple[Doorbell, Doorbell]) -> None:
    """Many short waits against a thread ringing as fast as it can; a lost wake-up would time out."""
    mine, theirs = bells
    waiter = Waiter(mine, spin=0)
    for _ in range(300):
        flags = Flags()
        thread = threading.Thread(target=flags.set_and_ring, args=(theirs,))
        thread.start()
        deadline = time.monotonic() + 5
        while not flags.ready:  # a stale ring of the round before may end a wait early
            assert flags.wait(waiter, deadline - time.monotonic())
        thread.join()


def test_a_closed_other_end_ends_a_wait_without_timeout(bells: tuple[Doorbell, Doorbell]) -> None:
    mine, theirs = bells
    threading.Timer(0.05, theirs.close).start()
    flags = Flags()
    with pytest.raises(PeerClosed):
        flags.wait(Waiter(mine, spin=0), timeout=None)
    assert not flags.sleeping


def test_a_change_the_peer_made_before_closing_its_end_is_still_seen(bells: tuple[Doorbell, Doorbell]) -> None:
    """A peer that publishes its last data and exits without ringing: the wait ends with the change, not EOF."""
    mine, theirs = bells
    flags = Flags()

    def publish_and_leave() -> None:
        flags.words[COUNTER] = 1
        theirs.close()

    threading.Timer(0.05, publish_and_leave).start()
    assert flags.wait(Waiter(mine, spin=0), timeout=5)


def test_a_dead_peer_process_ends_a_wait() -> None:
    mine, theirs = Doorbell.pair()
    child = os.fork()
    if child == 0:
        mine.close()
        os._exit(0)  # the child's copy of the other end goes with it
    theirs.close()
    os.waitpid(child, 0)
    with pytest.raises(PeerClosed):
        Flags().wait(Waiter(mine, spin=0), timeout=5)
    mine.close()


def test_a_full_doorbell_can_still_be_rung_and_drains(bells: tuple[Doorbell, Doorbell]) -> None:
    mine, theirs = bells
    for _ in range(100_000):  # far more rings than the socket buffer holds: ring() must never block
        theirs.ring()
    assert mine.drain()
    assert mine.drain()
    theirs.close()
    assert not mine.drain()


def test_ringing_a_closed_other_end_is_harmless(bells: tuple[Doorbell, Doorbell]) -> None:
    mine, theirs = bells
    mine.close()
    theirs.ring()


def test_a_doorbell_must_be_a_unix_stream_socket() -> None:
    fd = os.eventfd(0)
    with pytest.raises(ShmError, match="unix stream socket"):
        Doorbell(fd)
    os.close(fd)  # still the caller's
    datagrams, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with pytest.raises(ShmError, match="unix stream socket"):
        Doorbell(datagrams.fileno())
    datagrams.close()
    other.close()
