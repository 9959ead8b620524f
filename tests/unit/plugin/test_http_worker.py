"""The plugin's gunicorn worker in a real gunicorn, with real clients that stall: they are cut off, and the
others' calls are still answered."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from freeflow.plugin.http_worker import CLIENT_TIMEOUT

WORKER = "freeflow.plugin.http_worker.BoundedThreadWorker"
THREADS = 2
WAIT_S = 30.0  # far beyond CLIENT_TIMEOUT: a client that waits this long was never cut off
SLOW_S = CLIENT_TIMEOUT + 2  # how long the test app takes to answer /Slow: a driver call stuck behind a lock


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    (tmp_path / "hello.py").write_text(
        "import time\n"
        "def app(environ, start_response):\n"
        "    if environ['PATH_INFO'] == '/Slow':\n"
        "        with open('slow.log', 'a') as log: log.write('started\\n')\n"
        f"        time.sleep({SLOW_S})\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'answered']\n")
    path, log = tmp_path / "g.sock", tmp_path / "gunicorn.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", WORKER, "--threads", str(THREADS),
                                 "-b", f"unix:{path}", "--chdir", str(tmp_path), "hello:app"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT_S
        while not _answers(path):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield path, log
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT_S)


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(WAIT_S)
    sock.connect(str(path))
    return sock


def _answers(path: Path) -> bool:
    try:
        with _connect(path) as sock:
            _request(sock, "/Plugin.Activate")
            return _answered(sock)
    except OSError:
        return False


def _request(sock: socket.socket, path: str) -> None:
    sock.sendall(f"POST {path} HTTP/1.0\r\nContent-Length: 0\r\n\r\n".encode())


def _answered(sock: socket.socket) -> bool:
    reply = b"".join(iter(lambda: sock.recv(4096), b""))
    return reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"answered")


def test_whole_requests_waiting_for_a_thread_are_answered_however_long_they_wait(server):
    """A request that arrived whole waits for a free thread as long as the calls before it take (the driver
    serves one at a time): only the time it takes to arrive is bounded, never the time it waits in the queue."""
    path, log = server
    slow = [_connect(path) for _ in range(THREADS)]
    for sock in slow:
        _request(sock, "/Slow")
    started = path.parent / "slow.log"
    deadline = time.monotonic() + WAIT_S
    while not started.exists() or len(started.read_text().split()) < THREADS:  # every thread is busy
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    queued = [_connect(path) for _ in range(THREADS)]
    for sock in queued:
        _request(sock, "/Plugin.Activate")
    for sock in slow + queued:
        with sock:
            assert _answered(sock), log.read_text()
    assert "took over" not in log.read_text()


def test_stalled_clients_are_cut_off_and_others_are_answered(server):
    path, log = server
    silent = [_connect(path) for _ in range(THREADS)]
    halfway = [_connect(path) for _ in range(THREADS)]
    for sock in halfway:
        sock.sendall(b"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nHost: x\r\n")  # and then nothing
    time.sleep(0.5)  # every thread has taken a stalled connection by now
    assert _answers(path), "a complete request is answered while stalled clients hold connections"
    for sock in silent + halfway:
        assert sock.recv(4096) == b"", "the server closed the stalled connection"
        sock.close()
    text = log.read_text()
    assert "stalled" in text and "Traceback" not in text, text


def test_clients_that_trickle_their_requests_are_cut_off(server):
    """Each byte comes within the per-read timeout, so only a deadline on the whole request ends them."""
    path, log = server
    trickling = [_connect(path) for _ in range(THREADS)]
    head = b"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"y" * 100
    cut_off = set()
    deadline = time.monotonic() + WAIT_S
    for byte in head:
        for sock in trickling:
            try:
                sock.send(bytes([byte]))
            except OSError:
                cut_off.add(sock)
        if len(cut_off) == len(trickling) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert len(cut_off) == len(trickling), "a client sending a byte a second kept its connection"
    assert _answers(path)
    for sock in trickling:
        sock.close()
    assert "took over" in log.read_text()


def test_a_body_that_trickles_is_cut_off_too(server):
    path, log = server
    with _connect(path) as sock:
        sock.sendall(b"POST /NetworkDriver.CreateNetwork HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
        started = time.monotonic()
        with pytest.raises(OSError):
            while time.monotonic() - started < WAIT_S:
                sock.send(b" ")
                time.sleep(0.5)
    assert "took over" in log.read_text()


@pytest.mark.parametrize("request_head", [b"NOT HTTP AT ALL\r\n\r\n", b"POST /Plugin.Activate HTTP/9.9\r\n\r\n",
                                          b"POST /Plugin.Activate HTTP/1.1\r\nBad Header\r\n\r\n"])
def test_a_request_gunicorn_cannot_parse_is_refused_in_json(server, request_head: bytes) -> None:
    """The protocol's answer, not gunicorn's HTML page; the worker goes on answering."""
    path, log = server
    with _connect(path) as sock:
        sock.sendall(request_head)
        reply = b"".join(iter(lambda: sock.recv(4096), b""))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"application/json" in head, reply
    assert json.loads(body)["Err"].startswith("malformed HTTP request: "), body
    assert "refused a malformed HTTP request" in log.read_text()
    assert _answers(path)
