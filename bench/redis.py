"""redis-benchmark GET and SET between the two containers of a path, against a redis-server in the server container.

Both are Debian's redis packages in the tools image; the server keeps nothing on disk.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

from freeflow.bench import engine
from freeflow.bench.errors import ToolOutputError
from freeflow.bench.paths import Pair
from freeflow.bench.plan import Plan

CLIENTS = 50  # redis-benchmark's default, stated so that the command says what was measured
TOOL_GRACE_S = 30.0


@dataclass(frozen=True)
class Rates:
    """Requests per second of each test."""

    get: float
    set: float


def server_command(pair: Pair) -> list[str]:
    return ["redis-server", "--port", str(pair.ports.redis), "--bind", pair.listen, "--protected-mode", "no",
            "--save", "", "--appendonly", "no"]


def parse_redis_benchmark(output: str) -> Rates:
    """The GET and SET rates from `redis-benchmark --csv` (a header row, then `"SET","41322.31",...`)."""
    rates = {}
    for row in csv.reader(output.splitlines()):
        if len(row) >= 2 and row[0] in ("GET", "SET"):
            try:
                rates[row[0]] = float(row[1])
            except ValueError:
                raise ToolOutputError(f"redis-benchmark printed a {row[0]} rate that is no number: {row[1]!r}") \
                    from None
    if set(rates) != {"GET", "SET"}:
        said = [line for line in output.splitlines() if line.strip() and not line.startswith('"')]
        raise ToolOutputError("redis-benchmark printed no GET and SET rates: " + " | ".join(said[-3:] or ["nothing"]))
    return Rates(get=rates["GET"], set=rates["SET"])


def benchmark(pair: Pair, plan: Plan) -> Rates:
    """redis-benchmark's SET then GET tests, `plan.redis_requests` requests each from CLIENTS connections."""
    limit = TOOL_GRACE_S + plan.redis_requests / 1000
    # An unreachable server makes redis-benchmark retry forever: coreutils' timeout ends it in the container.
    command = ["timeout", "--signal", "KILL", f"{limit:.0f}",
               "redis-benchmark", "-h", pair.address, "-p", str(pair.ports.redis), "-t", "set,get",
               "-n", str(plan.redis_requests), "-c", str(CLIENTS), "--csv"]
    out = engine.execute(pair.client, command, limit + TOOL_GRACE_S)
    return parse_redis_benchmark(out.stdout + out.stderr)
