"""Keeps a router process running beside the plugin, restarting it when it exits."""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import threading

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
RESTART_DELAY = 0.5


def _die_with_parent() -> None:
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class RouterSupervisor:
    """Runs `freeflow router` in a child process from a thread; restarts it until `stop()`."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.thread = threading.Thread(target=self._loop, name="router-supervisor", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.process = subprocess.Popen([sys.executable, "-m", "freeflow.cli", "router"],
                                            preexec_fn=_die_with_parent)
            log.info("router started (pid %d)", self.process.pid)
            code = self.process.wait()
            if self.stopping.is_set():
                return
            log.warning("router exited with status %s; restarting", code)
            self.stopping.wait(RESTART_DELAY)

    def stop(self) -> None:
        self.stopping.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
