"""Containers on freeflow networks talk: ping by IP and by name, TCP with checksums, outside access."""

from __future__ import annotations

import socket
import subprocess
import threading

from tests.integration.conftest import (
    DRIVER,
    container_ip,
    docker,
    inspect,
    our_links,
    ping,
    wait_for,
)


def test_create_inspect_rm_leaves_no_netlink_object(network):
    before = our_links()
    name = network("life")
    info = inspect("network", name)
    assert info["Driver"] == DRIVER and info["Scope"] == "local"
    bridge = "ff-" + info["Id"][:12]
    assert bridge in our_links()
    docker("network", "rm", name)
    assert our_links() == before - {bridge}
    assert bridge not in subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout


def _forward_rules() -> list[str]:
    listing = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in listing.splitlines() if line.startswith("-A FORWARD ")]


def test_the_forwarding_rule_leaves_docker_user_in_force_and_is_put_back_when_deleted(network, container):
    """As with Docker's own bridges, an operator's DOCKER-USER rules apply to a freeflow network's traffic;
    a rule deleted behind the plugin's back is put back (at its place) within FREEFLOW_RECONCILE_INTERVAL,
    and one above the jump to DOCKER-USER (where plugins before this one put it) is moved below it."""
    net = network("fwd")
    a = container("a", net)
    b = container("b", net)
    bridge = "ff-" + inspect("network", net)["Id"][:12]
    ours = ["-i", bridge, "-o", bridge, "-j", "ACCEPT"]

    def in_place() -> bool:
        rules = _forward_rules()
        rule = "-A FORWARD " + " ".join(ours)
        return rule in rules and rules.index("-A FORWARD -j DOCKER-USER") < rules.index(rule)

    assert in_place(), _forward_rules()
    operators = ["DOCKER-USER", "-i", bridge, "-o", bridge, "-p", "icmp", "-j", "DROP"]
    subprocess.run(["iptables", "-I", *operators], check=True)
    try:
        assert not ping(a, container_ip(b, net), count=1), "the operator's DOCKER-USER rule was bypassed"
    finally:
        subprocess.run(["iptables", "-D", *operators], check=True)
    subprocess.run(["iptables", "-D", "FORWARD", *ours], check=True)
    wait_for(in_place, 30, "the plugin to put its rule back")
    assert ping(a, container_ip(b, net), count=1)
    subprocess.run(["iptables", "-D", "FORWARD", *ours], check=True)
    subprocess.run(["iptables", "-I", "FORWARD", "1", *ours], check=True)  # where an older plugin put it
    wait_for(in_place, 30, "the plugin to move its rule below the jump to DOCKER-USER")
    assert _forward_rules().count("-A FORWARD " + " ".join(ours)) == 1, "moved, not copied"


def test_ping_by_ip_and_by_name(network, container):
    net = network()
    a = container("a", net)
    b = container("b", net)
    assert ping(a, container_ip(b, net))
    assert ping(b, a)


def test_100mb_tcp_transfer_keeps_its_checksum(network, container):
    net = network()
    sender = container("tx", net)
    receiver = container("rx", net)
    docker("exec", sender, "sh", "-c", "head -c 100000000 /dev/urandom > /tmp/data")
    sent = docker("exec", sender, "sha256sum", "/tmp/data").split()[0]
    docker("exec", "-d", receiver, "sh", "-c", "nc -l -p 5001 > /tmp/recv")
    wait_for(lambda: ":1389 " in docker("exec", receiver, "cat", "/proc/net/tcp"), 10, "the listener")
    docker("exec", sender, "sh", "-c", f"nc -N {container_ip(receiver, net)} 5001 < /tmp/data")
    wait_for(lambda: docker("exec", receiver, "stat", "-c", "%s", "/tmp/recv") == "100000000", 30, "all data")
    assert docker("exec", receiver, "sha256sum", "/tmp/recv").split()[0] == sent


def test_connect_disconnect_and_two_networks(network, container):
    one = network("one")
    two = network("two")
    a = container("a", one)
    b = container("b", two)
    assert not ping(a, container_ip(b, two), count=1)
    docker("network", "connect", two, a)
    assert ping(a, container_ip(b, two))
    assert docker("exec", a, "ls", "/sys/class/net").split().count("eth1") == 1
    host_side = "ffh" + inspect("container", a)["NetworkSettings"]["Networks"][two]["EndpointID"][:12]
    assert host_side in our_links()
    docker("network", "disconnect", two, a)
    assert not ping(a, container_ip(b, two), count=1)
    wait_for(lambda: host_side not in our_links(), 10, f"{host_side} to be removed with the endpoint")


def test_subnet_gateway_ip_range_and_fixed_ip(network, container):
    net = network("ipam", "--subnet", "10.77.0.0/24", "--gateway", "10.77.0.254", "--ip-range", "10.77.0.128/25")
    config = inspect("network", net)["IPAM"]["Config"][0]
    assert config["Gateway"] == "10.77.0.254"
    a = container("a", net)
    assert container_ip(a, net).startswith("10.77.0.") and int(container_ip(a, net).split(".")[-1]) >= 128
    b = container("b", net, "--ip", "10.77.0.9")
    assert container_ip(b, net) == "10.77.0.9"
    assert ping(a, "10.77.0.9")


def test_mtu_option_is_visible_inside_the_container(network, container):
    net = network("mtu", "-o", "com.docker.network.driver.mtu=1400")
    a = container("a", net)
    assert docker("exec", a, "cat", "/sys/class/net/eth0/mtu") == "1400"


def test_outbound_traffic_reaches_a_server_on_the_host(network, container):
    net = network("out")
    a = container("a", net)
    gateway = inspect("network", "docker_gwbridge")["IPAM"]["Config"][0]["Gateway"]
    server = socket.create_server(("0.0.0.0", 0))
    port = server.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            received.append(conn.recv(100))
            conn.sendall(b"hello container\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        reply = docker("exec", a, "sh", "-c", f"echo hello host | nc -w 5 {gateway} {port}")
    finally:
        thread.join(10)
        server.close()
    assert received == [b"hello host\n"] and reply == "hello container"
