"""Errors of the network driver; each message is what the operator reads in the docker CLI."""

from freeflow.errors import FreeFlowError


class DriverError(FreeFlowError):
    """A driver call cannot be carried out; answered as {"Err": message}."""

    status = 500


class BadRequest(DriverError):
    """The request body is malformed or misses a field."""

    status = 400


class InvalidOption(BadRequest):
    """A network option is unknown or has a bad value."""


class Conflict(DriverError):
    """The request contradicts what the driver already has (a different network under the same ID)."""

    status = 409


class NotFound(DriverError):
    """The request names a network or endpoint the driver does not know."""

    status = 404


class NetlinkError(DriverError):
    """The kernel refused a link operation."""
