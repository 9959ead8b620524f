"""One lab for the whole folder: three real dockerds in network namespaces, one swarm, the managed plugin in
global scope on each, and the orchestrator deployed as a stack, as `freeflow lab up` makes it for operators.

Building it takes about a minute and a half; taking it down at the end is checked to leave nothing behind.
Needs root, the images of `make up` and build/plugin. Run alone with `pytest tests/lab`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from freeflow.lab import hosts, lifecycle, state
from freeflow.lab.layout import Host

LAB_DIR = Path("/var/lib/freeflow-lab")
HOSTS = ("h1", "h2", "h3")
DRIVER = "freeflow/driver:latest"  # swarm refuses the short, socket-file name for swarm-scoped networks
ORCHESTRATOR = "http://10.99.0.1:7470"


def lab(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`freeflow lab ARGS`, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "freeflow.cli", "lab", *args], capture_output=True, text=True,
                          timeout=timeout)


def on(host: str, *command: str, check: bool = True, timeout: float = 120) -> str:
    """Run `command` on a lab host (`freeflow lab exec`); return its output."""
    done = lab("exec", host, "--", *command, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{host}: {' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout.strip() if check else (done.stdout + done.stderr).strip()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def directory(path: str) -> dict:
    """GET the orchestrator's `path` (reads need no token)."""
    with urllib.request.urlopen(ORCHESTRATOR + path, timeout=5) as response:
        return json.loads(response.read())


def directory_ips(network_id: str) -> dict[str, str]:
    """IP -> host ID of every endpoint of `network_id` the orchestrator knows."""
    try:
        found = directory(f"/v1/endpoints?network={network_id}")["endpoints"]
    except OSError:
        return {}
    return {e["ip"]: e["host_id"] for e in found}


def our_links(host: str) -> list[str]:
    """freeflow's links (bridges, veths, VXLAN devices) in a lab host's network namespace."""
    out = subprocess.run(["ip", "-n", host, "-o", "link"], capture_output=True, text=True, check=True).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]
    return [name for name in names if name.startswith(("ff-", "ffh", "ffc", "ffx"))]


@pytest.fixture(scope="session", autouse=True)
def three_hosts() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (namespaces, mounts, dockerd): run the tests as root")
    existing = state.load()
    if existing is not None and not lifecycle.abandoned(existing):
        pytest.fail("a lab is already up (someone else's?): these tests do not touch it")
    up = lab("up", "--hosts", str(len(HOSTS)), "--plugin-scope", "global")
    if "already up" in up.stdout:
        pytest.fail("someone else brought a lab up at the same time: these tests do not touch it")
    pids: list[int] = []
    try:
        assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}"
        yield
        pids = [host["pid"] for host in json.loads((LAB_DIR / "lab.json").read_text())["hosts"]]
    finally:
        down = lab("down")
        assert down.returncode == 0, f"lab down failed:\n{down.stdout}\n{down.stderr}"
    assert_nothing_left(pids)


def assert_nothing_left(pids: list[int]) -> None:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert not set(netns) & set(HOSTS)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "fflab" not in links
    forward = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=True).stdout
    assert "fflab" not in forward
    assert not [pid for pid in pids if hosts.alive(pid)]
    for index in range(1, len(HOSTS) + 1):
        assert hosts.processes(Host(index)) == []
        assert not Path(f"/run/docker-h{index}").exists() and not Path(f"/run/docker-h{index}.sock").exists()
    assert not LAB_DIR.exists()
    again = lab("down")
    assert again.returncode == 0 and "no lab is up" in again.stdout


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture
def swarm_network(tag: str) -> Iterator[Callable[..., str]]:
    """Create attachable freeflow networks on the manager; containers named `<network>-…` go with them."""
    made: list[str] = []

    def create(*args: str) -> str:
        name = f"ffl-{tag}-{len(made)}"
        on("h1", "docker", "network", "create", "-d", DRIVER, "--attachable", *args, name)
        made.append(name)
        return name

    yield create
    for name in made:
        for host in HOSTS:
            ids = on(host, "docker", "ps", "-aq", "--filter", f"name={name}-", check=False).split()
            if ids:
                on(host, "docker", "rm", "-f", *ids, check=False)
        on("h1", "docker", "network", "rm", name, check=False)


def run_on(host: str, network: str, what: str, *args: str) -> str:
    """A `sleep infinity` container `<network>-<what>` of the tools image on `host`; its name."""
    name = f"{network}-{what}"
    on(host, "docker", "run", "-d", "--name", name, "--network", network, *args, "freeflow-tools", "sleep", "infinity")
    return name
