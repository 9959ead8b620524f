"""The adaptive wait: spinning and sleeping both see the condition, timeouts end waits, a lost peer ends them."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from freeflow.shm import Doorbell, PeerClosed, Waiter, fence


class Flags:
    """A condition and a sleeping flag, standing in for a ring's header."""

    def __init__(self) -> None:
        self.ready = False
        self.sleeping = False

    def announce(self, sleeping: bool) -> None:
        self.sleeping = sleeping

    def set_and_ring(self, bell: Doorbell) -> None:
        """What the peer does: publish, barrier, ring only if the waiter announced it sleeps."""
        self.ready = True
        fence()
        if self.sleeping:
            bell.ring()


@pytest.fixture
def bell() -> Iterator[Doorbell]:
    bell = Doorbell.create()
    yield bell
    bell.close()


def test_ready_at_once_returns_without_waiting(bell: Doorbell) -> None:
    waiter = Waiter(bell)
    assert waiter.wait(lambda: True, lambda sleeping: None, timeout=0)


@pytest.mark.parametrize("spin", [0.0, 50e-6, 0.5])
def test_a_wait_times_out(bell: Doorbell, spin: float) -> None:
    flags = Flags()
    start = time.monotonic()
    assert not Waiter(bell, spin=spin).wait(lambda: flags.ready, flags.announce, timeout=0.05)
    assert 0.05 <= time.monotonic() - start < 1.0
    assert not flags.sleeping


@pytest.mark.parametrize("spin", [0.0, 50e-6, 2.0])
def test_a_change_from_another_thread_ends_the_wait(bell: Doorbell, spin: float) -> None:
    flags = Flags()
    timer = threading.Timer(0.05, flags.set_and_ring, (bell,))
    timer.start()
    start = time.monotonic()
    assert Waiter(bell, spin=spin).wait(lambda: flags.ready, flags.announce, timeout=5)
    assert time.monotonic() - start < 1.5
    timer.join()


def test_sleep_mode_loses_no_wake_up(bell: Doorbell) -> None:
    """Many short waits against a thread ringing as fast as it can; a lost wake-up would time out."""
    waiter = Waiter(bell, spin=0)
    for _ in range(300):
        flags = Flags()
        thread = threading.Thread(target=flags.set_and_ring, args=(bell,))
        thread.start()
        assert waiter.wait(lambda flags=flags: flags.ready, flags.announce, timeout=5)
        thread.join()


def test_a_wait_without_timeout_needs_a_lifeline(bell: Doorbell) -> None:
    with pytest.raises(ValueError, match="lifeline"):
        Waiter(bell).wait(lambda: False, lambda sleeping: None, timeout=None)


def test_a_hung_up_lifeline_ends_the_wait(bell: Doorbell) -> None:
    mine, theirs = socket.socketpair()
    threading.Timer(0.05, theirs.close).start()
    with pytest.raises(PeerClosed):
        Waiter(bell, lifeline=mine.fileno()).wait(lambda: False, lambda sleeping: None, timeout=None)
    mine.close()


def test_a_hung_up_lifeline_still_reports_a_ready_condition(bell: Doorbell) -> None:
    mine, theirs = socket.socketpair()
    theirs.close()
    answers = iter([False, False, True])
    assert Waiter(bell, lifeline=mine.fileno(), spin=0).wait(lambda: next(answers), lambda s: None, timeout=1)
    mine.close()


def test_a_saturated_doorbell_can_still_be_rung(bell: Doorbell) -> None:
    os.eventfd_write(bell.fileno(), 2**64 - 2)
    bell.ring()
    bell.drain()
    bell.drain()
