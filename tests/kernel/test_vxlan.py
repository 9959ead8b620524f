"""VXLAN between two simulated hosts with static FDB and neighbour entries only: no flooding, no learning."""

from __future__ import annotations

import subprocess
import uuid

import pytest

from freeflow.plugin import netlink


def sh(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30)


@pytest.fixture
def two_hosts():
    """Hosts hA/hB (underlay 10.98.x.1/2 on a veth) and a 'container' namespace behind each host's bridge."""
    tag = uuid.uuid4().hex[:4]
    names = {k: f"ffk{tag}{k}" for k in ("hA", "hB", "cA", "cB")}
    try:
        for ns in names.values():
            assert sh(f"ip netns add {ns}").returncode == 0
        sh(f"ip link add u{tag}a netns {names['hA']} type veth peer name u{tag}b netns {names['hB']}")
        for side, host, ip in (("a", "hA", "10.98.7.1"), ("b", "hB", "10.98.7.2")):
            sh(f"ip -n {names[host]} addr add {ip}/24 dev u{tag}{side} && ip -n {names[host]} link set u{tag}{side} up")
        for host, container, ip, mac in (("hA", "cA", "10.1.0.2", "02:42:0a:01:00:02"),
                                         ("hB", "cB", "10.1.0.3", "02:42:0a:01:00:03")):
            netlink.ensure_bridge("ff-test", 1450, netns=names[host])
            netlink.ensure_veth(f"ffh{tag}", f"ffc{tag}", "ff-test", 1450, mac, netns=names[host])
            sh(f"ip -n {names[host]} link set ffc{tag} netns {names[container]}")
            inside = f"ip -n {names[container]}"
            sh(f"{inside} addr add {ip}/24 dev ffc{tag} && {inside} link set ffc{tag} up")
        yield names
    finally:
        for ns in names.values():
            sh(f"ip netns del {ns}")


def ping(names, source: str, target: str) -> bool:
    return sh(f"ip netns exec {names[source]} ping -c 1 -W 1 {target}").returncode == 0


def reaches(names, source: str, target: str) -> bool:
    """Up to three pings: on a loaded machine the first one's ARP resolution is now and then retried only after
    a second, past its wait (seen in a CI run)."""
    return any(ping(names, source, target) for _ in range(3))


def test_static_entries_carry_traffic_and_nothing_else_does(two_hosts):
    names = two_hosts
    netlink.ensure_vxlan("ffx-test", 4242, "10.98.7.1", "ff-test", 1450, netns=names["hA"])
    netlink.ensure_vxlan("ffx-test", 4242, "10.98.7.2", "ff-test", 1450, netns=names["hB"])
    assert not ping(names, "cA", "10.1.0.3"), "without entries nothing may flood across"

    netlink.add_remote("ffx-test", "10.1.0.3", "02:42:0a:01:00:03", "10.98.7.2", netns=names["hA"])
    netlink.add_remote("ffx-test", "10.1.0.2", "02:42:0a:01:00:02", "10.98.7.1", netns=names["hB"])
    assert netlink.remote_entries("ffx-test", netns=names["hA"]) == {("10.1.0.3", "02:42:0a:01:00:03", "10.98.7.2")}
    # The refused ping left an ARP resolution pending, retried only every second: start it afresh.
    sh(f"ip netns exec {names['cA']} ip neigh flush all")
    assert reaches(names, "cA", "10.1.0.3") and reaches(names, "cB", "10.1.0.2")
    for host in ("hA", "hB"):  # and no learning: the only entries are the static ones
        details = sh(f"ip -n {names[host]} -d link show ffx-test").stdout
        assert "nolearning" in details, details
        # The VXLAN device's own entries ("dst … self"); the bridge's entries for its port ("master") are the
        # bridge's ordinary learning.
        learned = [line for line in sh(f"bridge -n {names[host]} fdb show dev ffx-test").stdout.splitlines()
                   if " dst " in line and " self" in line and "permanent" not in line and "static" not in line]
        assert not learned, learned

    netlink.remove_remote("ffx-test", "10.1.0.3", "02:42:0a:01:00:03", "10.98.7.2", netns=names["hA"])
    netlink.remove_remote("ffx-test", "10.1.0.3", "02:42:0a:01:00:03", "10.98.7.2", netns=names["hA"])  # idempotent
    assert netlink.remote_entries("ffx-test", netns=names["hA"]) == set()
    sh(f"ip netns exec {names['cA']} ip neigh flush all")
    assert not ping(names, "cA", "10.1.0.3")


def test_a_vxlan_follows_its_hosts_new_address(two_hosts):
    """hA's underlay address changes: ensure_vxlan with the new one makes the device start from it; once both
    hosts' entries are programmed again, the containers reach each other as before."""
    names = two_hosts
    for host, local, remote, ip, mac in (("hA", "10.98.7.1", "10.98.7.2", "10.1.0.3", "02:42:0a:01:00:03"),
                                         ("hB", "10.98.7.2", "10.98.7.1", "10.1.0.2", "02:42:0a:01:00:02")):
        netlink.ensure_vxlan("ffx-test", 4242, local, "ff-test", 1450, netns=names[host])
        netlink.add_remote("ffx-test", ip, mac, remote, netns=names[host])
    assert reaches(names, "cA", "10.1.0.3")
    underlay = sh(f"ip -n {names['hA']} -o addr show to 10.98.7.1").stdout.split()[1]
    sh(f"ip -n {names['hA']} addr del 10.98.7.1/24 dev {underlay} && "
       f"ip -n {names['hA']} addr add 10.98.7.11/24 dev {underlay}")
    netlink.ensure_vxlan("ffx-test", 4242, "10.98.7.11", "ff-test", 1450, netns=names["hA"])
    details = sh(f"ip -n {names['hA']} -d link show ffx-test").stdout
    assert "local 10.98.7.11 " in details and "master ff-test" in details and ",UP," in details, details
    assert netlink.remote_entries("ffx-test", netns=names["hA"]) == set(), "the caller programs them again"
    netlink.add_remote("ffx-test", "10.1.0.3", "02:42:0a:01:00:03", "10.98.7.2", netns=names["hA"])
    netlink.add_remote("ffx-test", "10.1.0.2", "02:42:0a:01:00:02", "10.98.7.11", netns=names["hB"])
    sh(f"ip netns exec {names['cA']} ip neigh flush all")
    assert reaches(names, "cA", "10.1.0.3") and reaches(names, "cB", "10.1.0.2")
    netlink.ensure_vxlan("ffx-test", 4242, "10.98.7.11", "ff-test", 1450, netns=names["hA"])
    assert netlink.remote_entries("ffx-test", netns=names["hA"]) != set(), "the same address keeps the device"
