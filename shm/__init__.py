"""Shared-memory rings between containers; standard library only."""

from freeflow.shm.channel import Channel, ChannelFds, channel_fds, channel_pair
from freeflow.shm.doorbell import DEFAULT_SPIN, Doorbell, Waiter, fence
from freeflow.shm.errors import (
    EndOfChannel,
    PeerClosed,
    RingCorrupted,
    ShmError,
    UnsupportedPlatform,
    WaitTimeout,
)
from freeflow.shm.ring import Ring

__all__ = [
    "DEFAULT_SPIN",
    "Channel",
    "ChannelFds",
    "Doorbell",
    "EndOfChannel",
    "PeerClosed",
    "Ring",
    "RingCorrupted",
    "ShmError",
    "UnsupportedPlatform",
    "WaitTimeout",
    "Waiter",
    "channel_fds",
    "channel_pair",
    "fence",
]
