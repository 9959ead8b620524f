"""The lab's swarm: h1 initialises it, the other hosts join as workers, every address pinned to the host's
10.99.0.N so control, gossip and VXLAN all travel over the lab bridge."""

from __future__ import annotations

import time

from freeflow.lab.docker import docker
from freeflow.lab.errors import LabError
from freeflow.lab.layout import SWARM_PORT, Host


def _addresses(host: Host) -> list[str]:
    return ["--advertise-addr", host.address, "--listen-addr", f"{host.address}:{SWARM_PORT}",
            "--data-path-addr", host.address]


def init(manager: Host) -> str:
    """Make `manager` a one-node swarm; return the token workers join with."""
    docker(manager, "swarm", "init", *_addresses(manager))
    return docker(manager, "swarm", "join-token", "--quiet", "worker")


def join(worker: Host, manager: Host, token: str) -> None:
    docker(worker, "swarm", "join", "--token", token, *_addresses(worker), f"{manager.address}:{SWARM_PORT}")


def nodes(manager: Host) -> dict[str, str]:
    """Each node's hostname and status (ready, down, ...), as the manager sees them; a node that has just
    joined and not yet described itself (no hostname yet) is left out until it has."""
    return parse_nodes(docker(manager, "node", "ls", "--format", "{{.Hostname}}\t{{.Status}}", timeout=20))


def parse_nodes(listing: str) -> dict[str, str]:
    """`docker node ls --format '{{.Hostname}}\\t{{.Status}}'` as {hostname: lower-case status}."""
    seen = {}
    for line in listing.splitlines():
        name, _, status = line.partition("\t")
        if name.strip():
            seen[name.strip()] = status.strip().lower()
    return seen


def wait_ready(manager: Host, hosts: list[Host], timeout: float = 60) -> None:
    """Wait until every host is a Ready node of the manager's swarm."""
    deadline = time.monotonic() + timeout
    while True:
        seen = nodes(manager)
        if all(seen.get(host.name) == "ready" for host in hosts):
            return
        if time.monotonic() > deadline:
            raise LabError(f"swarm nodes not ready after {timeout:.0f} s: {seen}")
        time.sleep(0.5)


def role(host: Host) -> str:
    """manager, worker or none, as the host itself reports."""
    state, manager = docker(host, "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
                            timeout=10).split()
    if state != "active":
        return "none"
    return "manager" if manager == "true" else "worker"
