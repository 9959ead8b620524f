"""Finds the rings of channels an earlier router made, in the memory maps of the processes that hold them.

A restarted router knows such a channel by the names of its doorbell's ends (broker.recover_channels), not its
rings: those went with the old router. Both rings' memfds are named after the channel (`ring_name`: its id and
the random part of its names), and every process of the channel maps them, so the router finds a process that
holds one of the doorbell's ends (by its socket's inode, in /proc/PID/fd), maps its two rings of that name again,
read-only, and reads what they moved. That needs CAP_SYS_ADMIN (for /proc/PID/map_files) and ptrace access.

The processes are the containers', so nothing they show is trusted: a mapping is taken only when it is a memfd
(the device of the router's own), opened without the file's open (O_PATH) and then without blocking (a lease
cannot hold the router up), sealed against resizing, of the channel's size and a sound ring (Ring.attach). A
channel whose rings are not found so gets none, and status says its bytes moved are unknown.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from freeflow.shm.errors import ShmError
from freeflow.shm.ring import RING_NAME, Ring

if TYPE_CHECKING:
    from freeflow.router.broker import ChannelRecord

log = logging.getLogger(__name__)

PROC = Path("/proc")
MAX_PROCESSES = 4  # processes of one channel asked for its rings: its two ends, a bridge, one more
_SOCKET_LINK = re.compile(r"socket:\[(\d+)\]")


def ring_name(channel_id: int, pair: str) -> str:
    """The name of a channel's ring memfds, as the processes' memory maps show it (`/memfd:NAME (deleted)`)."""
    return f"{RING_NAME} {channel_id}.{pair}"


def map_again(channels: Iterable[ChannelRecord], proc: Path = PROC) -> int:
    """Give each of `channels` that has no rings its two rings again, where a process holding one of its doorbell's
    ends still maps them; how many got them. Never raises: what it cannot find stays unknown."""
    wanted = [c for c in channels if not c.rings]
    try:
        holders = _holders({inode for c in wanted for inode in c.bells}, proc)
        device = _memfd_device()
    except OSError as exc:
        log.warning("cannot look for the rings of the channels of the previous router: %s", exc)
        return 0
    mapped = 0
    for channel in wanted:
        pids = sorted({pid for inode in channel.bells for pid in holders.get(inode, ())})[:MAX_PROCESSES]
        name = ring_name(channel.channel_id, channel.pair)
        for pid in pids:
            try:
                rings = _rings_in(proc / str(pid), name, channel.ring_size, device)
            except Exception:  # a process of a container is no reason to stop the router
                log.exception("the rings of channel %d in process %d", channel.channel_id, pid)
                continue
            if rings:
                channel.rings = rings
                mapped += 1
                break
        else:
            log.debug("channel %d: its rings were not found; its bytes moved are unknown", channel.channel_id)
    return mapped


def _memfd_device() -> int:
    """The device of this kernel's memfds."""
    fd = os.memfd_create("freeflow-device", os.MFD_CLOEXEC)
    try:
        return os.fstat(fd).st_dev
    finally:
        os.close(fd)


def _holders(inodes: set[int], proc: Path) -> dict[int, set[int]]:
    """Socket inode -> the processes with a descriptor of it, for the inodes asked."""
    found: dict[int, set[int]] = {}
    if not inodes:
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            try:
                match = _SOCKET_LINK.fullmatch(os.readlink(entry / "fd" / fd))
            except OSError:
                continue
            if match and int(match[1]) in inodes:
                found.setdefault(int(match[1]), set()).add(int(entry.name))
    return found


def _rings_in(process: Path, name: str, ring_size: int, device: int) -> list[Ring]:
    """The two rings named `name` that `process` maps, mapped here read-only; none unless there are exactly two,
    sound and of `ring_size` bytes."""
    regions = _memfd_regions(process, name, device)
    if len(regions) != 2:
        return []
    rings: list[Ring] = []
    try:
        for inode, region in regions.items():
            rings.append(_open_ring(process / "map_files" / region, inode, ring_size, device))
    except (OSError, ShmError) as exc:
        log.debug("the rings of %s in %s: %s", name, process, exc)
    if len(rings) != 2:
        for ring in rings:
            ring.close()
        return []
    return rings


def _open_ring(path: Path, inode: int, ring_size: int, device: int) -> Ring:
    """The ring whose memfd `path` (a map_files link) leads to, checked to be memfd `inode` first."""
    handle = os.open(path, os.O_PATH | os.O_CLOEXEC)  # no open of the file itself yet
    try:
        found = os.fstat(handle)
        if not stat.S_ISREG(found.st_mode) or (found.st_dev, found.st_ino) != (device, inode):
            raise ShmError(f"{path} is no longer the memfd the maps showed")
        fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(handle)
    try:
        return Ring.attach(fd, ring_size, writable=False)
    finally:
        os.close(fd)


def _memfd_regions(process: Path, name: str, device: int) -> dict[int, str]:
    """Memfd inode -> the address range of one mapping of it, for the memfds named `name` that `process` maps."""
    path = f"/memfd:{name} (deleted)"
    wanted_device = f"{os.major(device):02x}:{os.minor(device):02x}"
    regions: dict[int, str] = {}
    try:
        with open(process / "maps", errors="replace") as maps:
            for line in maps:
                cols = line.rstrip("\n").split(maxsplit=5)
                if len(cols) == 6 and cols[5] == path and cols[3] == wanted_device and cols[4].isdigit():
                    regions.setdefault(int(cols[4]), cols[0])
    except OSError:
        return {}
    return regions
