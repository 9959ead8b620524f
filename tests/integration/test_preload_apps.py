"""Unmodified programs (iperf3, sockperf, redis, nginx + curl, asyncio) accelerated by the preload library.

Whether a connection was grafted is read off the container's host-side veth: a grafted transfer never
crosses it, an overlay transfer does.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import container_ip, docker, inspect, wait_for

PRELOAD = ["-v", "/run/freeflow:/run/freeflow:ro", "-e", "LD_PRELOAD=/run/freeflow/libfreeflow.so"]
MB = 1_000_000



@pytest.fixture(scope="module", autouse=True)
def _library_published() -> None:
    if not Path("/run/freeflow/libfreeflow.so").exists():
        pytest.fail("the router has not published /run/freeflow/libfreeflow.so: the plugin was built without it")


def accelerated_pair(network: Callable[..., str], container: Callable[..., str], name: str) -> tuple[str, str, str]:
    """A network and a server and a client container on it, both with the preload library."""
    net = network(name)
    return net, container("srv", net, *PRELOAD), container("cli", net, *PRELOAD)


def veth_bytes(container: str, network: str) -> int:
    """Bytes that crossed the container's veth on `network`, both directions."""
    endpoint = inspect("container", container)["NetworkSettings"]["Networks"][network]["EndpointID"]
    stats = Path(f"/sys/class/net/ffh{endpoint[:12]}/statistics")
    return int((stats / "rx_bytes").read_text()) + int((stats / "tx_bytes").read_text())


def listening(container: str, port: int) -> bool:
    return f":{port:04X} " in docker("exec", container, "cat", "/proc/net/tcp", "/proc/net/tcp6")


def test_iperf3_is_grafted(network, container):
    net, server, client = accelerated_pair(network, container, "iperf")
    docker("exec", "-d", server, "iperf3", "-s", "-1")
    wait_for(lambda: listening(server, 5201), 20, "iperf3 to listen")
    before = veth_bytes(client, net)
    report = json.loads(docker("exec", client, "iperf3", "-c", server, "-t", "2", "-J"))
    moved = report["end"]["sum_received"]["bytes"]
    assert moved > 100 * MB
    assert veth_bytes(client, net) - before < moved / 100, "the data went over the veth: not grafted"


def test_unaccelerated_side_stays_on_the_overlay_both_ways(network, container):
    net = network("mixed")
    accelerated = container("acc", net, *PRELOAD)
    plain = container("plain", net)
    for server, client in ((accelerated, plain), (plain, accelerated)):
        docker("exec", "-d", server, "iperf3", "-s", "-1")
        wait_for(lambda s=server: listening(s, 5201), 20, "iperf3 to listen")
        before = veth_bytes(client, net)
        report = json.loads(docker("exec", client, "iperf3", "-c", server, "-t", "1", "-J"))
        moved = report["end"]["sum_received"]["bytes"]
        assert moved > MB
        assert veth_bytes(client, net) - before >= moved, "an unaccelerated peer must stay on the overlay"


def test_sockperf_ping_pong(network, container):
    net, server, client = accelerated_pair(network, container, "sockperf")
    docker("exec", "-d", server, "sockperf", "server", "--tcp", "-p", "11111")
    wait_for(lambda: listening(server, 11111), 20, "sockperf to listen")
    before = veth_bytes(client, net)
    out = docker("exec", client, "sockperf", "ping-pong", "--tcp", "-i", container_ip(server, net), "-p", "11111",
                 "-t", "2", "-m", "64")
    assert "Summary: Latency is" in out
    assert veth_bytes(client, net) - before < 100_000, "sockperf's messages crossed the veth"


def test_redis_server_and_benchmark(network, container):
    net, server, client = accelerated_pair(network, container, "redis")
    docker("exec", "-d", server, "redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no")
    wait_for(lambda: listening(server, 6379), 20, "redis to listen")
    before = veth_bytes(client, net)
    out = docker("exec", client, "redis-benchmark", "-h", server, "-t", "set,get", "-n", "20000", "-q")
    assert "SET:" in out and "GET:" in out
    assert docker("exec", client, "redis-cli", "-h", server, "set", "k", "v") == "OK"
    assert docker("exec", client, "redis-cli", "-h", server, "get", "k") == "v"
    assert veth_bytes(client, net) - before < 200_000, "redis traffic crossed the veth"


def test_nginx_serves_curl_with_the_same_checksum(network, container):
    net, server, client = accelerated_pair(network, container, "nginx")
    docker("exec", server, "sh", "-c", "head -c 30000000 /dev/urandom > /var/www/html/blob")
    digest = docker("exec", server, "sha256sum", "/var/www/html/blob").split()[0]
    docker("exec", server, "nginx")  # a master that forks workers, which accept
    wait_for(lambda: listening(server, 80), 20, "nginx to listen")
    before = veth_bytes(client, net)
    got = docker("exec", client, "sh", "-c", f"curl -sf http://{server}/blob | sha256sum").split()[0]
    assert got == digest
    assert veth_bytes(client, net) - before < 3 * MB, "the download crossed the veth"


ASYNCIO_ECHO = textwrap.dedent("""
    import asyncio
    async def echo(reader, writer):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()
    async def main():
        server = await asyncio.start_server(echo, "0.0.0.0", 7007)
        async with server:
            await server.serve_forever()
    asyncio.run(main())
""")

ASYNCIO_CLIENT = textwrap.dedent("""
    import asyncio, hashlib, os, sys
    async def main():
        reader, writer = await asyncio.open_connection(sys.argv[1], 7007)
        data = os.urandom(20_000_000)
        async def send():
            writer.write(data)
            await writer.drain()
            writer.write_eof()
        sender = asyncio.create_task(send())
        got = hashlib.sha256()
        while chunk := await reader.read(65536):
            got.update(chunk)
        await sender
        print(got.hexdigest() == hashlib.sha256(data).hexdigest())
    asyncio.run(main())
""")


def test_python_asyncio_echo_through_the_preload_library(network, container):
    net, server, client = accelerated_pair(network, container, "asyncio")
    docker("exec", "-d", server, "python3", "-c", ASYNCIO_ECHO)
    wait_for(lambda: listening(server, 7007), 20, "the echo server to listen")
    before = veth_bytes(client, net)
    assert docker("exec", client, "python3", "-c", ASYNCIO_CLIENT, server) == "True"
    assert veth_bytes(client, net) - before < 2 * MB, "the echo crossed the veth"


# As inetd or sshd do: the accepted connection becomes a new program's stdin, which says who it talks to (and,
# as sshd checks before anything else, that the connection carries no IP options).
INETD = textwrap.dedent("""
    import os, socket, sys
    child = "import json, socket; s = socket.socket(fileno=0); s.sendall(json.dumps([s.family, s.getpeername(), " \\
            "s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), " \\
            "len(s.getsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, 40))]).encode() + bytes(1) + bytes(5_000_000))"
    srv = socket.create_server(("0.0.0.0", 7008))
    while True:
        conn, _ = srv.accept()
        if os.fork() == 0:
            os.dup2(conn.fileno(), 0)
            os.execv(sys.executable, [sys.executable, "-c", child])
        conn.close()
""")

INETD_CLIENT = textwrap.dedent("""
    import json, socket, sys
    sock = socket.create_connection((sys.argv[1], 7008))
    answer = sock.makefile("rb").read()
    family, peer, nodelay, ip_options = json.loads(answer[:answer.index(0)])
    print(family == socket.AF_INET and tuple(peer) == sock.getsockname() and nodelay == ip_options == 0, len(answer))
""")


def test_a_grafted_connection_served_by_an_exec_ed_program_still_looks_like_tcp(network, container):
    net, server, client = accelerated_pair(network, container, "inetd")
    docker("exec", "-d", server, "python3", "-c", INETD)
    wait_for(lambda: listening(server, 7008), 20, "the inetd-like server to listen")
    before = veth_bytes(client, net)
    answers_as_tcp, received = docker("exec", client, "python3", "-c", INETD_CLIENT, server).split()
    assert answers_as_tcp == "True" and int(received) > 5 * MB
    assert veth_bytes(client, net) - before < MB, "the connection crossed the veth: not grafted"


def test_sshd_serves_a_grafted_session_and_logs_the_clients_overlay_address(network, container):
    """sshd runs every connection in a new program (exec), which checks the socket has no IP options and logs
    its peer: both must look like the TCP connection it replaced."""
    net, server, client = accelerated_pair(network, container, "sshd")
    docker("exec", client, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/root/.ssh/id_ed25519")
    key = docker("exec", client, "cat", "/root/.ssh/id_ed25519.pub")
    docker("exec", server, "sh", "-c", "ssh-keygen -A >/dev/null && mkdir -p /run/sshd /root/.ssh && "
           f"echo '{key}' > /root/.ssh/authorized_keys && /usr/sbin/sshd -E /tmp/sshd.log")
    wait_for(lambda: listening(server, 22), 20, "sshd to listen")
    before = veth_bytes(client, net)
    got = docker("exec", client, "sh", "-c", "ssh -o StrictHostKeyChecking=no -o BatchMode=yes "
                 f"{server} 'head -c 5000000 /dev/zero' | wc -c")
    assert got == "5000000"
    assert veth_bytes(client, net) - before < MB, "the session crossed the veth: not grafted"
    log = docker("exec", server, "cat", "/tmp/sshd.log")
    assert f"Accepted publickey for root from {container_ip(client, net)} port" in log, log


# A server whose connections check what TCP does and a socket pair does not (each answer says whether the
# server's socket really is a grafted one): its SHUT_RD leaves the client's sends alone, a received source
# address is none, TCP_CONGESTION and IP_TTL read what TCP's say, and a listener deferring its accepts until
# data comes is not grafted.
TCP_SEMANTICS_SERVER = textwrap.dedent("""
    import ctypes, socket, time
    libc = ctypes.CDLL(None, use_errno=True)
    def grafted(sock):  # SO_DOMAIN by a raw syscall, past the library
        value, size = ctypes.c_int(0), ctypes.c_uint32(4)
        libc.syscall(55, sock.fileno(), socket.SOL_SOCKET, socket.SO_DOMAIN, ctypes.byref(value), ctypes.byref(size))
        return value.value == socket.AF_UNIX
    srv = socket.create_server(("0.0.0.0", 7100))
    deferring = socket.create_server(("0.0.0.0", 7101))
    deferring.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)  # after listen(), as nginx does
    print("ready", flush=True)
    conn, _ = srv.accept()
    conn.shutdown(socket.SHUT_RD)
    time.sleep(0.3)  # the client sends meanwhile
    conn.sendall(f"reply {grafted(conn)}".encode())
    conn.sendall(b"more")
    time.sleep(1)  # and this, before a close with its unread bytes resets the connection
    conn.close()
    conn, _ = deferring.accept()
    conn.sendall(conn.recv(10) + f" {grafted(conn)}".encode())
    conn.close()
""")

TCP_SEMANTICS_CLIENT = textwrap.dedent("""
    import signal, socket, sys, time
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as a C program has it: a send on a pipe shut is death
    sock = socket.create_connection((sys.argv[1], 7100), timeout=20)
    time.sleep(0.1)
    sock.sendall(b"after the server's SHUT_RD")
    print(sock.recvfrom(10, socket.MSG_WAITALL), flush=True)  # "reply True", however late this reads
    print(sock.recvmsg(4, 0, socket.MSG_WAITALL)[::3], flush=True)
    options = [(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16), (socket.IPPROTO_IP, socket.IP_TTL, 0)]
    plain = socket.socket()  # what TCP itself answers here
    print([sock.getsockopt(*o) == plain.getsockopt(*o) for o in options], flush=True)
    sock = socket.create_connection((sys.argv[1], 7101), timeout=20)
    sock.sendall(b"deferred")
    print(sock.recv(100), flush=True)
""")


def test_grafted_sockets_keep_tcps_shutdown_source_address_options_and_deferred_accepts(network, container):
    net = network("tcpsem")
    server = container("srv", net, *PRELOAD, "-e", "FREEFLOW_DEBUG=1")
    client = container("cli", net, *PRELOAD, "-e", "FREEFLOW_DEBUG=1")
    docker("exec", "-d", server, "sh", "-c", f"python3 -c '{TCP_SEMANTICS_SERVER}' > /tmp/out 2>&1")
    wait_for(lambda: "ready" in docker("exec", server, "cat", "/tmp/out"), 20, "the server")
    run = subprocess.run(["docker", "exec", client, "python3", "-c", TCP_SEMANTICS_CLIENT, container_ip(server, net)],
                         capture_output=True, text=True, timeout=60)
    lines = run.stdout.splitlines()
    assert run.returncode == 0, (run.returncode, run.stdout, run.stderr)
    assert lines == ["(b'reply True', None)", "(b'more', None)", "[True, True]", "b'deferred False'"], (lines,
                                                                                                  run.stderr)
    server_log = docker("exec", server, "cat", "/tmp/out")
    assert "defers its accepts" in server_log, server_log
    assert "the router leaves" not in run.stderr, "the client waited for a graft the deferring server never took"


# A line protocol answered line by line (one write a reply), and a client that pipelines every request before it
# reads a reply, each request its own write: on unix sockets' default buffers it stalls after a few hundred.
PIPELINE_SERVER = textwrap.dedent("""
    import socket
    srv = socket.create_server(("0.0.0.0", 7010))
    while True:
        conn, _ = srv.accept()
        with conn:
            pending = b""
            while chunk := conn.recv(65536):
                *lines, pending = (pending + chunk).split(b"\\n")
                for line in lines:
                    conn.sendall(b"+" + line + b"\\n")
""")

PIPELINE_CLIENT = textwrap.dedent("""
    import socket, sys
    count = int(sys.argv[2])
    sock = socket.create_connection((sys.argv[1], 7010), timeout=20)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    requests = [b"GET k%05d" % i for i in range(count)]
    try:
        for request in requests:
            sock.sendall(request + b"\\n")
    except TimeoutError:
        sys.exit(f"stalled after {requests.index(request)} requests")
    sock.shutdown(socket.SHUT_WR)
    replies = sock.makefile("rb").read()
    print(replies.count(b"\\n"), replies == b"".join(b"+" + request + b"\\n" for request in requests))
""")


def test_a_client_pipelining_thousands_of_tiny_requests_does_not_stall(network, container):
    net, server, client = accelerated_pair(network, container, "pipeline")
    docker("exec", "-d", server, "python3", "-c", PIPELINE_SERVER)
    wait_for(lambda: listening(server, 7010), 20, "the line server to listen")
    before = veth_bytes(client, net)
    run = subprocess.run(["docker", "exec", client, "python3", "-c", PIPELINE_CLIENT, container_ip(server, net),
                          "5000"], capture_output=True, text=True, timeout=90)
    assert (run.returncode, run.stdout.strip()) == (0, "5000 True"), run.stderr
    assert veth_bytes(client, net) - before < 20_000, "the requests crossed the veth: not grafted"

