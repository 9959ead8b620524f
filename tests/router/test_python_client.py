"""Unmodified Python programs (blocking, asyncio, socketserver) grafted by freeflow.client.install()."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# Every program reports on a connection with one JSON line; `unix` is the real descriptor's domain.
PRELUDE = textwrap.dedent("""
    import asyncio, hashlib, json, os, socket, socketserver, sys, time
    import freeflow.client as ff

    def report(sock, **extra):
        unix = sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == socket.AF_UNIX
        grafted = ff.is_grafted(sock) if isinstance(sock, socket.socket) else unix
        return {"grafted": grafted, "unix": unix, "local": list(sock.getsockname()),
                "peer": list(sock.getpeername()), **extra}

    def read_all(sock):
        return b"".join(iter(lambda: sock.recv(1 << 16), b""))
""")

INSTALL = "assert ff.install()"
DISABLED = "os.environ['FREEFLOW_DISABLE'] = '1'\nassert not ff.install()"

# Digests what each connection sends, answers the digest and closes.
SERVER = textwrap.dedent("""
    {setup}
    srv = socket.create_server(("0.0.0.0", {port}))
    print("listening", flush=True)
    while True:
        conn, peer = srv.accept()
        with conn:
            digest = hashlib.sha256(read_all(conn)).hexdigest()
            conn.sendall(digest.encode())
            print(json.dumps(report(conn, accepted=list(peer))), flush=True)
""")

CLIENT = textwrap.dedent("""
    {setup}
    for _ in range({count}):
        data = os.urandom({size})
        started = time.monotonic()
        sock = {dial}
        seconds = time.monotonic() - started
        with sock:
            result = report(sock, seconds=seconds)
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            result["ok"] = read_all(sock).decode() == hashlib.sha256(data).hexdigest()
        print(json.dumps(result), flush=True)
        time.sleep({pause})
""")
CREATE_CONNECTION = 'socket.create_connection(("{ip}", {port}), timeout=10)'


def client(lab, ns, port, setup=INSTALL, count=1, size=1_000_000, dial=CREATE_CONNECTION, pause=0.0):
    dial = dial.format(ip="10.213.0.2", port=port)
    code = PRELUDE + CLIENT.format(setup=setup, count=count, size=size, pause=pause, dial=dial)
    return [json.loads(line) for line in lab.python(ns, code).splitlines()]


def serve(lab, ns, code):
    server = lab.python(ns, PRELUDE + code, background=True)
    assert server.stdout.readline().strip() == "listening", server.stderr.read()
    return server


def finish(server) -> list[dict]:
    """The reports of a server whose clients are done (each is printed before its connection closes)."""
    server.kill()
    out, err = server.communicate(timeout=10)
    assert "Traceback" not in err, err
    return [json.loads(line) for line in out.splitlines()]


def hosts(lab):
    a, b = lab.add_host(1), lab.add_host(2)
    lab.start_router()
    return a, b


def test_blocking_program_is_grafted_and_answers_overlay_addresses(lab):
    a, b = hosts(lab)
    server = serve(lab, b, SERVER.format(setup=INSTALL, port=7100))
    reports = client(lab, a, 7100, count=2, size=4_000_000)
    accepted = finish(server)
    assert [(r["grafted"], r["unix"], r["ok"]) for r in reports] == [(True, True, True)] * 2
    assert [(r["grafted"], r["unix"]) for r in accepted] == [(True, True)] * 2
    for mine, theirs in zip(reports, accepted, strict=True):
        assert mine["peer"] == theirs["local"] == ["10.213.0.2", 7100]
        assert mine["local"] == theirs["peer"] == theirs["accepted"]
        assert mine["local"][0] == "10.213.0.1" and mine["local"][1] > 0


def test_plain_blocking_socket_and_socketserver(lab):
    a, b = hosts(lab)
    code = textwrap.dedent("""
        assert ff.install()
        class Digest(socketserver.StreamRequestHandler):
            def handle(self):
                self.wfile.write(hashlib.sha256(self.rfile.read()).hexdigest().encode())
                print(json.dumps(report(self.request)), flush=True)
        with socketserver.ThreadingTCPServer(("0.0.0.0", 7200), Digest) as server:
            print("listening", flush=True)
            server.serve_forever()
    """)
    server = serve(lab, b, code)
    dial = 'socket.socket(); sock.connect(("{ip}", {port}))'
    reports = client(lab, a, 7200, count=2, dial=dial)
    accepted = finish(server)
    assert [(r["grafted"], r["unix"], r["ok"]) for r in reports] == [(True, True, True)] * 2
    assert [(r["grafted"], r["peer"]) for r in accepted] == [(True, r["local"]) for r in reports]


def test_asyncio_streams_are_grafted(lab):
    a, b = hosts(lab)
    server_code = textwrap.dedent("""
        async def digest(reader, writer):
            data = await reader.read()
            writer.write(hashlib.sha256(data).hexdigest().encode())
            await writer.drain()
            info = report(writer.get_extra_info("socket"), peername=writer.get_extra_info("peername"))
            print(json.dumps(info), flush=True)
            writer.close()
            await writer.wait_closed()

        async def main():
            server = await asyncio.start_server(digest, "0.0.0.0", 7300)
            print("listening", flush=True)
            await server.serve_forever()

        assert ff.install()
        asyncio.run(main())
    """)
    client_code = PRELUDE + textwrap.dedent("""
        async def one():
            data = os.urandom(2_000_000)
            reader, writer = await asyncio.open_connection("10.213.0.2", 7300)
            result = report(writer.get_extra_info("socket"), peername=writer.get_extra_info("peername"))
            writer.write(data)
            await writer.drain()
            writer.write_eof()
            result["ok"] = (await reader.read()).decode() == hashlib.sha256(data).hexdigest()
            writer.close()
            await writer.wait_closed()
            return result

        async def main():
            for result in await asyncio.gather(*(one() for _ in range(3))):
                print(json.dumps(result))

        assert ff.install()
        asyncio.run(main())
    """)
    server = serve(lab, b, server_code)
    reports = [json.loads(line) for line in lab.python(a, client_code).splitlines()]
    accepted = finish(server)
    assert [(r["unix"], r["ok"]) for r in reports] == [(True, True)] * 3
    assert all(r["peer"] == r["peername"] == ["10.213.0.2", 7300] for r in reports)
    assert [r["unix"] for r in accepted] == [True] * 3
    assert sorted(tuple(r["peername"]) for r in accepted) == sorted(tuple(r["local"]) for r in reports)


def test_an_event_loop_is_not_stalled_by_a_slow_accept(lab):
    """asyncio's connect gives the graft a short budget, then stays on TCP: with a server whose accept comes
    2 s late (and a router that would wait for it as long as it can, 1.5 s), the loop goes on, the data
    arrives intact, and the next connection, accepted at once, is grafted."""
    lab.extra_env["FREEFLOW_GRAFT_WAIT"] = "1.5"
    a, b = hosts(lab)
    slow = SERVER.replace('print("listening", flush=True)', 'print("listening", flush=True); time.sleep(2)')
    server = serve(lab, b, slow.format(setup=INSTALL, port=7350))
    client_code = PRELUDE + textwrap.dedent("""
        async def one():
            data = os.urandom(1_000_000)
            started = time.monotonic()
            reader, writer = await asyncio.open_connection("10.213.0.2", 7350)
            result = report(writer.get_extra_info("socket"), seconds=time.monotonic() - started)
            writer.write(data)
            writer.write_eof()
            result["ok"] = (await reader.read()).decode() == hashlib.sha256(data).hexdigest()
            writer.close()
            return result

        async def main():
            for _ in range(2):
                print(json.dumps(await one()), flush=True)

        assert ff.install()
        asyncio.run(main())
    """)
    first, second = [json.loads(line) for line in lab.python(a, client_code).splitlines()]
    accepted = finish(server)
    assert first["ok"] and not first["unix"], lab.router_log()
    assert first["seconds"] < 1.0, "the event loop waited for the server's accept"
    assert second["ok"] and second["unix"], lab.router_log()
    assert [r["unix"] for r in accepted] == [False, True]


def test_explicit_sockets_without_install(lab):
    a, b = hosts(lab)
    server_code = textwrap.dedent("""
        srv = ff.create_server(("0.0.0.0", 7400))
        print("listening", flush=True)
        conn, peer = srv.accept()
        with conn:
            conn.sendall(hashlib.sha256(read_all(conn)).hexdigest().encode())
            print(json.dumps(report(conn, patched=socket.socket.connect is not socket.SocketType.connect)))
    """)
    server = serve(lab, b, server_code)
    [mine] = client(lab, a, 7400, setup="", dial='ff.create_connection(("{ip}", {port}), timeout=5)')
    [theirs] = finish(server)
    assert (mine["grafted"], mine["unix"], mine["ok"]) == (True, True, True)
    assert (theirs["grafted"], theirs["unix"], theirs["patched"]) == (True, True, False)
    assert mine["local"] == theirs["peer"] and mine["peer"] == theirs["local"] == ["10.213.0.2", 7400]


def test_tcp_options_and_sendto_answer_as_tcp_on_a_grafted_socket(lab):
    a, b = hosts(lab)
    server = serve(lab, b, SERVER.format(setup=INSTALL, port=7450))
    code = PRELUDE + textwrap.dedent("""
        assert ff.install()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # before connect: carried over
        sock.settimeout(10)
        sock.connect(("10.213.0.2", 7450))
        fresh = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)
        data = os.urandom(100_000)
        sent = sock.sendto(data, ("10.213.0.2", 7450))  # as on a connected TCP socket: the address is ignored
        sock.sendall(data[sent:])
        sock.shutdown(socket.SHUT_WR)
        print(json.dumps(report(sock, keepidle=fresh, ok=read_all(sock).decode() == hashlib.sha256(data).hexdigest(),
                                nodelay=sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
                                keepintvl=sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                                state=sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0],
                                tos=sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS),
                                keepalive=sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))))
    """)
    [mine] = [json.loads(line) for line in lab.python(a, code).splitlines()]
    finish(server)
    assert (mine["grafted"], mine["unix"], mine["ok"]) == (True, True, True)
    assert (mine["keepidle"], mine["nodelay"], mine["keepintvl"], mine["state"], mine["tos"]) == (7200, 1, 5, 1, 0)
    assert mine["keepalive"] == 1


def test_one_accelerated_side_is_enough_to_connect_either_way(lab):
    lab.extra_env["FREEFLOW_GRAFT_WAIT"] = "1.5"  # the longest there is: a client kept waiting shows
    a, b = hosts(lab)
    installed = serve(lab, b, SERVER.format(setup=INSTALL, port=7500))
    plain = serve(lab, b, SERVER.format(setup="", port=7501))
    [to_installed] = client(lab, a, 7500, setup="")
    [from_installed] = client(lab, a, 7501)
    for server in (installed, plain):
        [accepted] = finish(server)
        assert (accepted["grafted"], accepted["unix"]) == (False, False)
    for mine in (to_installed, from_installed):
        assert (mine["grafted"], mine["unix"], mine["ok"]) == (False, False, True)
    assert from_installed["peer"] == ["10.213.0.2", 7501]
    assert from_installed["seconds"] < 1.0, "a server without FreeFlow must not make the client wait"


def test_freeflow_disable_leaves_sockets_alone(lab):
    a, b = hosts(lab)
    server = serve(lab, b, SERVER.format(setup=INSTALL, port=7600))
    dial = 'socket.socket(); assert socket.socket.connect is socket.SocketType.connect; sock.connect(("{ip}", {port}))'
    [mine] = client(lab, a, 7600, setup=DISABLED, dial=dial)
    [accepted] = finish(server)
    assert (mine["grafted"], mine["unix"], mine["ok"]) == (False, False, True)
    assert (accepted["grafted"], accepted["unix"]) == (False, False)


def test_listener_registers_again_after_router_restart(lab):
    a, b = hosts(lab)
    server = serve(lab, b, SERVER.format(setup=INSTALL, port=7700))
    assert client(lab, a, 7700)[0]["grafted"]
    lab.kill_router()
    lab.start_router()
    # The first connection after the restart finds the listener unregistered; its accept() registers again.
    reports = client(lab, a, 7700, count=3, size=10_000, pause=0.3)
    finish(server)
    assert all(r["ok"] for r in reports)
    assert [(r["grafted"], r["unix"]) for r in reports[1:]] == [(True, True)] * 2, lab.router_log()


def test_runner_and_auto_import_accelerate_unmodified_programs(lab, tmp_path):
    a, b = hosts(lab)
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent("""
        import hashlib, json, socket, sys
        srv = socket.create_server(("0.0.0.0", 7800))
        print("listening", flush=True)
        conn, peer = srv.accept()
        data = b"".join(iter(lambda: conn.recv(1 << 16), b""))
        conn.sendall(hashlib.sha256(data).hexdigest().encode())
        unix = conn.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == socket.AF_UNIX
        print(json.dumps({"unix": unix, "peer": list(conn.getpeername()), "argv": sys.argv, "name": __name__}))
    """))
    server = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-m", "freeflow.client.run", str(script),
                               "--flag"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "listening", server.stderr.read()
    [mine] = client(lab, a, 7800, setup="import freeflow.client.auto")
    [theirs] = finish(server)
    assert (mine["grafted"], mine["unix"], mine["ok"]) == (True, True, True)
    assert theirs == {"unix": True, "peer": mine["local"], "argv": [str(script), "--flag"], "name": "__main__"}


def test_uninstall_restores_the_socket_class():
    code = textwrap.dedent("""
        import socket
        before = dict(vars(socket.socket))
        import freeflow.client as ff
        assert ff.install() and socket.socket.connect is not socket.SocketType.connect
        with socket.create_server(("127.0.0.1", 0)) as srv:
            with socket.create_connection(srv.getsockname()) as c, srv.accept()[0] as s:
                c.sendall(b"ping")
                assert s.recv(4) == b"ping" and not ff.is_grafted(c)
        ff.uninstall()
        assert dict(vars(socket.socket)) == before
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
