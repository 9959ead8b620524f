"""Both ends of a channel in one process: framing, end of stream, half-close, timeouts, bad descriptors."""

from __future__ import annotations

import dataclasses
import mmap
import os
import threading
import time
from array import array
from collections.abc import Callable, Iterator

import pytest

from freeflow.shm import (
    Channel,
    ChannelFds,
    EndOfChannel,
    PeerClosed,
    RingCorrupted,
    ShmError,
    WaitTimeout,
    channel_fds,
    channel_pair,
)
from freeflow.shm.ring import HEAD_SLOT, HEADER_SIZE


@pytest.fixture
def pair() -> Iterator[tuple[Channel, Channel]]:
    a, b = channel_pair(4096, timeout=2)
    yield a, b
    a.close()
    b.close()


def test_bytes_go_both_ways(pair: tuple[Channel, Channel]) -> None:
    a, b = pair
    assert a.send(b"ping") == 4
    assert b.recv(100) == b"ping"
    b.sendall(b"pong" * 1000)
    assert a.recv(10) == b"pongpongpo"
    buf = bytearray(8000)
    assert a.recv_into(buf) == 3990
    assert buf[:6] == b"ngpong"


def test_send_takes_what_fits_and_sendall_waits(pair: tuple[Channel, Channel]) -> None:
    a, b = pair
    assert a.send(bytes(5000)) == 4096
    assert b.recv(4) == bytes(4)
    assert a.send(b"more") == 4
    a.timeout = 0.05
    with pytest.raises(WaitTimeout):
        a.sendall(bytes(10))


def read_by_recv(channel: Channel, n: int) -> bytes:
    return channel.recv(n)


def read_into_bytearray(channel: Channel, n: int) -> bytes:
    buf = bytearray(n)
    return bytes(buf[:channel.recv_into(buf)])


def read_into_view(channel: Channel, n: int) -> bytes:
    view = memoryview(bytearray(n))
    return bytes(view[:channel.recv_into(view)])


@pytest.mark.parametrize("read", [read_by_recv, read_into_bytearray, read_into_view])
def test_a_writer_waiting_for_space_resumes_once_a_quarter_is_read(read: Callable[[Channel, int], bytes]) -> None:
    """Like a TCP sender blocked on a full buffer: a read of less than a quarter of the ring leaves it waiting
    (so most reads need no barrier, ring.py); the read that completes the quarter wakes it from its sleep."""
    a, b = channel_pair(4096, spin=0, timeout=5)
    message = bytes(range(256)) * 17  # 4352 bytes: the last 256 wait for space
    writer = threading.Thread(target=a.sendall, args=(message,))
    writer.start()
    try:
        deadline = time.monotonic() + 5
        while not b._rx.writer_waiting and time.monotonic() < deadline:  # asleep on the full ring
            time.sleep(0.001)
        assert b._rx.writer_waiting
        got = read(b, 1023)
        time.sleep(0.05)
        assert b._rx.readable() == 4096 - 1023 and writer.is_alive()
        got += read(b, 1)
        writer.join(5)
        assert not writer.is_alive()
        while len(got) < len(message):
            got += b.recv(len(message) - len(got))
        assert got == message
    finally:
        writer.join(5)
        a.close()
        b.close()


def test_messages_keep_their_boundaries(pair: tuple[Channel, Channel]) -> None:
    a, b = pair
    messages = [b"", b"x", bytes(range(256)) * 8, b"last"]
    for message in messages[:3]:
        a.send_msg(message)
        assert b.recv_msg() == message
    a.send_msg(bytearray(messages[3]))
    a.send_msg(memoryview(b"abc"))
    assert [b.recv_msg(), b.recv_msg()] == [b"last", b"abc"]


def test_buffers_of_any_item_size(pair: tuple[Channel, Channel]) -> None:
    a, b = pair
    a.sendall(array("I", [1, 2, 3]))
    target = array("H", [0] * 6)
    assert b.recv_into(target) == 12
    assert target.tobytes() == array("I", [1, 2, 3]).tobytes()
    a.send(b"abcdef")
    buf = bytearray(10)
    assert b.recv_into(buf, 4) == 4 and buf[:4] == b"abcd"
    with pytest.raises(ValueError):
        b.recv_into(buf, 11)


def test_close_drains_then_ends_the_stream(pair: tuple[Channel, Channel]) -> None:
    a, b = pair
    a.sendall(b"tail end")
    a.close()
    assert b.recv(4) == b"tail"
    assert b.recv_into(bytearray(10)) == 4
    assert b.recv(10) == b""
    assert b.recv_into(bytearray(10)) == 0
    with pytest.raises(EndOfChannel, match="before a message"):
        b.recv_msg()
    with pytest.raises(PeerClosed):
        b.send(b"anyone?")


def test_a_message_cut_short_is_reported(pair: tuple[Channel, Channel]) -> None:
    a, b = pair
    a.sendall((100).to_bytes(4, "little") + b"only part")
    a.close()
    with pytest.raises(EndOfChannel, match="got 9 of 100"):
        b.recv_msg()


def test_half_close_keeps_the_other_direction(pair: tuple[Channel, Channel]) -> None:
    a, b = pair
    a.send(b"request")
    a.shutdown_write()
    assert b.recv(100) == b"request"
    assert b.recv(100) == b""
    b.send(b"answer")
    assert a.recv(100) == b"answer"


def test_receive_times_out(pair: tuple[Channel, Channel]) -> None:
    _, b = pair
    b.timeout = 0.05
    with pytest.raises(WaitTimeout):
        b.recv(1)
    with pytest.raises(WaitTimeout):
        b.recv_msg()
    b.spin = 0
    with pytest.raises(TimeoutError):
        b.recv_into(bytearray(1))


def test_a_closed_channel_refuses_use(pair: tuple[Channel, Channel]) -> None:
    a, _ = pair
    a.close()
    a.close()
    with pytest.raises(ValueError):
        a.send(b"x")
    with pytest.raises(ValueError):
        a.recv(1)


def test_peer_garbage_in_the_header_is_reported() -> None:
    mine, theirs = channel_fds(4096)
    peer_mapping = mmap.mmap(theirs.tx, HEADER_SIZE)  # the header of the ring this side reads
    theirs.close()
    slots = memoryview(peer_mapping).cast("Q")
    with Channel.from_fds(mine, timeout=1) as channel:
        slots[HEAD_SLOT] = 10**9
        with pytest.raises(RingCorrupted):
            channel.recv(1)
    slots.release()
    peer_mapping.close()


def test_one_ring_for_both_directions_is_refused() -> None:
    mine, theirs = channel_fds(4096)
    theirs.close()
    bogus = ChannelFds(tx=mine.tx, rx=os.dup(mine.tx), bell=mine.bell)
    os.close(mine.rx)
    with pytest.raises(RingCorrupted, match="same ring"):
        Channel.from_fds(bogus)
    with pytest.raises(OSError):
        os.fstat(bogus.rx)  # from_fds took ownership and closed everything


def test_a_doorbell_that_is_not_a_socket_is_refused() -> None:
    mine, theirs = channel_fds(4096)
    theirs.close()
    os.close(mine.bell)
    bogus = dataclasses.replace(mine, bell=os.eventfd(0))
    with pytest.raises(ShmError, match="unix stream socket"):
        Channel.from_fds(bogus)
    for fd in dataclasses.astuple(bogus):
        with pytest.raises(OSError):
            os.fstat(fd)


def test_each_side_owns_its_descriptors() -> None:
    mine, theirs = channel_fds(4096)
    assert not set(dataclasses.astuple(mine)) & set(dataclasses.astuple(theirs))
    a = Channel.from_fds(mine, timeout=1)
    b = Channel.from_fds(theirs, timeout=1)
    a.send(b"x")
    assert b.recv(1) == b"x"
    a.close()
    b.close()

def test_a_channel_closes_its_doorbell_and_other_ring_even_when_a_ring_cannot_be_unmapped() -> None:
    a, b = channel_pair(4096, timeout=2)
    view = a._tx.reserve(8)  # a view of the channel's own ring, as its recv/send paths hold one for a moment
    with pytest.raises(ShmError):
        a.close()
    assert a._rx._mapping.closed and a._bell.fileno() == -1, "the rest was released all the same"
    assert b.recv(10) == b"", "the peer saw the end"
    view.release()
    a.close()
    assert a._tx._mapping.closed
    b.close()

