"""Pairs the two ends of a TCP connection and decides its path: grafted socket pair or the overlay.

Pure logic, free of sockets except the socket pair it creates: the server loop feeds it the caller's
identity (the sandbox its control socket lives in) and decoded messages, and sends the replies it returns.
Only endpoints of one freeflow network are ever paired.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import socket
import time
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from freeflow.router import protocol as p
from freeflow.shm.channel import channel_fds
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


@dataclass
class Reply:
    """A message for one control connection; the descriptors are the broker's and closed once sent."""

    conn: Conn
    message: p.Message
    fds: list[int] = field(default_factory=list)


@dataclass
class Flow:
    """A connection announced by INTENT, waiting for GRAFT from both ends."""

    key: FlowKey
    client_sandbox: str
    server_sandbox: str
    deadline: float
    waiting: dict[int, Conn] = field(default_factory=dict)  # role -> control connection


@dataclass
class GraftRecord:
    """A grafted connection, for `freeflow status`."""

    key: FlowKey
    client_sandbox: str
    server_sandbox: str
    inodes: tuple[int, int]
    created: float


@dataclass
class ChannelRecord:
    """A shared-memory channel the router introduced, for the memory cap and `freeflow status`."""

    channel_id: int
    client_sandbox: str
    server_sandbox: str
    client: str
    server: str
    ring_size: int
    lifelines: tuple[int, int]
    rings: list[Ring]
    created: float

    @property
    def memory(self) -> int:
        return 2 * self.ring_size

    def bytes_moved(self) -> int:
        return sum(ring.total_written for ring in self.rings)


def overlay(reason: int) -> p.VerdictReply:
    return p.VerdictReply(p.Verdict.OVERLAY, 0, reason)


GO = p.VerdictReply(p.Verdict.GO, 0, p.Reason.NONE)


class Broker:
    def __init__(self, graft_wait: float = 0.5, intent_ttl: float = 5.0,
                 channel_memory: int = 256 << 20) -> None:
        self.graft_wait = graft_wait
        self.intent_ttl = intent_ttl
        self.channel_memory = channel_memory
        self.channel_listeners: dict[tuple[str, int], Conn] = {}
        self.channels: list[ChannelRecord] = []
        self._channel_ids = itertools.count(1)
        self.endpoints: list[Endpoint] = []
        self.listeners: dict[tuple[str, int], set[Conn]] = {}
        self.flows: dict[FlowKey, Flow] = {}
        self.grafts: list[GraftRecord] = []
        self.overlay_decisions = 0

    def set_endpoints(self, endpoints: Iterable[Endpoint]) -> None:
        self.endpoints = list(endpoints)

    def _peer(self, sandbox: str, peer_ip: str) -> tuple[Endpoint, Endpoint] | None:
        """(caller's endpoint, peer's endpoint) on a network both share, the peer being `peer_ip`."""
        for mine in self.endpoints:
            if mine.sandbox != sandbox:
                continue
            for other in self.endpoints:
                if other.network_id == mine.network_id and other.ip == peer_ip and other.sandbox:
                    return mine, other
        return None

    # Requests.

    def intent(self, conn: Conn, sandbox: str, msg: p.Intent, now: float | None = None) -> list[Reply]:
        now = time.monotonic() if now is None else now
        pair = self._peer(sandbox, msg.dst_ip)
        if pair is None or not self.listeners.get((pair[1].sandbox, msg.dst_port)):
            self.overlay_decisions += 1
            return [Reply(conn, overlay(p.Reason.NO_PEER if pair is None else p.Reason.NO_LISTENER))]
        mine, server = pair
        key = (mine.network_id, mine.ip, msg.src_port, server.ip, msg.dst_port)
        self.flows[key] = Flow(key, sandbox, server.sandbox, now + self.intent_ttl)
        return [Reply(conn, GO)]

    def listen(self, conn: Conn, sandbox: str, msg: p.Listen) -> list[Reply]:
        self.listeners.setdefault((sandbox, msg.port), set()).add(conn)
        log.debug("listener on port %d in %s", msg.port, sandbox)
        return [Reply(conn, GO)]

    def graft(self, conn: Conn, sandbox: str, msg: p.Graft, now: float | None = None) -> list[Reply]:
        now = time.monotonic() if now is None else now
        pair = self._peer(sandbox, msg.peer_ip)
        if pair is None:
            return [Reply(conn, overlay(p.Reason.NO_PEER))]
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
        self.grafts.append(GraftRecord(key, flow.client_sandbox, flow.server_sandbox,
                                       (_inode(client_end), _inode(server_end)), time.time()))
        _, client_ip, client_port, server_ip, server_port = key
        log.info("grafted %s:%d -> %s:%d on network %s", client_ip, client_port, server_ip, server_port, key[0][:12])
        return [
            Reply(flow.waiting[p.Role.CLIENT], p.GraftedReply(server_ip, server_port), [client_end.detach()]),
            Reply(flow.waiting[p.Role.SERVER], p.GraftedReply(client_ip, client_port), [server_end.detach()]),
        ]

    def channel_listen(self, conn: Conn, sandbox: str, msg: p.ChannelListen) -> list[Reply]:
        self.channel_listeners[(sandbox, msg.port)] = conn
        return [Reply(conn, GO)]

    def channel_connect(self, conn: Conn, sandbox: str, msg: p.ChannelConnect,
                        live_sockets: set[int]) -> list[Reply]:
        """Make a channel to a channel listener of the same network; `live_sockets` are the inodes of the
        host's open unix sockets, which tell which earlier channels still count against the memory cap."""
        pair = self._peer(sandbox, msg.dst_ip)
        listener = pair and self.channel_listeners.get((pair[1].sandbox, msg.dst_port))
        if pair is None or listener is None:
            return [Reply(conn, overlay(p.Reason.NO_PEER if pair is None else p.Reason.NO_LISTENER))]
        mine, server = pair
        self.prune_channels(live_sockets)
        for who in {sandbox, server.sandbox}:
            used = sum(c.memory for c in self.channels if who in (c.client_sandbox, c.server_sandbox))
            if used + 2 * msg.ring_size > self.channel_memory:
                log.warning("channel %s -> %s:%d refused: %s would use %d of its %d bytes of channel memory",
                            mine.ip, msg.dst_ip, msg.dst_port, who, used + 2 * msg.ring_size, self.channel_memory)
                return [Reply(conn, p.VerdictReply(p.Verdict.REFUSED, 0, p.Reason.MEMORY_CAP))]
        client_fds, server_fds = channel_fds(msg.ring_size)
        channel_id = next(self._channel_ids) & 0xFFFF
        self.channels.append(ChannelRecord(
            channel_id, sandbox, server.sandbox, mine.ip, f"{server.ip}:{msg.dst_port}", msg.ring_size,
            (os.fstat(client_fds.lifeline).st_ino, os.fstat(server_fds.lifeline).st_ino),
            [Ring.attach(client_fds.tx), Ring.attach(server_fds.tx)], time.time()))
        log.info("channel %d: %s -> %s:%d, rings of %d bytes", channel_id, mine.ip, server.ip, msg.dst_port,
                 msg.ring_size)
        return [
            Reply(conn, p.ChannelReady(server.ip, msg.dst_port, channel_id, msg.ring_size),
                  list(dataclasses.astuple(client_fds))),
            Reply(listener, p.ChannelOffer(mine.ip, 0, channel_id, msg.ring_size),
                  list(dataclasses.astuple(server_fds))),
        ]

    def prune_channels(self, live_sockets: set[int]) -> None:
        """Forget channels whose two ends are both gone, releasing the router's mappings of them."""
        for record in [c for c in self.channels if not live_sockets & set(c.lifelines)]:
            for ring in record.rings:
                ring.close()
            self.channels.remove(record)

    # Housekeeping.

    def closed(self, conn: Conn) -> list[Reply]:
        """`conn` went away: its listeners end, and a flow it waited in falls back to the overlay."""
        for key in [k for k, conns in self.listeners.items() if conn in conns]:
            self.listeners[key].discard(conn)
            if not self.listeners[key]:
                del self.listeners[key]
        for key in [k for k, c in self.channel_listeners.items() if c == conn]:
            del self.channel_listeners[key]
        return self._drop_flows([f for f in self.flows.values() if conn in f.waiting.values()], skip=conn)

    def expire(self, now: float | None = None) -> list[Reply]:
        """Flows past their deadline fall back to the overlay; whoever waits is told so."""
        now = time.monotonic() if now is None else now
        return self._drop_flows([f for f in self.flows.values() if f.deadline <= now])

    def _drop_flows(self, flows: list[Flow], skip: Conn | None = None) -> list[Reply]:
        replies = []
        for flow in flows:
            del self.flows[flow.key]
            self.overlay_decisions += 1
            replies += [Reply(c, overlay(p.Reason.PEER_GONE)) for c in flow.waiting.values() if c != skip]
        return replies

    def next_deadline(self) -> float | None:
        return min((f.deadline for f in self.flows.values()), default=None)

    def forget_sandbox(self, sandbox: str) -> None:
        """A container left: nothing of it may be paired any more."""
        for key in [k for k in self.listeners if k[0] == sandbox]:
            del self.listeners[key]
        for key in [k for k in self.channel_listeners if k[0] == sandbox]:
            del self.channel_listeners[key]


def _inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino
