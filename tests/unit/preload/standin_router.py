"""A minimal router for the preload library's tests: binds @freeflow in the namespace it runs in.

Speaks freeflow.router.protocol and pairs INTENT/GRAFT by (client port, server port), everything being in
one namespace. Modes: `go` (pair whatever asks), `always` (as go, and say GO to every INTENT, even for a
port nobody registered), `mute` (take registrations, then answer nothing: a router hung since), `overlay` (never
graft), `silent` (accept, never answer),
`half` (on a pair, give only the client its end). Prints one JSON line per event on stdout. The wait for
the second GRAFT of a pair is STANDIN_GRAFT_WAIT seconds (0.5 by default, as the router's); the answer to
the first INTENT comes STANDIN_FIRST_INTENT_DELAY seconds late (0 by default: a router slow once).

Run: python3 standin_router.py MODE   (prints {"event": "ready"} once bound)
"""

from __future__ import annotations

import array
import json
import os
import selectors
import socket
import sys
import time

from freeflow.router import protocol as p

ADDRESS = "10.199.0.1"  # the namespace's one address (test_library.ADDRESS)
GRAFT_WAIT = float(os.environ.get("STANDIN_GRAFT_WAIT", "0.5"))
FIRST_INTENT_DELAY = float(os.environ.get("STANDIN_FIRST_INTENT_DELAY", "0"))


def say(**event: object) -> None:
    print(json.dumps(event), flush=True)


class Standin:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.selector = selectors.DefaultSelector()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(p.SOCKET_NAME)
        self.server.listen(128)
        self.selector.register(self.server, selectors.EVENT_READ)
        self.buffers: dict[socket.socket, bytearray] = {}
        self.listeners: dict[int, set[socket.socket]] = {}
        self.flows: dict[tuple[int, int], float] = {}  # (client port, server port) -> deadline
        self.waiting: dict[tuple[int, int], dict[int, socket.socket]] = {}
        self.intent_delay = FIRST_INTENT_DELAY

    def reply(self, conn: socket.socket, message: p.Message, fd: socket.socket | None = None) -> None:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd.fileno()]))] if fd else []
        try:
            conn.sendmsg([message.encode()], ancillary)
        except OSError as exc:
            say(event="send-failed", error=str(exc))

    def overlay(self, conn: socket.socket) -> None:
        self.reply(conn, p.VerdictReply(p.Verdict.OVERLAY, 0, 0))

    def handle(self, conn: socket.socket, msg: p.Message) -> None:
        if self.mode == "silent" or (self.mode == "mute" and not isinstance(msg, p.Listen)):
            say(event="ignored", op=msg.op)
            return
        if isinstance(msg, p.Listen):
            self.listeners.setdefault(msg.port, set()).add(conn)
            say(event="listen", port=msg.port, backlog=msg.backlog)
            self.reply(conn, p.VerdictReply(p.Verdict.GO, 0, 0))
        elif isinstance(msg, p.Intent):
            go = self.mode == "always" or (self.mode != "overlay" and bool(self.listeners.get(msg.dst_port)))
            if go:
                self.flows[(msg.src_port, msg.dst_port)] = time.monotonic() + 5
            say(event="intent", dst=f"{msg.dst_ip}:{msg.dst_port}", src_port=msg.src_port, go=go)
            time.sleep(self.intent_delay)
            self.intent_delay = 0
            self.reply(conn, p.VerdictReply(p.Verdict.GO if go else p.Verdict.OVERLAY, 0, 0))
        elif isinstance(msg, p.Graft):
            key = (msg.local_port, msg.peer_port) if msg.role == p.Role.CLIENT else (msg.peer_port, msg.local_port)
            say(event="graft", role=msg.role, key=list(key), peer=f"{msg.peer_ip}:{msg.peer_port}")
            if key not in self.flows:
                self.overlay(conn)
                return
            self.flows[key] = min(self.flows[key], time.monotonic() + GRAFT_WAIT)
            waiting = self.waiting.setdefault(key, {})
            waiting[msg.role] = conn
            if len(waiting) == 2:
                self.pair(key, waiting)

    def pair(self, key: tuple[int, int], waiting: dict[int, socket.socket]) -> None:
        del self.flows[key], self.waiting[key]
        client_end, server_end = socket.socketpair()
        client, server = (ADDRESS, key[0]), (ADDRESS, key[1])
        client_end.bind(p.graft_end_name(client, server, "standin"))  # as the router names them
        server_end.bind(p.graft_end_name(server, client, "standin"))
        with client_end, server_end:
            self.reply(waiting[p.Role.CLIENT], p.GraftedReply(ADDRESS, key[1]), client_end)
            if self.mode == "half":
                self.overlay(waiting[p.Role.SERVER])
            else:
                self.reply(waiting[p.Role.SERVER], p.GraftedReply(ADDRESS, key[0]), server_end)
        say(event="grafted" if self.mode != "half" else "half-grafted", key=list(key))

    def expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, deadline in self.flows.items() if deadline <= now]:
            del self.flows[key]
            for conn in self.waiting.pop(key, {}).values():
                self.overlay(conn)
            say(event="expired", key=list(key))

    def close(self, conn: socket.socket) -> None:
        self.selector.unregister(conn)
        self.buffers.pop(conn, None)
        for port, conns in self.listeners.items():
            if conn in conns:
                conns.discard(conn)
                say(event="unlisten", port=port, left=len(conns))
        self.listeners = {port: conns for port, conns in self.listeners.items() if conns}
        conn.close()

    def read(self, conn: socket.socket) -> None:
        data = conn.recv(4096)
        if not data:
            self.close(conn)
            return
        buffer = self.buffers[conn]
        buffer += data
        try:
            while len(buffer) >= p.HEADER.size:
                kind, length = p.parse_header(bytes(buffer[:p.HEADER.size]), p.REQUESTS)
                if len(buffer) < p.HEADER.size + length:
                    return
                msg = kind.decode_body(bytes(buffer[p.HEADER.size:p.HEADER.size + length]))
                del buffer[:p.HEADER.size + length]
                self.handle(conn, msg)
        except p.ProtocolError as exc:
            say(event="protocol-error", error=str(exc))
            self.close(conn)

    def run(self) -> None:
        say(event="ready")
        while True:
            for key, _ in self.selector.select(0.05):
                if key.fileobj is self.server:
                    conn, _ = self.server.accept()
                    self.buffers[conn] = bytearray()
                    self.selector.register(conn, selectors.EVENT_READ)
                else:
                    self.read(key.fileobj)  # type: ignore[arg-type]
            self.expire()


if __name__ == "__main__":
    Standin(sys.argv[1]).run()
