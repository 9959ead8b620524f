"""Reading /proc/net/tcp and /proc/net/unix: which ports listen (what a restarted router inherits), what is
established, and which unix sockets exist (whatever names the host's programs gave them)."""

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from freeflow.router.netns import read_tcp_tables
from freeflow.router.status import established_tcp, listening_ports, parse_proc_net_unix

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 51234 1 0 100 0 0 10 0
   1: 0200000A:1B58 0300000A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 51240 1 0 20 4 30 10 -1
   2: 0200000A:9C41 0300000A:1B59 06 00000000:00000000 03:00000F9F 00000000     0        0 0 3 0
"""
TCP6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 0000000000000000FFFF00000200000A:0050 0000000000000000FFFF00000300000A:9C42 01 00000000:00000000
   2: 000000FD000000000000000002000000:0050 000000FD000000000000000003000000:9C43 01 00000000:00000000
"""


def test_listening_ports_come_from_both_tables_and_only_from_listening_sockets() -> None:
    assert listening_ports(TCP + TCP6) == {7000, 80}


def test_established_connections_have_their_addresses() -> None:
    assert established_tcp(TCP) == [("10.0.0.2:7000", "10.0.0.3:40000")]


def test_established_connections_on_ipv6_sockets_have_their_addresses() -> None:
    """A dual-stack server (nginx's `listen [::]:80`, Python's create_server with dualstack) holds its IPv4
    connections in tcp6, as IPv4-mapped addresses: they read as IPv4."""
    assert established_tcp(TCP + TCP6) == [("10.0.0.2:7000", "10.0.0.3:40000"), ("10.0.0.2:80", "10.0.0.3:40002"),
                                           ("[fd00::2]:80", "[fd00::3]:40003")]


@pytest.fixture
def connected_over(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connection from `request.param` (a loopback address) to a dual-stack listener on ::."""
    if not socket.has_dualstack_ipv6():
        pytest.skip("no IPv6 in this kernel")
    with socket.create_server(("", 0), family=socket.AF_INET6, dualstack_ipv6=True) as server:
        client = socket.create_connection((request.param, server.getsockname()[1]))
        accepted, _ = server.accept()
        with client, accepted:
            yield client, accepted


def _as_status_says(address: tuple) -> str:
    ip, port = address[0].removeprefix("::ffff:"), address[1]
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@pytest.mark.parametrize("connected_over", ["127.0.0.1", "::1"], indirect=True)
def test_the_kernels_own_tables_read_as_the_sockets_say(connected_over: tuple[socket.socket, socket.socket]):
    tables = "".join(Path(f"/proc/net/{table}").read_text() for table in ("tcp", "tcp6"))
    for sock in connected_over:
        assert (_as_status_says(sock.getsockname()), _as_status_says(sock.getpeername())) in established_tcp(tables)


def test_proc_net_unix_lines_that_anyone_can_shape_never_break_the_parse():
    """Socket paths are printed as bound: bytes that are not UTF-8, spaces, newlines that make lines of their
    own. Each such line is either a socket or skipped."""
    text = (b"Num       RefCount Protocol Flags    Type St Inode Path\n"
            b"0000000000000000: 00000002 00000000 00010000 0001 01 101 @x\xff y z\n"
            b"0000000000000000: 00000002 00000000 00010000 0001 01 102 @freeflow-graft a b\n"
            b"0: 1 2 3 4 5 notanint @injected\n"
            b"0000000000000000: 00000003 00000000 00000000 0001 03 103\n"
            b"0000000000000000: 00000002 00000000 00010000 0001 01 104 /run/a path\n"
            b"short line\n\n")
    assert parse_proc_net_unix(text) == [(101, "@x\ufffd y z"), (102, "@freeflow-graft a b"), (103, ""),
                                         (104, "/run/a path")]


def test_a_kernel_without_ipv6_still_has_its_ipv4_tables_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Booted with ipv6.disable=1 there is no /proc/net/tcp6: the IPv4 connections are still listed."""
    real_open = open

    def without_tcp6(path, *args, **kwargs):
        if str(path).endswith("/net/tcp6"):
            raise FileNotFoundError(2, "No such file or directory", path)
        if str(path).endswith("/net/tcp"):
            return io.StringIO(TCP)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", without_tcp6)
    assert read_tcp_tables("/proc/self/ns/net") == TCP
