"""The connection set-up probe against a local server, the median the bench reads from its output, and the wait
until a grafted path's connections are grafted."""

from __future__ import annotations

import socket
import sys
import threading

import pytest

from freeflow.bench import connect
from freeflow.bench.connect import parse_connect_times, parse_peer
from freeflow.bench.engine import Container, Output
from freeflow.bench.errors import BenchError, ToolOutputError
from freeflow.bench.paths import Pair, PathSpec, Ports
from freeflow.bench.probe_connect import UNIX_PEER, connect_times, kernel_peer, peer_name


def test_median_of_the_connect_times_in_microseconds():
    assert parse_connect_times('{"connect_ns": [30000, 10000, 20000, 900000]}') == 25.0


@pytest.mark.parametrize("stdout", ["", "{}", '{"connect_ns": []}', '{"connect_ns": ["x"]}', "[1, 2]"])
def test_output_without_times_is_refused(stdout):
    with pytest.raises(ToolOutputError, match="no times"):
        parse_connect_times(stdout)


def test_a_failed_probe_is_quoted():
    stderr = "Traceback (most recent call last):\n  ...\nConnectionRefusedError: [Errno 111] Connection refused\n"
    with pytest.raises(ToolOutputError, match="ConnectionRefusedError"):
        parse_connect_times("", stderr)


def test_each_connection_is_timed():
    with socket.create_server(("127.0.0.1", 0), backlog=16) as server:
        port = server.getsockname()[1]

        def accept() -> None:
            for _ in range(5):
                server.accept()[0].close()

        acceptor = threading.Thread(target=accept)
        acceptor.start()
        times = connect_times("127.0.0.1", port, 5)
        acceptor.join(10)
    assert len(times) == 5 and all(t > 0 for t in times)


def test_the_kernel_peer_is_read_past_any_preloaded_getpeername():
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()) as client:
        server.accept()[0].close()  # as the probe's server does at once: the peer is still known
        assert kernel_peer(client) == "127.0.0.1"
    mine, theirs = socket.socketpair()
    with mine, theirs:
        assert kernel_peer(mine) == UNIX_PEER


def test_sockaddrs_read_as_addresses():
    inet = socket.AF_INET.to_bytes(2, sys.byteorder) + (7471).to_bytes(2, "big") + bytes([10, 99, 0, 2]) + bytes(8)
    inet6 = socket.AF_INET6.to_bytes(2, sys.byteorder) + bytes(6) + socket.inet_pton(socket.AF_INET6, "fd00::2")
    assert peer_name(inet) == "10.99.0.2"
    assert peer_name(inet6) == "fd00::2"
    assert peer_name(socket.AF_UNIX.to_bytes(2, sys.byteorder)) == UNIX_PEER
    assert peer_name((99).to_bytes(2, sys.byteorder)) == "family 99"


def test_the_peer_the_probe_printed():
    assert parse_peer('{"peer": "10.99.0.2"}') == "10.99.0.2"
    with pytest.raises(ToolOutputError, match="no peer: ConnectionRefusedError"):
        parse_peer("", "Traceback\nConnectionRefusedError: [Errno 111] Connection refused\n")


class FakeClient:
    """Answers the peer probe with `peers` in turn, the last one from then on."""

    def __init__(self, *peers: str) -> None:
        self.peers, self.asked = list(peers), 0

    def execute(self, container: Container, command: list[str], timeout: float) -> Output:
        self.asked += 1
        peer = self.peers.pop(0) if len(self.peers) > 1 else self.peers[0]
        return Output(f'{{"peer": "{peer}"}}\n', "")


@pytest.fixture
def pair():
    ports = Ports(5201, 11111, 7000, 6379, 7001)
    return Pair(PathSpec("grafted", "grafted", grafted=True), Container("srv"), Container("cli"), "10.0.0.2",
                "0.0.0.0", ports)


def test_the_bench_waits_until_a_connection_is_grafted(monkeypatch, pair):
    client = FakeClient("10.0.0.2", "10.0.0.2", "10.99.0.2")
    monkeypatch.setattr(connect.engine, "execute", client.execute)
    monkeypatch.setattr(connect.time, "sleep", lambda _: None)
    connect.wait_grafted(pair)
    assert client.asked == 3


def test_connections_never_grafted_are_an_error(monkeypatch, pair):
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(connect.engine, "execute", FakeClient("10.0.0.2").execute)
    monkeypatch.setattr(connect.time, "sleep", lambda _: None)
    monkeypatch.setattr(connect.time, "monotonic", lambda: float(next(clock)))
    with pytest.raises(BenchError, match=r"cli to srv are still not grafted after 30 s"):
        connect.wait_grafted(pair)
