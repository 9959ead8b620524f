"""The bench's only line to dockerd: the `docker` command, run with a timeout, failures raised as DockerError.

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
class Output:
    """What a command run inside a container printed."""

    stdout: str
    stderr: str


def _call(args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    command = " ".join(["docker", *args])
    try:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise DockerError("the `docker` command is not installed") from None
    except subprocess.TimeoutExpired:
        raise DockerError(f"`{command}` did not finish within {timeout:.0f} s") from None


def docker(*args: str, timeout: float = 60) -> str:
    """Run `docker ARGS`; return its standard output, or raise DockerError with what it printed."""
    done = _call(args, timeout)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()
        raise DockerError(f"`docker {' '.join(args)}` failed: {detail}")
    return done.stdout


def run_container(name: str, run_id: str, network: str, run_args: Sequence[str] = ()) -> None:
    """Start an idle tools container; the bench runs its programs with `docker exec`."""
    docker("run", "--detach", "--name", name, "--label", f"{LABEL}={run_id}", "--network", network,
           *run_args, IMAGE, "sleep", "infinity")


def create_network(name: str, run_id: str, create_args: Sequence[str]) -> None:
    docker("network", "create", "--label", f"{LABEL}={run_id}", *create_args, name)


def execute(container: str, command: Sequence[str], timeout: float) -> Output:
    """Run a command in a container to its end; the tools report failures in their output, not their status."""
    done = _call(["exec", container, *command], timeout)
    return Output(done.stdout, done.stderr)


def start(container: str, command: Sequence[str]) -> None:
    """Start a long-running command in a container and return at once."""
    docker("exec", "--detach", container, *command)


def container_ip(container: str, network: str) -> str:
    address = docker("inspect", "--format", f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}',
                     container).strip()
    if not address:
        raise DockerError(f"container {container} has no IPv4 address on network {network}")
    return address


def set_cpus(containers: Sequence[str], cpus: str) -> None:
    """Move every process of the running containers onto the given CPUs (a cpuset such as `0` or `0-1`)."""
    docker("update", "--cpuset-cpus", cpus, *containers)


def all_cpus() -> str:
    """The cpuset of every CPU the engine has, such as `0-1`."""
    count = int(docker("info", "--format", "{{.NCPU}}").strip())
    return "0" if count == 1 else f"0-{count - 1}"


def labelled_containers(run_id: str) -> list[str]:
    """IDs of the containers, running or not, that carry this run's label."""
    return docker("ps", "--all", "--quiet", "--filter", f"label={LABEL}={run_id}").split()


def labelled_networks(run_id: str) -> list[str]:
    """IDs of the networks that carry this run's label."""
    return docker("network", "ls", "--quiet", "--filter", f"label={LABEL}={run_id}").split()


def swarm_state() -> tuple[str, str]:
    """This engine's swarm state (`inactive`, `active`, `pending`, `error`, `locked`) and its node ID."""
    state, _, node = docker("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.NodeID}}").strip().partition(" ")
    return state, node
