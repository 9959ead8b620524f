"""The broker's pairing decisions: a container is who its control socket says, never who its message says."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from freeflow.router import broker as broker_module
from freeflow.router import protocol as p
from freeflow.router.broker import Bridge, Broker, Endpoint, Offer, Reply, _name_mac
from freeflow.router.peering import Kind, Preamble
from freeflow.router.status import named_unix_sockets
from freeflow.shm.ring import Ring

NET, OTHER_NET = "n1" * 6, "n2" * 6
CLIENT = Endpoint("ea", NET, "10.0.0.1", "/netns/a")
SERVER = Endpoint("eb", NET, "10.0.0.2", "/netns/b")
NEIGHBOUR = Endpoint("ec", NET, "10.0.0.3", "/netns/c")
ELSEWHERE = Endpoint("ed", OTHER_NET, "10.0.0.2", "/netns/d")  # B's address, on another network
CLIENT_PORT, SERVER_PORT = 40000, 7000


def pending_flow() -> Broker:
    """A's connection to B:7000 announced, B listening: both now ask for their ends."""
    broker = Broker()
    broker.set_endpoints([CLIENT, SERVER, NEIGHBOUR, ELSEWHERE])
    broker.listen("b-listener", SERVER.sandbox, p.Listen(SERVER_PORT, 16))
    [go] = broker.intent("a", CLIENT.sandbox, p.Intent(SERVER.ip, SERVER_PORT, CLIENT_PORT))
    assert go.message.verdict == p.Verdict.GO
    return broker


def close_fds(actions: list) -> None:
    for action in actions:
        replies = [action.offer, *action.ready, *action.refused] if isinstance(action, Offer) else [action]
        for fd in (fd for reply in replies for fd in getattr(reply, "fds", [])):
            os.close(fd)


def _address(text: str) -> tuple[str, int]:
    ip, port = text.split(":")
    return ip, int(port)


def assert_overlay_without_a_socket(actions: list, conn: str) -> None:
    assert [(a.conn, type(a.message), a.fds) for a in actions] == [(conn, p.VerdictReply, [])]
    assert actions[0].message.verdict == p.Verdict.OVERLAY


def test_the_two_real_ends_get_the_two_ends_of_one_pair():
    broker = pending_flow()
    assert broker.graft("b", SERVER.sandbox, p.Graft(p.Role.SERVER, CLIENT.ip, CLIENT_PORT, SERVER_PORT)) == []
    actions = broker.graft("a", CLIENT.sandbox, p.Graft(p.Role.CLIENT, SERVER.ip, SERVER_PORT, CLIENT_PORT))
    try:
        assert sorted(a.conn for a in actions) == ["a", "b"]
        assert all(isinstance(a, Reply) and len(a.fds) == 1 for a in actions)
    finally:
        close_fds(actions)


def test_each_end_is_named_after_the_tcp_connection_it_stands_for():
    """The library recognises a grafted socket that crossed exec by its name: this end's address first."""
    broker = pending_flow()
    broker.graft("b", SERVER.sandbox, p.Graft(p.Role.SERVER, CLIENT.ip, CLIENT_PORT, SERVER_PORT))
    actions = broker.graft("a", CLIENT.sandbox, p.Graft(p.Role.CLIENT, SERVER.ip, SERVER_PORT, CLIENT_PORT))
    ends = {a.conn: socket.socket(fileno=a.fds[0]) for a in actions}
    with ends["a"], ends["b"]:
        names = {conn: end.getsockname().decode().split() for conn, end in ends.items()}
    client, server = f"{CLIENT.ip}:{CLIENT_PORT}", f"{SERVER.ip}:{SERVER_PORT}"
    assert names["a"][:3] == ["\0freeflow-graft", client, server]
    assert names["b"][:3] == ["\0freeflow-graft", server, client]
    (net_a, role_a, pair_a, mac_a), (net_b, role_b, pair_b, mac_b) = (names[c][3].split(".") for c in "ab")
    assert (net_a, role_a, role_b) == (NET[:12], "c", "s") and net_b == net_a and pair_b == pair_a
    assert len(mac_a) == len(mac_b) == 16 and mac_a != mac_b, "each end's name is signed"
    assert len(names["a"]) == len(names["b"]) == 4


def tiny_writes_in_flight(end: socket.socket) -> int:
    """How many 11-byte writes `end` takes before it would block, its peer reading nothing."""
    end.setblocking(False)
    count = 0
    with pytest.raises(BlockingIOError):
        while count < 100_000:
            end.send(b"GET key:42\n")
            count += 1
    return count


@pytest.mark.parametrize("size", [1 << 20, 4 << 20])
def test_the_ends_take_as_many_tiny_writes_as_their_buffer_allows(size: int):
    """A unix socket charges each write its whole buffer: with the default send buffer a few hundred tiny
    requests fill it, so a program pipelining them without reading the replies stalls far sooner than on TCP.
    (Where net.core.wmem_max is the default 208 KiB, the pair gets no more than that.)"""
    broker = pending_flow()
    broker.graft_buffer = size
    broker.graft("b", SERVER.sandbox, p.Graft(p.Role.SERVER, CLIENT.ip, CLIENT_PORT, SERVER_PORT))
    actions = broker.graft("a", CLIENT.sandbox, p.Graft(p.Role.CLIENT, SERVER.ip, SERVER_PORT, CLIENT_PORT))
    ends = {a.conn: socket.socket(fileno=a.fds[0]) for a in actions}
    default_a, default_b = socket.socketpair()
    with ends["a"], ends["b"], default_a, default_b:
        granted = min(size, int(Path("/proc/sys/net/core/wmem_max").read_text()))  # the operator's limit holds
        assert [end.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) for end in ends.values()] == [2 * granted] * 2
        default = tiny_writes_in_flight(default_a)
        assert tiny_writes_in_flight(ends["a"]) > default * granted // (256 << 10)
        assert tiny_writes_in_flight(ends["b"]) > default * granted // (256 << 10)


@pytest.mark.parametrize(("limit", "warned"), [("1048576\n", True), ("4194304\n", False), ("8388608\n", False),
                                               ("", False)])
def test_the_router_says_when_wmem_max_caps_the_graft_buffer(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                              limit: str, warned: bool) -> None:
    """Only a net.core.wmem_max below FREEFLOW_GRAFT_BUFFER is worth a warning; one that cannot be read is not."""
    sysctl = tmp_path / "wmem_max"
    sysctl.write_text(limit)
    with caplog.at_level(logging.WARNING, logger=broker_module.__name__):
        broker_module.warn_if_capped(4 << 20, sysctl)
    said = [record.getMessage() for record in caplog.records]
    assert said == (["net.core.wmem_max is 1048576: grafted connections get send buffers of 1048576 bytes, not "
                     "the 4194304 of FREEFLOW_GRAFT_BUFFER; raise it (sysctl) for more tiny writes in flight"]
                    if warned else [])


def test_the_router_starts_when_wmem_max_cannot_be_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=broker_module.__name__):
        broker_module.warn_if_capped(4 << 20, tmp_path / "missing")
    assert caplog.records == []


def named_ends(ends: list[socket.socket]) -> list[tuple[int, str]]:
    """This host's named unix sockets that are `ends` (the tests' own, whatever else runs on the host)."""
    mine = {os.fstat(end.fileno()).st_ino for end in ends if end.fileno() >= 0}
    return [(inode, name) for inode, name in named_unix_sockets() if inode in mine]


def successor_of(broker: Broker, endpoints: list[Endpoint] | None = None) -> Broker:
    """The broker of the next router: the same key, the same endpoints."""
    successor = Broker(name_key=broker.name_key)
    successor.set_endpoints(endpoints or [CLIENT, SERVER, NEIGHBOUR, ELSEWHERE])
    return successor


def test_a_new_broker_recovers_the_open_pairs_of_the_last_one_from_their_names():
    """After a router restart, `freeflow status` still lists grafted connections that are open."""
    broker = pending_flow()
    broker.graft("b", SERVER.sandbox, p.Graft(p.Role.SERVER, CLIENT.ip, CLIENT_PORT, SERVER_PORT))
    actions = broker.graft("a", CLIENT.sandbox, p.Graft(p.Role.CLIENT, SERVER.ip, SERVER_PORT, CLIENT_PORT))
    ends = [socket.socket(fileno=a.fds[0]) for a in actions]
    try:
        successor = successor_of(broker)
        assert successor.recover_grafts(named_ends(ends)) == 1
        [record] = successor.grafts
        assert record.key == (NET, CLIENT.ip, CLIENT_PORT, SERVER.ip, SERVER_PORT)
        assert (record.client_sandbox, record.server_sandbox) == (CLIENT.sandbox, SERVER.sandbox)
        assert sorted(record.inodes) == sorted(os.fstat(end.fileno()).st_ino for end in ends)
        assert successor.recover_grafts(named_ends(ends)) == 0, "a pair already known is not added twice"
        assert Broker(name_key=b"another router" * 3).recover_grafts(named_ends(ends)) == 0, "not signed by it"
        assert successor_of(broker, [CLIENT]).recover_grafts(named_ends(ends)) == 0, "the server left"
        ends[0].close()  # the client end closed, the server's still open: still a connection to list
        third = successor_of(broker)
        assert third.recover_grafts(named_ends(ends)) == 1
        assert third.grafts[0].key == record.key and len(third.grafts[0].inodes) == 1
    finally:
        for end in ends:
            end.close()


def test_names_anyone_could_bind_are_not_taken_for_pair_ends():
    """Any process on the host can bind abstract names: only what this router signed, for a network and
    addresses it knows, is a pair end."""
    broker = Broker()
    broker.set_endpoints([CLIENT, SERVER])

    def name(local: str, peer: str, tag: str, sign: bool = True) -> str:
        return f"freeflow-graft {local} {peer} {tag}" + (
            "." + _name_mac(broker.name_key, _address(local), _address(peer), tag) if sign else "")

    client, server = f"{CLIENT.ip}:{CLIENT_PORT}", f"{SERVER.ip}:{SERVER_PORT}"
    good = name(client, server, f"{NET[:12]}.c.ab")
    assert broker.recover_grafts([(1, good)]) == 1, "the control case"
    broker.grafts.clear()
    forged = [
        name(client, server, f"{NET[:12]}.c.ab", sign=False) + ".0123456789abcdef",  # not signed
        good[:-1] + ("0" if good[-1] != "0" else "1"),  # the signature altered
        name(client, "10.0.0.9:7000", f"{NET[:12]}.c.ab"),  # the peer is no endpoint of the network
        name(client, server, f"{NET[:2]}.c.ab"),  # a short network prefix matches too much
        name(client, server, "ffffffffffff.c.ab"),  # an unknown network
        name(client, server, f"{NET[:12]}.x.ab"),  # neither client nor server
        name(client, server, f"{NET[:12]}.c"),  # a tag without its parts
        good[:-16] + "\ufffd" * 16,  # a signature that is not ASCII (a name that was not UTF-8)
        good.replace(f":{SERVER_PORT}", f":0{SERVER_PORT}"),  # another spelling of the port under its signature
        "freeflow-graft",
        "freeflow",
    ]
    assert broker.recover_grafts(enumerate(forged, start=10)) == 0
    assert broker.grafts == []


def test_a_client_that_gives_up_before_its_graft_does_not_keep_the_server_waiting():
    """A non-blocking client whose budget ran out closes its control connection after INTENT: the server's
    GRAFT, when its accept comes, is told "overlay" at once instead of waiting for a client that is gone."""
    broker = pending_flow()
    assert broker.closed("someone-else") == [] and len(broker.flows) == 1, "another connection ends nothing"
    assert broker.closed("a") == []
    assert broker.flows == {}
    claim = p.Graft(p.Role.SERVER, CLIENT.ip, CLIENT_PORT, SERVER_PORT)
    assert_overlay_without_a_socket(broker.graft("b", SERVER.sandbox, claim), "b")


def test_a_client_that_gives_up_while_the_server_waits_sends_the_server_to_the_overlay():
    broker = pending_flow()
    assert broker.graft("b", SERVER.sandbox, p.Graft(p.Role.SERVER, CLIENT.ip, CLIENT_PORT, SERVER_PORT)) == []
    assert_overlay_without_a_socket(broker.closed("a"), "b")
    assert broker.flows == {}


def test_a_neighbour_cannot_take_the_servers_end():
    """C, on the same network, sends exactly the GRAFT that B would send."""
    broker = pending_flow()
    claim = p.Graft(p.Role.SERVER, CLIENT.ip, CLIENT_PORT, SERVER_PORT)
    for sandbox in (NEIGHBOUR.sandbox, ELSEWHERE.sandbox):
        assert_overlay_without_a_socket(broker.graft("impostor", sandbox, claim), "impostor")
    assert broker.graft("b", SERVER.sandbox, claim) == [], "the real server is still expected"
    actions = broker.graft("a", CLIENT.sandbox, p.Graft(p.Role.CLIENT, SERVER.ip, SERVER_PORT, CLIENT_PORT))
    try:
        assert sorted(a.conn for a in actions) == ["a", "b"]
    finally:
        close_fds(actions)


def test_a_neighbour_cannot_take_the_clients_end_nor_announce_for_it():
    broker = pending_flow()
    claim = p.Graft(p.Role.CLIENT, SERVER.ip, SERVER_PORT, CLIENT_PORT)
    assert_overlay_without_a_socket(broker.graft("impostor", NEIGHBOUR.sandbox, claim), "impostor")
    assert_overlay_without_a_socket(broker.graft("b", SERVER.sandbox, claim), "b")  # the server as client
    # An intent names only the destination: the flow it makes is the caller's own, under its own address.
    broker.intent("c", NEIGHBOUR.sandbox, p.Intent(SERVER.ip, SERVER_PORT, CLIENT_PORT))
    assert all(key[1] in (CLIENT.ip, NEIGHBOUR.ip) for key in broker.flows)
    assert (NET, CLIENT.ip, CLIENT_PORT, SERVER.ip, SERVER_PORT) in broker.flows


def test_no_pairing_across_networks():
    broker = Broker()
    broker.set_endpoints([CLIENT, ELSEWHERE])
    broker.listen("d-listener", ELSEWHERE.sandbox, p.Listen(SERVER_PORT, 16))
    [verdict] = broker.intent("a", CLIENT.sandbox, p.Intent(ELSEWHERE.ip, SERVER_PORT, CLIENT_PORT))
    assert verdict.message.verdict == p.Verdict.OVERLAY and broker.flows == {}


class TwoHosts:
    """The cluster view: the client 10.0.0.1 lives on host 192.0.2.1; nothing else is remote."""

    def host_of(self, network_id: str, ip: str) -> str | None:
        return "192.0.2.1" if (network_id, ip) == (NET, "10.0.0.1") else None

    def listens(self, network_id: str, ip: str, port: int, kind: str) -> bool:
        return True

    def rdma_with(self, host: str) -> bool:
        return False


def test_a_channel_from_another_host_is_accepted_only_once_its_listener_took_the_offer():
    """The other router's connector hears the channel is ready when this side answers ACCEPTED: that answer comes
    with the bridge, after the offer; a dropped offer closes the socket unanswered (the connector falls back)."""
    broker = Broker(cluster=TwoHosts())
    broker.set_endpoints([SERVER])
    broker.channel_listen("b-channels", SERVER.sandbox, p.ChannelListen(7001, 0))
    preamble = Preamble(Kind.CHANNEL, NET, "10.0.0.1", 1, SERVER.ip, 7001, 1 << 16)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        [offer] = broker.inbound(preamble, ours, source="192.0.2.1", live_sockets=set)
        assert isinstance(offer, Offer) and offer.refused == []
        [bridge] = offer.ready
        assert isinstance(bridge, Bridge) and bridge.accept and bridge.sock is ours
        theirs.setblocking(False)
        with pytest.raises(BlockingIOError):
            theirs.recv(1)  # nothing answered yet
        close_fds([offer.offer])
        bridge.fds.close()


def test_another_hosts_router_hands_over_only_its_own_clients():
    """A preamble is signed with the cluster's token; which client it may name depends on who dialled."""
    broker = Broker(cluster=TwoHosts())
    broker.set_endpoints([SERVER])
    broker.listen("b-listener", SERVER.sandbox, p.Listen(SERVER_PORT, 16))
    preamble = Preamble(Kind.GRAFT, NET, "10.0.0.1", CLIENT_PORT, SERVER.ip, SERVER_PORT)
    impostor, ours = socket.socketpair()
    with impostor, ours:
        assert broker.inbound(preamble, impostor, source="192.0.2.7", live_sockets=set) == []
        assert impostor.fileno() == -1, "refused: closed at once"
        assert broker.remote_halves == {}
    rightful, theirs = socket.socketpair()

    def socket_table() -> set[int]:
        raise AssertionError("a graft has no channels to prune: the host's socket table is not read for it")

    with rightful, theirs:
        assert broker.inbound(preamble, rightful, source="192.0.2.1", live_sockets=socket_table) == []
        assert broker.remote_halves[preamble.key].sock is rightful, "kept until the server's GRAFT"


def test_the_listeners_are_listed_again_only_after_a_listener_or_an_endpoint_changed():
    """The router saves and reports them when listeners_version moves, not on every turn of its loop."""
    broker = pending_flow()
    other_server = Endpoint("ee", OTHER_NET, "10.0.1.2", SERVER.sandbox)  # B on a second network too
    steps = [
        ("another endpoint of B", lambda: broker.set_endpoints([CLIENT, SERVER, NEIGHBOUR, ELSEWHERE, other_server])),
        ("a channel listener", lambda: broker.channel_listen("b-channels", SERVER.sandbox, p.ChannelListen(7001, 0))),
        ("an inherited listener", lambda: broker.inherit(NEIGHBOUR.sandbox, 8080)),
        ("it stopped listening", lambda: broker.drop_inherited(set())),
        ("the channel listener's connection closed", lambda: broker.closed("b-channels")),
        ("a listener in A", lambda: broker.listen("a-listener", CLIENT.sandbox, p.Listen(9000, 16))),
        ("A left", lambda: broker.forget_sandbox(CLIENT.sandbox)),
        ("B's listener closed", lambda: broker.closed("b-listener")),
    ]
    listed = broker.published_listeners()
    assert listed == {(NET, SERVER.ip, SERVER_PORT, "graft")}
    for what, change in steps:
        version = broker.listeners_version
        change()
        assert broker.listeners_version != version, what
        assert broker.published_listeners() != listed, what
        listed = broker.published_listeners()
    assert listed == set()
    version = broker.listeners_version
    broker.set_endpoints([CLIENT, SERVER, NEIGHBOUR, ELSEWHERE, other_server])
    broker.intent("a", CLIENT.sandbox, p.Intent(SERVER.ip, SERVER_PORT, CLIENT_PORT + 1))
    broker.closed("a")
    assert broker.listeners_version == version, "the same endpoints, a connection: nothing to list again"


def test_grafts_onto_host_tcp_are_taken_back_from_what_the_last_router_saved():
    broker = Broker()
    key = (NET, CLIENT.ip, CLIENT_PORT, "10.0.1.5", SERVER_PORT)
    with socket.socket() as sock:
        version = broker.host_tcp_version
        broker.record_graft(key, CLIENT.sandbox, "", sock)
        saved = json.loads(json.dumps(broker.host_tcp_grafts()))  # as the file holds it
        inode = os.fstat(sock.fileno()).st_ino
    assert broker.host_tcp_version == version, "a new graft is appended to the file, not a reason to rewrite it"
    assert broker.take_unsaved_host_tcp() == saved and broker.take_unsaved_host_tcp() == [], "once"
    successor = Broker()
    assert successor.restore_host_tcp_grafts(saved, live_sockets={inode}) == 1
    [record] = successor.grafts
    assert (record.key, record.client_sandbox, record.server_sandbox, record.inodes, record.path) == \
        (key, CLIENT.sandbox, "", (inode,), "grafted (host TCP)")
    assert successor.restore_host_tcp_grafts(saved, live_sockets={inode}) == 0, "not twice"
    version = successor.host_tcp_version
    successor.prune({inode})
    assert successor.host_tcp_version == version, "nothing changed: nothing to save"
    successor.prune(set())
    assert successor.host_tcp_version != version and successor.host_tcp_grafts() == [], "it ended: save again"
    assert Broker().restore_host_tcp_grafts(saved, live_sockets=set()) == 0, "the connection ended"
    assert Broker().restore_host_tcp_grafts(saved + saved, live_sockets={inode}) == 1, "listed twice: taken once"
    malformed = [None, 3, "x", [], [[1, 2], "a", "b", [1]], [[NET, "ip", "port", "ip", 1], "", "", [1]],
                 [list(key), "", "", []], [list(key), "", "", ["nine"]]]
    assert Broker().restore_host_tcp_grafts(malformed, live_sockets={1, inode}) == 0
    assert Broker().restore_host_tcp_grafts({"not": "a list"}, live_sockets={inode}) == 0


@pytest.fixture
def bells() -> Iterator[list[socket.socket]]:
    """Where a test keeps the doorbell ends it made: closed after it."""
    ends: list[socket.socket] = []
    yield ends
    for end in ends:
        end.close()


def channel_between(broker: Broker, ring_size: int = 1 << 16) -> list[socket.socket]:
    """A's channel to B's channel listener on port 7100: the doorbell ends of both sides (their rings closed)."""
    broker.channel_listen("b-listener", SERVER.sandbox, p.ChannelListen(7100, 0))
    [offer] = broker.channel_connect("a", CLIENT.sandbox, p.ChannelConnect(SERVER.ip, 7100, 0, ring_size), set())
    assert isinstance(offer, Offer)
    [ready], [refused] = offer.ready, offer.refused
    assert isinstance(ready, Reply)
    assert (type(ready.message), type(offer.offer.message)) == (p.ChannelReady, p.ChannelOffer)
    assert (refused.message.verdict, refused.message.reason) == (p.Verdict.OVERLAY, p.Reason.BUSY)
    bells = []
    for reply in (ready, offer.offer):
        tx, rx, bell = reply.fds
        os.close(tx)
        os.close(rx)
        bells.append(socket.socket(fileno=bell))
    return bells


def test_a_channel_whose_rings_cannot_be_mapped_leaves_no_descriptor_open(monkeypatch) -> None:
    broker = Broker()
    broker.set_endpoints([CLIENT, SERVER])
    broker.channel_listen("b-listener", SERVER.sandbox, p.ChannelListen(7100, 0))
    before = set(os.listdir("/proc/self/fd"))

    def no_memory(fd: int) -> Ring:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(broker_module.Ring, "attach", staticmethod(no_memory))
    with pytest.raises(OSError):
        broker.channel_connect("a", CLIENT.sandbox, p.ChannelConnect(SERVER.ip, 7100, 0, 1 << 16), set())
    assert set(os.listdir("/proc/self/fd")) <= before and broker.channels == []


def test_a_channel_doorbell_is_named_after_its_channel(bells: list[socket.socket]) -> None:
    broker = Broker()
    broker.set_endpoints([CLIENT, SERVER])
    bells += channel_between(broker)
    names = [bell.getsockname().decode().split() for bell in bells]
    [record] = broker.channels
    for name in names:
        assert name[:5] == ["\0freeflow-channel", str(record.channel_id), "64", CLIENT.ip, f"{SERVER.ip}:7100"]
    (net_a, pair_a, role_a, mac_a), (net_b, pair_b, role_b, mac_b) = (name[5].split(".") for name in names)
    assert (net_a, net_b, pair_a, role_a, role_b) == (NET[:12], NET[:12], pair_b, "c", "s")
    assert len(mac_a) == len(mac_b) == 16 and mac_a != mac_b


def test_a_new_broker_recovers_the_open_channels_of_the_last_one(bells: list[socket.socket]) -> None:
    """After a router restart, status lists the channel (its bytes unknown) and the memory cap counts it."""
    broker = Broker()
    broker.set_endpoints([CLIENT, SERVER])
    bells += channel_between(broker, 1 << 20)
    [made] = broker.channels
    successor = Broker(channel_memory=3 << 20, name_key=broker.name_key)
    successor.set_endpoints([CLIENT, SERVER])
    assert successor.recover_channels(named_ends(bells)) == 1
    [record] = successor.channels
    assert (record.channel_id, record.ring_size, record.client, record.server) == (
        made.channel_id, 1 << 20, CLIENT.ip, f"{SERVER.ip}:7100")
    assert (record.client_sandbox, record.server_sandbox, record.path) == (CLIENT.sandbox, SERVER.sandbox, "shm")
    assert sorted(record.bells) == sorted(made.bells) and record.bytes_moved() is None
    assert successor.recover_channels(named_ends(bells)) == 0, "a channel already known is not added twice"
    successor.channel_listen("b-listener", SERVER.sandbox, p.ChannelListen(7100, 0))
    [refused] = successor.channel_connect("a", CLIENT.sandbox, p.ChannelConnect(SERVER.ip, 7100, 0, 1 << 20),
                                          {record.bells[0]})
    assert refused.message.verdict == p.Verdict.REFUSED, "the recovered channel counts against the cap"
    roomy = Broker(name_key=broker.name_key)
    roomy.set_endpoints([CLIENT, SERVER])
    roomy.recover_channels(named_ends(bells))
    roomy.channel_listen("b-listener", SERVER.sandbox, p.ChannelListen(7100, 0))
    actions = roomy.channel_connect("a", CLIENT.sandbox, p.ChannelConnect(SERVER.ip, 7100, 0, 1 << 20),
                                    {record.bells[0]})
    close_fds(actions)
    assert actions[0].ready[0].message.channel_id != made.channel_id, "its id is not given again while it lives"
    assert Broker(name_key=b"another router" * 3).recover_channels(named_ends(bells)) == 0, "not signed by it"
    gone = Broker(name_key=broker.name_key)
    gone.set_endpoints([NEIGHBOUR])
    assert gone.recover_channels(named_ends(bells)) == 0, "both of its containers left"
    bells[1].close()
    alone = Broker(name_key=broker.name_key)
    alone.set_endpoints([CLIENT])
    assert alone.recover_channels(named_ends(bells)) == 1
    assert alone.channels[0].path == "shm", "the server's container left: still a channel on this host"


def test_channel_names_anyone_could_bind_are_not_taken_for_channels(bells: list[socket.socket]) -> None:
    broker = Broker()
    broker.set_endpoints([CLIENT, SERVER])
    bells += channel_between(broker)
    [good] = [name for _, name in named_ends(bells[:1])]
    broker.channels.clear()
    assert broker.recover_channels([(1, good)]) == 1, "the control case"
    broker.channels.clear()
    words = good.split(" ")
    forged = [
        good[:-1] + ("0" if good[-1] != "0" else "1"),  # the signature altered
        " ".join([*words[:2], "128", *words[3:]]),  # another ring size under the same signature
        " ".join([*words[:2], "3", *words[3:]]),  # not a ring size at all
        " ".join([*words[:3], "10.0.0.9", *words[4:]]),  # another client under the same signature
        good.replace(NET[:12], "ffffffffffff"),  # an unknown network
        " ".join(words[:-1]),  # no tag
        good[:-16] + "\ufffd" * 16,  # a signature that is not ASCII (a name that was not UTF-8)
        " ".join([words[0], "0" + words[1], *words[2:]]),  # another spelling of the id under its signature
        " ".join([*words[:2], "+" + words[2], *words[3:]]),  # and of the ring size
        "freeflow-channel",
    ]
    assert broker.recover_channels(enumerate(forged, start=10)) == 0
    assert broker.channels == []
