"""Swarm mode for the overlay paths: initialised only if the engine is not in a swarm, and then left at the end.

An engine already in a swarm (a lab's manager, say) is used as it is and left in it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from freeflow.bench import engine
from freeflow.bench.errors import BenchError, DockerError


def parse_addresses(ip_output: str) -> list[str]:
    """IPv4 addresses from `ip -4 -o addr show` lines such as `2: eth0    inet 192.0.2.2/24 brd ...`."""
    addresses = []
    for line in ip_output.splitlines():
        fields = line.split()
        if "inet" in fields:
            addresses.append(fields[fields.index("inet") + 1].split("/")[0])
    return addresses


def candidate_addresses() -> list[str]:
    """Loopback first (nothing leaves the machine), then the host's own addresses."""
    done = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True,
                          timeout=10)
    return ["127.0.0.1", *parse_addresses(done.stdout)]


class Swarm:
    """Makes sure the engine is a swarm manager; remembers whether it made the swarm so it can leave it."""

    def __init__(self, progress: Callable[[str], None], host: engine.DockerHost = engine.LOCAL) -> None:
        self._progress = progress
        self._host = host
        self._node_id: str | None = None

    def join(self) -> None:
        state, _ = engine.swarm_state(self._host)
        if state == "active":
            return
        if state != "inactive":
            raise BenchError(f"this engine's swarm is {state}; the overlay path needs it active or inactive")
        failures = []
        for address in candidate_addresses():
            try:
                engine.docker("swarm", "init", "--advertise-addr", address, host=self._host)
            except DockerError as exc:
                failures.append(f"{address}: {exc}")
                continue
            state, node_id = engine.swarm_state(self._host)
            if state == "active":
                self._node_id = node_id
                self._progress(f"initialised a swarm (--advertise-addr {address}); it is left at the end")
                return
            failures.append(f"{address}: the swarm is {state} after init")
            engine.docker("swarm", "leave", "--force", host=self._host)
        raise BenchError("could not initialise a swarm for the overlay path: " + "; ".join(failures))

    def leave(self) -> None:
        """Leave the swarm if this run made it and the engine is still in that same swarm."""
        if self._node_id is None:
            return
        state, node_id = engine.swarm_state(self._host)
        if state == "active" and node_id == self._node_id:
            engine.docker("swarm", "leave", "--force", host=self._host)
            self._progress("left the swarm this run initialised")
        self._node_id = None
