"""The one iptables rule each network needs: dockerd sets FORWARD to DROP, and bridged frames pass it.

Frames between two ports of a freeflow bridge are accepted; nothing else is touched.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess

from freeflow.plugin.errors import DriverError

log = logging.getLogger(__name__)

_RULE = re.compile(r"-A FORWARD -i (\S+) -o (\S+) -j ACCEPT")


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("iptables")
    if binary is None:
        raise DriverError("iptables is not installed: freeflow needs it to let bridged traffic through")
    return subprocess.run([binary, "-w", "5", *args], capture_output=True, text=True, timeout=30)


def _rule(bridge: str) -> list[str]:
    return ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def allow_bridge(bridge: str) -> None:
    """Accept forwarding within `bridge` (idempotent)."""
    if _iptables("-C", *_rule(bridge)).returncode == 0:
        return
    done = _iptables("-I", *_rule(bridge))
    if done.returncode != 0:
        raise DriverError(f"iptables refused the forwarding rule for {bridge}: {done.stderr.strip()}")
    log.info("accepting forwarding within %s", bridge)


def forget_bridge(bridge: str) -> None:
    """Remove the rule of `bridge`, every copy of it; nothing to do when absent."""
    while _iptables("-D", *_rule(bridge)).returncode == 0:
        log.info("removed the forwarding rule of %s", bridge)


def bridges_allowed(prefix: str) -> list[str]:
    """Bridges named `prefix…` that have a rule."""
    listing = _iptables("-S", "FORWARD")
    if listing.returncode != 0:
        raise DriverError(f"iptables could not list FORWARD: {listing.stderr.strip()}")
    found = []
    for line in listing.stdout.splitlines():
        match = _RULE.fullmatch(line.strip())
        if match and match[1] == match[2] and match[1].startswith(prefix):
            found.append(match[1])
    return found
