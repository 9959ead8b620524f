"""Connection set-up time of a TCP path: the median time of a connect() from the client to the server container.

probe_connect runs on both sides: its accept loop starts with the other servers, its client opens the connections.
"""

from __future__ import annotations

import json
import statistics

from freeflow.bench import engine, probe_connect, programs
from freeflow.bench.errors import ToolOutputError
from freeflow.bench.paths import Pair
from freeflow.bench.plan import Plan

PROBE_GRACE_S = 30.0


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
