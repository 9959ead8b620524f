"""A kernel that keeps links and rules in dictionaries, for unit tests of the driver's logic."""

from __future__ import annotations

from freeflow.plugin.errors import NetlinkError


class FakeKernel:
    def __init__(self) -> None:
        self.links: dict[str, dict[str, object]] = {}
        self.rules: set[str] = set()
        self.remotes: dict[str, set[tuple[str, str, str]]] = {}
        self.fail_on: str | None = None
        self.lost_sandboxes: set[str] = set()
        self.misplaced: set[str] = set()  # bridges whose rule sits above Docker's DOCKER-USER jump
        self.in_use: set[str] = set()  # links that links_in_use() says a running container's traffic needs

    def ensure_bridge(self, name: str, mtu: int) -> None:
        if self.fail_on == name:
            raise NetlinkError(f"refused {name}")
        self.links[name] = {"kind": "bridge", "mtu": mtu}

    def ensure_veth(self, host_name: str, peer_name: str, bridge: str, mtu: int, mac: str) -> None:
        if bridge not in self.links:
            raise NetlinkError(f"bridge {bridge} is missing")
        if self.fail_on == host_name:
            raise NetlinkError(f"refused {host_name}")
        if host_name not in self.links:
            self.links[peer_name] = {"kind": "veth", "mtu": mtu, "mac": mac, "peer": host_name}
        self.links[host_name] = {"kind": "veth", "mtu": mtu, "master": bridge, "peer": peer_name}

    def delete_link(self, name: str) -> bool:
        link = self.links.pop(name, None)
        if link and "peer" in link:
            self.links.pop(str(link["peer"]), None)
        return link is not None

    def link_exists(self, name: str) -> bool:
        return name in self.links

    def links_with_prefix(self, prefix: str) -> list[str]:
        return sorted(n for n in self.links if n.startswith(prefix))

    def links_in_use(self) -> set[str]:
        return self.in_use & set(self.links)

    def allow_bridge(self, bridge: str) -> None:
        self.rules.add(bridge)
        self.misplaced.discard(bridge)

    def forget_bridge(self, bridge: str) -> None:
        self.rules.discard(bridge)

    def bridges_allowed(self, prefix: str) -> dict[str, bool]:
        return {b: b not in self.misplaced for b in self.rules if b.startswith(prefix)}

    def ensure_vxlan(self, name: str, vni: int, local: str, bridge: str, mtu: int) -> None:
        if bridge not in self.links:
            raise NetlinkError(f"bridge {bridge} is missing")
        if name in self.links and self.links[name]["local"] != local:  # created again, as netlink does
            self.remotes.pop(name, None)
        self.links[name] = {"kind": "vxlan", "vni": vni, "local": local, "master": bridge, "mtu": mtu}

    def remote_entries(self, vxlan: str) -> set[tuple[str, str, str]]:
        return set(self.remotes.get(vxlan, set()))

    def add_remote(self, vxlan: str, ip: str, mac: str, host: str) -> None:
        self.remotes.setdefault(vxlan, set()).add((ip, mac, host))

    def remove_remote(self, vxlan: str, ip: str, mac: str, host: str) -> None:
        self.remotes.get(vxlan, set()).discard((ip, mac, host))

    def sandbox_exists(self, sandbox_key: str) -> bool:
        return sandbox_key not in self.lost_sandboxes
