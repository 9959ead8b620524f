"""Grafted connections between real containers on a freeflow network, through the plugin's router."""

from __future__ import annotations

import hashlib
import json
import subprocess
import textwrap

from tests.integration.conftest import docker, inspect, wait_for

ACCELERATED = ["-v", "/run/freeflow:/run/freeflow:ro", "-e", "PYTHONPATH=/run/freeflow/python"]

SERVER = textwrap.dedent("""
    import hashlib, socket, sys
    from freeflow.client import graft
    srv = socket.create_server(("0.0.0.0", 7000))
    reg = graft.register_listener(7000)
    print("registered", reg is not None, flush=True)
    while True:
        conn, peer = srv.accept()
        grafted = graft.accepted(conn, peer, 7000)
        digest = hashlib.sha256()
        while chunk := conn.recv(1 << 16):
            digest.update(chunk)
        conn.sendall(f"{grafted} {digest.hexdigest()}".encode())
        conn.close()
""")

CLIENT = textwrap.dedent("""
    import hashlib, os, socket, sys
    from freeflow.client import graft
    sock = socket.socket()
    grafted = graft.connect(sock, (socket.gethostbyname(sys.argv[1]), 7000))
    data = os.urandom(50_000_000)
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    answer = sock.recv(200).decode()
    print(grafted, answer == f"{grafted} {hashlib.sha256(data).hexdigest()}", flush=True)
    sys.stdin.readline()  # the connection stays open while `freeflow status` looks
""")


def logs(name: str) -> str:
    return docker("logs", name)


def test_python_client_grafts_between_containers_and_status_shows_it(network, container):
    net = network("graft")
    server = container("srv", net, *ACCELERATED)
    client = container("cli", net, *ACCELERATED)
    docker("exec", "-d", server, "sh", "-c", f"python3 -c '{SERVER}' > /tmp/out 2>&1")
    wait_for(lambda: "registered True" in docker("exec", server, "cat", "/tmp/out"), 20, "the listener")
    run = subprocess.Popen(["docker", "exec", "-i", client, "python3", "-c", CLIENT, server], text=True,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert run.stdout.readline().split() == ["True", "True"]
        status = json.loads(subprocess.run(["freeflow", "status", "--json"], capture_output=True, text=True,
                                           check=True).stdout)
        key = inspect("container", client)["NetworkSettings"]["SandboxKey"]
        paths = [c["path"] for c in status["sandboxes"][key]["connections"]]
        assert "grafted" in paths
    finally:
        run.communicate("done\n", timeout=30)


def test_unaccelerated_client_reaches_an_accelerated_server(network, container):
    net = network("mixed")
    server = container("srv", net, *ACCELERATED)
    plain = container("plain", net)
    docker("exec", "-d", server, "sh", "-c", f"python3 -c '{SERVER}' > /tmp/out 2>&1")
    wait_for(lambda: "registered True" in docker("exec", server, "cat", "/tmp/out"), 20, "the listener")
    answer = docker("exec", plain, "sh", "-c", f"printf hello | nc -N -w 10 {server} 7000")
    assert answer == f"False {hashlib.sha256(b'hello').hexdigest()}", "on the overlay, every byte there"
