"""Errors of the shared-memory rings and channels.

Those a socket user meets also derive from the built-in they would expect (BrokenPipeError, EOFError, TimeoutError).
"""

from freeflow.errors import FreeFlowError


class ShmError(FreeFlowError):
    """A shared-memory ring or channel cannot be used."""


class UnsupportedPlatform(ShmError):
    """The ring's memory-ordering assumptions (x86-64 TSO) do not hold on this machine."""


class RingCorrupted(ShmError):
    """The shared header or an index read from it is impossible: the peer wrote garbage."""


class PeerClosed(ShmError, BrokenPipeError):
    """The peer closed its side of the channel or its process is gone."""


class EndOfChannel(ShmError, EOFError):
    """recv_msg() found the end of the stream instead of a whole message."""


class WaitTimeout(ShmError, TimeoutError):
    """A wait for data or space outlasted its timeout."""
