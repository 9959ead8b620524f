"""A restarted router maps the rings of a channel an earlier router made again, from another process that maps
them, and so knows what the channel moved; rings that are not two sound ones of the channel's size are not taken."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from freeflow.router.broker import ChannelRecord
from freeflow.router.ring_maps import map_again

RING = 64 * 1024
PAIR = "ab12"
# A process of a channel: it makes the rings (named for channel 7, pair PAIR), maps them, moves 3000 bytes one
# way and 500 the other, prints its doorbell ends' inodes and waits for its stdin to close. The other kinds map
# memfds of the channel's name that are not its two rings as they should be.
HOLDER = textwrap.dedent("""
    import fcntl, json, mmap, os, socket, sys
    from freeflow.router.ring_maps import ring_name
    from freeflow.shm import Channel, channel_fds
    from freeflow.shm.ring import CAPACITY_SLOT, MAGIC, MAGIC_SLOT, VERSION, VERSION_SLOT, Ring

    kind, channel_id, size, pair = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    name = ring_name(channel_id, pair)
    keep = []
    def memfds(count, header, seal):
        for _ in range(count):
            fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            os.ftruncate(fd, 4096 + size)
            if seal:
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            mapping = mmap.mmap(fd, 4096 + size)
            if header:
                slots = memoryview(mapping)[:4096].cast("Q")
                slots[MAGIC_SLOT], slots[VERSION_SLOT], slots[CAPACITY_SLOT] = MAGIC, VERSION, size
                slots.release()
            keep.append(mapping)
            os.close(fd)
    if kind in ("channel", "three-rings"):
        a, b = channel_fds(size, name)
        bells = [os.fstat(a.bell).st_ino, os.fstat(b.bell).st_ino]
        x, y = Channel.from_fds(a), Channel.from_fds(b)
        x.sendall(b"x" * 3000); y.recv_into(bytearray(3000))
        y.sendall(b"y" * 500); x.recv_into(bytearray(500))
        keep += [x, y]
        if kind == "three-rings":  # and a third of the name
            memfds(1, header=True, seal=True)
    else:
        if kind == "one-ring":
            memfds(1, header=True, seal=True)
        elif kind == "unsealed":  # sound rings, but they could shrink under the router's mapping
            memfds(2, header=True, seal=False)
        elif kind == "no-header":
            memfds(2, header=False, seal=True)
        elif kind == "leased":  # sound rings under read leases: an open for writing would wait 45 s
            for _ in range(2):
                ring, fd = Ring.create(size, name)
                ring.close()
                ro = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
                os.close(fd)
                keep += [mmap.mmap(ro, 4096 + size, access=mmap.ACCESS_READ), ro]
                fcntl.fcntl(ro, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        ends = socket.socketpair()
        keep.append(ends)
        bells = [os.fstat(end.fileno()).st_ino for end in ends]
    print(json.dumps(bells), flush=True)
    sys.stdin.read()
""")

Holder = Callable[..., list[int]]  # start(kind): a holder's doorbell inodes


@pytest.fixture
def holder() -> Iterator[Holder]:
    """Start a process of HOLDER; the inodes of its doorbell's ends. Every one is stopped at the end."""
    started: list[subprocess.Popen[str]] = []

    def start(kind: str = "channel") -> list[int]:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, kind, "7", str(RING), PAIR],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        assert line, "the holder failed or hangs"
        return list(json.loads(line))

    yield start
    for proc in started:
        proc.communicate(timeout=10)


def recovered(bells: list[int], channel_id: int = 7, size: int = RING, pair: str = PAIR) -> ChannelRecord:
    """What broker.recover_channels makes of a channel of an earlier router: its ends, no rings."""
    return ChannelRecord(channel_id, "sandbox-a", "sandbox-b", "10.0.0.1", "10.0.0.2:7000", size, tuple(bells), [],
                         0.0, False, pair)


@pytest.fixture(autouse=True)
def as_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("map_files needs CAP_SYS_ADMIN: run the tests as root")


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


@pytest.mark.parametrize("kind, record, why", [
    ("channel", {"channel_id": 8}, "the rings are named for another channel"),
    ("channel", {"pair": "cd34"}, "the rings are named for another channel of the same id"),
    ("channel", {"size": 2 * RING}, "the channel's name says another ring size"),
    ("one-ring", {}, "one ring of that name only"),
    ("three-rings", {}, "three rings of that name"),
    ("unsealed", {}, "memfds of the name that could shrink under the router's mapping"),
    ("no-header", {}, "sealed memfds of the name without a ring's header"),
])
def test_rings_that_are_not_the_channels_are_not_taken(holder: Holder, kind: str, record: dict[str, Any],
                                                       why: str) -> None:
    channel = recovered(holder(kind), **record)
    assert map_again([channel]) == 0, why
    assert channel.rings == [] and channel.bytes_moved() is None
    control = recovered(holder("channel"))
    assert map_again([control]) == 1, "the control case: a sound channel is mapped"
    for ring in control.rings:
        ring.close()


def test_a_lease_on_the_rings_does_not_hold_the_router_up(holder: Holder) -> None:
    """The router opens them read-only and without blocking: only an open for writing waits for a lease."""
    channel = recovered(holder("leased"))
    done = threading.Thread(target=lambda: map_again([channel]), daemon=True)
    done.start()
    done.join(timeout=20)
    assert not done.is_alive(), "map_again waits for the lease to be broken"
    assert len(channel.rings) == 2 and channel.bytes_moved() == 0
    for ring in channel.rings:
        ring.close()


def test_a_doorbell_nobody_holds_leaves_the_bytes_unknown() -> None:
    channel = recovered([987654321, 987654322])
    assert map_again([channel]) == 0 and channel.bytes_moved() is None
