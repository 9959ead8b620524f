"""A restarted router maps the rings of a channel an earlier router made again, from another process that maps
them, and so knows what the channel moved; rings that are not two sound ones of the channel's size are not taken."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

from freeflow.router.broker import ChannelRecord
from freeflow.router.ring_maps import map_again

RING = 64 * 1024
# A process of a channel: it makes the rings (named for channel 7 unless told), maps them, moves 3000 bytes one
# way and 500 the other, prints its doorbell ends' inodes and waits for its stdin to close.
HOLDER = textwrap.dedent("""
    import json, mmap, os, socket, sys
    from freeflow.router.ring_maps import ring_name
    from freeflow.shm import Channel, channel_fds
    from freeflow.shm.ring import Ring

    kind, channel_id, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    keep = []
    if kind == "channel":
        a, b = channel_fds(size, ring_name(channel_id))
        bells = [os.fstat(a.bell).st_ino, os.fstat(b.bell).st_ino]
        x, y = Channel.from_fds(a), Channel.from_fds(b)
        x.sendall(b"x" * 3000); y.recv_into(bytearray(3000))
        y.sendall(b"y" * 500); x.recv_into(bytearray(500))
        keep += [x, y]
    else:  # memfds of the right name, but one ring only, or two not sealed against shrinking
        if kind == "one-ring":
            ring, fd = Ring.create(size, ring_name(channel_id))
            keep.append(ring)
            os.close(fd)
        for _ in range(2 if kind == "unsealed" else 0):
            fd = os.memfd_create(ring_name(channel_id), os.MFD_CLOEXEC)
            os.ftruncate(fd, 4096 + size)
            keep.append(mmap.mmap(fd, 4096 + size))
            os.close(fd)
        ends = socket.socketpair()
        keep.append(ends)
        bells = [os.fstat(end.fileno()).st_ino for end in ends]
    print(json.dumps(bells), flush=True)
    sys.stdin.read()
""")

Holder = Callable[..., list[int]]


@pytest.fixture
def holder() -> Iterator[Holder]:
    """Start a process of HOLDER; the inodes of its doorbell's ends. Every one is stopped at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(kind: str = "channel", channel_id: int = 7, size: int = RING) -> list[int]:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, kind, str(channel_id), str(size)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "the holder failed"
        return list(json.loads(line))

    yield start
    for proc in started:
        proc.communicate(timeout=10)


def recovered(bells: list[int], channel_id: int = 7, size: int = RING) -> ChannelRecord:
    """What broker.recover_channels makes of a channel of an earlier router: its ends, no rings."""
    return ChannelRecord(channel_id, "sandbox-a", "sandbox-b", "10.0.0.1", "10.0.0.2:7000", size, tuple(bells), [],
                         0.0, False)


def test_the_rings_of_a_recovered_channel_are_mapped_again_and_tell_what_it_moved(holder: Holder) -> None:
    channel = recovered(holder())
    assert channel.bytes_moved() is None
    assert map_again([channel]) == 1
    assert channel.bytes_moved() == 3000 + 500
    assert map_again([channel]) == 0, "a channel with its rings is left as it is"
    for ring in channel.rings:
        ring.close()


def test_only_one_process_end_of_the_doorbell_is_needed(holder: Holder) -> None:
    bells = holder()
    channel = recovered([bells[0], 123456789])  # the other end closed
    assert map_again([channel]) == 1 and channel.bytes_moved() == 3500
    for ring in channel.rings:
        ring.close()


@pytest.mark.parametrize("kind, channel_id, size, why", [
    ("channel", 8, RING, "the rings are named for another channel"),
    ("channel", 7, 2 * RING, "the channel's name says another ring size"),
    ("one-ring", 7, RING, "one ring of that name only"),
    ("unsealed", 7, RING, "memfds of the name that could shrink under the router's mapping"),
])
def test_rings_that_are_not_the_channels_are_not_taken(holder: Holder, kind: str, channel_id: int, size: int,
                                                       why: str) -> None:
    bells = holder(kind, 7 if kind == "channel" else channel_id, RING)
    channel = recovered(bells, channel_id, size)
    assert map_again([channel]) == 0, why
    assert channel.rings == [] and channel.bytes_moved() is None


def test_a_doorbell_nobody_holds_leaves_the_bytes_unknown() -> None:
    channel = recovered([987654321, 987654322])
    assert map_again([channel]) == 0 and channel.bytes_moved() is None
