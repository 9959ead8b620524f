"""The router pairs real connections between namespaces; every refusal leaves them on the overlay."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SERVER = textwrap.dedent("""
    import hashlib, socket, sys
    from freeflow.client import graft
    srv = socket.create_server(("0.0.0.0", {port}))
    reg = graft.register_listener({port})
    print("listening", reg is not None, flush=True)
    conn, peer = srv.accept()
    grafted = graft.accepted(conn, peer, {port})
    digest = hashlib.sha256()
    while chunk := conn.recv(1 << 16):
        digest.update(chunk)
    conn.sendall(digest.hexdigest().encode())
    domain = conn.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
    print(grafted, domain == socket.AF_UNIX, digest.hexdigest(), flush=True)
""")

CLIENT = textwrap.dedent("""
    import hashlib, os, socket
    from freeflow.client import graft
    data = os.urandom({size})
    sock = socket.socket()
    grafted = graft.connect(sock, ("{ip}", {port}))
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    echoed = sock.recv(64).decode()
    print(grafted, echoed == hashlib.sha256(data).hexdigest(), flush=True)
""")


def start_server(lab, ns, port=7000):
    server = lab.python(ns, SERVER.format(port=port), background=True)
    assert server.stdout.readline().split()[0] == "listening"
    return server


def finish(server) -> list[str]:
    out, err = server.communicate(timeout=30)
    assert server.returncode == 0, err
    return out.split()


def test_same_network_connection_is_grafted(lab):
    a, b = lab.add_host(1), lab.add_host(2)
    lab.start_router()
    server = start_server(lab, b)
    assert lab.python(a, CLIENT.format(ip="10.213.0.2", port=7000, size=20_000_000)).split() == ["True", "True"]
    grafted, unix, _ = finish(server)
    assert grafted == "True" and unix == "True"


def test_without_router_everything_stays_on_tcp(lab):
    a, b = lab.add_host(1), lab.add_host(2)
    server = start_server(lab, b)
    assert lab.python(a, CLIENT.format(ip="10.213.0.2", port=7000, size=1_000_000)).split() == ["False", "True"]
    assert finish(server)[:2] == ["False", "False"]


def test_unregistered_server_stays_on_tcp_without_delay(lab):
    """A router that waited for a graft would hold the client for its graft wait: the longest there is here
    (1.5 s), so any wait shows."""
    a, b = lab.add_host(1), lab.add_host(2)
    lab.extra_env["FREEFLOW_GRAFT_WAIT"] = "1.5"
    lab.start_router()
    plain = "import socket\ns=socket.create_server(('0.0.0.0',7001))\nprint('listening',flush=True)\n" \
            "c,_=s.accept()\nc.sendall(c.recv(10))\n"
    server = lab.python(b, plain, background=True)
    server.stdout.readline()
    code = ("import socket,time\nfrom freeflow.client import graft\ns=socket.socket()\nt=time.monotonic()\n"
            "g=graft.connect(s,('10.213.0.2',7001))\nd=time.monotonic()-t\ns.sendall(b'ping')\n"
            "print(g, s.recv(10)==b'ping', d)")
    grafted, echoed, seconds = lab.python(a, code).split()
    assert (grafted, echoed) == ("False", "True")
    assert float(seconds) < 1.0, "the fallback must not wait for a graft"
    server.wait(10)


def test_other_network_is_never_paired(lab):
    a = lab.add_host(1, network="n1")
    b = lab.add_host(2, network="n2")
    lab.start_router()
    server = start_server(lab, b)
    assert lab.python(a, CLIENT.format(ip="10.213.0.2", port=7000, size=100_000)).split() == ["False", "True"]
    assert finish(server)[:2] == ["False", "False"]


def test_router_restart_keeps_grafted_connections_and_grafts_again(lab):
    a, b = lab.add_host(1), lab.add_host(2)
    lab.start_router()
    server_code = textwrap.dedent("""
        import socket, sys
        from freeflow.client import graft
        srv = socket.create_server(("0.0.0.0", 7002))
        reg = graft.register_listener(7002)
        print("listening", flush=True)
        conns = []
        while True:
            c, peer = srv.accept()
            print(graft.accepted(c, peer, 7002), flush=True)
            conns.append(c)
            while data := c.recv(100):
                c.sendall(data)
                if data.endswith(b"."):
                    break
    """)
    client_code = textwrap.dedent("""
        import socket, sys
        from freeflow.client import graft
        s = socket.socket()
        print(graft.connect(s, ("10.213.0.2", 7002)), flush=True)
        sys.stdin.readline()
        s.sendall(b"after restart.")
        print(s.recv(100).decode(), flush=True)
    """)
    server = lab.python(b, server_code, background=True)
    assert server.stdout.readline().strip() == "listening"
    client = subprocess.Popen(["ip", "netns", "exec", a, sys.executable, "-c", client_code], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert client.stdout.readline().strip() == "True", lab.router_log()
    assert server.stdout.readline().strip() == "True"
    lab.kill_router()
    lab.start_router()
    for ns in (a, b):  # the new router knows the open connection by the names of its socket pair's ends
        paths = [c["path"] for c in lab.status()["sandboxes"][f"/run/netns/{ns}"]["connections"]]
        assert paths == ["grafted"], lab.router_log()
    out, err = client.communicate("go\n", timeout=20)
    assert out.strip() == "after restart.", err
    server.kill()
