"""Bad input gets a clear error and leaves nothing behind; what is deleted behind the plugin is repaired."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from contextlib import ExitStack, suppress

from tests.integration.conftest import (
    DRIVER,
    PLUGIN,
    container_ip,
    docker,
    docker_fails,
    inspect,
    our_links,
    ping,
    wait_for,
)


def test_unknown_option_is_refused_and_leaks_nothing(names):
    before = our_links()
    error = docker_fails("network", "create", "-d", DRIVER, "-o", "colour=blue", names("bad"))
    assert "unknown option 'colour'" in error and "com.docker.network.driver.mtu" in error
    assert our_links() == before
    assert names("bad") not in docker("network", "ls", "--format", "{{.Name}}")


def test_malformed_mtu_is_refused(names):
    error = docker_fails("network", "create", "-d", DRIVER, "-o", "com.docker.network.driver.mtu=huge",
                         names("bad"))
    assert "whole number" in error


def test_duplicate_network_name_is_refused(network):
    net = network("dup")
    error = docker_fails("network", "create", "-d", DRIVER, net)
    assert "already exists" in error


def test_deleted_bridge_is_recreated_and_traffic_resumes(network, container):
    net = network("repair")
    a = container("a", net)
    b = container("b", net)
    bridge = "ff-" + inspect("network", net)["Id"][:12]
    subprocess.run(["ip", "link", "del", bridge], check=True)
    wait_for(lambda: bridge in our_links(), 20, f"{bridge} to be recreated")
    wait_for(lambda: ping(a, container_ip(b, net), count=1), 20, "traffic over the repaired bridge")


def test_rm_with_endpoints_gone_leaves_no_links(network, container):
    before = our_links()
    net = network("clean")
    a = container("a", net)
    container("b", net)
    docker("rm", "-f", a)
    for c in list(inspect("network", net)["Containers"]):
        docker("rm", "-f", c)
    docker("network", "rm", net)
    assert our_links() == before


def _plugin_socket() -> str:
    plugin_id = docker("plugin", "inspect", "-f", "{{.Id}}", PLUGIN)
    return f"/run/docker/plugins/{plugin_id}/freeflow.sock"


def test_clients_that_stall_on_the_plugin_socket_do_not_block_dockerd(network):
    """More stalled connections than the plugin has threads, held open until the network exists: without a
    bound on each connection the create would wait for them forever (and time out here)."""
    with ExitStack() as stack:
        stalled = []
        for _ in range(24):
            sock = stack.enter_context(socket.socket(socket.AF_UNIX))
            sock.settimeout(60)
            sock.connect(_plugin_socket())
            sock.sendall(b"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nHost: plugin\r\n")  # and no more
            stalled.append(sock)
        name = network("stalled")  # `docker network create`, bounded by the fixture's own timeout
        assert inspect("network", name)["Driver"] == DRIVER
        for sock in stalled:
            assert sock.recv(4096) == b"", "the plugin closes a connection that stalls"


def test_the_plugin_socket_answers_bad_requests_in_json():
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(_plugin_socket())
        sock.sendall(b"GET /Plugin.Activate HTTP/1.0\r\n\r\n")
        reply = b"".join(iter(lambda: sock.recv(4096), b""))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 405") or head.startswith(b"HTTP/1.1 405"), head
    assert "POST /<Interface>.<Method>" in json.loads(body)["Err"]


def test_the_plugin_socket_answers_malformed_http_in_json():
    """The image's gunicorn (Debian's) refuses what it cannot parse: the answer is still the protocol's JSON."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(_plugin_socket())
        sock.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nno colon in this header\r\n\r\n")
        reply = b"".join(iter(lambda: sock.recv(4096), b""))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), reply
    assert json.loads(body)["Err"].startswith("malformed HTTP request: "), body


def _post(body: bytes, chunked: bool = False) -> tuple[bytes, dict]:
    """POST `body` to the plugin's own socket (the image's Flask and gunicorn), as one piece or chunked."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(_plugin_socket())
        framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % len(body)
        sock.sendall(b"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nHost: plugin\r\nConnection: close\r\n"
                     + framing + b"\r\n\r\n")

        def send() -> None:  # beside the reading, as curl does: the plugin answers before the body ends
            try:
                if chunked:
                    for start in range(0, len(body), 1 << 20):
                        piece = body[start:start + (1 << 20)]
                        sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                    sock.sendall(b"0\r\n\r\n")
                else:
                    sock.sendall(body)
            except OSError:  # the plugin answered and closed before taking it all
                pass

        sending = threading.Thread(target=send)
        sending.start()
        reply = b""
        with suppress(ConnectionResetError):  # the plugin closed with the rest of the body unread
            while chunk := sock.recv(4096):
                reply += chunk
        sending.join(60)
    head, _, answer = reply.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(answer)


def test_the_plugin_socket_bounds_bodies_and_nesting():
    """Against the image's own Werkzeug (Debian's 2.2 leaves bodies unbounded unless the app reads with a limit)."""
    big = b"{" + b" " * (5 << 20) + b"}"
    for chunked in (False, True):
        status, answer = _post(big, chunked)
        assert b" 413 " in status and "larger than" in answer["Err"], (chunked, status, answer)
    status, answer = _post(b"[" * 100_000 + b"]" * 100_000)
    assert b" 400 " in status and "too deeply" in answer["Err"]
    status, answer = _post(b"{}")
    assert b" 400 " in status and "NetworkID" in answer["Err"]  # still answering


def test_clients_that_trickle_requests_to_the_plugin_do_not_block_dockerd(network):
    """More connections than the plugin has threads, each sending a byte a second (within the per-read
    timeout): only a deadline on the whole request frees the threads for dockerd."""
    done = threading.Event()
    cut_off: set[int] = set()
    with ExitStack() as stack:
        socks = []
        for _ in range(20):
            sock = stack.enter_context(socket.socket(socket.AF_UNIX))
            sock.connect(_plugin_socket())
            socks.append(sock)

        def trickle() -> None:
            for byte in b"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nHost: plugin\r\nX-Pad: " + b"y" * 60:
                for i, sock in enumerate(socks):
                    if i not in cut_off:
                        try:
                            sock.send(bytes([byte]))
                        except OSError:
                            cut_off.add(i)
                if done.wait(1.0) or len(cut_off) == len(socks):
                    return

        trickler = threading.Thread(target=trickle)
        trickler.start()
        try:
            name = network("trickled")
            assert inspect("network", name)["Driver"] == DRIVER
            wait_for(lambda: len(cut_off) == len(socks), 30, "the plugin to cut off every trickling client")
        finally:
            done.set()
            trickler.join(10)
