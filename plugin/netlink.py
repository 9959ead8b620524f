"""Every netlink operation of the driver, through pyroute2, behind names of what they do.

All functions are idempotent: creating what exists or deleting what is gone succeeds, so the driver can
replay them during reconciliation and Docker can replay its stale calls.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkDumpInterrupted
from pyroute2.netlink.exceptions import NetlinkError as PyNetlinkError

from freeflow.plugin.errors import NetlinkError

log = logging.getLogger(__name__)


DUMP_TRIES = 5  # a dump of links is interrupted when links change meanwhile (many containers removed at once)
VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8


@contextmanager
def _ipr(action: str, netns: str | None = None) -> Iterator[IPRoute]:
    """A netlink socket (in the named namespace, else ours) whose errors become NetlinkError."""
    ipr = NetNS(netns) if netns else IPRoute()
    try:
        yield ipr
    except PyNetlinkError as exc:
        raise NetlinkError(f"{action}: {exc.args[-1] if exc.args else exc} (errno {exc.code})") from exc
    finally:
        ipr.close()


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def link_exists(name: str) -> bool:
    with _ipr(f"look up {name}") as ipr:
        return _index(ipr, name) is not None


def _links(ipr: IPRoute) -> list:
    """Every link of the namespace, read again when links changed while the kernel listed them."""
    attempt = 1
    while True:
        try:
            return list(ipr.get_links())
        except NetlinkDumpInterrupted:
            if attempt == DUMP_TRIES:
                raise
            attempt += 1
            log.debug("the list of links changed while it was read; reading it again")


def links_with_prefix(prefix: str) -> list[str]:
    """Names of the links in this namespace starting with `prefix`."""
    with _ipr("list links") as ipr:
        names = [link.get_attr("IFLA_IFNAME") for link in _links(ipr)]
    return sorted(n for n in names if n and n.startswith(prefix))


def links_in_use() -> set[str]:
    """Names of the links a running container's traffic goes through: each veth whose other end is in another
    network namespace (the kernel names that namespace, IFLA_LINK_NETNSID), the bridge it is a port of, and
    that bridge's other ports (its VXLAN device)."""
    with _ipr("list links") as ipr:
        links = _links(ipr)
    crossing = {link["index"]: link.get_attr("IFLA_MASTER") for link in links
                if link.get_attr("IFLA_LINK_NETNSID") is not None}
    masters = set(crossing.values()) - {None, 0}
    return {str(link.get_attr("IFLA_IFNAME")) for link in links
            if link["index"] in crossing or link["index"] in masters or link.get_attr("IFLA_MASTER") in masters}


def ensure_bridge(name: str, mtu: int, netns: str | None = None) -> None:
    """A Linux bridge `name`, up, with `mtu`; created when missing."""
    with _ipr(f"create bridge {name}", netns) as ipr:
        index = _index(ipr, name)
        if index is None:
            log.info("creating bridge %s (mtu %d)", name, mtu)
            ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0)
            index = _index(ipr, name)
        ipr.link("set", index=index, mtu=mtu, state="up")


def ensure_veth(host_name: str, peer_name: str, bridge: str, mtu: int, mac: str, netns: str | None = None) -> None:
    """A veth pair: `host_name` up on `bridge`, `peer_name` (for the container) with `mac`.

    When the pair exists only the host side is repaired: the peer may already sit in a container's
    namespace, where it is Docker's to manage.
    """
    with _ipr(f"create veth {host_name}", netns) as ipr:
        bridge_index = _index(ipr, bridge)
        if bridge_index is None:
            raise NetlinkError(f"bridge {bridge} is missing")
        index = _index(ipr, host_name)
        if index is None:
            log.info("creating veth %s <-> %s on %s", host_name, peer_name, bridge)
            stale = _index(ipr, peer_name)
            if stale is not None:
                ipr.link("del", index=stale)
            ipr.link("add", ifname=host_name, kind="veth", mtu=mtu,
                     peer={"ifname": peer_name, "mtu": mtu, "address": mac})
            index = _index(ipr, host_name)
        ipr.link("set", index=index, master=bridge_index, mtu=mtu, state="up")


def delete_link(name: str) -> bool:
    """Delete link `name` (a veth takes its peer along); False when it was already gone."""
    with _ipr(f"delete {name}") as ipr:
        index = _index(ipr, name)
        if index is None:
            return False
        try:
            ipr.link("del", index=index)
        except PyNetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False
            raise
        log.info("deleted link %s", name)
        return True


def link_mtu(name: str) -> int | None:
    with _ipr(f"look up {name}") as ipr:
        index = _index(ipr, name)
        if index is None:
            return None
        return int(ipr.get_links(index)[0].get_attr("IFLA_MTU"))


def link_master(name: str) -> str | None:
    """The name of the bridge `name` is enslaved to, or None."""
    with _ipr(f"look up {name}") as ipr:
        index = _index(ipr, name)
        if index is None:
            return None
        master = ipr.get_links(index)[0].get_attr("IFLA_MASTER")
        if not master:
            return None
        return str(ipr.get_links(master)[0].get_attr("IFLA_IFNAME"))


def ensure_vxlan(name: str, vni: int, local: str, bridge: str, mtu: int, netns: str | None = None) -> None:
    """A VXLAN device on `bridge` that neither floods nor learns: remote MACs come from static FDB entries,
    and it answers ARP itself from its neighbour table (proxy). One that starts from another address is
    created again, without its entries: the caller programs them again."""
    with _ipr(f"create vxlan {name}", netns) as ipr:
        bridge_index = _index(ipr, bridge)
        if bridge_index is None:
            raise NetlinkError(f"bridge {bridge} is missing")
        index = _index(ipr, name)
        if index is not None:
            was = ipr.get_links(index)[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VXLAN_LOCAL")
            if was != local:  # this host's address changed: the tunnels start from the new one
                log.info("vxlan %s starts from %s, not %s: creating it again", name, local, was)
                ipr.link("del", index=index)
                index = None
        if index is None:
            log.info("creating vxlan %s (vni %d, local %s) on %s", name, vni, local, bridge)
            ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_port=VXLAN_PORT, vxlan_local=local,
                     vxlan_learning=0, vxlan_proxy=1)
            index = _index(ipr, name)
        ipr.link("set", index=index, master=bridge_index, mtu=mtu, state="up")


def remote_entries(vxlan: str, netns: str | None = None) -> set[tuple[str, str, str]]:
    """(ip, mac, host address) of every remote endpoint programmed on `vxlan`."""
    with _ipr(f"list entries of {vxlan}", netns) as ipr:
        index = _index(ipr, vxlan)
        if index is None:
            return set()
        hosts = {}
        for entry in ipr.fdb("dump", ifindex=index):
            dst = entry.get_attr("NDA_DST")
            if dst:
                hosts[entry.get_attr("NDA_LLADDR")] = dst
        found = set()
        for entry in ipr.neigh("dump", ifindex=index):
            ip, mac = entry.get_attr("NDA_DST"), entry.get_attr("NDA_LLADDR")
            if ip and mac in hosts:
                found.add((ip, mac, hosts[mac]))
        return found


def add_remote(vxlan: str, ip: str, mac: str, host: str, netns: str | None = None) -> None:
    """Frames for `mac` go to `host`; ARP for `ip` is answered with `mac` on this host."""
    with _ipr(f"program {ip} on {vxlan}", netns) as ipr:
        index = _index(ipr, vxlan)
        if index is None:
            raise NetlinkError(f"vxlan {vxlan} is missing")
        ipr.fdb("replace", ifindex=index, lladdr=mac, dst=host, state=0x80, flags=0x02)  # permanent, self
        ipr.neigh("replace", ifindex=index, dst=ip, lladdr=mac, state=0x80)


def remove_remote(vxlan: str, ip: str, mac: str, host: str, netns: str | None = None) -> None:
    with _ipr(f"forget {ip} on {vxlan}", netns) as ipr:
        index = _index(ipr, vxlan)
        if index is None:
            return
        entries = ((ipr.fdb, {"lladdr": mac, "dst": host, "flags": 0x02}), (ipr.neigh, {"dst": ip, "lladdr": mac}))
        for call, kwargs in entries:
            try:
                call("del", ifindex=index, **kwargs)
            except PyNetlinkError as exc:
                if exc.code not in (errno.ENOENT, errno.ENODEV):
                    raise
