"""`freeflow lab`: real dockerds in network namespaces joined in a real swarm, the managed plugin on each.

One lab of two hosts serves the whole module (about a minute to build); the last test takes it down and checks
that nothing is left. Needs root, the images of `make up` and build/plugin. Run alone with `pytest -m lab`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from freeflow.lab import hosts
from freeflow.lab.layout import Host

pytestmark = pytest.mark.lab

LAB_DIR = Path("/var/lib/freeflow-lab")
HOSTS = ("h1", "h2")


def lab(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`freeflow lab ARGS`, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "freeflow.cli", "lab", *args], capture_output=True, text=True,
                          timeout=timeout)


def on(host: str, *command: str, check: bool = True, timeout: float = 120) -> str:
    """Run `command` on a lab host (`freeflow lab exec`); return its output."""
    done = lab("exec", host, "--", *command, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{host}: {' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


@pytest.fixture(scope="module", autouse=True)
def two_hosts() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("the lab needs root (namespaces, mounts, dockerd)")
    if (LAB_DIR / "lab.json").exists():
        pytest.fail("a lab is already up (someone else's?): these tests do not touch it")
    try:
        up = lab("up", "--hosts", "2")
        assert up.returncode == 0, f"lab up failed:\n{up.stdout}\n{up.stderr}"
        yield
    finally:
        down = lab("down")
        assert down.returncode == 0, f"lab down failed:\n{down.stdout}\n{down.stderr}"


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex[:6]


def test_hosts_join_the_swarm() -> None:
    nodes = on("h1", "docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}")
    assert sorted(nodes.splitlines()) == ["h1 Ready Leader", "h2 Ready"]
    status = json.loads(lab("status", "--json").stdout)
    assert [(h["name"], h["running"], h["swarm"]) for h in status] == [("h1", True, "manager"), ("h2", True, "worker")]


def test_each_host_is_its_own_machine_with_no_way_out() -> None:
    for index, host in enumerate(HOSTS, start=1):
        assert on(host, "hostname") == host
        assert f"inet 10.99.0.{index}/24" in on(host, "ip", "-4", "-o", "address", "show", "dev", "eth0")
        assert on(host, "ip", "route", "show", "default") == ""
        assert on(host, "sh", "-c", "echo $DOCKER_HOST") == f"unix:///run/docker-{host}.sock"


def test_plugin_is_enabled_on_every_host() -> None:
    for host in HOSTS:
        assert on(host, "docker", "plugin", "inspect", "--format", "{{.Enabled}}", "freeflow/driver") == "true"


def test_overlay_connects_containers_on_two_hosts_by_name(tag: str) -> None:
    net, a, b = f"lab-{tag}", f"a-{tag}", f"b-{tag}"
    try:
        on("h1", "docker", "network", "create", "-d", "overlay", "--attachable", net)
        on("h1", "docker", "run", "-d", "--name", a, "--network", net, "freeflow-tools", "sleep", "infinity")
        on("h2", "docker", "run", "-d", "--name", b, "--network", net, "freeflow-tools", "sleep", "infinity")

        def pinged() -> bool:
            return on("h1", "docker", "exec", a, "ping", "-c", "2", "-W", "2", b, check=False).count("bytes from") == 2

        wait_for(pinged, 30, f"{a} on h1 to ping {b} on h2 by name")
    finally:
        on("h1", "docker", "rm", "-f", a, check=False)
        on("h2", "docker", "rm", "-f", b, check=False)
        on("h1", "docker", "network", "rm", net, check=False)


def test_services_run_on_every_node_without_a_registry(tag: str) -> None:
    service = f"svc-{tag}"
    try:
        on("h1", "docker", "service", "create", "--detach", "--quiet", "--no-resolve-image", "--endpoint-mode",
           "dnsrr", "--mode", "global", "--name", service, "freeflow-tools", "sleep", "infinity")

        def running_on_both() -> bool:
            tasks = on("h1", "docker", "service", "ps", "--filter", "desired-state=running", "--format",
                       "{{.Node}} {{.CurrentState}}", service).splitlines()
            return sorted(task.split()[:2] for task in tasks) == [["h1", "Running"], ["h2", "Running"]]

        wait_for(running_on_both, 60, f"a running task of {service} on h1 and h2")
    finally:
        on("h1", "docker", "service", "rm", service, check=False)


def test_freeflow_networks_and_plugin_folders_are_per_host(tag: str) -> None:
    """The plugin's state, sockets and router of each host live in its own folder, not in the machine's."""
    net = f"ffl-{tag}"
    ids: dict[str, str] = {}
    try:
        for host in HOSTS:
            ids[host] = on(host, "docker", "network", "create", "-d", "freeflow", net)
            on(host, "docker", "run", "-d", "--name", f"{net}-{host}", "--network", net, "freeflow-tools",
               "sleep", "infinity")
        assert ids["h1"] != ids["h2"]
        main_state = Path("/var/lib/freeflow/state.json")
        main_text = main_state.read_text() if main_state.exists() else ""
        for host, other in (("h1", "h2"), ("h2", "h1")):
            state = json.loads((LAB_DIR / host / "state" / "state.json").read_text())
            assert ids[host] in state["networks"] and ids[other] not in state["networks"]
            [endpoint] = [e for e in state["endpoints"].values() if e["network_id"] == ids[host]]
            assert endpoint["sandbox_key"].startswith(f"/run/docker-{host}/netns/") or endpoint[
                "sandbox_key"].startswith("/var/run/docker/netns/")
            assert ids[host] not in main_text
            plugin_id = on(host, "docker", "plugin", "inspect", "--format", "{{.Id}}", "freeflow/driver")
            assert (LAB_DIR / host / "plugins" / plugin_id).is_dir()
            assert (LAB_DIR / host / "plugins" / "freeflow.sock").is_socket()
            assert not Path("/run/docker/plugins", plugin_id).exists()
            assert (LAB_DIR / host / "run" / "router.sock").is_socket()
    finally:
        for host in ids:
            on(host, "docker", "rm", "-f", f"{net}-{host}", check=False)
            on(host, "docker", "network", "rm", net, check=False)


def test_up_again_reports_the_lab_and_exec_refuses_unknown_hosts() -> None:
    again = lab("up", "--hosts", "2")
    assert again.returncode == 0 and "already up" in again.stdout
    other = lab("up", "--hosts", "3")
    assert other.returncode == 2 and "lab down" in other.stderr
    unknown = lab("exec", "h5", "--", "true")
    assert unknown.returncode == 2 and "not a host of the lab" in unknown.stderr


def test_down_leaves_nothing_behind() -> None:
    record = json.loads((LAB_DIR / "lab.json").read_text())
    pids = [host["pid"] for host in record["hosts"]]
    down = lab("down")
    assert down.returncode == 0, down.stderr
    assert not set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()) & set(
        HOSTS)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "fflab" not in links
    forward = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=True).stdout
    assert "fflab" not in forward
    assert not [pid for pid in pids if hosts.alive(pid)]
    for index in (1, 2):
        assert hosts.processes(Host(index)) == []
        assert not Path(f"/run/docker-h{index}").exists() and not Path(f"/run/docker-h{index}.sock").exists()
    assert not LAB_DIR.exists()
    again = lab("down")
    assert again.returncode == 0 and "no lab is up" in again.stdout
