"""Errors of the client library inside application containers, each with the message the operator reads.

Those a socket user meets also derive from the built-in they would expect (ConnectionRefusedError, TimeoutError).
"""

from freeflow.errors import FreeFlowError


class ClientError(FreeFlowError):
    """The client library cannot do what the application asked."""


class ChannelMemoryCap(ClientError, ConnectionRefusedError):
    """The router refused a shared-memory channel: it would exceed a container's FREEFLOW_CHANNEL_MEMORY.

    Raised instead of falling back to TCP so that the cap is visible: raise the setting, use smaller rings
    or close idle channels.
    """


class AcceptTimeout(ClientError, TimeoutError):
    """No channel arrived at a ChannelListener within accept()'s timeout."""
