"""`freeflow bench`: set up every path of a suite, measure them in interleaved rounds, remove everything, then report.

Progress goes to stderr as it happens; the table and the targets go to stdout, the CSV and the plot to the output
folder. With `--hosts` the paths run between two lab hosts (lab_hosts.py), on one host otherwise.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from pathlib import Path

from freeflow.bench import channels, engine, lab_hosts, measure, plan, redis
from freeflow.bench.c_ring import CRing
from freeflow.bench.errors import BenchError
from freeflow.bench.paths import ONE_HOST, Lab, Placement
from freeflow.bench.report import describe, format_table, write_reports
from freeflow.bench.results import Sample, summarise
from freeflow.bench.signals import shielded, sigterm_as_interrupt
from freeflow.bench.suites import ACROSS_HOSTS, SAME_HOST, Suite
from freeflow.bench.targets import check, format_verdicts, heading


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def _measure(lab: Lab, suite: Suite, ring: CRing | None, run_plan: plan.Plan,
             rounds: int) -> dict[str, list[Sample]]:
    all_cpus = engine.all_cpus(lab.placement.client)
    _progress(f"setting up {suite.channels.name}")  # first: it checks the containers' client, which may be too old
    channel_pair = lab.open(suite.channels)
    channels.start_server(channel_pair)
    pairs = []
    for path in suite.paths:
        _progress(f"setting up {path.name}")
        pair = lab.open(path)
        measure.start_servers(pair)
        pairs.append(pair)
    samples: dict[str, list[Sample]] = {row.name: [] for row in suite.rows}

    for n in range(1, rounds + 1):
        where = f"round {n}/{rounds}"
        for pair in pairs:
            _record(samples, {pair.path.name: measure.sample(pair, run_plan, all_cpus)}, where)
        _record(samples, channels.sample(channel_pair, suite.cells, run_plan, all_cpus), where)
        if ring is not None:
            _record(samples, ring.sample(run_plan), where)
    return samples


def _record(samples: dict[str, list[Sample]], measured: dict[str, Sample], where: str) -> None:
    for row, s in measured.items():
        samples[row].append(s)
        _progress(f"{where}, {row}: {describe(s)}")


def _note(suite: Suite, run_plan: plan.Plan, rounds: int) -> str:
    return (f"Median of {rounds} run{'s' if rounds > 1 else ''} per row. TCP paths: throughput of one iperf3 "
            f"stream; RTT of sockperf TCP ping-pongs of {measure.MESSAGE_BYTES} B (twice its one-way latency); "
            f"connect: p50 of {run_plan.connections} connect() calls one after the other (grafting included); "
            f"redis-benchmark with {redis.CLIENTS} clients, {run_plan.redis_requests} requests per test. "
            f"{suite.note}")


def _clean_up(lab: Lab) -> bool:
    """Remove what the run made; say what is left and how to find it. True when nothing is left."""
    with shielded():
        _progress(f"removing the containers and networks of {lab.run_id}")
        problems = lab.close()
    for problem in problems:
        _progress(f"cleanup: {problem}")
    label = f"label={engine.LABEL}={lab.run_id}"
    for host in lab.placement.hosts if problems else ():
        cli = "docker" if host.url is None else f"docker --host {host.url}"
        _progress(f"left behind on {host.name}: see `{cli} ps -a --filter {label}` "
                  f"and `{cli} network ls --filter {label}`")
    return not problems


def _bench(suite: Suite, placement: Placement, ring: CRing | None, run_plan: plan.Plan, rounds: int,
           out: Path) -> int:
    """Measure the suite's rows on `placement`, print the table and the targets, write the CSV and the plot."""
    lab = Lab(_progress, placement)
    ports = ", ".join(f"{port} ({name})" for name, port in vars(lab.ports).items())
    where = " to ".join(dict.fromkeys(host.name for host in (placement.client, placement.server)))
    _progress(f"run {lab.run_id} on {where}: {len(suite.rows)} rows, {rounds} round{'s' if rounds > 1 else ''}, "
              f"ports {ports}")
    try:
        samples = _measure(lab, suite, ring, run_plan, rounds)
    finally:
        clean = _clean_up(lab)
    results = summarise(samples, suite.baseline)
    print(format_table(results, suite.baseline))
    print(f"\n{_note(suite, run_plan, rounds)}")
    print(f"\n{heading(suite.targets)}")
    print(format_verdicts(check(results, suite.targets)))
    for written in write_reports(results, out, suite.baseline):
        _progress(f"wrote {written}")
    return 0 if clean else 1


def run_bench(short: bool, out_dir: str, repeat: int, hosts: bool = False, existing_lab: bool = False) -> int:
    """Measure every row of the suite (across lab hosts with `hosts`), print the table and the targets, write
    results.csv and results.png; return the status."""
    if repeat < 1:
        raise BenchError("--repeat must be at least 1")
    if existing_lab and not hosts:
        raise BenchError("--existing-lab goes with --hosts")
    suite = ACROSS_HOSTS if hosts else SAME_HOST
    run_plan, rounds = (plan.SHORT, 1) if short else (plan.FULL, repeat)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)  # a bad --out fails now, not after the measurements
    except OSError as exc:
        raise BenchError(f"cannot write the results into {out_dir}: {exc.strerror}") from None
    started = time.monotonic()
    try:
        with sigterm_as_interrupt(), ExitStack() as stack:
            ring = None
            if suite.c_ring:
                _progress("building the C ring")
                ring = stack.enter_context(CRing())
                _progress(f"built the C ring in {ring.binary.parent}")
            placement = stack.enter_context(lab_hosts.lab_placement(_progress, existing_lab)) if hosts else ONE_HOST
            status = _bench(suite, placement, ring, run_plan, rounds, out)
    except KeyboardInterrupt:
        _progress("interrupted")
        return 130
    _progress(f"done in {time.monotonic() - started:.0f} s")
    return status
