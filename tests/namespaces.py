"""Network namespaces that tests make: deleting one ends what still runs in it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def delete_namespace(name: str) -> None:
    """Kill what still runs in namespace `name`, then delete it. A test's kill() of `ip netns exec` may not
    reach the program it started, which would live on, holding its sockets, after the namespace is gone."""
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
