"""Two processes over a channel (os.fork, descriptors inherited): bulk data with checksums, no lost
wake-ups in either wait mode, and a peer killed with SIGKILL seen as the end of the stream, not a hang."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator

import pytest

from freeflow.shm import DEFAULT_SPIN, Channel, EndOfChannel, PeerClosed, channel_fds

MiB = 1 << 20
Spawn = Callable[..., tuple[Channel, int]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start a child process running body(channel) on the other side; children left over are killed."""
    children: list[int] = []
    channels: list[Channel] = []

    def start(body: Callable[[Channel], object], capacity: int = 256 * 1024, spin: float = DEFAULT_SPIN,
              timeout: float = 10) -> tuple[Channel, int]:
        mine, theirs = channel_fds(capacity)
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                mine.close()
                with Channel.from_fds(theirs, spin=spin, timeout=timeout) as channel:
                    body(channel)
                status = 0
            except BaseException:
                traceback.print_exc()
                raise
            finally:
                os._exit(status)  # never return into pytest in the child
        children.append(pid)
        theirs.close()
        channels.append(Channel.from_fds(mine, spin=spin, timeout=timeout))
        return channels[-1], pid

    yield start
    for channel in channels:
        channel.close()
    for pid in children:
        with contextlib.suppress(ChildProcessError):  # already reaped by exit_code()
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def exit_code(pid: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    pytest.fail(f"the peer process {pid} did not finish within {timeout} s")


def chunks(seed: int, total: int, largest: int) -> Iterator[memoryview]:
    """Reproducible pieces of random sizes (some larger than the ring) adding up to `total` bytes."""
    rng = random.Random(seed)
    block = memoryview(rng.randbytes(2 * largest))
    while total:
        size = min(total, rng.randint(1, largest))
        start = rng.randrange(largest)
        yield block[start:start + size]
        total -= size


def stream_digest(seed: int, total: int, largest: int) -> str:
    digest = hashlib.sha256()
    for chunk in chunks(seed, total, largest):
        digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.parametrize(("spin", "total"), [(DEFAULT_SPIN, 64 * MiB), (0.0, 24 * MiB)],
                         ids=["spin", "sleep"])
def test_a_stream_of_random_chunks_arrives_intact(spawn: Spawn, spin: float, total: int) -> None:
    def sender(channel: Channel) -> None:
        for chunk in chunks(seed=1, total=total, largest=300 * 1024):
            if len(chunk) % 2:
                channel.sendall(chunk)
            else:
                sent = 0
                while sent < len(chunk):
                    sent += channel.send(chunk[sent:])

    channel, pid = spawn(sender, spin=spin)
    rng = random.Random(2)
    digest = hashlib.sha256()
    buf = bytearray(400 * 1024)
    received = 0
    while True:
        if rng.random() < 0.5:
            data = channel.recv(rng.randint(1, len(buf)))
        else:
            data = buf[:channel.recv_into(buf, rng.randint(1, len(buf)))]
        if not data:
            break
        digest.update(data)
        received += len(data)
    assert received == total
    assert digest.hexdigest() == stream_digest(seed=1, total=total, largest=300 * 1024)
    assert exit_code(pid) == 0


def test_small_reads_wake_a_writer_sleeping_for_space(spawn: Spawn) -> None:
    """A small ring (quarters of 1 KiB) read in pieces of every size, views filled in place included: each time
    a read crosses a quarter, the writer asleep on the full ring must be woken, or the stream stalls."""
    total = 4 * MiB

    def sender(channel: Channel) -> None:
        for chunk in chunks(seed=3, total=total, largest=6000):
            channel.sendall(chunk)

    channel, pid = spawn(sender, capacity=4096, spin=0.0, timeout=5)
    rng = random.Random(4)
    digest = hashlib.sha256()
    buf = memoryview(bytearray(3000))
    received = 0
    while True:
        view = buf[:rng.randint(1, len(buf))]
        got = channel.recv_into(view)
        if not got:
            break
        digest.update(view[:got])
        received += got
    assert received == total
    assert digest.hexdigest() == stream_digest(seed=3, total=total, largest=6000)
    assert exit_code(pid) == 0


def test_echoed_messages_match_their_checksums(spawn: Spawn) -> None:
    def echo(channel: Channel) -> None:
        while True:
            try:
                message = channel.recv_msg()
            except EndOfChannel:
                return
            channel.send_msg(hashlib.sha256(message).digest())
            channel.send_msg(message)

    channel, pid = spawn(echo, capacity=128 * 1024)
    sent = 0
    for message in chunks(seed=3, total=16 * MiB, largest=320 * 1024):
        channel.send_msg(message)
        assert channel.recv_msg() == hashlib.sha256(message).digest()
        assert channel.recv_msg() == message
        sent += len(message)
    channel.send_msg(b"")
    assert channel.recv_msg() == hashlib.sha256(b"").digest() and channel.recv_msg() == b""
    channel.close()
    assert exit_code(pid) == 0


def read_64(channel: Channel, into_view: bool) -> bytes:
    """64 bytes, by recv() or by recv_into() a view (the lean way a channel that sleeps at once waits)."""
    if not into_view:
        got = channel.recv(64)
        while got and len(got) < 64:
            got += channel.recv(64 - len(got))
        return got
    view = memoryview(bytearray(64))
    n = channel.recv_into(view)
    while n and n < 64:
        n += channel.recv_into(view[n:])
    return bytes(view[:n])


@pytest.mark.parametrize("into_view", [False, True], ids=["recv", "recv_into"])
@pytest.mark.parametrize("spin", [DEFAULT_SPIN, 0.0], ids=["spin", "sleep"])
def test_ping_pong_loses_no_wake_up(spawn: Spawn, spin: float, into_view: bool) -> None:
    """Every round trip makes both sides wait; a lost wake-up would end in WaitTimeout."""
    def pong(channel: Channel) -> None:
        while message := read_64(channel, into_view):
            channel.sendall(message)

    channel, pid = spawn(pong, spin=spin, timeout=5)
    message = bytes(range(64))
    for _ in range(2000):
        channel.sendall(message)
        assert read_64(channel, into_view) == message
    channel.close()
    assert exit_code(pid) == 0


def kill_later(pid: int, delay: float) -> threading.Timer:
    timer = threading.Timer(delay, os.kill, (pid, signal.SIGKILL))
    timer.start()
    return timer


def test_a_sender_killed_mid_stream_is_end_of_stream(spawn: Spawn) -> None:
    def flood(channel: Channel) -> None:
        block = os.urandom(64 * 1024)
        while True:
            channel.sendall(block)

    channel, pid = spawn(flood)
    received = 0
    while received < 8 * MiB:
        received += len(channel.recv(MiB))
    os.kill(pid, signal.SIGKILL)
    while channel.recv(MiB):
        pass
    assert exit_code(pid) == -signal.SIGKILL


def test_a_sender_killed_while_we_sleep_wakes_us(spawn: Spawn) -> None:
    def hello_then_hang(channel: Channel) -> None:
        channel.sendall(b"hello")
        time.sleep(60)

    channel, pid = spawn(hello_then_hang, spin=0)
    assert channel.recv(5) == b"hello"
    kill_later(pid, 0.2)
    assert channel.recv(5) == b""
    assert exit_code(pid) == -signal.SIGKILL


def test_a_sender_killed_inside_a_message_is_reported(spawn: Spawn) -> None:
    def half_a_message(channel: Channel) -> None:
        channel.sendall((10 * MiB).to_bytes(4, "little") + bytes(1000))
        time.sleep(60)

    channel, pid = spawn(half_a_message)
    deadline = time.monotonic() + 30
    while channel._rx.readable() < 1004:  # killed once it has sent it all, however late it ran
        assert time.monotonic() < deadline, "the sender never sent its half message"
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(EndOfChannel, match="got 1000 of 10485760"):
        channel.recv_msg()
    assert exit_code(pid) == -signal.SIGKILL


def test_a_receiver_killed_stops_our_sends(spawn: Spawn) -> None:
    def read_a_little(channel: Channel) -> None:
        channel.recv(1000)
        time.sleep(60)

    channel, pid = spawn(read_a_little, capacity=64 * 1024)
    kill_later(pid, 0.2)
    with pytest.raises(PeerClosed):
        while True:
            channel.sendall(bytes(64 * 1024))
    assert exit_code(pid) == -signal.SIGKILL
