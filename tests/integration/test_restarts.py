"""Plugin and dockerd restarts lose nothing: running containers keep talking, new ones still join."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.integration.conftest import PLUGIN, container_ip, docker, inspect, ping, plugin_enabled, wait_for

REPO = Path(__file__).resolve().parents[2]
RECONCILE_S = 5  # FREEFLOW_RECONCILE_INTERVAL of the installed plugin (its default)


def _state_ids() -> str:
    return Path("/var/lib/freeflow/state.json").read_text()


def test_plugin_disable_enable_keeps_containers_and_state(network, container):
    net = network("plug")
    a = container("a", net)
    b = container("b", net)
    net_id = inspect("network", net)["Id"]
    docker("plugin", "disable", "-f", PLUGIN)
    try:
        assert ping(a, container_ip(b, net), count=1), "the data path must not depend on the plugin process"
    finally:
        docker("plugin", "enable", PLUGIN)
    assert net_id in _state_ids()
    c = container("c", net)
    assert ping(c, a) and ping(a, container_ip(c, net))


def test_a_lost_state_file_leaves_running_containers_connected(network, container):
    """The plugin started without its state file (lost, or another state folder): the links its running
    containers use are not removed as orphans."""
    net = network("lost")
    a = container("a", net)
    b = container("b", net)
    state = Path("/var/lib/freeflow/state.json")
    aside = state.with_name("state.json.lost-by-test")
    docker("plugin", "disable", "-f", PLUGIN)
    try:
        state.rename(aside)
    finally:
        docker("plugin", "enable", PLUGIN)
    try:
        time.sleep(RECONCILE_S + 1)  # the reconcile at start, and one more
        assert ping(a, container_ip(b, net), count=1), "the containers keep their links"
    finally:
        docker("plugin", "disable", "-f", PLUGIN)
        aside.replace(state)
        docker("plugin", "enable", PLUGIN)
    assert ping(a, container_ip(b, net), count=1)


def _dockerd_pid() -> int | None:
    found = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.split()
    return int(found[0]) if found else None


def _restart_dockerd() -> None:
    if shutil.which("systemctl") and subprocess.run(["systemctl", "is-active", "--quiet", "docker"]).returncode == 0:
        subprocess.run(["systemctl", "restart", "docker"], check=True, timeout=120)
    else:
        pid = _dockerd_pid()
        assert pid, "no dockerd to restart"
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: _dockerd_pid() is None, 60, "dockerd to stop")
        subprocess.run([str(REPO / "scripts/start-dockerd.sh")], check=True, timeout=120)
    wait_for(plugin_enabled, 60, "the plugin to be enabled again")


def test_dockerd_restart_keeps_networks_and_connectivity(network, container):
    net = network("dd")
    a = container("a", net, "--restart", "always")
    b = container("b", net, "--restart", "always")
    net_id = inspect("network", net)["Id"]
    _restart_dockerd()
    assert inspect("network", net)["Id"] == net_id
    wait_for(lambda: inspect("container", a)["State"]["Running"] and inspect("container", b)["State"]["Running"],
             60, "the containers to come back")
    deadline = time.monotonic() + 30
    while not ping(a, b, count=1) and time.monotonic() < deadline:
        time.sleep(1)
    assert ping(a, container_ip(b, net))
    c = container("c", net)
    assert ping(c, a)
