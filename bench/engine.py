"""The bench's only line to the dockerds: the `docker` command aimed at one engine, run with a timeout, failures
raised as DockerError.

Everything the bench creates carries the label LABEL=<run id>, so cleanup finds exactly its own objects.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from freeflow.bench.errors import DockerError

LABEL = "freeflow.bench.run"
IMAGE = "freeflow-tools"


@dataclass(frozen=True)
class DockerHost:
    """A dockerd the bench drives, and the address its own network stack has for the run's containers."""

    name: str  # for progress and messages
    url: str | None = None  # DOCKER_HOST, such as unix:///run/docker-h1.sock; None: the environment's dockerd
    address: str = "127.0.0.1"  # where a host-network server of this engine listens and is dialled


LOCAL = DockerHost("this host")  # the machine's own dockerd: its host-network servers listen on loopback only


@dataclass(frozen=True)
class Container:
    """A container of the run and the engine it runs on."""

    name: str
    host: DockerHost = LOCAL

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Output:
    """What a command run inside a container printed."""

    stdout: str
    stderr: str


def _argv(args: Sequence[str], host: DockerHost) -> list[str]:
    return ["docker", *(("--host", host.url) if host.url else ()), *args]


def _call(args: Sequence[str], timeout: float, host: DockerHost) -> subprocess.CompletedProcess[str]:
    argv = _argv(args, host)
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise DockerError("the `docker` command is not installed") from None
    except subprocess.TimeoutExpired:
        raise DockerError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from None


def docker(*args: str, host: DockerHost = LOCAL, timeout: float = 60) -> str:
    """Run `docker ARGS` against `host`; return its standard output, or raise DockerError with what it printed."""
    done = _call(args, timeout, host)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise DockerError(f"`{' '.join(_argv(args, host))}` failed: {detail}")
    return done.stdout


def run_container(name: str, run_id: str, network: str, run_args: Sequence[str] = (),
                  host: DockerHost = LOCAL) -> Container:
    """Start an idle tools container on `host`; the bench runs its programs with `docker exec`."""
    docker("run", "--detach", "--name", name, "--label", f"{LABEL}={run_id}", "--network", network,
           *run_args, IMAGE, "sleep", "infinity", host=host)
    return Container(name, host)


def create_network(name: str, run_id: str, create_args: Sequence[str], host: DockerHost = LOCAL) -> None:
    docker("network", "create", "--label", f"{LABEL}={run_id}", *create_args, name, host=host)


def create_volume(name: str, run_id: str, host: DockerHost = LOCAL) -> None:
    docker("volume", "create", "--label", f"{LABEL}={run_id}", name, host=host)


def execute(container: Container, command: Sequence[str], timeout: float) -> Output:
    """Run a command in a container to its end; the tools report failures in their output, not their status."""
    done = _call(["exec", container.name, *command], timeout, container.host)
    return Output(done.stdout, done.stderr)


def start(container: Container, command: Sequence[str]) -> None:
    """Start a long-running command in a container and return at once."""
    docker("exec", "--detach", container.name, *command, host=container.host)


def container_ip(container: Container, network: str) -> str:
    address = docker("inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                     container.name, host=container.host).strip()
    if not address:
        raise DockerError(f"container {container} has no IPv4 address on network {network}")
    return address


def by_host(containers: Sequence[Container]) -> dict[DockerHost, list[str]]:
    """The containers' names grouped by the engine they run on, in the order the engines first appear."""
    grouped: dict[DockerHost, list[str]] = {}
    for container in containers:
        grouped.setdefault(container.host, []).append(container.name)
    return grouped


def set_cpus(containers: Sequence[Container], cpus: str) -> None:
    """Move every process of the running containers onto the given CPUs (a cpuset such as `0` or `0-1`).

    Lab hosts share the machine's CPUs, so CPU 0 is the same core whichever engine runs a container.
    """
    for host, names in by_host(containers).items():
        docker("update", "--cpuset-cpus", cpus, *names, host=host)


def all_cpus(host: DockerHost = LOCAL) -> str:
    """The cpuset of every CPU the engine has, such as `0-1`."""
    count = int(docker("info", "--format", "{{.NCPU}}", host=host).strip())
    return "0" if count == 1 else f"0-{count - 1}"


def labelled_containers(run_id: str, host: DockerHost = LOCAL) -> list[str]:
    """IDs of the containers on `host`, running or not, that carry this run's label."""
    return docker("ps", "--all", "--quiet", "--filter", f"label={LABEL}={run_id}", host=host).split()


def labelled_networks(run_id: str, host: DockerHost = LOCAL) -> list[str]:
    """IDs of the networks `host` lists that carry this run's label."""
    return docker("network", "ls", "--quiet", "--filter", f"label={LABEL}={run_id}", host=host).split()


def labelled_volumes(run_id: str, host: DockerHost = LOCAL) -> list[str]:
    """Names of the volumes on `host` that carry this run's label."""
    return docker("volume", "ls", "--quiet", "--filter", f"label={LABEL}={run_id}", host=host).split()


def swarm_state(host: DockerHost = LOCAL) -> tuple[str, str]:
    """The engine's swarm state (`inactive`, `active`, `pending`, `error`, `locked`) and its node ID."""
    state, _, node = docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.NodeID}}",
                            host=host).strip().partition(" ")
    return state, node
