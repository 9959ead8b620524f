"""gunicorn's threaded worker with every client connection's reads and writes bounded in time, and a logger
that hands gunicorn's own lines to the process's logging (freeflow/logs.py: info on stdout, warnings on stderr).

gthread gives each new connection to a thread, which blocks reading the request: a client that connects and
sends nothing, or half a request, would hold a thread for as long as it stays connected, and a few of them
would leave none for dockerd's calls (the worker's own `timeout` never fires: its main loop keeps beating).
Here each connection gets kernel receive and send timeouts (SO_RCVTIMEO, SO_SNDTIMEO; gunicorn switching the
socket between blocking and non-blocking leaves them alone): a read or write that stalls for CLIENT_TIMEOUT
seconds fails with EAGAIN, the connection is closed and one warning says so.
"""

from __future__ import annotations

import logging
import socket
import struct
from typing import Any

from gunicorn.glogging import Logger
from gunicorn.workers.gthread import ThreadWorker

CLIENT_TIMEOUT = 5.0  # seconds; dockerd sends a whole request at once and reads the answer at once


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


class BoundedThreadWorker(ThreadWorker):  # type: ignore[misc]
    def init_process(self) -> None:
        self.log.error_log.addFilter(_StalledClient())
        super().init_process()

    def enqueue_req(self, conn: Any) -> None:
        """Every connection, new or kept alive, passes here on its way to a thread."""
        bound_io(conn.sock, CLIENT_TIMEOUT)
        super().enqueue_req(conn)


class RootLogger(Logger):  # type: ignore[misc]
    """gunicorn's error log without a handler of its own: its records go to the root logger's handlers."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True
