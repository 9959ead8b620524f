"""Pairs the two ends of a TCP connection or channel and decides its path: the overlay, a socket pair or shared
rings on one host, a host TCP connection (peering.py) between hosts.

Logic, free of IO except the socket pairs and rings it creates: the server loop feeds it the caller's identity
(the sandbox its control socket lives in) and decoded messages, and carries out what it returns: replies on
control connections, dials of other hosts' routers, bridges between rings and host TCP. Only endpoints of one
freeflow network are ever paired; what lives on other hosts comes from the cluster view (cluster.py).
"""

from __future__ import annotations

import dataclasses
import hmac
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from freeflow.router import protocol as p
from freeflow.router.peering import ACCEPTED, Kind, Preamble
from freeflow.router.ring_maps import ring_name
from freeflow.shm.channel import ChannelFds, channel_fds
from freeflow.shm.ring import Ring

log = logging.getLogger(__name__)

Conn = Hashable
# (network, client ip, client port, server ip, server port)
FlowKey = tuple[str, str, int, str, int]


@dataclass(frozen=True)
class Endpoint:
    """A container's address on a freeflow network, as the plugin's state records it."""

    endpoint_id: str
    network_id: str
    ip: str
    sandbox: str


class Cluster(Protocol):
    """What the broker asks of the cluster view: where remote endpoints live, what listens there."""

    def host_of(self, network_id: str, ip: str) -> str | None: ...
    def listens(self, network_id: str, ip: str, port: int, kind: str) -> bool: ...
    def rdma_with(self, host: str) -> bool: ...


@dataclass
class Reply:
    """A message for one control connection; the descriptors are the broker's and closed once sent."""

    conn: Conn
    message: p.Message
    fds: list[int] = field(default_factory=list)


@dataclass
class Dial:
    """Dial the router of `host` and send `preamble`; once it answers ACCEPTED, send `accepted` (for a graft,
    with the new TCP socket appended to its descriptors) and bridge `bridge` (a channel's rings) to the socket.
    On any failure, `failed` goes to the same connection and every descriptor here is closed."""

    host: str
    preamble: Preamble
    accepted: Reply
    failed: Reply
    sandbox: str  # the client's
    bridge: ChannelFds | None = None


@dataclass
class Bridge:
    """Move a channel's bytes between the rings of `fds` and the host TCP socket `sock` (a bridge process),
    over RDMA when `rdma` and both sides manage to set it up, else over the socket itself. With `accept`, first
    answer the other host's router ACCEPTED on `sock` (its container then hears the channel is ready)."""

    fds: ChannelFds
    sock: socket.socket
    rdma: bool = False
    accept: bool = False


@dataclass
class Offer:
    """Offer a channel to its listener (`offer`), then carry out `ready` (tell the connector). A listener that is
    not accepting fills its control connection with offers: then this one is dropped, `ready` is discarded
    (its descriptors closed: the channel ends), `refused` is carried out instead, and the listener keeps its
    registration."""

    offer: Reply
    ready: list[Reply | Bridge]
    refused: list[Reply] = field(default_factory=list)


Action = Reply | Dial | Bridge | Offer


@dataclass
class Flow:
    """A connection announced by INTENT, waiting for GRAFT from both ends (or from the client alone, when the
    server is on `remote_host`)."""

    key: FlowKey
    client_sandbox: str
    server_sandbox: str
    deadline: float
    waiting: dict[int, Conn] = field(default_factory=dict)  # role -> control connection
    remote_host: str = ""
    announcer: Conn = None  # the client's control connection that sent INTENT: the flow ends with it


@dataclass
class RemoteHalf:
    """One side of a cross-host graft that arrived first: a server's GRAFT (`conn`) waiting for the other
    host's router, or that router's TCP connection (`sock`) waiting for the server's GRAFT."""

    deadline: float
    conn: Conn = None
    sandbox: str = ""
    sock: socket.socket | None = None


@dataclass
class GraftRecord:
    """A grafted connection, for `freeflow status`."""

    key: FlowKey
    client_sandbox: str  # "" when the client is on another host
    server_sandbox: str  # "" when the server is on another host
    inodes: tuple[int, ...]
    created: float
    path: str = "grafted"


@dataclass
class ChannelRecord:
    """A shared-memory channel the router introduced, for the memory cap and `freeflow status`."""

    channel_id: int
    client_sandbox: str
    server_sandbox: str
    client: str
    server: str
    ring_size: int
    bells: tuple[int, ...]  # inodes of the two ends' doorbell sockets (of those still open, when recovered)
    rings: list[Ring]  # the router's mappings of the two rings; none when an earlier router made the channel and
    # they were not found again, or not as they should be (ring_maps.py)
    created: float
    bridged: bool  # one end is another host's: the routers bridge the rings over host TCP
    pair: str = ""  # the random part of the names of its doorbell's ends and rings

    @property
    def path(self) -> str:
        """Shared memory between the two containers, or each side's rings bridged over host TCP."""
        return "shm, bridged over host TCP" if self.bridged else "shm"

    @property
    def memory(self) -> int:
        return 2 * self.ring_size

    def bytes_moved(self) -> int | None:
        """Bytes written into both rings; None when the router has no mapping of them (an earlier router made the
        channel, and they were not found again or not as they should be)."""
        return sum(ring.total_written for ring in self.rings) if self.rings else None


# What a channel doorbell end's name says: network, channel id, ring size, client ip, server address, pair tag,
# whether it is bridged to another host.
ChannelName = tuple[str, int, int, str, tuple[str, int], str, bool]

CLIENT_END, SERVER_END = "c", "s"  # the role in the tag of a pair end's name
HOST_TCP = "grafted (host TCP)"  # the path of a graft onto a host TCP connection to another host

# Stands in for the control connection of a listener registered with the router before it restarted: the
# listener registers again on its next accept(), and until then clients are told to go ahead.
INHERITED = "inherited from the previous router"


def overlay(reason: int) -> p.VerdictReply:
    return p.VerdictReply(p.Verdict.OVERLAY, 0, reason)


GO = p.VerdictReply(p.Verdict.GO, 0, p.Reason.NONE)
MEMORY_CAP = p.VerdictReply(p.Verdict.REFUSED, 0, p.Reason.MEMORY_CAP)


class Broker:
    def __init__(self, graft_wait: float = 0.5, intent_ttl: float = 5.0, graft_buffer: int = 4 << 20,
                 channel_memory: int = 256 << 20, cluster: Cluster | None = None, name_key: bytes = b"") -> None:
        self.cluster = cluster
        # Signs the names of socket pair ends; the next router must have the same key to take them back.
        self.name_key = name_key or os.urandom(32)
        self.graft_wait = graft_wait
        self.graft_buffer = graft_buffer
        self.intent_ttl = intent_ttl
        self.channel_memory = channel_memory
        self.channel_listeners: dict[tuple[str, int], Conn] = {}
        self.channels: list[ChannelRecord] = []
        self._channel_ids = itertools.count()
        self.endpoints: list[Endpoint] = []
        self.listeners: dict[tuple[str, int], set[Conn]] = {}
        self.flows: dict[FlowKey, Flow] = {}
        self.grafts: list[GraftRecord] = []
        self.host_tcp_version = 0  # moves when grafts onto host TCP end or are taken back: save them all again
        self.unsaved_host_tcp: list[GraftRecord] = []  # grafts onto host TCP made since take_unsaved_host_tcp()
        self.remote_halves: dict[FlowKey, RemoteHalf] = {}
        self.overlay_decisions = 0
        # Moves whenever a listener or an endpoint may have come or gone: when to save and report them again
        # (making the lists on every turn of the router's loop costs O(listeners x endpoints)).
        self.listeners_version = 0

    def set_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        endpoints = list(endpoints)
        if endpoints != self.endpoints:
            self.endpoints = endpoints
            self.listeners_version += 1

    def _peer(self, sandbox: str, peer_ip: str) -> tuple[Endpoint, Endpoint] | None:
        """(caller's endpoint, peer's endpoint) on a network both share, the peer being `peer_ip`."""
        for mine in self.endpoints:
            if mine.sandbox != sandbox:
                continue
            for other in self.endpoints:
                if other.network_id == mine.network_id and other.ip == peer_ip and other.sandbox:
                    return mine, other
        return None

    def _remote_peer(self, sandbox: str, peer_ip: str) -> tuple[Endpoint, str] | None:
        """(caller's endpoint, host address) when `peer_ip` is an endpoint on another host of a network the
        caller is on."""
        if self.cluster is None:
            return None
        for mine in self.endpoints:
            if mine.sandbox == sandbox:
                host = self.cluster.host_of(mine.network_id, peer_ip)
                if host:
                    return mine, host
        return None

    def _local(self, network_id: str, ip: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.network_id == network_id and e.ip == ip and e.sandbox), None)

    # Requests.

    def intent(self, conn: Conn, sandbox: str, msg: p.Intent, now: float | None = None) -> list[Action]:
        now = time.monotonic() if now is None else now
        pair = self._peer(sandbox, msg.dst_ip)
        if pair is None:
            return self._remote_intent(conn, sandbox, msg, now)
        if not self.listeners.get((pair[1].sandbox, msg.dst_port)):
            self.overlay_decisions += 1
            return [Reply(conn, overlay(p.Reason.NO_LISTENER))]
        mine, server = pair
        key = (mine.network_id, mine.ip, msg.src_port, server.ip, msg.dst_port)
        self.flows[key] = Flow(key, sandbox, server.sandbox, now + self.intent_ttl, announcer=conn)
        return [Reply(conn, GO)]

    def _remote_intent(self, conn: Conn, sandbox: str, msg: p.Intent, now: float) -> list[Action]:
        remote = self._remote_peer(sandbox, msg.dst_ip)
        if remote is None or self.cluster is None:
            self.overlay_decisions += 1
            return [Reply(conn, overlay(p.Reason.NO_PEER))]
        mine, host = remote
        if not self.cluster.listens(mine.network_id, msg.dst_ip, msg.dst_port, "graft"):
            self.overlay_decisions += 1
            return [Reply(conn, overlay(p.Reason.NO_LISTENER))]
        key = (mine.network_id, mine.ip, msg.src_port, msg.dst_ip, msg.dst_port)
        self.flows[key] = Flow(key, sandbox, "", now + self.intent_ttl, remote_host=host, announcer=conn)
        return [Reply(conn, GO)]

    def listen(self, conn: Conn, sandbox: str, msg: p.Listen) -> list[Reply]:
        conns = self.listeners.setdefault((sandbox, msg.port), set())
        conns.discard(INHERITED)
        conns.add(conn)
        self.listeners_version += 1
        log.debug("listener on port %d in %s", msg.port, sandbox)
        return [Reply(conn, GO)]

    def registrations(self) -> set[tuple[str, int]]:
        """(sandbox, port) of every grafting listener, for the next router to inherit."""
        return set(self.listeners)

    def inherit(self, sandbox: str, port: int) -> None:
        """A listener the previous router knew, still listening: its clients are grafted again at once."""
        self.listeners.setdefault((sandbox, port), set()).add(INHERITED)
        self.listeners_version += 1

    def inherited(self) -> set[tuple[str, int]]:
        return {key for key, conns in self.listeners.items() if INHERITED in conns}

    def drop_inherited(self, keep: set[tuple[str, int]]) -> None:
        """Inherited listeners not in `keep` stopped listening."""
        for key, conns in list(self.listeners.items()):
            if INHERITED in conns and key not in keep:
                conns.discard(INHERITED)
                if not conns:
                    del self.listeners[key]
                    self.listeners_version += 1

    def graft(self, conn: Conn, sandbox: str, msg: p.Graft, now: float | None = None) -> list[Action]:
        now = time.monotonic() if now is None else now
        pair = self._peer(sandbox, msg.peer_ip)
        if pair is None:
            return self._remote_graft(conn, sandbox, msg, now)
        mine, peer = pair
        if msg.role == p.Role.CLIENT:
            key = (mine.network_id, mine.ip, msg.local_port, peer.ip, msg.peer_port)
        else:
            key = (mine.network_id, peer.ip, msg.peer_port, mine.ip, msg.local_port)
        flow = self.flows.get(key)
        expected = flow and (flow.client_sandbox if msg.role == p.Role.CLIENT else flow.server_sandbox)
        if flow is None or expected != sandbox or msg.role in flow.waiting:
            return [Reply(conn, overlay(p.Reason.NO_LISTENER))]
        flow.waiting[msg.role] = conn
        flow.deadline = min(flow.deadline, now + self.graft_wait)
        if len(flow.waiting) < 2:
            return []
        del self.flows[key]
        client_end, server_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        _name_ends(client_end, server_end, key, self.name_key)
        _size_buffers(client_end, server_end, self.graft_buffer)
        self.grafts.append(GraftRecord(key, flow.client_sandbox, flow.server_sandbox,
                                       (_inode(client_end), _inode(server_end)), time.time()))
        _, client_ip, client_port, server_ip, server_port = key
        log.debug("grafted %s:%d -> %s:%d on network %s", client_ip, client_port, server_ip, server_port, key[0][:12])
        return [
            Reply(flow.waiting[p.Role.CLIENT], p.GraftedReply(server_ip, server_port), [client_end.detach()]),
            Reply(flow.waiting[p.Role.SERVER], p.GraftedReply(client_ip, client_port), [server_end.detach()]),
        ]

    def _remote_graft(self, conn: Conn, sandbox: str, msg: p.Graft, now: float) -> list[Action]:
        remote = self._remote_peer(sandbox, msg.peer_ip)
        if remote is None:
            return [Reply(conn, overlay(p.Reason.NO_PEER))]
        mine, _ = remote
        if msg.role == p.Role.CLIENT:
            key = (mine.network_id, mine.ip, msg.local_port, msg.peer_ip, msg.peer_port)
            flow = self.flows.pop(key, None)
            if flow is None or flow.client_sandbox != sandbox or not flow.remote_host:
                return [Reply(conn, overlay(p.Reason.NO_LISTENER))]
            preamble = Preamble(Kind.GRAFT, *key)
            return [Dial(flow.remote_host, preamble, Reply(conn, p.GraftedReply(msg.peer_ip, msg.peer_port)),
                         Reply(conn, overlay(p.Reason.PEER_GONE)), sandbox)]
        key = (mine.network_id, msg.peer_ip, msg.peer_port, mine.ip, msg.local_port)
        if not self.listeners.get((sandbox, msg.local_port)):
            return [Reply(conn, overlay(p.Reason.NO_LISTENER))]
        half = self.remote_halves.pop(key, None)
        if half is not None and half.sock is not None:
            return self._join_remote(key, sandbox, conn, half.sock)
        self.remote_halves[key] = RemoteHalf(now + self.graft_wait, conn=conn, sandbox=sandbox)
        return [] if half is None else [Reply(half.conn, overlay(p.Reason.PEER_GONE))]

    def _join_remote(self, key: FlowKey, sandbox: str, conn: Conn, sock: socket.socket) -> list[Action]:
        """The server's GRAFT meets the client host's TCP connection: accept it and hand it over."""
        try:
            sock.send(ACCEPTED)
        except OSError as exc:
            log.info("the router of %s:%d went away before the graft: %s", key[1], key[2], exc)
            sock.close()
            return [Reply(conn, overlay(p.Reason.PEER_GONE))]
        self.record_graft(key, "", sandbox, sock)
        _, client_ip, client_port, _, _ = key
        log.debug("grafted %s:%d (another host) -> %s:%d over host TCP", client_ip, client_port, key[3], key[4])
        return [Reply(conn, p.GraftedReply(client_ip, client_port), [sock.detach()])]

    def recover_grafts(self, named_sockets: Iterable[tuple[int, str]]) -> int:
        """Grafts an earlier router made whose socket pairs are still open, found by the names their ends carry
        (`named_sockets`: inode and abstract name of this namespace's unix sockets), so that `freeflow status`
        keeps listing them. How many were new."""
        pairs: dict[FlowKey, list[int]] = {}
        for inode, name in named_sockets:
            key = self._signed_end(name)
            if key is not None:
                pairs.setdefault(key, []).append(inode)
        known = self._known_inodes()
        recovered = 0
        for key, inodes in pairs.items():
            network, client_ip, _, server_ip, _ = key
            client, server = self._local(network, client_ip), self._local(network, server_ip)
            if client is None or server is None or known & set(inodes):
                continue  # a container that left, or a pair already known
            self.grafts.append(GraftRecord(key, client.sandbox, server.sandbox, tuple(inodes), time.time()))
            recovered += 1
        return recovered

    def _signed_end(self, name: str) -> FlowKey | None:
        """The connection a pair end's name stands for, when this router's key signed it."""
        parsed = p.parse_graft_end_name(name)
        tag = parsed[2].split(".") if parsed else []
        if parsed is None or len(tag) != 4 or tag[1] not in (CLIENT_END, SERVER_END):
            return None
        local, peer, (short_network, role, _, mac) = parsed[0], parsed[1], tag
        if not _signed_by(self.name_key, name[len(p.GRAFT_NAME_PREFIX):].rsplit(".", 1)[0], mac):
            return None
        network = self._network(short_network)
        if network is None:
            return None
        client, server = (local, peer) if role == CLIENT_END else (peer, local)
        return (network, *client, *server)

    def host_tcp_grafts(self) -> list[list[object]]:
        """The grafts onto host TCP connections (their sockets have no names to find them by), as JSON values
        that the next router's restore_host_tcp_grafts takes back."""
        return sorted(_host_tcp_entry(g) for g in self.grafts if g.path == HOST_TCP)

    def take_unsaved_host_tcp(self) -> list[list[object]]:
        """The grafts onto host TCP made since the last call, as host_tcp_grafts() gives them."""
        records, self.unsaved_host_tcp = self.unsaved_host_tcp, []
        return [_host_tcp_entry(g) for g in records]

    def restore_host_tcp_grafts(self, saved: object, live_sockets: set[int]) -> int:
        """Take back what host_tcp_grafts gave an earlier router, for the connections still open; anything
        malformed is skipped. How many were new."""
        known = self._known_inodes()
        restored = 0
        for entry in saved if isinstance(saved, list) else []:
            try:
                (network, cip, cport, sip, sport), client, server, inodes = entry
                key: FlowKey = (str(network), str(cip), int(cport), str(sip), int(sport))
                inodes = tuple(int(i) for i in inodes)
            except (TypeError, ValueError):
                continue
            if not inodes or not live_sockets & set(inodes) or known & set(inodes):
                continue
            self.grafts.append(GraftRecord(key, str(client), str(server), inodes, time.time(), HOST_TCP))
            known |= set(inodes)  # an entry listed twice (old and new files) is taken once
            restored += 1
        self.host_tcp_version += restored
        return restored

    def _known_inodes(self) -> set[int]:
        return {inode for g in self.grafts for inode in g.inodes}

    def _host_tcp_count(self) -> int:
        return sum(g.path == HOST_TCP for g in self.grafts)

    def record_graft(self, key: FlowKey, client_sandbox: str, server_sandbox: str, sock: socket.socket) -> None:
        """A cross-host graft is made (on the client's host once the dial was accepted), for the status."""
        record = GraftRecord(key, client_sandbox, server_sandbox, (_inode(sock),), time.time(), HOST_TCP)
        self.grafts.append(record)
        self.unsaved_host_tcp.append(record)

    def inbound(self, preamble: Preamble, sock: socket.socket, source: str, live_sockets: Callable[[], set[int]],
                now: float | None = None) -> list[Action]:
        """Another host's router dialled in (signature checked) for a flow to a container here. Refusals close
        `sock`: that router then leaves its client on the overlay or on TCP. `live_sockets()` is asked only
        for a channel (it reads the host's socket table), as in channel_connect()."""
        now = time.monotonic() if now is None else now
        network, client_ip, _, server_ip, server_port = preamble.key
        server = self._local(network, server_ip)
        host = self.cluster.host_of(network, client_ip) if self.cluster else None
        if server is None or host != source:
            log.warning("refused a %s from %s for %s:%d: %s", "channel" if preamble.kind in Kind.CHANNELS else "graft",
                        source, server_ip, server_port, "no such endpoint here" if server is None else
                        f"its client {client_ip} is not an endpoint of {source} on network {network[:12]}")
            sock.close()
            return []
        if preamble.kind in Kind.CHANNELS:
            self.prune_channels(live_sockets())
            return self._inbound_channel(preamble, sock, server)
        if not self.listeners.get((server.sandbox, server_port)):
            sock.close()
            return []
        half = self.remote_halves.pop(preamble.key, None)
        if half is not None and half.sock is None:
            return self._join_remote(preamble.key, half.sandbox, half.conn, sock)
        if half is not None and half.sock is not None:
            half.sock.close()  # a second dial for the same flow replaces the first
        self.remote_halves[preamble.key] = RemoteHalf(now + self.graft_wait, sock=sock)
        return []

    def channel_listen(self, conn: Conn, sandbox: str, msg: p.ChannelListen) -> list[Reply]:
        self.channel_listeners[(sandbox, msg.port)] = conn
        self.listeners_version += 1
        return [Reply(conn, GO)]

    def channel_connect(self, conn: Conn, sandbox: str, msg: p.ChannelConnect,
                        live_sockets: set[int]) -> list[Action]:
        """Make a channel to a channel listener of the same network, here or on another host (the two routers
        then bridge it over host TCP); `live_sockets` are the inodes of the host's open unix sockets, which
        tell which earlier channels still count against the memory cap."""
        pair = self._peer(sandbox, msg.dst_ip)
        if pair is None:
            return self._remote_channel(conn, sandbox, msg, live_sockets)
        listener = self.channel_listeners.get((pair[1].sandbox, msg.dst_port))
        if listener is None:
            return [Reply(conn, overlay(p.Reason.NO_LISTENER))]
        mine, server = pair
        self.prune_channels(live_sockets)
        if self._over_cap({sandbox, server.sandbox}, msg.ring_size, f"{mine.ip} -> {msg.dst_ip}"):
            return [Reply(conn, MEMORY_CAP)]
        channel_id, names = self._next_channel()
        client_fds, server_fds = channel_fds(msg.ring_size, ring_name(channel_id, names))
        self._new_channel(channel_id, names, mine.network_id, sandbox, server.sandbox, mine.ip,
                          (server.ip, msg.dst_port), msg.ring_size, client_fds, server_fds)
        return [Offer(Reply(listener, p.ChannelOffer(mine.ip, 0, channel_id, msg.ring_size),
                            list(dataclasses.astuple(server_fds))),
                      ready=[Reply(conn, p.ChannelReady(server.ip, msg.dst_port, channel_id, msg.ring_size),
                                   list(dataclasses.astuple(client_fds)))],
                      refused=[Reply(conn, overlay(p.Reason.BUSY))])]

    def _remote_channel(self, conn: Conn, sandbox: str, msg: p.ChannelConnect,
                        live_sockets: set[int]) -> list[Action]:
        remote = self._remote_peer(sandbox, msg.dst_ip)
        if remote is None or self.cluster is None:
            return [Reply(conn, overlay(p.Reason.NO_PEER))]
        mine, host = remote
        if not self.cluster.listens(mine.network_id, msg.dst_ip, msg.dst_port, "channel"):
            return [Reply(conn, overlay(p.Reason.NO_LISTENER))]
        self.prune_channels(live_sockets)
        if self._over_cap({sandbox}, msg.ring_size, f"{mine.ip} -> {msg.dst_ip}"):
            return [Reply(conn, MEMORY_CAP)]
        channel_id, names = self._next_channel()
        client_fds, bridge_fds = channel_fds(msg.ring_size, ring_name(channel_id, names))
        self._new_channel(channel_id, names, mine.network_id, sandbox, "", mine.ip, (msg.dst_ip, msg.dst_port),
                          msg.ring_size, client_fds, bridge_fds)
        # A channel has no client port: its ID (unique on this host) stands in for one in the flow key.
        kind = Kind.CHANNEL_RDMA if self.cluster.rdma_with(host) else Kind.CHANNEL
        preamble = Preamble(kind, mine.network_id, mine.ip, channel_id, msg.dst_ip, msg.dst_port, msg.ring_size)
        ready = p.ChannelReady(msg.dst_ip, msg.dst_port, channel_id, msg.ring_size)
        return [Dial(host, preamble, Reply(conn, ready, list(dataclasses.astuple(client_fds))),
                     Reply(conn, overlay(p.Reason.PEER_GONE)), sandbox, bridge_fds)]

    def _inbound_channel(self, preamble: Preamble, sock: socket.socket, server: Endpoint) -> list[Action]:
        listener = self.channel_listeners.get((server.sandbox, preamble.server_port))
        where = f"{preamble.client_ip} (another host) -> {preamble.server_ip}"
        if listener is None or self._over_cap({server.sandbox}, preamble.ring_size, where):
            sock.close()
            return []
        channel_id, names = self._next_channel()
        bridge_fds, server_fds = channel_fds(preamble.ring_size, ring_name(channel_id, names))
        self._new_channel(channel_id, names, server.network_id, "", server.sandbox, preamble.client_ip,
                          (server.ip, preamble.server_port), preamble.ring_size, bridge_fds, server_fds)
        # Refused, the socket closes unanswered: the other router tells its connector to fall back to TCP.
        return [Offer(Reply(listener, p.ChannelOffer(preamble.client_ip, 0, channel_id, preamble.ring_size),
                            list(dataclasses.astuple(server_fds))),
                      ready=[Bridge(bridge_fds, sock, rdma=preamble.kind == Kind.CHANNEL_RDMA, accept=True)])]

    def _over_cap(self, sandboxes: set[str], ring_size: int, what: str) -> bool:
        """Whether a new channel would take one of `sandboxes` over its channel memory (logged)."""
        for who in sandboxes:
            used = sum(c.memory for c in self.channels if who in (c.client_sandbox, c.server_sandbox))
            if used + 2 * ring_size > self.channel_memory:
                log.warning("channel %s refused: %s would use %d of its %d bytes of channel memory",
                            what, who, used + 2 * ring_size, self.channel_memory)
                return True
        return False

    def _next_channel(self) -> tuple[int, str]:
        """The id of the next channel, 16 bits, never 0 (it is a port on the wire), none of a live channel's; and
        the random part of its names (ids are reused)."""
        in_use = {c.channel_id for c in self.channels}  # those of an earlier router too
        channel_id = next(self._channel_ids) % 0xFFFF + 1
        for _ in range(0xFFFF):
            if channel_id not in in_use:
                break
            channel_id = next(self._channel_ids) % 0xFFFF + 1
        return channel_id, os.urandom(2).hex()

    def _new_channel(self, channel_id: int, pair: str, network: str, client_sandbox: str, server_sandbox: str,
                     client: str, server: tuple[str, int], ring_size: int, client_fds: ChannelFds,
                     server_fds: ChannelFds) -> None:
        """Record a channel just made (closing its descriptors if that fails: the rings cannot be mapped)."""
        bridged = not (client_sandbox and server_sandbox)
        tag = f"{network[:12]}.{pair}"
        for role, bell in ((CLIENT_END, client_fds.bell), (SERVER_END, server_fds.bell)):
            role = role.upper() if bridged else role  # the case of the role says which way it goes
            _name_channel_end(bell, channel_id, ring_size, client, server, f"{tag}.{role}", self.name_key)
        try:
            record = ChannelRecord(
                channel_id, client_sandbox, server_sandbox, client, f"{server[0]}:{server[1]}", ring_size,
                (os.fstat(client_fds.bell).st_ino, os.fstat(server_fds.bell).st_ino),
                [Ring.attach(client_fds.tx), Ring.attach(server_fds.tx)], time.time(), bridged, pair)
        except BaseException:
            client_fds.close()
            server_fds.close()
            raise
        self.channels.append(record)
        log.debug("channel %d: %s -> %s:%d, rings of %d bytes", channel_id, client, *server, ring_size)

    def recover_channels(self, named_sockets: Iterable[tuple[int, str]]) -> int:
        """Channels an earlier router made whose doorbells are still open, found by the names their ends carry
        (as recover_grafts), so that `freeflow status` lists them and the memory cap counts them. How many. They
        have no rings yet: ring_maps.map_again finds those."""
        ends: dict[ChannelName, list[int]] = {}
        for inode, name in named_sockets:
            channel = self._signed_channel_end(name)
            if channel is not None:
                ends.setdefault(channel, []).append(inode)
        known = {inode for c in self.channels for inode in c.bells}
        recovered = 0
        for (network, channel_id, ring_size, client, server, pair, bridged), inodes in ends.items():
            client_end, server_end = self._local(network, client), self._local(network, server[0])
            if (client_end is None and server_end is None) or known & set(inodes) or len(inodes) > 2:
                continue  # every container of it left, or a channel already known
            self.channels.append(ChannelRecord(
                channel_id, client_end.sandbox if client_end else "", server_end.sandbox if server_end else "",
                client, f"{server[0]}:{server[1]}", ring_size, tuple(inodes), [], time.time(), bridged, pair))
            recovered += 1
        return recovered

    def _signed_channel_end(self, name: str) -> ChannelName | None:
        """What a channel doorbell end's name says (network, id, ring size, client, server and the pair's random
        part), when this router's key signed it."""
        parsed = p.parse_channel_end_name(name)
        tag = parsed[4].split(".") if parsed else []
        if parsed is None or len(tag) != 4 or tag[2].lower() not in (CLIENT_END, SERVER_END):
            return None
        channel_id, ring_size, client, server, _ = parsed
        short_network, pair, role, mac = tag
        if not _signed_by(self.name_key, "\0" + name.rsplit(".", 1)[0], mac):
            return None
        network = self._network(short_network)
        if network is None:
            return None
        return network, channel_id, ring_size, client, server, pair, role.isupper()

    def _network(self, short_id: str) -> str | None:
        """The one network of this host's endpoints whose id begins with `short_id` (12 characters)."""
        networks = {e.network_id for e in self.endpoints if len(short_id) == 12 and e.network_id.startswith(short_id)}
        return networks.pop() if len(networks) == 1 else None

    def prune(self, live_sockets: set[int]) -> None:
        """Forget grafts and channels whose sockets (by inode) are all gone."""
        host_tcp = self._host_tcp_count()
        self.grafts[:] = [g for g in self.grafts if live_sockets & set(g.inodes)]
        if self._host_tcp_count() != host_tcp:
            self.host_tcp_version += 1
        self.prune_channels(live_sockets)

    def prune_channels(self, live_sockets: set[int]) -> None:
        """Forget channels whose two ends are both gone, releasing the router's mappings of them."""
        for record in [c for c in self.channels if not live_sockets & set(c.bells)]:
            for ring in record.rings:
                ring.close()
            self.channels.remove(record)

    # Housekeeping.

    def closed(self, conn: Conn) -> list[Reply]:
        """`conn` went away: its listeners end, and a flow it announced or waited in falls back to the overlay
        (a client that gave up before its GRAFT must not keep the server's accept waiting)."""
        for key in [k for k, conns in self.listeners.items() if conn in conns]:
            self.listeners[key].discard(conn)
            if not self.listeners[key]:
                del self.listeners[key]
                self.listeners_version += 1
        for key in [k for k, c in self.channel_listeners.items() if c == conn]:
            del self.channel_listeners[key]
            self.listeners_version += 1
        for flow_key in [k for k, half in self.remote_halves.items() if half.conn == conn]:
            del self.remote_halves[flow_key]
        ended = [f for f in self.flows.values() if conn == f.announcer or conn in f.waiting.values()]
        return self._drop_flows(ended, skip=conn)

    def expire(self, now: float | None = None) -> list[Reply]:
        """Flows past their deadline fall back to the overlay; whoever waits is told so. A remote router's
        connection that no server took is closed (that router then leaves its client on the overlay)."""
        now = time.monotonic() if now is None else now
        replies = self._drop_flows([f for f in self.flows.values() if f.deadline <= now])
        for key in [k for k, half in self.remote_halves.items() if half.deadline <= now]:
            half = self.remote_halves.pop(key)
            if half.sock is not None:
                half.sock.close()
            else:
                self.overlay_decisions += 1
                replies.append(Reply(half.conn, overlay(p.Reason.PEER_GONE)))
        return replies

    def _drop_flows(self, flows: list[Flow], skip: Conn | None = None) -> list[Reply]:
        replies = []
        for flow in flows:
            del self.flows[flow.key]
            self.overlay_decisions += 1
            replies += [Reply(c, overlay(p.Reason.PEER_GONE)) for c in flow.waiting.values() if c != skip]
        return replies

    def next_deadline(self) -> float | None:
        deadlines = [f.deadline for f in self.flows.values()] + [h.deadline for h in self.remote_halves.values()]
        return min(deadlines, default=None)

    def published_listeners(self) -> set[tuple[str, str, int, str]]:
        """(network, ip, port, kind) of every accelerated listener here, for the orchestrator."""
        addresses: dict[str, list[tuple[str, str]]] = {}
        for e in self.endpoints:
            addresses.setdefault(e.sandbox, []).append((e.network_id, e.ip))
        return {(network, ip, port, kind)
                for kind, ports in (("graft", self.listeners), ("channel", self.channel_listeners))
                for sandbox, port in ports for network, ip in addresses.get(sandbox, ())}

    def forget_sandbox(self, sandbox: str) -> None:
        """A container left: nothing of it may be paired any more."""
        for key in [k for k in self.listeners if k[0] == sandbox]:
            del self.listeners[key]
        for key in [k for k in self.channel_listeners if k[0] == sandbox]:
            del self.channel_listeners[key]
        self.listeners_version += 1


def _host_tcp_entry(graft: GraftRecord) -> list[object]:
    return [list(graft.key), graft.client_sandbox, graft.server_sandbox, list(graft.inodes)]


def _mac(key: bytes, text: bytes) -> str:
    """What signs the name of a socket the router made: anyone on the host can bind abstract names like it."""
    return hmac.new(key, text, "sha256").hexdigest()[:16]


def _signed_by(key: bytes, text: str, mac: str) -> bool:
    """Whether `mac` is the signature of `text` as the name that arrived spells it (so that another spelling of
    the same numbers, "07" or "+7", is not taken for the signed one); a name is any text a host user bound."""
    return len(mac) == 16 and mac.isascii() and hmac.compare_digest(mac, _mac(key, text.encode()))


def _name_mac(key: bytes, local: tuple[str, int], peer: tuple[str, int], tag: str) -> str:
    """The signature of a grafted pair end's name."""
    return _mac(key, f"{local[0]}:{local[1]} {peer[0]}:{peer[1]} {tag}".encode())


def _name_channel_end(bell: int, channel_id: int, ring_size: int, client: str, server: tuple[str, int], tag: str,
                      name_key: bytes) -> None:
    """Bind a channel's doorbell end (a descriptor, left open) to its name, signed, for the next router."""
    name = p.channel_end_name(channel_id, ring_size, client, server, tag)
    sock = socket.socket(fileno=bell)
    try:
        sock.bind(p.channel_end_name(channel_id, ring_size, client, server, f"{tag}.{_mac(name_key, name)}"))
    except OSError as exc:  # a tag drawn twice: only a restarted router's status misses the channel
        log.warning("cannot name the doorbell of channel %d: %s", channel_id, exc)
    finally:
        sock.detach()


def _name_ends(client_end: socket.socket, server_end: socket.socket, key: FlowKey, name_key: bytes) -> None:
    """Bind each end of a new pair to the name of the TCP connection it stands for (protocol.graft_end_name),
    by which the library knows a grafted socket that crossed exec and the next router finds the pairs that
    outlived this one. The tag: the network's short id, the end's role, a random number shared by the pair,
    and the router's signature of all that."""
    network, client_ip, client_port, server_ip, server_port = key
    client, server, pair = (client_ip, client_port), (server_ip, server_port), os.urandom(4).hex()
    ends = ((client_end, client, server, CLIENT_END), (server_end, server, client, SERVER_END))
    try:
        for end, local, peer, role in ends:
            tag = f"{network[:12]}.{role}.{pair}"
            end.bind(p.graft_end_name(local, peer, f"{tag}.{_name_mac(name_key, local, peer, tag)}"))
    except OSError as exc:  # a tag drawn twice: only a program that execs with the socket notices
        log.warning("cannot name the socket pair of %s:%d -> %s:%d: %s", *client, *server, exc)


def _size_buffers(client_end: socket.socket, server_end: socket.socket, size: int) -> None:
    """Give each end of a new pair a send buffer of `size` bytes (the kernel doubles it, and caps it at
    net.core.wmem_max, which the operator's limit stays). A unix socket charges each write its whole buffer
    (about 770 bytes for a few bytes of data), where TCP counts the bytes: with the default 208 KiB a program
    that pipelines tiny requests without reading the replies stalls after a few hundred, TCP after thousands."""
    for end in (client_end, server_end):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


def warn_if_capped(graft_buffer: int, wmem_max: Path = Path("/proc/sys/net/core/wmem_max")) -> None:
    """Say once, at start, when net.core.wmem_max keeps grafted pairs below FREEFLOW_GRAFT_BUFFER."""
    try:
        limit = int(wmem_max.read_text())
    except (OSError, ValueError):
        return
    if limit < graft_buffer:
        log.warning("net.core.wmem_max is %d: grafted connections get send buffers of %d bytes, not the %d of "
                    "FREEFLOW_GRAFT_BUFFER; raise it (sysctl) for more tiny writes in flight", limit, limit,
                    graft_buffer)


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino
