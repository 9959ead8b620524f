"""The one iptables rule each network needs: dockerd sets FORWARD to DROP, and bridged frames pass it.

Frames between two ports of a freeflow bridge are accepted; nothing else is touched. The rule goes right after
Docker's jump to DOCKER-USER, as Docker's own bridge rules do, so the operator's rules there still apply.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess

from freeflow.plugin.errors import DriverError

log = logging.getLogger(__name__)

_RULE = re.compile(r"-A FORWARD -i (\S+) -o (\S+) -j ACCEPT")
DOCKER_USER_JUMP = "-A FORWARD -j DOCKER-USER"


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("iptables")
    if binary is None:
        raise DriverError("iptables is not installed: freeflow needs it to let bridged traffic through")
    return subprocess.run([binary, "-w", "5", *args], capture_output=True, text=True, timeout=30)


def _rule(bridge: str) -> list[str]:
    return ["-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def _forward_rules() -> list[str]:
    listing = _iptables("-S", "FORWARD")
    if listing.returncode != 0:
        raise DriverError(f"iptables could not list FORWARD: {listing.stderr.strip()}")
    return [line.strip() for line in listing.stdout.splitlines() if line.startswith("-A FORWARD ")]


def _jump(rules: list[str]) -> int:
    """The index in `rules` of FORWARD's first jump to DOCKER-USER; -1 when there is none."""
    return rules.index(DOCKER_USER_JUMP) if DOCKER_USER_JUMP in rules else -1


def _placed(rules: list[str]) -> dict[str, bool]:
    """Every bridge with a rule in `rules`, each with whether all its copies are in place (below the jump)."""
    jump = _jump(rules)
    found: dict[str, bool] = {}
    for index, line in enumerate(rules):
        match = _RULE.fullmatch(line)
        if match and match[1] == match[2]:
            found[match[1]] = found.get(match[1], True) and index > jump
    return found


def allow_bridge(bridge: str) -> None:
    """Accept forwarding within `bridge`, right after the jump to DOCKER-USER (idempotent). A rule found
    above the jump (an older plugin put it first) is moved below it."""
    rules = _forward_rules()
    in_place = _placed(rules).get(bridge)
    if in_place:
        return
    if in_place is not None:
        forget_bridge(bridge)
        rules = _forward_rules()
    done = _iptables("-I", "FORWARD", str(_jump(rules) + 2), *_rule(bridge))  # rule numbers count from 1
    if done.returncode != 0:
        raise DriverError(f"iptables refused the forwarding rule for {bridge}: {done.stderr.strip()}")
    log.info("accepting forwarding within %s", bridge)


def forget_bridge(bridge: str) -> None:
    """Remove the rule of `bridge`, every copy of it; nothing to do when absent."""
    while _iptables("-D", "FORWARD", *_rule(bridge)).returncode == 0:
        log.info("removed the forwarding rule of %s", bridge)


def bridges_allowed(prefix: str) -> dict[str, bool]:
    """Bridges named `prefix…` that have a rule, each with whether the rule is in its place (below the jump
    to DOCKER-USER)."""
    return {bridge: in_place for bridge, in_place in _placed(_forward_rules()).items() if bridge.startswith(prefix)}
