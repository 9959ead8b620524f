"""Measures a TCP path between its two containers: iperf3, sockperf, connection set-up and redis-benchmark.

Throughput: one iperf3 TCP stream, the receiver's rate from its JSON report. Latency: sockperf ping-pong over TCP
with 64-byte messages; sockperf reports half the round trip, so its figures are doubled.
"""

from __future__ import annotations

import json
import re

from freeflow.bench import connect, engine, programs, redis
from freeflow.bench.errors import ToolOutputError
from freeflow.bench.paths import Pair
from freeflow.bench.plan import PINNED_CPUS, Plan
from freeflow.bench.results import Rtt, Sample

MESSAGE_BYTES = 64
CONNECT_TIMEOUT_MS = 5000
# sockperf spends about 2 s warming up before its timed run, and a stalled tool must not hang the bench.
TOOL_GRACE_S = 30.0

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_AVG = re.compile(r"avg-lat(?:ency)?=\s*([0-9.]+)")
_P99 = re.compile(r"percentile 99\.000 =\s*([0-9.]+)")


def parse_iperf3(report: str) -> float:
    """Gbit/s received, from the JSON that `iperf3 -c … -J` prints."""
    try:
        data = json.loads(report)
    except json.JSONDecodeError:
        raise ToolOutputError(f"iperf3 printed no JSON report: {report.strip()[:200]!r}") from None
    if data.get("error"):
        raise ToolOutputError(f"iperf3: {data['error']}")
    try:
        return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9
    except (KeyError, TypeError):
        raise ToolOutputError("iperf3's report has no end.sum_received.bits_per_second") from None


def parse_sockperf(output: str) -> Rtt:
    """The round trip (average and 99th percentile, µs) from `sockperf ping-pong` output."""
    text = _ANSI.sub("", output)
    avg, p99 = _AVG.search(text), _P99.search(text)
    if avg is None or p99 is None:
        lines = [line for line in text.splitlines() if line.strip()]
        errors = [line for line in lines if "ERROR" in line]
        raise ToolOutputError("sockperf printed no latency: " + " | ".join(errors or lines[-3:] or ["nothing"]))
    return Rtt(avg_us=2 * float(avg[1]), p99_us=2 * float(p99[1]))


def start_servers(pair: Pair) -> None:
    """Start every server of the path in its server container and wait until all listen (and, on a grafted path,
    until the client's connections are grafted)."""
    iperf3 = ["iperf3", "--server", "--port", str(pair.ports.iperf3)]
    if pair.listen != "0.0.0.0":  # iperf3 without --bind listens on IPv4 and IPv6
        iperf3 += ["--bind", pair.listen]
    engine.start(pair.server, iperf3)
    engine.start(pair.server, ["sockperf", "server", "--tcp", "-i", pair.listen, "-p", str(pair.ports.sockperf)])
    engine.start(pair.server, connect.server_command(pair))
    engine.start(pair.server, redis.server_command(pair))
    ports = pair.ports
    programs.wait_listening(pair.server, (ports.iperf3, ports.sockperf, ports.connect, ports.redis),
                            f"the servers of {pair.path.name}")
    if pair.path.grafted:
        connect.wait_grafted(pair)


def throughput(pair: Pair, plan: Plan) -> float:
    """Gbit/s of one iperf3 TCP stream from the client to the server."""
    command = ["iperf3", "--client", pair.address, "--port", str(pair.ports.iperf3), "--json",
               "--time", str(plan.iperf3_seconds), "--omit", str(plan.iperf3_omit_seconds),
               "--connect-timeout", str(CONNECT_TIMEOUT_MS)]
    timeout = plan.iperf3_seconds + plan.iperf3_omit_seconds + TOOL_GRACE_S
    out = engine.execute(pair.client, command, timeout)
    return parse_iperf3(out.stdout)


def rtt(pair: Pair, plan: Plan) -> Rtt:
    """Round trip of 64-byte TCP ping-pongs from the client to the server."""
    command = ["sockperf", "ping-pong", "--tcp", "-i", pair.address, "-p", str(pair.ports.sockperf),
               "-m", str(MESSAGE_BYTES), "-t", str(plan.sockperf_seconds)]
    out = engine.execute(pair.client, command, plan.sockperf_seconds + TOOL_GRACE_S)
    return parse_sockperf(out.stdout + out.stderr)


def sample(pair: Pair, plan: Plan, all_cpus: str) -> Sample:
    """One run of every metric; the containers are pinned to one CPU for the same-core RTT only."""
    containers = [pair.server, pair.client]
    gbps = throughput(pair, plan)
    unpinned = rtt(pair, plan)
    engine.set_cpus(containers, PINNED_CPUS)
    same_core = rtt(pair, plan)
    engine.set_cpus(containers, all_cpus)
    rates = redis.benchmark(pair, plan)
    return Sample(throughput_gbps=gbps, same_core=same_core, unpinned=unpinned,
                  connect_p50_us=connect.setup_time(pair, plan), redis_get_rps=rates.get, redis_set_rps=rates.set)
