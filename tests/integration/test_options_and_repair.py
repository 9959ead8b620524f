"""Bad input gets a clear error and leaves nothing behind; what is deleted behind the plugin is repaired."""

from __future__ import annotations

import subprocess

from tests.integration.conftest import (
    DRIVER,
    container_ip,
    docker,
    docker_fails,
    inspect,
    our_links,
    ping,
    wait_for,
)


def test_unknown_option_is_refused_and_leaks_nothing(names):
    before = our_links()
    error = docker_fails("network", "create", "-d", DRIVER, "-o", "colour=blue", names("bad"))
    assert "unknown option 'colour'" in error and "com.docker.network.driver.mtu" in error
    assert our_links() == before
    assert names("bad") not in docker("network", "ls", "--format", "{{.Name}}")


def test_malformed_mtu_is_refused(names):
    error = docker_fails("network", "create", "-d", DRIVER, "-o", "com.docker.network.driver.mtu=huge",
                         names("bad"))
    assert "whole number" in error


def test_duplicate_network_name_is_refused(network):
    net = network("dup")
    error = docker_fails("network", "create", "-d", DRIVER, net)
    assert "already exists" in error


def test_deleted_bridge_is_recreated_and_traffic_resumes(network, container):
    net = network("repair")
    a = container("a", net)
    b = container("b", net)
    bridge = "ff-" + inspect("network", net)["Id"][:12]
    subprocess.run(["ip", "link", "del", bridge], check=True)
    wait_for(lambda: bridge in our_links(), 20, f"{bridge} to be recreated")
    wait_for(lambda: ping(a, container_ip(b, net), count=1), 20, "traffic over the repaired bridge")


def test_rm_with_endpoints_gone_leaves_no_links(network, container):
    before = our_links()
    net = network("clean")
    a = container("a", net)
    container("b", net)
    docker("rm", "-f", a)
    for c in list(inspect("network", net)["Containers"]):
        docker("rm", "-f", c)
    docker("network", "rm", net)
    assert our_links() == before
