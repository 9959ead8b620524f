"""Finds the rings of channels an earlier router made, in the memory maps of the processes that hold them.

A restarted router knows such a channel by the names of its doorbell's ends (broker.recover_channels), not its
rings: those went with the old router. Both rings' memfds are named after the channel (`ring_name`), and every
process of the channel maps them, so the router finds a process that holds one of the doorbell's ends (by its
socket's inode, in /proc/PID/fd), maps its two rings of that name again (through /proc/PID/map_files, which
needs CAP_SYS_ADMIN) and reads what they moved. A ring is checked as any other (Ring.attach: sealed, its header
sound) and must be of the channel's size; a process can only mislead the router about its own channel.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from freeflow.shm.errors import ShmError
from freeflow.shm.ring import HEADER_SIZE, RING_NAME, Ring

if TYPE_CHECKING:
    from freeflow.router.broker import ChannelRecord

log = logging.getLogger(__name__)

PROC = Path("/proc")
_SOCKET_LINK = re.compile(r"socket:\[(\d+)\]")


def ring_name(channel_id: int) -> str:
    """The name of a channel's ring memfds, as the processes' memory maps show it (`/memfd:NAME (deleted)`)."""
    return f"{RING_NAME} {channel_id}"


def map_again(channels: Iterable[ChannelRecord], proc: Path = PROC) -> int:
    """Give each of `channels` that has no rings its two rings again, where a process holding one of its doorbell's
    ends still maps them; how many got them."""
    wanted = [c for c in channels if not c.rings]
    holders = _holders({inode for c in wanted for inode in c.bells}, proc)
    mapped = 0
    for channel in wanted:
        for pid in sorted({pid for inode in channel.bells for pid in holders.get(inode, ())}):
            rings = _rings_in(proc / str(pid), ring_name(channel.channel_id), channel.ring_size)
            if rings:
                channel.rings = rings
                mapped += 1
                break
        else:
            log.debug("channel %d: no process maps its rings any more; its bytes moved are unknown",
                      channel.channel_id)
    return mapped


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


def _rings_in(process: Path, name: str, ring_size: int) -> list[Ring]:
    """The two rings named `name` that `process` maps, mapped here; none unless there are exactly two, sound."""
    regions = _memfd_regions(process, name)
    if len(regions) != 2:
        return []
    rings: list[Ring] = []
    try:
        for inode, region in regions.items():
            fd = os.open(process / "map_files" / region, os.O_RDWR | os.O_CLOEXEC)
            try:
                stat = os.fstat(fd)
                if stat.st_ino != inode:
                    raise ShmError(f"{process}: the mapping {region} changed")
                if stat.st_size != HEADER_SIZE + ring_size:  # before mapping it: any size could be there
                    raise ShmError(f"{process}: memfd {name!r} has {stat.st_size} bytes, not a {ring_size}-byte ring")
                rings.append(Ring.attach(fd))
            finally:
                os.close(fd)
    except (OSError, ShmError) as exc:
        log.debug("the rings of %s in %s: %s", name, process, exc)
        for ring in rings:
            ring.close()
        return []
    return rings


def _memfd_regions(process: Path, name: str) -> dict[int, str]:
    """Memfd inode -> the address range of one mapping of it, for the memfds named `name` that `process` maps."""
    path = f"/memfd:{name} (deleted)"
    regions: dict[int, str] = {}
    try:
        with open(process / "maps", errors="replace") as maps:
            for line in maps:
                cols = line.rstrip("\n").split(maxsplit=5)
                if len(cols) == 6 and cols[5] == path and cols[4].isdigit():
                    regions.setdefault(int(cols[4]), cols[0])
    except OSError:
        return {}
    return regions
