"""The broker's pairing decisions: a container is who its control socket says, never who its message says."""

from __future__ import annotations

import os
import socket

from freeflow.router import protocol as p
from freeflow.router.broker import Broker, Endpoint, Reply
from freeflow.router.peering import Kind, Preamble
from freeflow.router.status import named_unix_sockets

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
        for fd in getattr(action, "fds", []):
            os.close(fd)


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
    (net_a, role_a, pair_a), (net_b, role_b, pair_b) = names["a"][3].split("."), names["b"][3].split(".")
    assert (net_a, role_a, role_b) == (NET[:12], "c", "s") and net_b == net_a and pair_b == pair_a
    assert len(names["a"]) == len(names["b"]) == 4


def test_a_new_broker_recovers_the_open_pairs_of_the_last_one_from_their_names():
    """After a router restart, `freeflow status` still lists grafted connections that are open."""
    broker = pending_flow()
    broker.graft("b", SERVER.sandbox, p.Graft(p.Role.SERVER, CLIENT.ip, CLIENT_PORT, SERVER_PORT))
    actions = broker.graft("a", CLIENT.sandbox, p.Graft(p.Role.CLIENT, SERVER.ip, SERVER_PORT, CLIENT_PORT))
    ends = [socket.socket(fileno=a.fds[0]) for a in actions]
    try:
        successor = Broker()
        successor.set_endpoints([CLIENT, SERVER, NEIGHBOUR, ELSEWHERE])
        named = named_unix_sockets()
        assert successor.recover_grafts(named) == 1
        [record] = successor.grafts
        assert record.key == (NET, CLIENT.ip, CLIENT_PORT, SERVER.ip, SERVER_PORT)
        assert (record.client_sandbox, record.server_sandbox) == (CLIENT.sandbox, SERVER.sandbox)
        assert sorted(record.inodes) == sorted(os.fstat(end.fileno()).st_ino for end in ends)
        assert successor.recover_grafts(named) == 0, "a pair already known is not added twice"
        ends[0].close()  # the client end closed, the server's still open: still a connection to list
        third = Broker()
        third.set_endpoints([CLIENT, SERVER])
        assert third.recover_grafts(named_unix_sockets()) == 1
        assert third.grafts[0].key == record.key and len(third.grafts[0].inodes) == 1
    finally:
        for end in ends:
            end.close()
    fresh = Broker()
    fresh.set_endpoints([CLIENT, SERVER])
    assert fresh.recover_grafts(named_unix_sockets()) == 0, "both ends closed: nothing to recover"


def test_names_that_are_not_a_pair_ends_are_ignored():
    broker = Broker()
    broker.set_endpoints([CLIENT, SERVER])
    garbage = ["freeflow", "freeflow-graft", "freeflow-graft 10.0.0.1:1 10.0.0.2:2", "freeflow-graft x:1 y:2 t",
               "freeflow-graft 10.0.0.1:0 10.0.0.2:2 n1n1n1n1n1n1.c.ab", "freeflow-graft 10.0.0.1 10.0.0.2:2 a.c.b",
               "freeflow-graft 10.0.0.1:1 10.0.0.2:2 n1n1n1n1n1n1.x.ab", "freeflow-graft 10.0.0.1:1 10.0.0.2:2 zz.c.ab"]
    assert broker.recover_grafts((i, name) for i, name in enumerate(garbage)) == 0
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


def test_another_hosts_router_hands_over_only_its_own_clients():
    """A preamble is signed with the cluster's token; which client it may name depends on who dialled."""
    broker = Broker(cluster=TwoHosts())
    broker.set_endpoints([SERVER])
    broker.listen("b-listener", SERVER.sandbox, p.Listen(SERVER_PORT, 16))
    preamble = Preamble(Kind.GRAFT, NET, "10.0.0.1", CLIENT_PORT, SERVER.ip, SERVER_PORT)
    impostor, ours = socket.socketpair()
    with impostor, ours:
        assert broker.inbound(preamble, impostor, source="192.0.2.7", live_sockets=set()) == []
        assert impostor.fileno() == -1, "refused: closed at once"
        assert broker.remote_halves == {}
    rightful, theirs = socket.socketpair()
    with rightful, theirs:
        assert broker.inbound(preamble, rightful, source="192.0.2.1", live_sockets=set()) == []
        assert broker.remote_halves[preamble.key].sock is rightful, "kept until the server's GRAFT"
