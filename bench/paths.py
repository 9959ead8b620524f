"""The network paths under test, and the lab that sets each up as a server and a client container and removes them.

To measure another TCP path, add one PathSpec to PATHS; its row appears in the table, the CSV and the plot.
CHANNELS is the pair the shared-memory channel rows are measured in.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, fields

from freeflow.bench import engine
from freeflow.bench.errors import BenchError
from freeflow.bench.swarm import Swarm


@dataclass(frozen=True)
class PathSpec:
    """How the two containers of one path are connected."""

    name: str  # the row's label in the table, the CSV and the plot
    key: str  # a short word in the names of the path's containers and network
    network: str | None = None  # an existing network (`bridge`, `host`); None: the lab creates one
    create_args: tuple[str, ...] = ()  # `docker network create` arguments when the lab creates the network
    needs_swarm: bool = False
    loopback: bool = False  # the containers share the host's stack: the server listens on 127.0.0.1
    run_args: tuple[str, ...] = ()  # extra `docker run` arguments for both containers


RUN_DIR = "/run/freeflow"  # the router's default FREEFLOW_RUN_DIR: the preload library and the Python client
FREEFLOW = ("--driver", "freeflow")
PRELOADED = ("-v", f"{RUN_DIR}:{RUN_DIR}:ro", "-e", f"LD_PRELOAD={RUN_DIR}/libfreeflow.so")
WITH_CLIENT = ("-v", f"{RUN_DIR}:{RUN_DIR}:ro", "-e", f"PYTHONPATH={RUN_DIR}/python")

GRAFTED = "freeflow grafted (same host)"
PATHS: tuple[PathSpec, ...] = (
    PathSpec("Docker bridge", "bridge", network="bridge"),
    PathSpec("Docker overlay (one node)", "overlay", create_args=("--driver", "overlay", "--attachable"),
             needs_swarm=True),
    PathSpec("host network", "host", network="host", loopback=True),
    PathSpec("freeflow", "freeflow", create_args=FREEFLOW),
    PathSpec(GRAFTED, "grafted", create_args=FREEFLOW, run_args=PRELOADED),
)
BASELINE = PATHS[0].name  # every ratio is to this path
CHANNELS = PathSpec("freeflow channels", "channel", create_args=FREEFLOW, run_args=WITH_CLIENT)


@dataclass(frozen=True)
class Ports:
    """The servers' TCP ports, the same in every path."""

    iperf3: int
    sockperf: int
    connect: int  # the connection set-up probe's accept loop
    redis: int
    channel: int  # the channel probe's listener


@dataclass(frozen=True)
class Pair:
    """A path set up: its two running containers and where the client reaches the server."""

    path: PathSpec
    server: str
    client: str
    address: str  # the server's address as the client dials it
    listen: str  # the address the server binds
    ports: Ports


def free_ports() -> Ports:
    """Distinct ports free on this host, so that the host-network path can listen on them too."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in fields(Ports)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))  # all bound at once, so no two are the same
        return Ports(*(sock.getsockname()[1] for sock in sockets))


class Lab:
    """The containers and networks of one run, named `<run id>-…` and labelled with the run id.

    close() removes exactly what carries the label, whatever step failed, and leaves a swarm the run made.
    """

    NETWORK_RM_TRIES = 10  # an overlay keeps its endpoints a moment after their containers are gone

    def __init__(self, progress: Callable[[str], None]) -> None:
        self.run_id = f"ffbench-{secrets.token_hex(3)}"
        self.ports = free_ports()
        self._swarm = Swarm(progress)

    def open(self, path: PathSpec) -> Pair:
        network = path.network
        if network is None:
            if path.needs_swarm:
                self._swarm.join()
            network = f"{self.run_id}-{path.key}"
            engine.create_network(network, self.run_id, path.create_args)
        server, client = f"{self.run_id}-{path.key}-srv", f"{self.run_id}-{path.key}-cli"
        for name in (server, client):
            engine.run_container(name, self.run_id, network, path.run_args)
        if path.loopback:
            return Pair(path, server, client, "127.0.0.1", "127.0.0.1", self.ports)
        return Pair(path, server, client, engine.container_ip(server, network), "0.0.0.0", self.ports)

    def close(self) -> list[str]:
        """Remove everything of this run; return what could not be removed (each step is tried regardless)."""
        problems = []
        try:
            containers = engine.labelled_containers(self.run_id)
            if containers:
                engine.docker("rm", "--force", "--volumes", *containers, timeout=120)
        except BenchError as exc:
            problems.append(str(exc))
        try:
            problems += self._remove_networks(engine.labelled_networks(self.run_id))
        except BenchError as exc:
            problems.append(str(exc))
        try:
            self._swarm.leave()
        except BenchError as exc:
            problems.append(str(exc))
        return problems

    def _remove_networks(self, networks: Sequence[str]) -> list[str]:
        left = list(networks)
        problems: dict[str, str] = {}
        for attempt in range(self.NETWORK_RM_TRIES):
            if attempt:
                time.sleep(0.5)
            problems = {}
            for network in left:
                try:
                    engine.docker("network", "rm", network)
                except BenchError as exc:
                    problems[network] = str(exc)
            left = list(problems)
            if not left:
                break
        return list(problems.values())
