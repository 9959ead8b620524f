"""The docker CLI aimed at one lab host's dockerd, through its socket."""

from __future__ import annotations

from freeflow.lab.command import run, succeeds
from freeflow.lab.layout import Host


def docker(host: Host, *args: str, timeout: float = 120) -> str:
    """Run `docker ARGS` against `host`; return its output. Raises CommandError."""
    return run(["docker", "--host", host.docker_host, *args], timeout=timeout)


def responds(host: Host) -> bool:
    return succeeds(["docker", "--host", host.docker_host, "version"], timeout=10)
