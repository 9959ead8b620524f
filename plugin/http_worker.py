"""gunicorn's threaded worker with every client connection's reads and writes bounded in time, and a logger
that hands gunicorn's own lines to the process's logging (freeflow/logs.py: info on stdout, warnings on stderr).

gthread gives each new connection to a thread, which blocks reading the request: a client that connects and
sends nothing, or half a request, would hold a thread for as long as it stays connected, and a few of them
would leave none for dockerd's calls (the worker's own `timeout` never fires: its main loop keeps beating).
Here each connection gets kernel receive and send timeouts (SO_RCVTIMEO, SO_SNDTIMEO; gunicorn switching the
socket between blocking and non-blocking leaves them alone): a read or write that stalls for CLIENT_TIMEOUT
seconds fails with EAGAIN, the connection is closed and one warning says so. Those time each read alone, so a
client that sends a byte now and then would still hold its thread: RequestDeadlines also cuts off a connection
whose request (head and body) has not all arrived CLIENT_TIMEOUT seconds after it began. The body is read
before the application runs (at most MAX_BODY + 1 bytes, the application refuses more), so the deadline
never cuts into the driver's work. A request gunicorn cannot parse is refused in the protocol's JSON, as the
application refuses the rest, not with gunicorn's HTML page.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn.glogging import Logger
from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker

from freeflow.plugin.app import MAX_BODY

CLIENT_TIMEOUT = 5.0  # seconds; dockerd sends a whole request at once and reads the answer at once
_WATCH_EVERY = 0.25  # seconds between two looks for requests past their deadline

log = logging.getLogger(__name__)

# What gunicorn raises for a response the application made wrong (gunicorn 22 and later): not the client's fault.
_FAULT_NAMES = ("InvalidResponseHeader", "InvalidResponseHeaderName")
_APPLICATION_FAULTS = tuple(getattr(http_errors, name) for name in _FAULT_NAMES if hasattr(http_errors, name))


def malformed_request_answer(exc: Exception) -> bytes:
    """The whole HTTP answer to a request gunicorn could not parse: 400, and what is wrong in the JSON `Err`."""
    body = json.dumps({"Err": f"malformed HTTP request: {exc}"}).encode()
    head = (f"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def bound_io(sock: socket.socket, seconds: float) -> None:
    """Make every receive and send on `sock` fail with EAGAIN after `seconds` without progress."""
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


class _StalledClient(logging.Filter):
    """Turns gunicorn's traceback for a timed-out connection into one warning line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], BlockingIOError):
            record.msg = "closed a client connection that stalled for %g s in the middle of a request"
            record.args = (CLIENT_TIMEOUT,)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class RequestDeadlines:
    """Shuts down a connection whose request has not all arrived `seconds` after arm(); disarm() once it has."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._due: dict[socket.socket, float] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._watch, name="request-deadlines", daemon=True).start()

    def arm(self, sock: socket.socket) -> None:
        with self._lock:
            self._due[sock] = time.monotonic() + self.seconds

    def disarm(self, sock: socket.socket) -> None:
        with self._lock:
            self._due.pop(sock, None)

    def _watch(self) -> None:
        while True:
            time.sleep(_WATCH_EVERY)
            now = time.monotonic()
            with self._lock:
                late = [sock for sock, due in self._due.items() if due <= now]
                for sock in late:
                    del self._due[sock]
            for sock in late:
                try:  # the thread reading it gets end-of-file and closes it
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    continue  # closed already (an error before its body was read)
                log.warning("cut off a client connection whose request took over %g s to arrive", self.seconds)


class BoundedThreadWorker(ThreadWorker):  # type: ignore[misc]
    def init_process(self) -> None:
        self.log.error_log.addFilter(_StalledClient())
        self.deadlines = RequestDeadlines(CLIENT_TIMEOUT)
        super().init_process()

    def load_wsgi(self) -> None:
        """The application, handed each request with its body already read (under the request's deadline)."""
        super().load_wsgi()
        app: Callable[..., Iterable[bytes]] = self.wsgi  # type: ignore[has-type]
        deadlines = self.deadlines

        def read_first(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            environ["wsgi.input"] = io.BytesIO(environ["wsgi.input"].read(MAX_BODY + 1))
            deadlines.disarm(environ["gunicorn.socket"])
            return app(environ, start_response)

        self.wsgi = read_first

    def handle(self, conn: Any) -> Any:
        """Every request, on a new connection or one kept alive, in the thread that reads it: its deadline
        starts here, not when it was queued for a thread (a whole request may wait there behind slow calls)."""
        bound_io(conn.sock, CLIENT_TIMEOUT)
        self.deadlines.arm(conn.sock)
        return super().handle(conn)

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: Exception) -> None:
        if not isinstance(exc, http_errors.ParseException) or isinstance(exc, _APPLICATION_FAULTS):
            super().handle_error(req, client, addr, exc)
            return
        log.warning("refused a malformed HTTP request: %s", exc)
        with contextlib.suppress(OSError):  # the client is gone: nothing to tell
            client.sendall(malformed_request_answer(exc))


class RootLogger(Logger):  # type: ignore[misc]
    """gunicorn's error log without a handler of its own: its records go to the root logger's handlers."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True
