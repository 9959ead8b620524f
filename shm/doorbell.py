"""Doorbells and the adaptive wait: spin a bounded time on shared memory, then sleep on the doorbell.

A channel's doorbell is a unix stream socket pair, one end per side: ring() sends a byte to the peer's end
and sleep() receives what the peer rang at one's own end, one system call each. (Measured here, a unix
stream socket wakes a sleeper on another CPU in ~20 µs where an eventfd, a pipe or a datagram socket
takes ~30 µs. With both ends on one CPU a pipe saves ~6 µs a round trip and a futex ~1 µs, but across
CPUs the pipe is slower and varies more, and the futex is ~20 µs slower.) The socket is also the lifeline
that tells death apart from silence: when the peer's last copy of its end closes (it closed the channel,
or its process died), sleep() reads end-of-file.

Protocol, with no lost wake-up. The waiter announces "I am sleeping" in a flag in the shared header, runs
a full barrier, re-checks its condition, and only then sleeps on its doorbell. The other side publishes
its change (head or tail), runs a full barrier, reads the flag and rings only if the flag is set. The two
barriers make this Dekker's pattern: at least one side sees the other's store, so either the waiter finds
the condition true or the ringer finds the flag set. x86-64 may delay a store past a later load (store
buffer), which is why a plain store is not enough and fence() exists. A stale ring only causes one
spurious wake-up, after which the condition is re-checked. A writer waiting for space waits for the tail to
cross a quarter of the ring (ring.py), so a reader runs the barrier and reads the flag only after a read that
crosses one.

Before it announces a sleep, a waiter gives its CPU away once (sched_yield). A peer on the same CPU, woken or
about to answer, then runs at once, and its answer is there without a sleep and a wake-up: a 64 B ping-pong
sleeping on one CPU took 8.9 µs here instead of 15.4 µs (a Python AF_UNIX socket pair: 13.7 µs), and 9.2 µs
instead of 17.2 µs unpinned with both CPUs busy. On an idle CPU the call returns at once, for ~1 µs.

Waits never hang: each ends after its timeout, or when the peer's end of the doorbell closes.
"""

from __future__ import annotations

import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable

from freeflow.shm.errors import PeerClosed, ShmError

DEFAULT_SPIN = 50e-6  # seconds; a wake-up from sleep costs ~25 µs here, so spinning longer rarely pays
_RING_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
_PENDING_RINGS = 4096  # bytes of rings taken at once
_SPIN_CHECKS = 64  # loads of the watched counter between two looks at the clock while spinning

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
    """One end of a doorbell socket pair: ring() wakes the process sleeping on the other end, sleep() waits
    to be rung from it."""

    def __init__(self, fd: int) -> None:
        """Take over `fd`; ShmError (the caller still owns `fd`) when it is not a unix stream socket."""
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ShmError(f"a doorbell is a unix stream socket; descriptor {fd} is not a socket: "
                           f"{exc.strerror}") from None
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            family, kind = sock.family, sock.type
            sock.detach()
            raise ShmError(f"a doorbell is a unix stream socket, not {family!r} {kind!r}")
        sock.setblocking(True)
        self._sock = sock
        self._rings = bytearray(_PENDING_RINGS)  # what sleep() and drain() receive into (no new bytes per wake-up)
        self._poll: select.poll | None = None

    @classmethod
    def pair(cls) -> tuple[Doorbell, Doorbell]:
        """Both ends of a new doorbell."""
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        return cls(a.detach()), cls(b.detach())

    def fileno(self) -> int:
        return self._sock.fileno()

    def ring(self) -> None:
        """Wake the other end's sleeper; never blocks (a full socket buffer means rings are pending anyway,
        and a closed other end needs none)."""
        # Not contextlib.suppress: this runs for every message a sleeping peer gets, and suppress costs more.
        try:  # noqa: SIM105
            self._sock.send(b"\1", _RING_FLAGS)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            pass

    def sleep(self, timeout: float | None) -> bool:
        """Wait to be rung (True) for up to `timeout` seconds (None: no limit; False when it passes), taking
        every pending ring; PeerClosed when the other end is closed."""
        if timeout is not None:
            if self._poll is None:
                self._poll = select.poll()
                self._poll.register(self._sock, select.POLLIN)
            if not self._poll.poll(math.ceil(timeout * 1000)):
                return False
        try:
            rung = self._sock.recv_into(self._rings)
        except ConnectionResetError:
            rung = 0
        if not rung:
            raise PeerClosed("the peer is gone: its end of the doorbell is closed")
        return True

    def drain(self) -> bool:
        """Take the pending rings without waiting; False when the other end is closed (a close behind pending
        rings shows on the next call: the socket stays readable)."""
        try:
            while True:
                rung = self._sock.recv_into(self._rings, 0, socket.MSG_DONTWAIT)
                if not rung:
                    return False
                if rung < _PENDING_RINGS:  # a short read took everything pending: no second call
                    return True
        except BlockingIOError:
            return True
        except ConnectionResetError:
            return False

    def close(self) -> None:
        self._sock.close()


class Waiter:
    """Waits for the peer to move a counter in the shared header, for one side of a channel; `spin` is settable
    (0: never spin)."""

    def __init__(self, bell: Doorbell, spin: float = DEFAULT_SPIN) -> None:
        self.bell = bell
        self.spin = spin

    def wait(self, words: memoryview, slot: int, value: int, closed_slot: int, sleeping_slot: int,
             timeout: float | None, shift: int = 0) -> bool:
        """Wait until `words[slot] >> shift` is no longer `value >> shift` or `words[closed_slot]` is set (True),
        or `timeout` seconds (None: no limit) passed (False).

        `words` is a ring's header as 8-byte slots; `sleeping_slot` is this side's sleeping flag in it, set
        while asleep (the peer rings after a change when it finds the flag set). Call it when the condition is
        false, and check again after: a stale ring can end a wait early. Raises PeerClosed when the peer's
        end of the doorbell is closed and the condition is still false.
        """
        value >>= shift
        if self.spin > 0:
            spin = self.spin if timeout is None else min(self.spin, timeout)
            end = time.monotonic() + spin
            while True:
                for _ in range(_SPIN_CHECKS):
                    if words[slot] >> shift != value:
                        return True
                if words[closed_slot]:
                    return True
                if time.monotonic() >= end:
                    break
            if timeout is not None:
                timeout = max(0.0, timeout - spin)
        return self.sleep(words, slot, value, closed_slot, sleeping_slot, timeout, shift)

    def sleeper(self, words: memoryview, slot: int, closed_slot: int, sleeping_slot: int) -> Callable[[int], bool]:
        """sleep() for one counter, with no time limit: a function of `value` that announces the sleep, fences,
        checks again and sleeps on the doorbell, and then says whether the condition holds. False after a stale
        ring or when the peer's end closed: wait() then tells which (the end of file stays). A channel waits so
        for each message of a sleeping ping-pong, where the calls and lookups of sleep() cost as much as the
        system calls (the same protocol, bound once)."""
        recv_into, rings, give_way = self.bell._sock.recv_into, self.bell._rings, os.sched_yield

        def sleep(value: int) -> bool:
            give_way()
            if words[slot] != value or words[closed_slot]:
                return True
            words[sleeping_slot] = 1
            _acquire()  # fence(), inlined
            _release()
            if words[slot] == value and not words[closed_slot]:
                try:  # noqa: SIM105 (suppress() costs more)
                    recv_into(rings)
                except ConnectionResetError:
                    pass
            words[sleeping_slot] = 0
            return words[slot] != value or words[closed_slot] != 0

        return sleep

    def sleep(self, words: memoryview, slot: int, value: int, closed_slot: int, sleeping_slot: int,
              timeout: float | None = None, shift: int = 0) -> bool:
        """wait() without spinning, `value` already shifted: announce the sleep, fence, check again, sleep on the
        doorbell (the CPU given away once first: the module's docstring). What wait() returns and raises."""
        os.sched_yield()
        if words[slot] >> shift != value or words[closed_slot]:
            return True
        words[sleeping_slot] = 1
        fence()
        if words[slot] >> shift != value or words[closed_slot]:
            words[sleeping_slot] = 0
            return True
        try:
            rung = timeout != 0 and self.bell.sleep(timeout)
        except PeerClosed:
            words[sleeping_slot] = 0
            if words[slot] >> shift != value or words[closed_slot]:
                return True
            raise
        words[sleeping_slot] = 0
        return rung
