"""The lab's wiring in the machine's own network namespace: the bridge, one namespace and veth per host, and
the FORWARD rule that lets bridged packets between hosts through (dockerd sets FORWARD's policy to DROP).

Hosts get no default route: nothing they send can leave the machine.
"""

from __future__ import annotations

import ipaddress

from freeflow.lab.command import run, succeeds
from freeflow.lab.errors import LabConflict
from freeflow.lab.layout import BRIDGE, BRIDGE_ADDRESS, SUBNET, Host

FORWARD_RULE = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]


def link_exists(name: str) -> bool:
    return succeeds(["ip", "link", "show", "dev", name])


def forward_rule_present() -> bool:
    return succeeds(["iptables", "-C", *FORWARD_RULE])


def check_free(hosts: list[Host]) -> None:
    """Raise LabConflict when a name or the subnet the lab needs is taken by something else."""
    if link_exists(BRIDGE):
        raise LabConflict(f"a link named {BRIDGE} exists but no lab is recorded; `freeflow lab down` removes it")
    for host in hosts:
        if host.netns.exists():
            raise LabConflict(f"the network namespace {host.name} exists and is not part of the lab; "
                              f"remove it (ip netns del {host.name}) or run `freeflow lab down`")
        if link_exists(host.veth):
            raise LabConflict(f"a link named {host.veth} exists; `freeflow lab down` removes it")
    subnet = ipaddress.ip_network(SUBNET)
    for line in run(["ip", "-4", "-o", "route", "show"]).splitlines():
        destination = line.split()[0]
        if destination != "default" and ipaddress.ip_network(destination, strict=False).overlaps(subnet):
            raise LabConflict(f"the lab's subnet {SUBNET} overlaps a route of this machine: {line.strip()}")


def create_bridge() -> None:
    run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "address", "add", BRIDGE_ADDRESS, "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])


def delete_bridge() -> None:
    if link_exists(BRIDGE):
        run(["ip", "link", "delete", BRIDGE])


def allow_forwarding() -> None:
    if not forward_rule_present():
        run(["iptables", "-I", *FORWARD_RULE])


def remove_forwarding() -> None:
    while forward_rule_present():
        run(["iptables", "-D", *FORWARD_RULE])


def create_host(host: Host) -> None:
    """The host's namespace with lo and eth0 (its address, no default route), eth0's peer on the bridge."""
    run(["ip", "netns", "add", host.name])
    run(["ip", "-n", host.name, "link", "set", "lo", "up"])
    run(["ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.name])
    run(["ip", "link", "set", host.veth, "master", BRIDGE, "up"])
    run(["ip", "-n", host.name, "address", "add", f"{host.address}/24", "dev", "eth0"])
    run(["ip", "-n", host.name, "link", "set", "eth0", "up"])


def delete_host(host: Host) -> None:
    if link_exists(host.veth):
        run(["ip", "link", "delete", host.veth])
    if host.netns.exists():
        run(["ip", "netns", "delete", host.name])
