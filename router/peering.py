"""What one router sends another over a host TCP connection to hand it one end of a cross-host connection.

The client's router dials the server host's router (FREEFLOW_GRAFT_PORT) and sends a PREAMBLE: which flow of
which network (a grafted TCP connection or a shared-memory channel), signed with the cluster's token. The
server's router answers one byte, ACCEPTED, once its container took its end, or closes. After that the TCP
connection carries the application's bytes and nothing else: it is the grafted socket, or the channel's
bridge. Without the token nobody can make a router hand a container a connection.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
from dataclasses import dataclass

from freeflow.router.protocol import MAX_RING, MIN_RING, ProtocolError

MAGIC = 0xFF11
VERSION = 1
ACCEPTED = b"\x01"
_BODY = struct.Struct("<HBB64s4sH4sHI")  # magic, version, kind, network, client ip/port, server ip/port, ring
_MAC = hashlib.sha256().digest_size
SIZE = _BODY.size + _MAC


class Kind:
    GRAFT = 1
    CHANNEL = 2
    CHANNEL_RDMA = 3  # a channel whose bridges try RDMA first (both hosts advertise a device)
    CHANNELS = (CHANNEL, CHANNEL_RDMA)


@dataclass(frozen=True)
class Preamble:
    """One flow between a client container on the dialling host and a server container on the other."""

    kind: int
    network_id: str
    client_ip: str
    client_port: int
    server_ip: str
    server_port: int
    ring_size: int = 0  # channels: the size of each ring

    @property
    def key(self) -> tuple[str, str, int, str, int]:
        """The broker's flow key: (network, client ip, client port, server ip, server port)."""
        return (self.network_id, self.client_ip, self.client_port, self.server_ip, self.server_port)

    def encode(self, token: str) -> bytes:
        body = _BODY.pack(MAGIC, VERSION, self.kind, self.network_id.encode(), socket.inet_aton(self.client_ip),
                          self.client_port, socket.inet_aton(self.server_ip), self.server_port, self.ring_size)
        return body + _sign(token, body)

    @classmethod
    def decode(cls, data: bytes, token: str) -> Preamble:
        """Check the signature first, then every field; raise ProtocolError naming what is wrong."""
        if len(data) != SIZE:
            raise ProtocolError(f"a preamble is {SIZE} bytes, not {len(data)}")
        body, mac = data[:_BODY.size], data[_BODY.size:]
        if not hmac.compare_digest(mac, _sign(token, body)):
            raise ProtocolError("the preamble is not signed with this cluster's token")
        magic, version, kind, network, client_ip, client_port, server_ip, server_port, ring = _BODY.unpack(body)
        if magic != MAGIC or version != VERSION:
            raise ProtocolError(f"preamble magic 0x{magic:04x} version {version} is not 0x{MAGIC:04x} {VERSION}")
        if kind not in (Kind.GRAFT, *Kind.CHANNELS):
            raise ProtocolError(f"preamble kind {kind} is none of graft (1), channel (2), RDMA channel (3)")
        try:
            network_id = network.rstrip(b"\0").decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError("the preamble's network ID is not ASCII") from None
        if not network_id.isalnum():
            raise ProtocolError(f"the preamble's network ID {network_id!r} is not a Docker ID")
        if not (client_port and server_port):
            raise ProtocolError("a preamble port is 0")
        if kind in Kind.CHANNELS and (ring & (ring - 1) or not MIN_RING <= ring <= MAX_RING):
            raise ProtocolError(f"ring size {ring} is not a power of two between {MIN_RING} and {MAX_RING}")
        return cls(kind, network_id, socket.inet_ntoa(client_ip), client_port, socket.inet_ntoa(server_ip),
                   server_port, ring)


def _sign(token: str, body: bytes) -> bytes:
    return hmac.new(token.encode(), body, hashlib.sha256).digest()
