"""Errors of `freeflow bench`; each message says what failed in words the operator can act on."""

from freeflow.errors import FreeFlowError


class BenchError(FreeFlowError):
    """The benchmark cannot go on."""


class DockerError(BenchError):
    """A `docker` command failed or did not finish in time."""


class ToolOutputError(BenchError):
    """iperf3 or sockperf printed no result the bench can read (often: the server was unreachable)."""
