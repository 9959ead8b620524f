"""Errors of the router; each message is what the operator reads in the log or in `freeflow status`."""

from freeflow.errors import FreeFlowError


class RouterError(FreeFlowError):
    """The router cannot carry out an operation."""


class NamespaceError(RouterError):
    """A container's network namespace cannot be entered or used."""


class RouterUnavailable(RouterError):
    """The router does not answer on its admin socket."""
