"""The network paths under test, where their containers run, and the lab that sets each path up as a server and a
client container and removes them.

To measure another TCP path, add one PathSpec to PATHS (one host) or ACROSS_PATHS (server and client on two lab
hosts); its row appears in the table, the CSV and the plot. CHANNELS and ACROSS_CHANNELS are the pairs the
shared-memory channel rows are measured in.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, fields

from freeflow.bench import engine
from freeflow.bench.engine import LOCAL, Container, DockerHost
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
    host_stack: bool = False  # the containers use their hosts' own stacks: the server listens on its host's address
    run_args: tuple[str, ...] = ()  # extra `docker run` arguments for both containers
    grafted: bool = False  # the router grafts its connections: measured only once a connection is seen grafted
    shared_dir: str | None = None  # a folder both containers mount (a volume of the run), e.g. for a unix socket


RUN_DIR = "/run/freeflow"  # the router's default FREEFLOW_RUN_DIR: the preload library and the Python client
FREEFLOW = ("--driver", "freeflow")
# swarm refuses the short, socket-file name of a managed plugin for a swarm-scoped network
SWARM_FREEFLOW = ("--driver", "freeflow/driver:latest", "--attachable")
OVERLAY = ("--driver", "overlay", "--attachable")
PRELOADED = ("-v", f"{RUN_DIR}:{RUN_DIR}:ro", "-e", f"LD_PRELOAD={RUN_DIR}/libfreeflow.so")
WITH_CLIENT = ("-v", f"{RUN_DIR}:{RUN_DIR}:ro", "-e", f"PYTHONPATH={RUN_DIR}/python")

GRAFTED = "freeflow grafted (same host)"
PATHS: tuple[PathSpec, ...] = (
    PathSpec("Docker bridge", "bridge", network="bridge"),
    PathSpec("Docker overlay (one node)", "overlay", create_args=OVERLAY, needs_swarm=True),
    PathSpec("host network", "host", network="host", host_stack=True),
    PathSpec("freeflow", "freeflow", create_args=FREEFLOW),
    PathSpec(GRAFTED, "grafted", create_args=FREEFLOW, run_args=PRELOADED, grafted=True),
)
BASELINE = PATHS[0].name  # every ratio is to this path
PROBE_DIR = "/ffprobe"  # where the channel pair's containers share the stream probe's AF_UNIX socket
CHANNELS = PathSpec("freeflow channels", "channel", create_args=FREEFLOW, run_args=WITH_CLIENT, shared_dir=PROBE_DIR)

OVERLAY_ACROSS = "Docker overlay (across hosts)"
FREEFLOW_ACROSS = "freeflow overlay (across hosts)"
GRAFTED_ACROSS = "freeflow grafted (across hosts)"
ACROSS_PATHS: tuple[PathSpec, ...] = (
    PathSpec(OVERLAY_ACROSS, "overlay", create_args=OVERLAY, needs_swarm=True),
    PathSpec("underlay (host networks)", "host", network="host", host_stack=True),
    PathSpec(FREEFLOW_ACROSS, "freeflow", create_args=SWARM_FREEFLOW, needs_swarm=True),
    PathSpec(GRAFTED_ACROSS, "grafted", create_args=SWARM_FREEFLOW, needs_swarm=True, run_args=PRELOADED,
             grafted=True),
)
ACROSS_BASELINE = OVERLAY_ACROSS  # every cross-host ratio is to this path
ACROSS_CHANNELS = PathSpec("freeflow channels (across hosts)", "channel", create_args=SWARM_FREEFLOW,
                           needs_swarm=True, run_args=WITH_CLIENT)


@dataclass(frozen=True)
class Placement:
    """The engines of a run: the server containers on one, the clients on another (or the same), the networks
    created on the manager's (a swarm manager, where swarm-scoped networks are made)."""

    server: DockerHost
    client: DockerHost
    manager: DockerHost

    @property
    def hosts(self) -> list[DockerHost]:
        """Each engine once, the manager first."""
        return list(dict.fromkeys((self.manager, self.server, self.client)))


ONE_HOST = Placement(LOCAL, LOCAL, LOCAL)


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
    server: Container
    client: Container
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
    """The containers and networks of one run, named `<run id>-…` and labelled with the run id, on the engines of
    its placement.

    close() removes exactly what carries the label, whatever step failed, and leaves a swarm the run made.
    """

    NETWORK_RM_TRIES = 10  # an overlay keeps its endpoints a moment after their containers are gone

    def __init__(self, progress: Callable[[str], None], placement: Placement = ONE_HOST) -> None:
        self.run_id = f"ffbench-{secrets.token_hex(3)}"
        self.ports = free_ports()
        self.placement = placement
        self._swarm = Swarm(progress, placement.manager)

    def open(self, path: PathSpec) -> Pair:
        network = path.network
        if network is None:
            if path.needs_swarm:
                self._swarm.join()
            network = f"{self.run_id}-{path.key}"
            engine.create_network(network, self.run_id, path.create_args, self.placement.manager)
        prefix = f"{self.run_id}-{path.key}"
        run_args = path.run_args
        if path.shared_dir is not None:
            if self.placement.server != self.placement.client:
                raise BenchError(f"{path.name}: containers on two hosts cannot share a folder")
            engine.create_volume(f"{prefix}-shared", self.run_id, self.placement.server)
            run_args = (*run_args, "-v", f"{prefix}-shared:{path.shared_dir}")
        server = engine.run_container(f"{prefix}-srv", self.run_id, network, run_args, self.placement.server)
        client = engine.run_container(f"{prefix}-cli", self.run_id, network, run_args, self.placement.client)
        if path.host_stack:
            address = self.placement.server.address
            return Pair(path, server, client, address, address, self.ports)
        return Pair(path, server, client, engine.container_ip(server, network), "0.0.0.0", self.ports)

    def close(self) -> list[str]:
        """Remove everything of this run; return what could not be removed (each step is tried regardless)."""
        problems = []
        for host in self.placement.hosts:
            try:
                containers = engine.labelled_containers(self.run_id, host)
                if containers:
                    engine.docker("rm", "--force", "--volumes", *containers, host=host, timeout=120)
                volumes = engine.labelled_volumes(self.run_id, host)
                if volumes:
                    engine.docker("volume", "rm", "--force", *volumes, host=host)
            except BenchError as exc:
                problems.append(str(exc))
        manager = self.placement.manager
        try:
            problems += self._remove_networks(engine.labelled_networks(self.run_id, manager), manager)
        except BenchError as exc:
            problems.append(str(exc))
        try:
            self._swarm.leave()
        except BenchError as exc:
            problems.append(str(exc))
        return problems

    def _remove_networks(self, networks: Sequence[str], host: DockerHost) -> list[str]:
        left = list(networks)
        problems: dict[str, str] = {}
        for attempt in range(self.NETWORK_RM_TRIES):
            if attempt:
                time.sleep(0.5)
            problems = {}
            for network in left:
                try:
                    engine.docker("network", "rm", network, host=host)
                except BenchError as exc:
                    problems[network] = str(exc)
            left = list(problems)
            if not left:
                break
        return list(problems.values())
