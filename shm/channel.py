"""A bidirectional byte channel between two processes: one ring per direction, a doorbell between them.

A side's descriptors (ChannelFds) travel together over SCM_RIGHTS. The doorbell, a socket pair, also tells
death apart from silence: when the peer's process dies, its end closes and our waits end with EOF.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from freeflow.shm import doorbell as _doorbell
from freeflow.shm.doorbell import DEFAULT_SPIN, Doorbell, Waiter, fence
from freeflow.shm.errors import EndOfChannel, PeerClosed, RingCorrupted, WaitTimeout
from freeflow.shm.ring import (
    HEAD_SLOT,
    READER_CLOSED_SLOT,
    READER_WAITING_SLOT,
    RING_NAME,
    TAIL_SLOT,
    WRITER_CLOSED_SLOT,
    WRITER_WAITING_SLOT,
    ByteBuffer,
    Ring,
)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

DEFAULT_CAPACITY = 1 << 20
_PREFIX = 4  # bytes of the little-endian length before each message of send_msg()
MAX_MESSAGE = (1 << 8 * _PREFIX) - 1
_QUICK_CHECKS = 64  # loads of the head recv_into() makes on an empty ring before a wait (~2 µs)
_SMALL_MESSAGE = 4096  # up to this size, send_msg() copies the prefix and the message into one ring write


def close_all(*closers: Callable[[], None]) -> None:
    """Call every closer, even when an earlier one fails; the first failure is raised once all have run."""
    with contextlib.ExitStack() as stack:
        for close in reversed(closers):  # the stack calls them last in, first out
            stack.callback(close)


@dataclasses.dataclass(frozen=True)
class ChannelFds:
    """The descriptors of one side of a channel, in the order they are passed over SCM_RIGHTS.

    tx: memfd of the ring this side writes; rx: memfd of the ring it reads; bell: its end of the doorbell
    socket pair, whose other end the peer holds (rung to wake the peer, slept on to be woken).
    """

    tx: int
    rx: int
    bell: int

    def close(self) -> None:
        """Close every descriptor (e.g. in the router, once they are handed over)."""
        for fd in dataclasses.astuple(self):
            os.close(fd)


def channel_fds(capacity: int = DEFAULT_CAPACITY, name: str = RING_NAME) -> tuple[ChannelFds, ChannelFds]:
    """Make a channel and return the descriptors of its two sides, each set owning distinct descriptors; both
    rings' memfds are named `name`."""
    fds: list[int] = []
    try:
        for _ in range(2):
            ring, fd = Ring.create(capacity, name)
            fds.append(fd)
            ring.close()
        bell_a, bell_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds += [bell_a.detach(), bell_b.detach()]
        fds += [os.dup(fds[1]), os.dup(fds[0])]
        ab, ba, bell_a_fd, bell_b_fd, ba_copy, ab_copy = fds
        a = ChannelFds(tx=ab, rx=ba, bell=bell_a_fd)
        b = ChannelFds(tx=ba_copy, rx=ab_copy, bell=bell_b_fd)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return a, b


def channel_pair(capacity: int = DEFAULT_CAPACITY, spin: float = DEFAULT_SPIN,
                 timeout: float | None = None) -> tuple[Channel, Channel]:
    """Both ends of a new channel in this process."""
    a, b = channel_fds(capacity)
    return (Channel.from_fds(a, spin=spin, timeout=timeout),
            Channel.from_fds(b, spin=spin, timeout=timeout))


def _byte_buffer(data: ReadableBuffer) -> ByteBuffer:
    """`data` itself when the ring can copy it as is, else a flat byte view of it."""
    if type(data) is bytes or type(data) is bytearray:
        return data
    view = data if type(data) is memoryview else memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _byte_view(buf: WriteableBuffer, nbytes: int) -> memoryview | bytearray:
    """A flat byte view of `buf` for the ring to fill: its first `nbytes` bytes if given (ValueError when they do
    not fit)."""
    view = buf if type(buf) is bytearray else _byte_buffer(buf)
    if nbytes:
        if not 0 < nbytes <= len(view):
            raise ValueError(f"nbytes {nbytes} does not fit the {len(view)}-byte buffer")
        return memoryview(view)[:nbytes]
    return view  # type: ignore[return-value]


def _quick_checks(spin: float) -> range:
    """What recv_into() iterates over, loading the head once per step, before it waits: nothing when the
    channel never spins."""
    return range(_QUICK_CHECKS if spin > 0 else 0)


class Channel:
    """One side of a channel, with a socket-like interface; used by one thread at a time.

    `timeout` (seconds, None: until data, space or the peer's end) bounds every call; `spin` is how long a
    wait spins before sleeping (0: sleep at once). After a timeout inside send_msg() or recv_msg() the
    message framing is lost: close the channel.
    """

    def __init__(self, tx: Ring, rx: Ring, bell: Doorbell, spin: float = DEFAULT_SPIN,
                 timeout: float | None = None) -> None:
        self._tx = tx
        self._rx = rx
        self._bell = bell
        self._waiter = Waiter(bell, spin)
        self._sleep_for_data = self._waiter.sleeper(rx.header, HEAD_SLOT, WRITER_CLOSED_SLOT, READER_WAITING_SLOT)
        self._quick_checks = _quick_checks(spin)
        self._peer_gone = False
        self._closed = False
        self.timeout = timeout

    @classmethod
    def from_fds(cls, fds: ChannelFds, spin: float = DEFAULT_SPIN, timeout: float | None = None) -> Channel:
        """Open one side from its descriptors, taking ownership of all of them (closed even on failure)."""
        tx = rx = None
        try:
            tx_stat, rx_stat = os.fstat(fds.tx), os.fstat(fds.rx)
            if (tx_stat.st_dev, tx_stat.st_ino) == (rx_stat.st_dev, rx_stat.st_ino):
                raise RingCorrupted("both directions of the channel are the same ring")
            tx = Ring.attach(fds.tx)
            rx = Ring.attach(fds.rx)
            bell = Doorbell(fds.bell)
        except BaseException:
            for ring in (tx, rx):
                if ring is not None:
                    ring.close()
            fds.close()
            raise
        os.close(fds.tx)
        os.close(fds.rx)
        return cls(tx, rx, bell, spin, timeout)

    @property
    def spin(self) -> float:
        return self._waiter.spin

    @spin.setter
    def spin(self, seconds: float) -> None:
        self._waiter.spin = seconds
        self._quick_checks = _quick_checks(seconds)

    # Sending.

    def send(self, data: ReadableBuffer) -> int:
        """Write what fits of `data` once some space is free; return the count."""
        return self._send(_byte_buffer(data), self._deadline())

    def sendall(self, data: ReadableBuffer) -> None:
        """Write all of `data`, waiting for space as needed."""
        payload = data if type(data) is bytes or type(data) is bytearray else _byte_buffer(data)
        header = self._tx.header
        # The common case in this one frame: it all fits now (what each message of a ping-pong takes).
        if not self._closed and not header[READER_CLOSED_SLOT] and self._tx.put(payload):
            _doorbell._acquire()  # fence(), inlined: then ring a sleeping reader (_wake_reader())
            _doorbell._release()
            if header[READER_WAITING_SLOT]:
                self._bell.ring()
            return
        self._sendall(payload, self._deadline())

    def send_msg(self, data: ReadableBuffer) -> None:
        """Send `data` as one message: its length on 4 bytes, then the bytes."""
        payload = _byte_buffer(data)
        size = len(payload)
        if size > MAX_MESSAGE:
            raise ValueError(f"a message holds at most {MAX_MESSAGE} bytes, not {size}")
        deadline = self._deadline()
        if size <= _SMALL_MESSAGE:
            self._sendall(size.to_bytes(_PREFIX, "little") + payload, deadline)
        else:
            self._sendall(size.to_bytes(_PREFIX, "little"), deadline)
            self._sendall(payload, deadline)

    def _sendall(self, data: ByteBuffer, deadline: float | None) -> None:
        sent = self._send(data, deadline)
        total = len(data)
        if sent < total:
            view = memoryview(data)
            while sent < total:
                sent += self._send(view[sent:], deadline)

    def _send(self, data: ByteBuffer, deadline: float | None) -> int:
        tx = self._tx
        while True:
            if self._closed:
                raise ValueError("send on a closed channel")
            if tx.header[READER_CLOSED_SLOT]:
                raise PeerClosed("the peer closed the channel")
            n = tx.write(data)
            if n or not len(data):
                self._wake_reader()
                return n
            if self._peer_gone:
                raise PeerClosed("the peer is gone")
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:  # until the reader's tail crosses a quarter of the ring after "full" (ring.py), or it closes
                if not self._waiter.wait(tx.header, TAIL_SLOT, tx.head - tx.capacity, READER_CLOSED_SLOT,
                                         WRITER_WAITING_SLOT, remaining, tx.space_shift):
                    raise WaitTimeout(f"no space in the channel for {self.timeout} s")
            except PeerClosed:
                self._peer_gone = True
                raise

    def _wake_reader(self) -> None:
        """After a write: ring the peer if it sleeps waiting for data (the barrier first: doorbell.py)."""
        fence()
        if self._tx.header[READER_WAITING_SLOT]:
            self._bell.ring()

    def shutdown_write(self) -> None:
        """Half-close: the peer reads what is left, then end of stream; this side can still receive."""
        self._tx.shutdown_write()
        fence()
        self._bell.ring()

    # Receiving.

    def recv(self, n: int) -> bytes:
        """Up to `n` bytes once some are there; b"" after the peer closed (or died) and all was read."""
        return self._recv(n, self._deadline())

    def recv_into(self, buf: WriteableBuffer, nbytes: int = 0) -> int:
        """Like recv(), into `buf` (its first `nbytes` bytes if given); 0 at end of stream."""
        if self._closed:
            raise ValueError("recv on a closed channel")
        rx = self._rx
        header = rx.header
        tail = rx.tail
        if header[HEAD_SLOT] == tail:  # empty: wait first (no read that finds nothing)
            # A reply on its way arrives within a few loads: look for it without a call or a clock first.
            for _ in self._quick_checks:
                if header[HEAD_SLOT] != tail:
                    break
            else:
                # A channel that sleeps at once, with no time limit (each message of a sleeping ping-pong): one
                # lean sleep, then the read below. Anything else, or a sleep that did not end with data or the
                # end of the stream there, waits in full.
                if (self.timeout is not None or self._quick_checks or self._peer_gone or nbytes
                        or not (buf.nbytes if type(buf) is memoryview else type(buf) is bytearray and len(buf))
                        or not self._sleep_for_data(tail)):
                    return self._wait_into(_byte_view(buf, nbytes))
        # The common case in this one frame: a flat view of bytes that the data fills before the wrap-around.
        if type(buf) is memoryview and not nbytes:
            try:
                took = rx.take(buf)
            except (TypeError, ValueError, NotImplementedError):  # another shape: cast below
                took = False
            if took:
                if (rx.tail ^ tail) >> rx.space_shift:  # _wake_writer()'s test, inlined
                    self._wake_writer(tail)
                return len(buf)
        return self._read_into(_byte_view(buf, nbytes))

    def _read_into(self, view: memoryview | bytearray) -> int:
        """recv_into() on a ring with data: what fits into `view`, read."""
        tail = self._rx.tail
        n = self._rx.readinto(view)
        self._wake_writer(tail)
        return n

    def _wait_into(self, view: memoryview | bytearray) -> int:
        """recv_into() on an empty ring: wait, then read; 0 at end of stream (or into an empty buffer)."""
        if not len(view):
            return 0
        deadline = self._deadline()
        while True:
            ended = self._await_data(deadline)
            n = self._read_into(view)
            if n or ended:
                return n

    def recv_msg(self) -> bytes:
        """The next message of send_msg(); raises EndOfChannel when the stream ends instead."""
        deadline = self._deadline()
        size = int.from_bytes(self._recv_exactly(_PREFIX, deadline, "before a message"), "little")
        return self._recv_exactly(size, deadline, f"inside a {size}-byte message")

    def _recv_exactly(self, n: int, deadline: float | None, where: str) -> bytes:
        pieces = []
        got = 0
        while got < n:
            piece = self._recv(n - got, deadline)
            if not piece:
                raise EndOfChannel(f"the peer closed the channel {where} (got {got} of {n} bytes)")
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)

    def _recv(self, n: int, deadline: float | None) -> bytes:
        """recv() with the deadline of the whole call (recv_msg() spends one on several reads)."""
        if self._closed:
            raise ValueError("recv on a closed channel")
        rx = self._rx
        tail = rx.tail
        data = rx.read(n)
        while not data and n:
            ended = self._await_data(deadline)
            data = rx.read(n)
            if not data and ended:
                return b""
        self._wake_writer(tail)
        return data

    def _await_data(self, deadline: float | None) -> bool:
        """Wait for data after a read found none; whether the stream may have ended (the writer closed or
        died). The closed flag is loaded before the caller reads again, so no data written before the close
        is missed: a read that then finds nothing has reached the end."""
        rx = self._rx
        if not self._peer_gone:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:  # until the writer moves the head or closes
                if not self._waiter.wait(rx.header, HEAD_SLOT, rx.tail, WRITER_CLOSED_SLOT, READER_WAITING_SLOT,
                                         remaining):
                    raise WaitTimeout(f"no data in the channel for {self.timeout} s")
            except PeerClosed:
                self._peer_gone = True
        return self._peer_gone or rx.header[WRITER_CLOSED_SLOT] != 0

    def _wake_writer(self, tail: int) -> None:
        """After a read from `tail` on: ring the peer if it sleeps waiting for space, which it does until the
        tail crosses a quarter of the ring (ring.py); so only such a read needs the barrier (doorbell.py)."""
        rx = self._rx
        if (rx.tail ^ tail) >> rx.space_shift:
            fence()
            if rx.header[WRITER_WAITING_SLOT]:
                self._bell.ring()

    # Lifetime.

    def close(self) -> None:
        """Tell the peer (it reads what is left, then EOF; its sends fail) and release everything. A view from
        reserve() or peek() still alive keeps its ring mapped (ShmError); everything else is released all the
        same, and close() again once the view is gone unmaps that ring too."""
        if not self._closed:
            self._closed = True
            self._tx.shutdown_write()
            self._rx.shutdown_read()
            fence()
            self._bell.ring()
        close_all(self._tx.close, self._rx.close, self._bell.close)

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _deadline(self) -> float | None:
        return None if self.timeout is None else time.monotonic() + self.timeout
