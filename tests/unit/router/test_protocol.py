"""The router's control protocol: each malformed message is refused with a ProtocolError saying what is wrong
(the router closes that one connection with it in its log); well-formed ones decode to what was encoded."""

from __future__ import annotations

import re
import struct

import pytest

from freeflow.router import peering
from freeflow.router import protocol as p
from freeflow.router.protocol import ProtocolError


def header(op: int, length: int, magic: int = p.MAGIC, version: int = p.VERSION) -> bytes:
    return p.HEADER.pack(length, magic, version, op)


@pytest.mark.parametrize("message", [
    p.Intent("10.0.0.2", 80, 40000),
    p.Graft(p.Role.SERVER, "10.0.0.1", 40000, 80),
    p.Listen(7000, 128),
    p.ChannelListen(7000, 0),
    p.ChannelConnect("10.0.0.2", 7000, 0, 1 << 20),
])
def test_a_request_decodes_to_what_was_encoded(message: p.Message) -> None:
    wire = message.encode()
    kind, length = p.parse_header(wire[:p.HEADER.size], p.REQUESTS)
    assert kind is type(message) and length == len(wire) - p.HEADER.size
    assert kind.decode_body(wire[p.HEADER.size:]) == message


@pytest.mark.parametrize(("wire", "said"), [
    (header(p.Op.INTENT, 8, magic=0x1234), "bad magic 0x1234"),
    (header(p.Op.INTENT, 8, version=p.VERSION + 1), f"protocol version {p.VERSION + 1} is not supported"),
    (header(250, 8), "unknown op 250"),
    (header(p.Op.VERDICT, 4), f"unknown op {p.Op.VERDICT}"),  # a reply is no request
    (header(p.Op.INTENT, 9), "Intent body must be 8 bytes, not 9"),
])
def test_a_bad_header_says_what_is_wrong(wire: bytes, said: str) -> None:
    with pytest.raises(p.ProtocolError, match=said):
        p.parse_header(wire, p.REQUESTS)


@pytest.mark.parametrize(("kind", "body", "said"), [
    (p.Intent, struct.pack("<4sHH", bytes(4), 0, 40000), "dst_port 0 is not a TCP port"),
    (p.Intent, struct.pack("<4sHH", bytes(4), 80, 0), "src_port 0 is not a TCP port"),
    (p.Graft, struct.pack("<B3x4sHH", 3, bytes(4), 80, 40000), "role 3 is neither client"),
    (p.Graft, struct.pack("<B3x4sHH", 1, bytes(4), 0, 40000), "peer_port 0 is not a TCP port"),
    (p.Listen, struct.pack("<HH", 0, 16), "port 0 is not a TCP port"),
    (p.ChannelListen, struct.pack("<HH", 0, 0), "port 0 is not a TCP port"),
    (p.ChannelConnect, struct.pack("<4sHHI", bytes(4), 7000, 0, 3000), "ring_size 3000 is not a power of two"),
    (p.ChannelConnect, struct.pack("<4sHHI", bytes(4), 7000, 0, p.MAX_RING * 2), "is not a power of two between"),
    (p.ChannelConnect, struct.pack("<4sHHI", bytes(4), 7000, 0, p.MIN_RING // 2), "is not a power of two between"),
    (p.VerdictReply, struct.pack("<BBH", 9, 0, 0), "verdict 9 is unknown"),
    (p.Intent, bytes(7), "Intent body must be 8 bytes, got 7"),
])
def test_a_bad_body_says_what_is_wrong(kind: type[p.Message], body: bytes, said: str) -> None:
    with pytest.raises(p.ProtocolError, match=said):
        kind.decode_body(body)


TOKEN = "cluster-token"
NET = "k3v7m0z9q2w4e6r8t1y5u3i0o"


def signed(magic: int = peering.MAGIC, version: int = peering.VERSION, kind: int = peering.Kind.CHANNEL,
           network: bytes = NET.encode(), client_port: int = 40000, server_port: int = 7000,
           ring: int = 1 << 20) -> bytes:
    """A preamble signed with the cluster's token, whatever its fields say."""
    body = peering._BODY.pack(magic, version, kind, network, bytes([10, 0, 0, 1]), client_port,
                              bytes([10, 0, 0, 2]), server_port, ring)
    return body + peering._sign(TOKEN, body)


def test_a_preamble_decodes_to_what_was_encoded() -> None:
    preamble = peering.Preamble(peering.Kind.CHANNEL, NET, "10.0.0.1", 40000, "10.0.0.2", 7000, 1 << 20)
    assert peering.Preamble.decode(preamble.encode(TOKEN), TOKEN) == preamble
    assert peering.Preamble.decode(signed(), TOKEN) == preamble, "the test's own signing is the same"


@pytest.mark.parametrize(("data", "said"), [
    (signed()[:-1], f"a preamble is {peering.SIZE} bytes, not {peering.SIZE - 1}"),
    (signed(magic=0x1234), "preamble magic 0x1234 version 1 is not 0xff11 1"),
    (signed(version=2), "version 2 is not"),
    (signed(kind=9), "preamble kind 9 is none of graft"),
    (signed(network=b"\xff" * 12), "network ID is not ASCII"),
    (signed(network=b"net/../x"), "network ID 'net/../x' is not a Docker ID"),
    (signed(client_port=0), "a preamble port is 0"),
    (signed(server_port=0), "a preamble port is 0"),
    (signed(ring=3000), "ring size 3000 is not a power of two"),
    (signed(ring=p.MIN_RING // 2), "is not a power of two between"),
])
def test_a_signed_preamble_with_a_bad_field_says_which(data: bytes, said: str) -> None:
    """The signature only says who sent it: a router of the cluster can still send nonsense (another
    version, a bug), and every field is checked."""
    with pytest.raises(ProtocolError, match=re.escape(said)):
        peering.Preamble.decode(data, TOKEN)


def test_a_grafts_preamble_needs_no_ring_size() -> None:
    assert peering.Preamble.decode(signed(kind=peering.Kind.GRAFT, ring=0), TOKEN).ring_size == 0
