"""The network driver's logic: what each Docker call does to the state and the kernel, free of HTTP.

One lock serialises every call, so a call sees and saves a consistent state. Every call that removes
something succeeds for IDs it does not know, because dockerd replays stale ones at start-up.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from freeflow.plugin import protocol as p
from freeflow.plugin.errors import BadRequest, Conflict, DriverError, InvalidOption, NotFound
from freeflow.plugin.store import Endpoint, Network, State, Store

log = logging.getLogger(__name__)

BRIDGE_PREFIX = "ff-"
HOST_VETH_PREFIX = "ffh"
CONTAINER_VETH_PREFIX = "ffc"
VXLAN_PREFIX = "ffx"
OWNED_PREFIXES = (BRIDGE_PREFIX, HOST_VETH_PREFIX, CONTAINER_VETH_PREFIX, VXLAN_PREFIX)
# What our names look like: a prefix and 12 characters of a Docker ID. Only such links are ever removed as
# orphans, so an operator's `ffx-test` survives.
OWNED_NAME = re.compile("(" + "|".join(OWNED_PREFIXES) + ")[0-9a-z]{12}")
DEFAULT_MTU = 1500
VXLAN_OVERHEAD = 50  # outer Ethernet, IPv4, UDP and VXLAN headers
MTU_OPTION = "com.docker.network.driver.mtu"
IPV6_MIN_MTU = 1280
# A joined endpoint whose sandbox namespace stays missing this long lost its container without a Leave
# (a crashed host: dockerd does not replay it). Right after Join the namespace may not exist yet.
STALE_SANDBOX = 30.0


def _parse_mtu(value: Any) -> int:
    text = str(value)
    if type(value) is bool or not (text.isascii() and text.isdigit()):
        raise InvalidOption(f"{MTU_OPTION} must be a whole number of bytes, got {value!r}")
    mtu = int(text)
    if not 68 <= mtu <= 65535:
        raise InvalidOption(f"{MTU_OPTION} must be between 68 and 65535, got {mtu}")
    return mtu


# Every `-o key=value` a freeflow network accepts, with its parser.
NETWORK_OPTIONS: dict[str, Callable[[Any], Any]] = {
    MTU_OPTION: _parse_mtu,
}


def bridge_name(network_id: str) -> str:
    return BRIDGE_PREFIX + network_id[:12]


def vxlan_name(network_id: str) -> str:
    return VXLAN_PREFIX + network_id[:12]


def vni_for(network_id: str) -> int:
    """A 24-bit VXLAN network identifier derived from the network ID, the same on every host."""
    return int.from_bytes(hashlib.sha256(network_id.encode()).digest()[:3], "big") or 1


def veth_names(endpoint_id: str) -> tuple[str, str]:
    """The (host side, container side) names of an endpoint's veth pair."""
    return HOST_VETH_PREFIX + endpoint_id[:12], CONTAINER_VETH_PREFIX + endpoint_id[:12]


def mac_for(address: str) -> str:
    """A locally administered MAC derived from the IPv4 address, as Docker's bridge does; random without one."""
    if address:
        ip = ipaddress.ip_interface(address).ip
        if ip.version == 4:
            return "02:42:" + ":".join(f"{b:02x}" for b in ip.packed)
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


def validate_options(generic: dict[str, Any], ipv6: bool = False) -> dict[str, str]:
    """The network's `-o` options, checked; an unknown one is refused with the list of accepted ones. With
    `ipv6` (the network has IPv6 pools) the MTU must be at least IPv6's minimum."""
    accepted = ", ".join(sorted(NETWORK_OPTIONS))
    clean = {}
    for key, value in generic.items():
        parse = NETWORK_OPTIONS.get(key)
        if parse is None:
            raise InvalidOption(f"unknown option {key!r} for a freeflow network; accepted options: {accepted}")
        parse(value)
        clean[key] = str(value)
    if ipv6 and MTU_OPTION in clean and int(clean[MTU_OPTION]) < IPV6_MIN_MTU:
        raise InvalidOption(f"{MTU_OPTION} must be at least {IPV6_MIN_MTU} on a network with IPv6, "
                            f"got {clean[MTU_OPTION]}")
    return clean


class Kernel(Protocol):
    """What the driver asks of the host: links (netlink.py) and the forwarding rule (firewall.py)."""

    def ensure_bridge(self, name: str, mtu: int) -> None: ...
    def ensure_veth(self, host_name: str, peer_name: str, bridge: str, mtu: int, mac: str) -> None: ...
    def delete_link(self, name: str) -> bool: ...
    def link_exists(self, name: str) -> bool: ...
    def links_with_prefix(self, prefix: str) -> list[str]: ...
    def links_in_use(self) -> set[str]: ...
    def allow_bridge(self, bridge: str) -> None: ...
    def forget_bridge(self, bridge: str) -> None: ...
    def bridges_allowed(self, prefix: str) -> dict[str, bool]: ...
    def ensure_vxlan(self, name: str, vni: int, local: str, bridge: str, mtu: int) -> None: ...
    def remote_entries(self, vxlan: str) -> set[tuple[str, str, str]]: ...
    def add_remote(self, vxlan: str, ip: str, mac: str, host: str) -> None: ...
    def remove_remote(self, vxlan: str, ip: str, mac: str, host: str) -> None: ...
    def sandbox_exists(self, sandbox_key: str) -> bool: ...


class Driver:
    """Carries out Docker's NetworkDriver calls against a `Kernel`, persisting every change in a `Store`."""

    def __init__(self, store: Store, kernel: Kernel, scope: str = "local", host_address: str = "",
                 stale_sandbox: float = STALE_SANDBOX) -> None:
        self.store = store
        self.kernel = kernel
        self.scope = scope
        self.host_address = host_address
        self.lock = threading.RLock()
        self.state: State = store.load()
        self.on_change: list[Callable[[], None]] = []  # called after every saved change (ClusterSync.poke)
        self.stale_sandbox = stale_sandbox
        self.veth_lost: set[str] = set()  # joined endpoints whose veth is gone, already reported
        self.kept_orphans: set[str] = set()  # links of ours the state does not name, kept while in use, reported
        self.sandbox_missing: dict[str, float] = {}  # endpoint -> when its sandbox was first seen missing
        self.failing: dict[str, str] = {}  # "network …"/"endpoint …" -> why reconcile could not repair it, said
        # The address this host had when the plugin last ran (its networks' VXLAN source): the heartbeats use it
        # until Docker's discovery tells the address again, so that a restart does not let the lease run out.
        # New networks wait for discovery (or FREEFLOW_HOST_ADDRESS): the saved address may be stale.
        saved = {n.local_address for n in self.state.networks.values() if n.local_address}
        self.saved_address = saved.pop() if scope == "global" and len(saved) == 1 else ""
        if self.saved_address and not host_address:
            log.warning("until Docker tells this host's address, heartbeats use %s, the address of its networks",
                        self.saved_address)

    @property
    def heartbeat_address(self) -> str:
        """This host's address for the directory: Docker's (or the setting's), else the saved one."""
        return self.host_address or self.saved_address

    def _save(self) -> None:
        """Write the state; when that fails, the change is undone in memory too (the state is read back from
        the file), or the next save would write what dockerd was told had failed."""
        try:
            self.store.save(self.state)
        except OSError as exc:
            self.state = self.store.load()
            raise DriverError(f"cannot write the state file {self.store.path}: {exc.strerror or exc}; "
                              "the plugin keeps the state the file holds") from exc
        for callback in self.on_change:
            callback()

    # Networks.

    def capabilities(self) -> dict[str, str]:
        return {"Scope": self.scope, "ConnectivityScope": self.scope}

    def create_network(self, req: p.CreateNetworkRequest) -> None:
        options = validate_options(req.generic_options, ipv6=bool(req.ipv6))
        swarm_wide = self.scope == "global"
        if swarm_wide and not self.host_address:
            raise DriverError("this host's address for VXLAN is unknown: join the swarm first, or set "
                              "FREEFLOW_HOST_ADDRESS")
        mtu = int(options.get(MTU_OPTION, DEFAULT_MTU - (VXLAN_OVERHEAD if swarm_wide else 0)))
        network = Network(network_id=req.network_id, bridge=bridge_name(req.network_id), mtu=mtu,
                          ipv4_pools=[d.pool for d in req.ipv4], options=options,
                          vxlan=vxlan_name(req.network_id) if swarm_wide else "",
                          vni=vni_for(req.network_id) if swarm_wide else 0,
                          local_address=self.host_address if swarm_wide else "")
        with self.lock:
            known = self.state.networks.get(req.network_id)
            if known is not None:
                if known != network:
                    raise Conflict(f"network {req.network_id[:12]} exists with other settings")
                return
            for other in self.state.networks.values():
                if other.bridge == network.bridge:
                    raise Conflict(f"network {req.network_id[:12]} would share bridge {network.bridge} "
                                   f"with network {other.network_id[:12]}")
            try:
                self._ensure_network(network)
            except DriverError:
                self.kernel.delete_link(network.bridge)
                if network.vxlan:
                    self.kernel.delete_link(network.vxlan)
                self.kernel.forget_bridge(network.bridge)
                raise
            self.state.networks[network.network_id] = network
            self._save()
        log.info("created network %s on bridge %s (mtu %d)", req.network_id[:12], network.bridge, mtu)

    def delete_network(self, req: p.NetworkRequest) -> None:
        with self.lock:
            network = self.state.networks.get(req.network_id)
            if network is None:
                log.info("DeleteNetwork for unknown network %s: nothing to do", req.network_id[:12])
                return
            for endpoint in self.state.endpoints_of(req.network_id):
                self.kernel.delete_link(endpoint.host_veth)
                del self.state.endpoints[endpoint.endpoint_id]
            if network.vxlan:
                self.kernel.delete_link(network.vxlan)
            self.kernel.delete_link(network.bridge)
            self.kernel.forget_bridge(network.bridge)
            del self.state.networks[req.network_id]
            self._save()
        log.info("deleted network %s", req.network_id[:12])

    def _ensure_network(self, network: Network, rule: bool = True) -> None:
        """Bridge, forwarding rule (unless `rule` is False: known to be there) and VXLAN device of `network`."""
        self.kernel.ensure_bridge(network.bridge, network.mtu)
        if rule:
            self.kernel.allow_bridge(network.bridge)
        if network.vxlan:
            self.kernel.ensure_vxlan(network.vxlan, network.vni, network.local_address, network.bridge,
                                     network.mtu)

    def discover(self, req: p.DiscoveryRequest) -> None:
        """Swarm tells each node its own address (`Self`); VXLAN tunnels start from it."""
        data = req.data
        if req.discovery_type == 1 and data.get("Self") and isinstance(data.get("Address"), str):
            try:
                ipaddress.ip_address(data["Address"])
            except ValueError:
                raise BadRequest(f"DiscoveryData.Address {data['Address']!r} is not an IP address: this host's "
                                 "address stays " + (self.host_address or "unknown")) from None
            if self.host_address != data["Address"]:
                log.info("this host's address is %s", data["Address"])
            with self.lock:
                self.host_address = data["Address"]
                for network in self._move_tunnels():
                    self._ensure_network(network, rule=False)

    def _move_tunnels(self) -> list[Network]:
        """The swarm-wide networks whose VXLAN started from another address than this host's now (it changed,
        as after a reboot with a new lease) start from this host's: saved here, applied by the caller."""
        moved = [n for n in self.state.networks.values()
                 if n.vxlan and self.host_address and n.local_address != self.host_address]
        for network in moved:
            log.warning("network %s: its VXLAN now starts from this host's address %s, not %s",
                        network.network_id[:12], self.host_address, network.local_address)
            network.local_address = self.host_address
        if moved:
            self._save()
        return moved

    def set_remote_endpoints(self, remote: list[tuple[str, str, str, str]]) -> None:
        """Program exactly these (network, ip, mac, host address) remote endpoints on the local networks."""
        with self.lock:
            for network in self.state.networks.values():
                if not network.vxlan:
                    continue
                wanted = {(ip, mac, host) for net, ip, mac, host in remote if net == network.network_id}
                present = self.kernel.remote_entries(network.vxlan)
                for ip, mac, host in present - wanted:
                    self.kernel.remove_remote(network.vxlan, ip, mac, host)
                for ip, mac, host in wanted - present:
                    self.kernel.add_remote(network.vxlan, ip, mac, host)
                if wanted != present:
                    log.info("network %s: %d remote endpoints", network.network_id[:12], len(wanted))

    def allocate_network(self, req: p.AllocateNetworkRequest) -> dict[str, Any]:
        # Swarm managers: validate now, so a network with a bad option stays unallocated (no container can
        # attach to it, and the manager's log says why) instead of failing in every worker's CreateNetwork;
        # and echo the options back, or they never reach the workers. Swarm sends the `-o` options as they
        # are (a flat map), not nested under com.docker.network.generic as CreateNetwork does.
        options = validate_options(req.options, ipv6=bool(req.ipv6))
        log.info("allocated swarm network %s (options: %s)", req.network_id[:12], options or "none")
        return {"Options": req.options}

    # Endpoints.

    def create_endpoint(self, req: p.CreateEndpointRequest) -> p.CreateEndpointResponse:
        with self.lock:
            network = self.state.networks.get(req.network_id)
            if network is None:
                raise NotFound(f"network {req.network_id[:12]} is not a freeflow network known to this host")
            given_mac = req.interface.mac_address
            known = self.state.endpoints.get(req.endpoint_id)
            if known is not None:
                if known.network_id != req.network_id:
                    raise Conflict(f"endpoint {req.endpoint_id[:12]} belongs to another network")
                return p.CreateEndpointResponse("" if given_mac else known.mac)
            host_veth, container_veth = veth_names(req.endpoint_id)
            endpoint = Endpoint(
                endpoint_id=req.endpoint_id, network_id=req.network_id, host_veth=host_veth,
                container_veth=container_veth, mac=given_mac or mac_for(req.interface.address),
                address=req.interface.address, address_ipv6=req.interface.address_ipv6,
            )
            self.kernel.ensure_bridge(network.bridge, network.mtu)
            try:
                self.kernel.ensure_veth(host_veth, container_veth, network.bridge, network.mtu, endpoint.mac)
            except DriverError:
                self.kernel.delete_link(host_veth)
                raise
            self.state.endpoints[req.endpoint_id] = endpoint
            self._save()
        log.info("created endpoint %s (%s, %s) on network %s", req.endpoint_id[:12], endpoint.address,
                 endpoint.mac, req.network_id[:12])
        return p.CreateEndpointResponse("" if given_mac else endpoint.mac)

    def delete_endpoint(self, req: p.EndpointRequest) -> None:
        with self.lock:
            endpoint = self.state.endpoints.pop(req.endpoint_id, None)
            if endpoint is None:
                log.info("DeleteEndpoint for unknown endpoint %s: nothing to do", req.endpoint_id[:12])
                return
            self.kernel.delete_link(endpoint.host_veth)
            self._save()
        log.info("deleted endpoint %s", req.endpoint_id[:12])

    def endpoint_info(self, req: p.EndpointRequest) -> dict[str, Any]:
        with self.lock:
            endpoint = self.state.endpoints.get(req.endpoint_id)
            if endpoint is None:
                return {"Value": {}}
            return {"Value": {"host_veth": endpoint.host_veth, "mac": endpoint.mac,
                              "bridge": bridge_name(endpoint.network_id)}}

    def join(self, req: p.JoinRequest) -> p.JoinResponse:
        with self.lock:
            endpoint = self.state.endpoints.get(req.endpoint_id)
            if endpoint is None or endpoint.network_id != req.network_id:
                raise NotFound(f"endpoint {req.endpoint_id[:12]} of network {req.network_id[:12]} does not exist")
            network = self.state.networks[req.network_id]
            if not self.kernel.link_exists(endpoint.container_veth):
                # The pair was lost (or the old container side went with a sandbox): make a new one.
                self.kernel.delete_link(endpoint.host_veth)
            self.kernel.ensure_bridge(network.bridge, network.mtu)
            self.kernel.ensure_veth(endpoint.host_veth, endpoint.container_veth, network.bridge,
                                    network.mtu, endpoint.mac)
            endpoint.sandbox_key = req.sandbox_key
            self._save()
        log.info("endpoint %s joins sandbox %s", req.endpoint_id[:12], req.sandbox_key)
        return p.JoinResponse(endpoint.container_veth)

    def leave(self, req: p.EndpointRequest) -> None:
        with self.lock:
            endpoint = self.state.endpoints.get(req.endpoint_id)
            if endpoint is None:
                log.info("Leave for unknown endpoint %s: nothing to do", req.endpoint_id[:12])
                return
            endpoint.sandbox_key = ""
            self._save()
        log.info("endpoint %s left its sandbox", req.endpoint_id[:12])

    # Repair.

    def _leave_lost_sandboxes(self) -> list[str]:
        """Endpoints whose sandbox namespace has been gone for `stale_sandbox` seconds leave it, as Leave
        would: the router stops serving them and the orchestrator forgets them. They stay created, so a
        Join that dockerd may still send works. A namespace that is gone takes the container's end of the
        veth with it, and so the host's end: while the host's end crosses into another namespace, the
        container is alive, however its namespace looks from here (a mount this process cannot see)."""
        now = time.monotonic()
        left = []
        unseen = [ep for ep in self.state.endpoints.values()
                  if ep.sandbox_key and not self.kernel.sandbox_exists(ep.sandbox_key)]
        crossing = self.kernel.links_in_use() if unseen else set()
        for endpoint in self.state.endpoints.values():
            if endpoint not in unseen or endpoint.host_veth in crossing:
                self.sandbox_missing.pop(endpoint.endpoint_id, None)
                continue
            since = self.sandbox_missing.setdefault(endpoint.endpoint_id, now)
            if now - since >= self.stale_sandbox:
                left.append(f"endpoint {endpoint.endpoint_id[:12]} left {endpoint.sandbox_key}: the namespace "
                            "is gone without a Leave (its container or host crashed)")
                endpoint.sandbox_key = ""
                del self.sandbox_missing[endpoint.endpoint_id]
        if left:
            self._save()
        return left

    def _repair_network(self, network: Network, rule_in_place: bool, repairs: list[str]) -> None:
        missing = not self.kernel.link_exists(network.bridge)
        self._ensure_network(network, rule=not rule_in_place)
        if missing:
            repairs.append(f"recreated bridge {network.bridge}")
        if not rule_in_place:
            repairs.append(f"restored the forwarding rule of {network.bridge}")

    def _repair_endpoint(self, endpoint: Endpoint, repairs: list[str]) -> None:
        network = self.state.networks.get(endpoint.network_id)
        if network is None:
            return
        if self.kernel.link_exists(endpoint.host_veth):
            self.veth_lost.discard(endpoint.endpoint_id)
            self.kernel.ensure_veth(endpoint.host_veth, endpoint.container_veth, network.bridge,
                                    network.mtu, endpoint.mac)
        elif not endpoint.sandbox_key:
            self.kernel.ensure_veth(endpoint.host_veth, endpoint.container_veth, network.bridge,
                                    network.mtu, endpoint.mac)
            repairs.append(f"recreated veth {endpoint.host_veth}")
        elif endpoint.endpoint_id not in self.veth_lost:
            # Its other end was inside the container, configured by dockerd: only a reconnect rebuilds it.
            self.veth_lost.add(endpoint.endpoint_id)
            lost = f"the veth {endpoint.host_veth} of endpoint {endpoint.endpoint_id[:12]}"
            if self.kernel.sandbox_exists(endpoint.sandbox_key):
                repairs.append(f"{lost} was deleted under its running container, which is now cut off "
                               f"from network {network.network_id[:12]}: run `docker network "
                               "disconnect` and `docker network connect` for it")
            else:
                repairs.append(f"{lost} is gone with its namespace {endpoint.sandbox_key} (the host "
                               "restarted, or its container ended): waiting for dockerd's Leave")

    def reconcile(self) -> list[str]:
        """Make the kernel match the state: recreate what is missing, remove what we own but forgot.

        A network or endpoint that cannot be repaired is said so (once while it fails the same way) and
        the pass goes on with the others. Returns a line per repair, for the log and the tests.
        """
        repairs: list[str] = []
        failing: dict[str, str] = {}
        with self.lock:
            bridges = {n.bridge for n in self.state.networks.values()}
            veths = {name for ep in self.state.endpoints.values() for name in (ep.host_veth, ep.container_veth)}
            bridges |= {n.vxlan for n in self.state.networks.values() if n.vxlan}
            ruled = self.kernel.bridges_allowed(BRIDGE_PREFIX)  # one listing, not a check per network
            allowed = {bridge for bridge, in_place in ruled.items() if in_place}
            self._move_tunnels()  # FREEFLOW_HOST_ADDRESS changed across a restart
            for network in self.state.networks.values():
                try:
                    self._repair_network(network, network.bridge in allowed, repairs)
                except DriverError as exc:
                    failing[f"network {network.network_id[:12]}"] = str(exc)
            for endpoint in self.state.endpoints.values():
                try:
                    self._repair_endpoint(endpoint, repairs)
                except DriverError as exc:
                    failing[f"endpoint {endpoint.endpoint_id[:12]}"] = str(exc)
            repairs += [f"could not repair {item}: {error} (trying again at every pass)"
                        for item, error in failing.items() if self.failing.get(item) != error]
            self.failing = failing
            orphans = {name for prefix in OWNED_PREFIXES for name in self.kernel.links_with_prefix(prefix)
                       if name not in bridges and name not in veths and OWNED_NAME.fullmatch(name)}
            kept = orphans & self.kernel.links_in_use() if orphans else set()
            for name in sorted(orphans - kept):
                self.kernel.delete_link(name)
                repairs.append(f"removed orphan link {name}")
            for name in sorted(kept - self.kept_orphans):
                repairs.append(f"kept link {name}, which no network or endpoint of the state file names: a running "
                               "container's traffic goes through it (was the state file lost or replaced?). "
                               "Recreate its network (docker network rm, then create) to bring it back under "
                               "the plugin")
            self.kept_orphans = kept
            for bridge in set(ruled) - bridges - kept:
                if OWNED_NAME.fullmatch(bridge):  # an operator's own `ff-…` rule is not ours
                    self.kernel.forget_bridge(bridge)
                    repairs.append(f"removed orphan rule of {bridge}")
            repairs += self._leave_lost_sandboxes()
        for line in repairs:
            log.warning("reconcile: %s", line)
        return repairs
