"""Doorbells (eventfds) and the adaptive wait: spin a bounded time on shared memory, then sleep on the bell.

Protocol, with no lost wake-up. The waiter announces "I am sleeping" in a flag in the shared header, runs
a full barrier, re-checks its condition, and only then sleeps in poll() on its own eventfd. The other side
publishes its change (head or tail), runs a full barrier, reads the flag and rings the waiter's eventfd
only if the flag is set. The two barriers make this Dekker's pattern: at least one side sees the other's
store, so either the waiter finds the condition true or the ringer finds the flag set. x86-64 may delay a
store past a later load (store buffer), which is why a plain store is not enough and fence() exists.
Closing always rings. A stale ring only causes one spurious wake-up, after which the condition is re-checked.

Waits never hang: each takes a timeout, and a wait without one must watch a lifeline, one end of a
socketpair whose other end only the peer holds. Nothing is ever written on it: any event on it (POLLHUP
when the peer's last copy closes, including when its process dies) means the peer is gone.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import threading
import time
from collections.abc import Callable

from freeflow.shm.errors import PeerClosed

DEFAULT_SPIN = 50e-6  # seconds; a wake-up from sleep costs ~25 µs here, so spinning longer rarely pays

_fence_lock = threading.Lock()
_acquire, _release = _fence_lock.acquire, _fence_lock.release


def _new_fence_lock() -> None:
    global _fence_lock, _acquire, _release
    _fence_lock = threading.Lock()
    _acquire, _release = _fence_lock.acquire, _fence_lock.release


# A lock held by another thread at fork() would stay held forever in the child.
os.register_at_fork(after_in_child=_new_fence_lock)


def fence() -> None:
    """A full memory barrier (like x86 mfence) from pure Python.

    CPython's lock is a glibc semaphore whose acquire and release are `lock cmpxchg`/`lock xadd`, and every
    locked instruction drains the store buffer, so no later load passes an earlier store.
    """
    _acquire()
    _release()


class Doorbell:
    """A non-blocking eventfd: the peer rings it, its owner sleeps on it."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def create(cls) -> Doorbell:
        return cls(os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC))

    def fileno(self) -> int:
        return self._fd

    def ring(self) -> None:
        with contextlib.suppress(BlockingIOError):  # the counter is saturated: the bell is already ringing
            os.eventfd_write(self._fd, 1)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):  # nobody rang: the lifeline or a timeout woke us
            os.eventfd_read(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Waiter:
    """Waits for a condition on shared memory, for one side of a channel; `spin` is settable (0: never spin)."""

    def __init__(self, bell: Doorbell, lifeline: int | None = None, spin: float = DEFAULT_SPIN) -> None:
        self.bell = bell
        self.spin = spin
        self._lifeline = lifeline
        self._poll = select.poll()
        self._poll.register(bell.fileno(), select.POLLIN)
        if lifeline is not None:
            self._poll.register(lifeline, select.POLLIN)

    def wait(self, ready: Callable[[], bool], announce: Callable[[bool], None], timeout: float | None) -> bool:
        """Return True once ready() is true, False when `timeout` seconds pass first.

        `announce(True)` sets this side's sleeping flag in the shared header, `announce(False)` clears it;
        the peer rings `bell` after a change if it finds the flag set. Raises PeerClosed when the lifeline
        reports the peer gone and the condition is still false.
        """
        if ready():
            return True
        if timeout is None and self._lifeline is None:
            raise ValueError("a wait without a lifeline needs a timeout")
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        if self.spin > 0:
            spin_end = now + self.spin if deadline is None else min(now + self.spin, deadline)
            while time.monotonic() < spin_end:
                if ready():
                    return True
        while True:
            announce(True)
            fence()
            if ready():
                announce(False)
                return True
            if deadline is None:
                ms = -1
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    announce(False)
                    return False
                ms = math.ceil(remaining * 1000)
            events = self._poll.poll(ms)
            announce(False)
            self.bell.drain()
            if ready():
                return True
            if any(fd == self._lifeline for fd, _ in events):
                raise PeerClosed("the peer is gone: its lifeline hung up")
