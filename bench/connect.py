"""Connection set-up time of a TCP path: the median time of a connect() from the client to the server container.

probe_connect runs on both sides: its accept loop starts with the other servers, its client opens the connections.
On a grafted path, wait_grafted() also asks it whether connections are grafted yet.
"""

from __future__ import annotations

import json
import statistics
import time

from freeflow.bench import engine, probe_connect, programs
from freeflow.bench.errors import BenchError, ToolOutputError
from freeflow.bench.paths import Pair
from freeflow.bench.plan import Plan

PROBE_GRACE_S = 30.0
# Another host's router learns of a new listener through the orchestrator: the first connections may be plain.
GRAFT_WAIT_S = 30.0
GRAFT_POLL_S = 0.5


def server_command(pair: Pair) -> list[str]:
    return programs.probe(probe_connect, "accept", str(pair.ports.connect), pair.listen)


def parse_connect_times(stdout: str, stderr: str = "") -> float:
    """The median connect() time in µs from the probe's JSON, or ToolOutputError quoting what it printed."""
    try:
        times = json.loads(stdout)["connect_ns"]
        return statistics.median(float(t) for t in times) / 1000
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, statistics.StatisticsError):
        said = [line for line in (stderr or stdout).splitlines() if line.strip()]
        raise ToolOutputError("the connection set-up probe printed no times: "
                              + (said[-1] if said else "nothing")) from None


def setup_time(pair: Pair, plan: Plan) -> float:
    """Median µs of `plan.connections` connect() calls, one after the other."""
    command = programs.probe(probe_connect, "connect", pair.address, str(pair.ports.connect), str(plan.connections))
    out = engine.execute(pair.client, command, PROBE_GRACE_S + plan.connections * 0.05)
    return parse_connect_times(out.stdout, out.stderr)


def parse_peer(stdout: str, stderr: str = "") -> str:
    """The kernel's peer the probe printed as JSON, or ToolOutputError quoting what it printed."""
    try:
        return str(json.loads(stdout)["peer"])
    except (json.JSONDecodeError, KeyError, TypeError):
        said = [line for line in (stderr or stdout).splitlines() if line.strip()]
        raise ToolOutputError("the connection probe printed no peer: " + (said[-1] if said else "nothing")) from None


def wait_grafted(pair: Pair) -> None:
    """Return once a connection from the client is grafted (its socket's kernel peer is not the address dialled:
    a unix socket pair on one host, the server's host across hosts); BenchError after GRAFT_WAIT_S."""
    command = programs.probe(probe_connect, "peer", pair.address, str(pair.ports.connect))
    deadline = time.monotonic() + GRAFT_WAIT_S
    while True:
        out = engine.execute(pair.client, command, PROBE_GRACE_S)
        if parse_peer(out.stdout, out.stderr) != pair.address:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"connections from {pair.client} to {pair.server} are still not grafted after "
                             f"{GRAFT_WAIT_S:.0f} s (their sockets' peer is {pair.address}, as dialled): is the "
                             "freeflow router running on each host, and the preload library in /run/freeflow?")
        time.sleep(GRAFT_POLL_S)
