"""The router's control protocol on the `@freeflow` socket: every message shape, declared once.

Both the Python client and the C preload library speak it; `c_header()` generates the C declarations
(client/preload/protocol.h) from this table, and a test checks the header is up to date.

Wire format: an 8-byte header {u32 length of the body, u16 magic 0xFF10, u8 version, u8 op}, then a
fixed-size body for that op, all little-endian. Descriptors travel as SCM_RIGHTS with the message that
carries them. Addresses are IPv4 in network byte order (u32 as 4 raw bytes), ports in host order.

How a TCP connection is grafted (connect-then-swap; the kernel connection is always made first, so
either side can fall back to it at any point):
  client: bind to an ephemeral port, INTENT(dst, src_port) -> VERDICT go|overlay.
          On go: connect() for real, then GRAFT(role client) -> GRAFTED + fd, or VERDICT overlay.
  server: LISTEN(port) once per listening socket, the connection kept open while it listens.
          After each accept(): GRAFT(role server) -> GRAFTED + fd, or VERDICT overlay.
  Both sides then write one byte on the new socket and read the peer's byte before using it: if
  either never got its end, the other reads EOF and both stay on the kernel connection.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import struct
from dataclasses import dataclass, fields
from typing import ClassVar

MAGIC = 0xFF10
VERSION = 1
HEADER = struct.Struct("<IHBB")
MAX_BODY = 64
CHANNEL_FDS = 3  # tx ring, rx ring, its end of the doorbell (freeflow.shm.channel.ChannelFds)
MAX_FDS = CHANNEL_FDS
MIN_RING = 4096
MAX_RING = 1 << 30
# The abstract socket name the router binds in every joined container's network namespace.
SOCKET_NAME = b"\0freeflow"
# Each end of a grafted socket pair is bound to an abstract name that says which TCP connection it stands
# for, this end's address first: "freeflow-graft 10.0.0.1:40000 10.0.0.2:7000 <tag>". A program that gets
# the socket across exec (its library's table gone) is recognised by it.
GRAFT_NAME_PREFIX = "freeflow-graft "


def graft_end_name(local: tuple[str, int], peer: tuple[str, int], tag: str) -> bytes:
    """The abstract name of one end of a grafted socket pair (`tag`, without spaces, makes it unique)."""
    return f"\0{GRAFT_NAME_PREFIX}{local[0]}:{local[1]} {peer[0]}:{peer[1]} {tag}".encode()


def _name_fields(name: str, prefix: str, count: int) -> list[str] | None:
    """The `count` space-separated fields after `prefix` in a socket name, else None."""
    parts = name[len(prefix):].split(" ") if name.startswith(prefix) else []
    return parts if len(parts) == count else None


def parse_graft_end_name(name: str) -> tuple[tuple[str, int], tuple[str, int], str] | None:
    """(local, peer, tag) from a name that graft_end_name made (without its leading NUL), else None."""
    parts = _name_fields(name, GRAFT_NAME_PREFIX, 3)
    if parts is None:
        return None
    try:
        addresses = []
        for part in parts[:2]:
            ip, port = part.split(":")
            _port("port", int(port))
            addresses.append((str(ipaddress.IPv4Address(ip)), int(port)))
    except (ValueError, ProtocolError):
        return None
    return addresses[0], addresses[1], parts[2]


# Each end of a channel's doorbell socket pair is bound to an abstract name that says which channel it belongs
# to: "freeflow-channel <id> <ring KiB> <client ip> <server ip:port> <tag>", so that a restarted router
# lists the channels an earlier one made (and counts them against the memory cap). Names hold 107 bytes.
CHANNEL_NAME_PREFIX = "freeflow-channel "


def channel_end_name(channel_id: int, ring_size: int, client: str, server: tuple[str, int], tag: str) -> bytes:
    """The abstract name of one end of a channel's doorbell (`tag`, without spaces, says which end)."""
    return f"\0{CHANNEL_NAME_PREFIX}{channel_id} {ring_size >> 10} {client} {server[0]}:{server[1]} {tag}".encode()


def parse_channel_end_name(name: str) -> tuple[int, int, str, tuple[str, int], str] | None:
    """(channel id, ring size, client ip, server address, tag) from a name that channel_end_name made (without
    its leading NUL), else None."""
    parts = _name_fields(name, CHANNEL_NAME_PREFIX, 5)
    if parts is None:
        return None
    try:
        channel_id, ring_size, server_port = int(parts[0]), int(parts[1]) << 10, int(parts[3].split(":")[-1])
        _port("channel id", channel_id)
        _port("port", server_port)
        _ring_size(ring_size)
        client = str(ipaddress.IPv4Address(parts[2]))
        server_ip, _ = parts[3].split(":")
        server = (str(ipaddress.IPv4Address(server_ip)), server_port)
    except (ValueError, ProtocolError):
        return None
    return channel_id, ring_size, client, server, parts[4]


class ProtocolError(ValueError):
    """A control message is malformed; the connection that sent it is closed."""


class Op:
    INTENT = 1
    GRAFT = 2
    LISTEN = 3
    CHANNEL_LISTEN = 4
    CHANNEL_CONNECT = 5
    VERDICT = 0x81
    GRAFTED = 0x82
    CHANNEL_READY = 0x83
    CHANNEL_OFFER = 0x84


class Verdict:
    OVERLAY = 0
    GO = 1
    REFUSED = 2


class Reason:
    """Why a request was refused or left on the overlay (the VERDICT's `reason`)."""

    NONE = 0
    NO_PEER = 1          # the address is no endpoint of a network the caller is on (or on another host)
    NO_LISTENER = 2      # nothing accelerated listens there
    MEMORY_CAP = 3       # the channel would exceed the container's channel memory cap
    PEER_GONE = 4        # the other side went away before the pairing finished
    BUSY = 5             # the channel listener is not accepting: its queue of offers is full


class Role:
    CLIENT = 1
    SERVER = 2


@dataclass(frozen=True)
class Message:
    """Base of every message: subclasses declare `op`, `layout` (struct format) and fields in that order."""

    op: ClassVar[int]
    layout: ClassVar[struct.Struct]

    def body(self) -> bytes:
        return self.layout.pack(*(_to_wire(getattr(self, f.name)) for f in fields(self)))

    def encode(self) -> bytes:
        payload = self.body()
        return HEADER.pack(len(payload), MAGIC, VERSION, self.op) + payload

    @classmethod
    def decode_body(cls, payload: bytes) -> Message:
        if len(payload) != cls.layout.size:
            raise ProtocolError(f"{cls.__name__} body must be {cls.layout.size} bytes, got {len(payload)}")
        values = cls.layout.unpack(payload)
        message = cls(*(_from_wire(f.type, v) for f, v in zip(fields(cls), values, strict=True)))
        message.validate()
        return message

    def validate(self) -> None:
        """Checks beyond the layout; raise ProtocolError."""


def _to_wire(value: object) -> object:
    return socket.inet_aton(value) if isinstance(value, str) else value


def _from_wire(kind: object, value: object) -> object:
    return socket.inet_ntoa(value) if kind in ("str", str) else value  # type: ignore[arg-type]


def _port(name: str, port: int, allow_zero: bool = False) -> None:
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ProtocolError(f"{name} {port} is not a TCP port")


@dataclass(frozen=True)
class Intent(Message):
    """Client, before connecting: may (dst_ip, dst_port) from my src_port be grafted?"""

    op: ClassVar[int] = Op.INTENT
    layout: ClassVar[struct.Struct] = struct.Struct("<4sHH")
    dst_ip: str
    dst_port: int
    src_port: int

    def validate(self) -> None:
        _port("dst_port", self.dst_port)
        _port("src_port", self.src_port)


@dataclass(frozen=True)
class Graft(Message):
    """Either side, once the kernel connection exists: hand me my end of the socket pair."""

    op: ClassVar[int] = Op.GRAFT
    layout: ClassVar[struct.Struct] = struct.Struct("<B3x4sHH")
    role: int
    peer_ip: str
    peer_port: int
    local_port: int

    def validate(self) -> None:
        if self.role not in (Role.CLIENT, Role.SERVER):
            raise ProtocolError(f"role {self.role} is neither client (1) nor server (2)")
        _port("peer_port", self.peer_port)
        _port("local_port", self.local_port)


@dataclass(frozen=True)
class Listen(Message):
    """Server: a socket listens on `port`; the connection stays open as long as it does."""

    op: ClassVar[int] = Op.LISTEN
    layout: ClassVar[struct.Struct] = struct.Struct("<HH")
    port: int
    backlog: int

    def validate(self) -> None:
        _port("port", self.port)


@dataclass(frozen=True)
class ChannelListen(Message):
    """Server: accept shared-memory channels on `port`; offers arrive on this connection while it is open."""

    op: ClassVar[int] = Op.CHANNEL_LISTEN
    layout: ClassVar[struct.Struct] = struct.Struct("<HH")
    port: int
    reserved: int

    def validate(self) -> None:
        _port("port", self.port)


def _ring_size(size: int) -> None:
    if size & (size - 1) or not MIN_RING <= size <= MAX_RING:
        raise ProtocolError(f"ring_size {size} is not a power of two between {MIN_RING} and {MAX_RING}")


@dataclass(frozen=True)
class ChannelConnect(Message):
    """Client: a channel to the channel listener at (dst_ip, dst_port), each ring `ring_size` bytes."""

    op: ClassVar[int] = Op.CHANNEL_CONNECT
    layout: ClassVar[struct.Struct] = struct.Struct("<4sHHI")
    dst_ip: str
    dst_port: int
    reserved: int
    ring_size: int

    def validate(self) -> None:
        _port("dst_port", self.dst_port)
        _ring_size(self.ring_size)


@dataclass(frozen=True)
class VerdictReply(Message):
    """The router's answer: go / overlay / refused, with an errno-style reason code."""

    op: ClassVar[int] = Op.VERDICT
    layout: ClassVar[struct.Struct] = struct.Struct("<BBH")
    verdict: int
    reserved: int
    reason: int

    def validate(self) -> None:
        if self.verdict not in (Verdict.OVERLAY, Verdict.GO, Verdict.REFUSED):
            raise ProtocolError(f"verdict {self.verdict} is unknown")


@dataclass(frozen=True)
class GraftedReply(Message):
    """The router's answer to GRAFT: the new socket comes as SCM_RIGHTS with this message."""

    op: ClassVar[int] = Op.GRAFTED
    layout: ClassVar[struct.Struct] = struct.Struct("<4sH2x")
    peer_ip: str
    peer_port: int


@dataclass(frozen=True)
class ChannelReady(Message):
    """To the client: its side of the channel, CHANNEL_FDS descriptors with this message."""

    op: ClassVar[int] = Op.CHANNEL_READY
    layout: ClassVar[struct.Struct] = struct.Struct("<4sHHI")
    peer_ip: str
    peer_port: int
    channel_id: int
    ring_size: int


@dataclass(frozen=True)
class ChannelOffer(Message):
    """To a channel listener: the server's side of a new channel, CHANNEL_FDS descriptors with it."""

    op: ClassVar[int] = Op.CHANNEL_OFFER
    layout: ClassVar[struct.Struct] = struct.Struct("<4sHHI")
    peer_ip: str
    peer_port: int
    channel_id: int
    ring_size: int


REQUESTS: dict[int, type[Message]] = {m.op: m for m in (Intent, Graft, Listen, ChannelListen, ChannelConnect)}
REPLIES: dict[int, type[Message]] = {m.op: m for m in (VerdictReply, GraftedReply, ChannelReady, ChannelOffer)}


def parse_header(header: bytes, known: dict[int, type[Message]]) -> tuple[type[Message], int]:
    """The message class and body length announced by an 8-byte header."""
    length, magic, version, op = HEADER.unpack(header)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic 0x{magic:04x}")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version} is not supported (this side speaks {VERSION})")
    kind = known.get(op)
    if kind is None:
        raise ProtocolError(f"unknown op {op}")
    if length != kind.layout.size:
        raise ProtocolError(f"{kind.__name__} body must be {kind.layout.size} bytes, not {length}")
    return kind, length


def c_header() -> str:
    """The C declarations of this protocol, for client/preload/protocol.h."""
    c_types = {"I": "uint32_t", "H": "uint16_t", "B": "uint8_t"}
    lines = [
        "/* Generated by `freeflow protocol-header` from router/protocol.py: do not edit. */",
        "#ifndef FREEFLOW_PROTOCOL_H", "#define FREEFLOW_PROTOCOL_H", "#include <stdint.h>", "",
        f"#define FF_MAGIC 0x{MAGIC:04X}", f"#define FF_VERSION {VERSION}",
        f'#define FF_SOCKET_NAME "{SOCKET_NAME[1:].decode()}"  /* abstract: a leading NUL */',
        f'#define FF_GRAFT_NAME_PREFIX "{GRAFT_NAME_PREFIX}"  /* abstract: then "LOCAL_IP:PORT PEER_IP:PORT TAG" */',
        "",
    ]
    for group in (Op, Verdict, Reason, Role):
        for name, value in vars(group).items():
            if not name.startswith("_"):
                lines.append(f"#define FF_{group.__name__.upper()}_{name} {value}")
        lines.append("")
    lines += ["struct ff_header {", "    uint32_t length;", "    uint16_t magic;", "    uint8_t version;",
              "    uint8_t op;", "} __attribute__((packed));", ""]
    for kind in (*REQUESTS.values(), *REPLIES.values()):
        lines.append(f"struct ff_{kind.__name__.lower()} {{  /* op {kind.op}, {kind.layout.size} bytes */")
        names = iter(f.name for f in fields(kind))
        pad = 0
        for count, code in re.findall(r"(\d*)([a-zA-Z])", kind.layout.format):
            if code == "x":
                for _ in range(int(count or 1)):
                    lines.append(f"    uint8_t pad{pad};")
                    pad += 1
            elif code == "s":
                lines.append(f"    uint8_t {next(names)}[{count}];  /* IPv4, network order */")
            else:
                lines.append(f"    {c_types[code]} {next(names)};")
        lines.append("} __attribute__((packed));")
        lines.append("")
    lines.append("#endif")
    return "\n".join(lines) + "\n"
