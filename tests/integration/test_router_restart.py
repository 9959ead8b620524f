"""The plugin's router killed in the middle of transfers between real containers: nothing is lost.

Grafted connections (preload library) and shared-memory channels never pass through the router, so a
transfer paused while the router is killed completes with the same checksum; the plugin restarts the router
and new connections are accelerated again at once (the new router inherits the old one's listeners).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import docker, inspect, wait_for
from tests.router.test_channels import CLIENT as CHANNEL_CLIENT
from tests.router.test_channels import SERVER as CHANNEL_SERVER

STATE_DIR = Path("/var/lib/freeflow")
PRELOAD = ["-v", "/run/freeflow:/run/freeflow:ro", "-e", "LD_PRELOAD=/run/freeflow/libfreeflow.so"]
PYTHON_CLIENT = ["-v", "/run/freeflow:/run/freeflow:ro", "-e", "PYTHONPATH=/run/freeflow/python"]
PORT = 7000

# Plain sockets (an unmodified program under the preload library): the server answers each connection with
# the sha256 of what it received and whether its socket is grafted (SO_DOMAIN from the kernel is AF_UNIX).
PLAIN_SERVER = textwrap.dedent(f"""
    import ctypes, hashlib, socket
    libc = ctypes.CDLL(None, use_errno=True)
    def kernel_domain(fd):
        value, size = ctypes.c_int(0), ctypes.c_uint32(4)
        libc.syscall(55, fd, socket.SOL_SOCKET, socket.SO_DOMAIN, ctypes.byref(value), ctypes.byref(size))
        return value.value
    srv = socket.create_server(("0.0.0.0", {PORT}))
    while True:
        conn, _ = srv.accept()
        grafted = kernel_domain(conn.fileno()) == socket.AF_UNIX
        digest = hashlib.sha256()
        while chunk := conn.recv(1 << 20):
            digest.update(chunk)
        conn.sendall(f"{{grafted}} {{digest.hexdigest()}}".encode())
        conn.close()
""")

# Sends {mb} MiB, pausing (a line on stdout, then one on stdin) halfway; prints the server's verdict.
PLAIN_CLIENT = textwrap.dedent("""
    import hashlib, os, socket, sys
    mb = int(sys.argv[2])
    block, digest = os.urandom(1 << 20), hashlib.sha256()
    sock = socket.create_connection((sys.argv[1], {port}))
    for i in range(mb):
        if i == mb // 2 and len(sys.argv) > 3:
            print("paused", flush=True)
            sys.stdin.readline()
        chunk = i.to_bytes(8, "little") + block[8:]
        digest.update(chunk)
        sock.sendall(chunk)
    sock.shutdown(socket.SHUT_WR)
    grafted, echoed = sock.recv(200).decode().split()
    print(grafted, echoed == digest.hexdigest(), flush=True)
""").format(port=PORT)


def router_pid() -> int:
    return int((STATE_DIR / "router.pid").read_text())


def kill_router() -> None:
    """SIGKILL the plugin's router and wait until the plugin has started a new one."""
    old = router_pid()
    os.kill(old, signal.SIGKILL)

    def new_router_ready() -> bool:
        try:
            pid = router_pid()
        except (OSError, ValueError):
            return False
        return pid != old and subprocess.run(["freeflow", "status"], capture_output=True).returncode == 0

    wait_for(new_router_ready, 30, "the plugin to restart its router")


def sandbox_key(container: str) -> str:
    return str(inspect("container", container)["NetworkSettings"]["SandboxKey"])


def paused(container: str, *command: str) -> subprocess.Popen[str]:
    """`docker exec -i` a program that prints "paused" and waits for a line on stdin."""
    run = subprocess.Popen(["docker", "exec", "-i", container, *command], text=True, stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert run.stdout is not None
    line = run.stdout.readline().strip()
    assert line == "paused", run.communicate(timeout=30)
    return run


def resumed(run: subprocess.Popen[str]) -> list[str]:
    out, err = run.communicate("go\n", timeout=120)
    assert run.returncode == 0, err
    return out.split()


def start(container: str, code: str, ready: Callable[[], bool], what: str) -> None:
    docker("exec", "-d", container, "sh", "-c", f"python3 -c '{code}' > /tmp/out 2>&1")
    wait_for(ready, 20, what)


def test_grafted_transfer_survives_a_router_kill_and_new_connections_graft_again(network, container):
    net = network("rkill")
    server = container("srv", net, *PRELOAD)
    client = container("cli", net, *PRELOAD)
    start(server, PLAIN_SERVER, lambda: f":{PORT:04X} " in docker("exec", server, "cat", "/proc/net/tcp"),
          "the server to listen")
    transfer = paused(client, "python3", "-c", PLAIN_CLIENT, server, "512", "pause")
    kill_router()
    assert resumed(transfer) == ["True", "True"], "the grafted transfer lost data or was not grafted"
    # The server sat in accept() while the router died: the new router inherits its listener, and the
    # server registers again on that accept().
    for _ in range(2):
        again = docker("exec", client, "python3", "-c", PLAIN_CLIENT, server, "8").split()
        assert again == ["True", "True"], "a new connection after the restart was not grafted"


def test_a_gibibyte_channel_survives_a_router_kill(network, container):
    net = network("chkill")
    server = container("srv", net, *PYTHON_CLIENT)
    client = container("cli", net, *PYTHON_CLIENT)
    start(server, CHANNEL_SERVER.format(port=PORT, again=False),
          lambda: "listening True" in docker("exec", server, "cat", "/tmp/out"), "the channel listener")
    transfer = paused(client, "python3", "-c", CHANNEL_CLIENT.format(ip=server, port=PORT, mb=1024, pause=512))
    kill_router()
    # The new router lists the channel and, having found its rings in the containers' processes, what it moved.
    status = json.loads(subprocess.run(["freeflow", "status", "--json"], capture_output=True, text=True,
                                       check=True).stdout)
    [channel] = status["sandboxes"][sandbox_key(client)]["channels"]
    assert channel["path"] == "shm" and channel["bytes_moved"] >= 512 << 20, channel
    assert resumed(transfer) == ["shm", "True"], "the channel was not shared memory or lost data"
    wait_for(lambda: "shm" in docker("exec", server, "cat", "/tmp/out"), 30, "the server to finish")
    assert docker("exec", server, "cat", "/tmp/out").split()[-2:] == ["shm", str(1 << 30)]
