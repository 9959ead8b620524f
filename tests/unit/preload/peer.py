"""Test programs for the preload library, run as unmodified programs with LD_PRELOAD=libfreeflow.so.

They use only the socket module (so every call goes through libc and the library) and report one JSON
line per connection. Whether a connection really is grafted is asked of the kernel with a raw getsockopt
system call, which the library cannot interpose: SO_DOMAIN is AF_UNIX on a grafted socket.

  peer.py server PORT [COUNT] [fork|slow|exec|linger|skipping|nostdin|spawn]
                                        listen on 0.0.0.0:PORT, answer each connection with the sha256
                                        of what it sent; `fork`: a child accepts, the parent closes;
                                        `slow`: the first accept comes only once the file named by
                                        $PEER_CONNECTED_MARK exists (clients make it after connect);
                                        `exec`: the accepted socket is served by a new program (exec);
                                        `linger`: the listener has SO_LINGER {on, 0}, which accepted
                                        sockets inherit (a close resets the connection); `skipping`:
                                        once listening, one connect of its own (to PORT + 1, where
                                        nothing listens) meets a slow router, so the library skips the
                                        router for a while before the accepts; `nostdin`: stdin is
                                        closed before listen(), then /dev/null opened: its number is
                                        printed (0 without the library); `spawn`: once listening,
                                        runs a program through subprocess (which vforks on Linux, and
                                        whose child closes every descriptor and dup2s its streams)
  peer.py client IP PORT SIZE [MODE] [COUNT]
                                        COUNT connections one after the other (default 1), each sending
                                        SIZE random bytes and checking the digest; MODE: blocking (default),
                                        epoll (non-blocking connect, then epoll), epoll-first (the socket
                                        is in epoll before connect, edge-triggered, as nginx does),
                                        sendto (blocking, every send names the peer, as sockperf does),
                                        fclose (blocking, closed through fdopen and fclose, then the
                                        number reused by a pipe, which must not answer as a socket),
                                        rawclose (closed by a raw close system call, then the number
                                        reused by a socket pair, which must answer as unix),
                                        trunc (blocking; the answer after its first 8 bytes is peeked
                                        and then discarded with recv(fd, NULL, n, MSG_TRUNC), as haproxy
                                        drains a connection),
                                        linger (blocking, SO_LINGER {on, 0} set before connect, as
                                        haproxy's nolinger and load generators do),
                                        refused (non-blocking, to a port nobody listens on: reports
                                        connect's errno, EPOLLERR and SO_ERROR, nothing else),
                                        unblock (blocking; sends, then a thread waits for the answer
                                        and the main one ends it with shutdown(SHUT_RDWR), as a server
                                        stops its readers),
                                        spawn (blocking; once connected, runs a program through
                                        subprocess, as the server's `spawn` does),
                                        forkclose (blocking; afterwards a forked child closes the
                                        socket and reuses its number for a socket pair, which must
                                        answer as unix)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import platform
import select
import socket
import struct
import subprocess
import sys
import threading
import time

SYS_GETSOCKOPT = {"x86_64": 55, "aarch64": 209}[platform.machine()]
SYS_CLOSE = {"x86_64": 3, "aarch64": 57}[platform.machine()]
RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset
_libc = ctypes.CDLL(None, use_errno=True)


def kernel_domain(fd: int) -> int:
    """SO_DOMAIN straight from the kernel, past the library."""
    value, size = ctypes.c_int(0), ctypes.c_uint32(4)
    if _libc.syscall(SYS_GETSOCKOPT, fd, socket.SOL_SOCKET, socket.SO_DOMAIN, ctypes.byref(value),
                     ctypes.byref(size)) != 0:
        raise OSError(ctypes.get_errno(), "raw getsockopt")
    return value.value


def facts(sock: socket.socket) -> dict[str, object]:
    """What the program reads off a connected socket (before the transfer ends the TCP connection)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    dup = sock.dup()
    line: dict[str, object] = {
        "grafted": kernel_domain(sock.fileno()) == socket.AF_UNIX,
        "local": list(sock.getsockname()),
        "peer": list(sock.getpeername()),
        "domain": sock.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN),
        "protocol": sock.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL),
        "nodelay": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        "priority": sock.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY),
        "keepidle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        "keepintvl": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        "tcp_state": info[0],
        "ip_options": len(sock.getsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, 40)),  # sshd refuses any
        "dup_peer": list(dup.getpeername()),
    }
    dup.close()
    return line


def serve_one(listener: socket.socket, exec_after_accept: bool = False) -> None:
    started = time.monotonic()
    conn, addr = listener.accept()
    accept_seconds = time.monotonic() - started
    if exec_after_accept:  # as sshd or inetd: a new program serves the connection
        fd = conn.detach()
        os.set_inheritable(fd, True)
        os.execv(sys.executable, [sys.executable, __file__, "exec-child", str(fd), json.dumps(list(addr))])
    answer(conn, list(addr), accept_seconds)


def answer(conn: socket.socket, addr: list, accept_seconds: float = 0.0) -> None:
    with conn:
        line = facts(conn)
        digest = hashlib.sha256()
        while chunk := conn.recv(1 << 16):
            digest.update(chunk)
        try:
            conn.sendall(digest.hexdigest().encode())
            answered = True
        except (BrokenPipeError, ConnectionResetError):  # the client shut its reading down (mode unblock)
            answered = False
        print(json.dumps({**line, "accepted_addr": addr, "answered": answered, "accept_seconds": accept_seconds}),
              flush=True)


CONNECTED_MARK = "PEER_CONNECTED_MARK"  # a file a client makes once its connect returned, if this names one
MARK_WAIT_S = 120.0


def spawn() -> None:
    """Run a program as subprocess does: vfork, then in the child (sharing the parent's memory) dup2 onto the
    standard streams, close every other descriptor, exec."""
    subprocess.run(["true"], check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def server(port: int, count: int = 1, how: str = "") -> None:
    if how == "nostdin":  # as a daemon: its standard streams closed, then opened again on /dev/null
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", port))
        os.close(0)
        listener.listen()
        reopened = os.open(os.devnull, os.O_RDONLY)
    else:
        listener = socket.create_server(("0.0.0.0", port))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # accepted sockets inherit it
    if how == "linger":
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    if how == "skipping":
        with socket.socket() as own, contextlib.suppress(ConnectionRefusedError):
            own.connect(("10.199.0.1", port + 1))
    if how == "spawn":
        spawn()
    print(json.dumps({"listening": port}), flush=True)
    if how == "nostdin":
        print(json.dumps({"reopened_fd": reopened}), flush=True)
    if how == "exec":
        serve_one(listener, exec_after_accept=True)
    if how == "slow":  # a busy event loop: the first accept comes only once the client's connect returned
        mark = os.environ[CONNECTED_MARK]
        deadline = time.monotonic() + MARK_WAIT_S
        while not os.path.exists(mark) and time.monotonic() < deadline:
            time.sleep(0.05)
    fork = how == "fork"
    if fork:
        child = os.fork()
        if child == 0:
            for _ in range(count):
                serve_one(listener)
            os._exit(0)
        listener.close()  # the registration must live on in the child
        print(json.dumps({"parent_closed": True}), flush=True)
        _, status = os.waitpid(child, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    for _ in range(count):
        serve_one(listener)


def transfer_blocking(sock: socket.socket, data: bytes, sendto: bool = False) -> bytes:
    if sendto:  # as sockperf does: the destination again on every send of a connected socket
        view = memoryview(data)
        while view:
            view = view[sock.sendto(view[:1 << 16], sock.getpeername()):]
    else:
        sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    answer = b""
    while chunk := sock.recv(128):
        answer += chunk
    return answer


def refused_connect(sock: socket.socket, ip: str, port: int) -> dict[str, object]:
    """A non-blocking connect to a port nobody listens on, as an event loop makes it: what connect() says,
    what epoll then reports, and the error SO_ERROR holds."""
    sock.setblocking(False)
    code = sock.connect_ex((ip, port))
    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLOUT)
    events = ep.poll(5)
    error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return {"connect_errno": errno.errorcode.get(code, code),
            "error_event": bool(events and events[0][1] & select.EPOLLERR), "so_error": errno.errorcode.get(error, "0")}


def read_after_shutdown(sock: socket.socket, data: bytes) -> list[str]:
    """How a thread blocked in recv() ends once another shuts the socket down both ways: ["eof"], or the error
    (on TCP the peer's answer meets the shut socket, whose reset can come first: ["ECONNRESET"]); what it
    read instead; [] when it is still blocked."""
    sock.sendall(data)
    got: list[str] = []

    def read() -> None:
        try:
            got.append(sock.recv(128).decode() or "eof")
        except OSError as exc:
            got.append(errno.errorcode.get(exc.errno or 0, str(exc)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.2)  # into its recv (if not yet, it reads after the shutdown: the answer is the same)
    sock.shutdown(socket.SHUT_RDWR)
    reader.join(5)
    return got


def transfer_truncated(sock: socket.socket, data: bytes) -> tuple[bytes, list[object]]:
    """Send `data`; read 8 bytes of the answer, then what MSG_PEEK|MSG_TRUNC and MSG_TRUNC (no buffer) say
    of the rest, and whether anything is left after them."""
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    first = sock.recv(8)
    time.sleep(0.2)  # the rest of the answer has arrived
    recv = _libc.recv
    recv.restype, recv.argtypes = ctypes.c_ssize_t, [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    peeked = recv(sock.fileno(), None, 64, socket.MSG_PEEK | socket.MSG_TRUNC)
    peek_errno = ctypes.get_errno() if peeked < 0 else 0
    discarded = recv(sock.fileno(), None, 1 << 20, socket.MSG_TRUNC)
    discard_errno = ctypes.get_errno() if discarded < 0 else 0
    return first, [peeked, peek_errno, discarded, discard_errno, sock.recv(10) == b""]


def transfer_epoll(sock: socket.socket, ep: select.epoll, data: bytes) -> bytes:
    view, answer = memoryview(data), b""
    ep.modify(sock.fileno(), select.EPOLLOUT)
    while view:
        if not ep.poll(5):
            raise TimeoutError("socket never became writable")
        with contextlib.suppress(BlockingIOError):
            view = view[sock.send(view):]
    sock.shutdown(socket.SHUT_WR)
    ep.modify(sock.fileno(), select.EPOLLIN)
    while True:
        if not ep.poll(5):
            raise TimeoutError("no answer")
        try:
            chunk = sock.recv(128)
        except BlockingIOError:
            continue
        if not chunk:
            return answer
        answer += chunk


def _mark_connected() -> None:
    if CONNECTED_MARK in os.environ:
        with open(os.environ[CONNECTED_MARK], "w"):
            pass


def client(ip: str, port: int, size: int, mode: str = "blocking") -> None:
    data = os.urandom(size)
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Set before connect: they must hold on the socket the connection ends up on.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, 6)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
    if mode == "linger":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
    started = time.monotonic()
    if mode == "refused":
        print(json.dumps(refused_connect(sock, ip, port)), flush=True)
        return
    if mode in ("blocking", "sendto", "fclose", "rawclose", "trunc", "linger", "unblock", "spawn", "forkclose"):
        sock.connect((ip, port))
        connected = time.monotonic() - started
        _mark_connected()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)  # and after
        if mode == "spawn":
            spawn()
        line = facts(sock)
        if mode == "trunc":
            answer, line["truncated"] = transfer_truncated(sock, data)
        elif mode == "unblock":
            answer, line["read_after_shutdown"] = b"", read_after_shutdown(sock, data)
        else:
            answer = transfer_blocking(sock, data, sendto=mode == "sendto")
    else:
        sock.setblocking(False)
        ep = select.epoll()
        if mode == "epoll-first":
            ep.register(sock.fileno(), select.EPOLLIN | select.EPOLLOUT | select.EPOLLET)
        code = sock.connect_ex((ip, port))
        _mark_connected()
        if mode == "epoll":
            ep.register(sock.fileno(), select.EPOLLOUT)
        events = ep.poll(5)
        connected = time.monotonic() - started
        writable = bool(events) and bool(events[0][1] & select.EPOLLOUT)
        line = {"connect_errno": errno.errorcode.get(code, code), "writable": writable,
                "so_error": sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)}
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        line.update(facts(sock))
        answer = transfer_epoll(sock, ep, data) if writable else b""
    expected = hashlib.sha256(data).hexdigest()
    line.update(digest_ok=answer.decode() == (expected[:8] if mode == "trunc" else expected),
                connect_seconds=connected)
    if mode == "fclose":
        line["after_close"] = closed_by_fclose(sock)
    elif mode == "rawclose":
        line["after_close"] = closed_by_syscall(sock)
    elif mode == "forkclose":
        line["after_close"] = closed_in_forked_child(sock)
        sock.close()
    else:
        sock.close()
    print(json.dumps(line), flush=True)


def closed_by_syscall(sock: socket.socket) -> dict[str, object]:
    """Close `sock` past the library (a raw system call), then reuse its number for a socket pair."""
    fd = sock.detach()
    if _libc.syscall(SYS_CLOSE, fd) != 0:
        raise OSError(ctypes.get_errno(), "raw close")
    first, second = socket.socketpair()
    with first, second:
        return {"same_fd": fd in (first.fileno(), second.fileno()),
                "domains": [s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) for s in (first, second)]}


def closed_in_forked_child(sock: socket.socket) -> dict[str, object]:
    """What a socket pair says it is in a forked child that closed `sock` (its copy) and got its number."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        fd = sock.fileno()
        sock.close()
        first, second = socket.socketpair()
        said = {"same_fd": fd in (first.fileno(), second.fileno()),
                "domains": [s.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) for s in (first, second)]}
        os.write(write_end, json.dumps(said).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with open(read_end, "rb") as answer:
        return json.loads(answer.read())


def closed_by_fclose(sock: socket.socket) -> dict[str, object]:
    """Close `sock` as a C program that wrapped it in a FILE does, then reuse its number for a pipe."""
    _libc.fdopen.restype = ctypes.c_void_p
    _libc.fclose.argtypes = [ctypes.c_void_p]
    fd = sock.detach()
    stream = _libc.fdopen(fd, b"r+")
    if not stream or _libc.fclose(stream) != 0:
        raise OSError(ctypes.get_errno(), "fdopen/fclose")
    read_end, write_end = os.pipe()  # the lowest free number: the socket's
    value, size = ctypes.c_int(0), ctypes.c_uint32(4)
    rc = _libc.getsockopt(read_end, socket.SOL_SOCKET, socket.SO_DOMAIN, ctypes.byref(value), ctypes.byref(size))
    said = errno.errorcode.get(ctypes.get_errno(), "?") if rc else value.value
    answer = {"same_fd": read_end == fd, "getsockopt": said}
    os.close(read_end)
    os.close(write_end)
    return answer


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    if role == "exec-child":
        answer(socket.socket(fileno=int(args[0])), json.loads(args[1]))
    elif role == "server":
        server(int(args[0]), int(args[1]) if len(args) > 1 else 1, args[2] if len(args) > 2 else "")
    else:
        for _ in range(int(args[4]) if len(args) > 4 else 1):
            client(args[0], int(args[1]), int(args[2]), *args[3:4])
