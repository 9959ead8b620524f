"""Two hosts' routers, a real orchestrator over HTTP, and namespaces for containers: a connection or channel
between hosts is handed over as a host TCP connection between the routers, never through the overlay.

Each "host" is a router process with its own state, run folder and address (127.0.0.2 and 127.0.0.3, the
same peering port); the tests play the plugins' part (heartbeat and endpoint report), and the namespaces'
shared bridge is the overlay. Grafted sockets answer SO_DOMAIN AF_INET (a real TCP socket) but peer with the
other router's address, which the library hides behind the overlay address.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from freeflow.config.settings import load_settings
from freeflow.orchestrator.client import OrchestratorClient
from freeflow.orchestrator.schema import Endpoint as DirectoryEndpoint
from freeflow.orchestrator.schema import Host
from freeflow.plugin.store import Network, Store
from freeflow.router.admin import ask_router
from tests.integration.conftest import wait_for
from tests.namespaces import delete_namespace
from tests.router.conftest import Lab
from tests.unit.plugin.test_cluster import TOKEN, Orchestrator

NET = ("x" * 64)[:64]
SUBNET = "10.214.0"

# Answers each connection with the sha256 of what it got and how its socket is really connected.
SERVER = textwrap.dedent("""
    import hashlib, socket
    from freeflow.client import graft
    srv = socket.create_server(("0.0.0.0", 7000))
    reg = graft.register_listener(7000)
    print("listening", reg is not None, flush=True)
    while True:
        conn, peer = srv.accept()
        grafted = graft.accepted(conn, peer, 7000)
        digest = hashlib.sha256()
        while chunk := conn.recv(1 << 16):
            digest.update(chunk)
        real_peer = socket.socket.getpeername(conn)[0]
        conn.sendall(f"{grafted} {real_peer} {digest.hexdigest()}".encode())
        conn.close()
""")

CLIENT = textwrap.dedent("""
    import hashlib, os, socket, sys
    from freeflow.client import graft
    data = os.urandom(int(sys.argv[2]))
    sock = socket.socket()
    grafted = graft.connect(sock, (sys.argv[1], 7000))
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    server_grafted, server_peer, digest = sock.recv(200).decode().split()
    print(grafted, server_grafted, server_peer, digest == hashlib.sha256(data).hexdigest(), flush=True)
""")

# Opens a connection and keeps it open, idle, until stdin closes.
HOLDING_CLIENT = textwrap.dedent("""
    import socket, sys
    from freeflow.client import graft
    sock = socket.socket()
    print(graft.connect(sock, (sys.argv[1], 7000)), flush=True)
    sys.stdin.read()
""")

CHANNEL_SERVER = textwrap.dedent("""
    import hashlib
    from freeflow.client import Channel
    listener = Channel.listen(7001)
    print("listening", listener.registered, flush=True)
    while True:
        ch = listener.accept(timeout=60)
        digest = hashlib.sha256()
        buf = bytearray(1 << 20)
        while n := ch.recv_into(buf):
            digest.update(memoryview(buf)[:n])
        ch.send_msg(digest.hexdigest().encode())
        ch.close()
""")

CHANNEL_CLIENT = textwrap.dedent("""
    import hashlib, os, sys
    from freeflow.client import Channel
    data = os.urandom(int(sys.argv[2]))
    ch = Channel.connect((sys.argv[1], 7001), timeout=30)
    ch.sendall(data)
    ch.shutdown_write()
    print(ch.path, ch.recv_msg().decode() == hashlib.sha256(data).hexdigest(), flush=True)
    ch.close()
""")


@dataclass
class Cluster:
    """The orchestrator, one Lab (router, state, run folder) per host, and the namespaces on the bridge."""

    orchestrator: Orchestrator
    tmp: Path
    labs: dict[str, Lab] = field(default_factory=dict)
    port: int = 0

    def host(self, address: str, lab: Lab) -> None:
        token = self.tmp / "token"
        token.write_text(TOKEN)
        lab.extra_env.update({
            "FREEFLOW_SCOPE": "global", "FREEFLOW_HOST_ADDRESS": address, "FREEFLOW_GRAFT_PORT": str(self.port),
            "FREEFLOW_ORCHESTRATOR_URL": f"http://127.0.0.1:{self.orchestrator.port}",
            "FREEFLOW_ORCHESTRATOR_TOKEN_FILE": str(token), "FREEFLOW_LEASE_TTL": "3"})
        self.labs[address] = lab

    def report(self) -> None:
        """What the hosts' plugins do: heartbeat, and report their joined endpoints."""
        client = OrchestratorClient(f"http://127.0.0.1:{self.orchestrator.port}", TOKEN)
        for address, lab in self.labs.items():
            client.heartbeat(Host(address, address, False))
            client.report(address, [DirectoryEndpoint(ep.endpoint_id, ep.network_id, ep.address.split("/")[0],
                                                       ep.mac, address)
                                    for ep in lab.state.endpoints.values() if ep.sandbox_key])

    def listening(self, kind: str) -> bool:
        """Whether host B's server is in the directory as an accelerated listener of `kind`."""
        listed = OrchestratorClient(f"http://127.0.0.1:{self.orchestrator.port}", TOKEN).listeners()
        return any(x.kind == kind and x.host_id == "127.0.0.3" for x in listed)


def add(lab: Lab, index: int, name: str) -> str:
    """A namespace on the lab's bridge (the overlay), recorded as an endpoint of NET in `lab`'s state."""
    ns = lab.add_host(index, subnet=SUBNET, network_id=NET)
    lab.state.networks[NET] = Network(NET, "ff-x", 1450, local_address=name)
    Store(lab.state_dir).save(lab.state)
    return ns


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run the tests as root")
    orchestrator = Orchestrator()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    made = Cluster(orchestrator, tmp_path, port=port)
    try:
        yield made
    finally:
        orchestrator.stop()


@pytest.fixture
def two_hosts(cluster: Cluster, tmp_path) -> Iterator[tuple[Cluster, str, str]]:
    """ns on host A (127.0.0.2) and ns on host B (127.0.0.3), both routers up and the directory filled in."""
    tag = os.urandom(2).hex()
    bridge = f"frxb{tag}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    subprocess.run(["iptables", "-I", "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"], check=True)
    labs = [Lab(f"{tag}{i}", tmp_path / f"h{i}" / "state", tmp_path / f"h{i}" / "run", bridge) for i in (1, 2)]
    try:
        for lab in labs:
            lab.run_dir.mkdir(parents=True)
        cluster.host("127.0.0.2", labs[0])
        cluster.host("127.0.0.3", labs[1])
        a = add(labs[0], 1, "127.0.0.2")
        b = add(labs[1], 2, "127.0.0.3")
        cluster.report()
        for lab in labs:
            lab.start_router()
        yield cluster, a, b
    finally:
        for lab in labs:
            lab.kill_router()
            for ns in lab.namespaces:
                delete_namespace(ns)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        subprocess.run(["iptables", "-D", "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"], capture_output=True)


def status(lab: Lab) -> dict:
    return ask_router(load_settings(lab.env()), {"op": "status"})


def in_ns(lab: Lab, ns: str, code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code, *args], env=lab.env(), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def serve(lab: Lab, ns: str, code: str) -> subprocess.Popen[str]:
    server = in_ns(lab, ns, code)
    assert server.stdout is not None
    assert server.stdout.readline().split() == ["listening", "True"], server.communicate(timeout=10)
    return server


def run(lab: Lab, ns: str, code: str, *args: str) -> list[str]:
    client = in_ns(lab, ns, code, *args)
    out, err = client.communicate(timeout=60)
    assert client.returncode == 0, f"{err}\n{lab.router_log()}"
    return out.split()


def test_a_connection_to_another_host_is_grafted_onto_host_tcp(two_hosts) -> None:
    cluster, a, b = two_hosts
    host_a, host_b = cluster.labs["127.0.0.2"], cluster.labs["127.0.0.3"]
    server = serve(host_b, b, SERVER)
    try:
        wait_for(lambda: cluster.listening("graft"), 10, "host B's router to report its listener")
        # Host A's router learns it by watching the orchestrator.
        answer: list[str] = []

        def grafted() -> bool:
            answer[:] = run(host_a, a, CLIENT, f"{SUBNET}.2", "20000000")
            return answer[0] == "True"

        wait_for(grafted, 10, "a connection from host A to be grafted")
        assert answer == ["True", "True", "127.0.0.2", "True"], "the server's real peer is host A's router"
        held = in_ns(host_a, a, HOLDING_CLIENT, f"{SUBNET}.2")
        try:
            assert held.stdout is not None and held.stdout.readline().strip() == "True"
            connections = status(host_a)["sandboxes"][f"/run/netns/{a}"]["connections"]
            assert [c["path"] for c in connections] == ["grafted (host TCP)"], \
                "the open connection, and only it (the others ended)"
            ip, port = connections[0]["local"].split(":")
            journal = host_a.state_dir / "router-host-tcp-grafts.jsonl"

            def journalled() -> list[list[object]]:  # (client ip, port) of each graft in the router's file
                text = journal.read_text() if journal.exists() else ""
                return [json.loads(line)[0][1:3] for line in text.splitlines(keepends=True) if line.endswith("\n")]

            # The status pruned the ended grafts: the file is written again with the open one only.
            wait_for(lambda: journalled() == [[ip, int(port)]], 10, "the router to save its host TCP grafts")
            host_a.kill_router()
            host_a.start_router()
            paths = [c["path"] for c in status(host_a)["sandboxes"][f"/run/netns/{a}"]["connections"]]
            assert paths == ["grafted (host TCP)"], "the restarted router lists it still"
        finally:
            held.communicate("", timeout=10)
    finally:
        server.kill()


def test_a_restarted_router_never_withdraws_its_listeners_from_the_directory(two_hosts) -> None:
    """Other hosts send new connections to the overlay while a listener is missing from the directory."""
    reported = "reported 1 accelerated listeners"
    cluster, _a, b = two_hosts
    host_b = cluster.labs["127.0.0.3"]
    directory = OrchestratorClient(f"http://127.0.0.1:{cluster.orchestrator.port}", TOKEN)
    server = serve(host_b, b, SERVER)
    try:
        wait_for(lambda: cluster.listening("graft"), 10, "host B's router to report its listener")
        before, reports = directory.revision(), host_b.router_log().count(reported)
        host_b.kill_router()
        host_b.start_router()
        wait_for(lambda: host_b.router_log().count(reported) > reports, 10, "the new router's report")
        changes = directory.watch(before, wait=0)["changes"]
        assert [c for c in changes if c["kind"] == "listener" and c["op"] == "delete"] == [], changes
        assert cluster.listening("graft")
    finally:
        server.kill()


def test_an_unregistered_server_on_another_host_stays_on_the_overlay(two_hosts) -> None:
    cluster, a, b = two_hosts
    host_a, host_b = cluster.labs["127.0.0.2"], cluster.labs["127.0.0.3"]
    plain = SERVER.replace("reg = graft.register_listener(7000)", "reg = True")
    server = serve(host_b, b, plain.replace("graft.accepted(conn, peer, 7000)", "False"))
    try:
        assert run(host_a, a, CLIENT, f"{SUBNET}.2", "1000000") == ["False", "False", f"{SUBNET}.1", "True"]
    finally:
        server.kill()


def test_a_channel_to_another_host_is_bridged_between_the_routers(two_hosts) -> None:
    cluster, a, b = two_hosts
    host_a, host_b = cluster.labs["127.0.0.2"], cluster.labs["127.0.0.3"]
    server = serve(host_b, b, CHANNEL_SERVER)
    try:
        wait_for(lambda: cluster.listening("channel"), 10, "host B's router to report its channel listener")
        wait_for(lambda: run(host_a, a, CHANNEL_CLIENT, f"{SUBNET}.2", "1000")[0] == "shm", 10,
                 "a channel to host B over shared memory and the routers' bridge")
        assert run(host_a, a, CHANNEL_CLIENT, f"{SUBNET}.2", "50000000") == ["shm", "True"]
    finally:
        server.kill()


def test_a_router_killed_on_either_host_keeps_a_bridged_channel(two_hosts) -> None:
    cluster, a, b = two_hosts
    host_a, host_b = cluster.labs["127.0.0.2"], cluster.labs["127.0.0.3"]
    server = serve(host_b, b, CHANNEL_SERVER)
    paused = textwrap.dedent("""
        import hashlib, os, sys
        from freeflow.client import Channel
        ch = Channel.connect((sys.argv[1], 7001), timeout=30)
        digest = hashlib.sha256()
        for i in range(64):
            if i == 32:
                print(ch.path, flush=True)
                sys.stdin.readline()
            block = os.urandom(1 << 20)
            digest.update(block)
            ch.sendall(block)
        ch.shutdown_write()
        print(ch.recv_msg().decode() == digest.hexdigest(), flush=True)
    """)
    try:
        wait_for(lambda: cluster.listening("channel"), 10, "host B's router to report its channel listener")
        wait_for(lambda: run(host_a, a, CHANNEL_CLIENT, f"{SUBNET}.2", "1000")[0] == "shm", 10, "a channel")
        client = in_ns(host_a, a, paused, f"{SUBNET}.2")
        assert client.stdout is not None and client.stdout.readline().strip() == "shm"
        for lab in (host_a, host_b):
            assert lab.router is not None
            lab.router.send_signal(signal.SIGKILL)
            lab.router.wait(10)
        out, err = client.communicate("go\n", timeout=60)
        assert out.split() == ["True"], err
        for lab in (host_a, host_b):
            lab.start_router()
    finally:
        server.kill()


def test_forged_or_garbage_preambles_are_refused_and_the_router_stays_up(two_hosts) -> None:
    cluster, _a, b = two_hosts
    host_b = cluster.labs["127.0.0.3"]
    server = serve(host_b, b, SERVER)
    try:
        wait_for(lambda: cluster.listening("graft"), 10, "host B's router to report its listener")
        from freeflow.router.peering import SIZE, Kind, Preamble

        forged = Preamble(Kind.GRAFT, NET, f"{SUBNET}.1", 40000, f"{SUBNET}.2", 7000).encode("not-the-token")
        for payload in (forged, b"\0" * SIZE, b"GET / HTTP/1.0\r\n\r\n", os.urandom(SIZE)):
            with socket.create_connection(("127.0.0.3", cluster.port), timeout=5) as sock:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                assert sock.recv(10) == b"", "nothing is accepted without the cluster's token"
        assert json.dumps(status(host_b))  # still answering
        assert "not signed with this cluster's token" in host_b.router_log()
    finally:
        server.kill()
