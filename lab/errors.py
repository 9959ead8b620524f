"""Errors of the lab, each carrying the message the operator reads."""

from freeflow.errors import FreeFlowError


class LabError(FreeFlowError):
    """The lab cannot do what was asked."""


class LabConflict(LabError):
    """Something the lab needs (a name, an address, a folder) is already in use by something else."""


class CommandError(LabError):
    """An external command (ip, iptables, docker, ...) failed; the message holds its error output."""


class HostStartError(LabError):
    """A lab host's dockerd did not come up; the message holds the end of its log."""
