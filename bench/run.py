"""`freeflow bench`: set up every path, measure them in interleaved rounds, remove everything, then report.

Progress goes to stderr as it happens; the table and the targets go to stdout, the CSV and the plot to the output
folder.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from freeflow.bench import channels, engine, measure, plan, redis
from freeflow.bench.c_ring import CRing
from freeflow.bench.errors import BenchError
from freeflow.bench.paths import BASELINE, CHANNELS, PATHS, Lab
from freeflow.bench.report import describe, format_table, write_reports
from freeflow.bench.results import Sample, summarise
from freeflow.bench.rows import ROWS
from freeflow.bench.targets import check, format_verdicts


def _progress(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Let `kill` stop a run the way Ctrl-C does, so that cleanup runs."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _shielded() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM; the docker commands started meanwhile inherit that, so cleanup completes."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _measure(lab: Lab, ring: CRing, run_plan: plan.Plan, rounds: int) -> dict[str, list[Sample]]:
    all_cpus = engine.all_cpus()
    _progress(f"setting up {CHANNELS.name}")  # first: it checks the containers' client, which may be too old
    channel_pair = lab.open(CHANNELS)
    channels.start_server(channel_pair)
    pairs = []
    for path in PATHS:
        _progress(f"setting up {path.name}")
        pair = lab.open(path)
        measure.start_servers(pair)
        pairs.append(pair)
    samples: dict[str, list[Sample]] = {row.name: [] for row in ROWS}

    for n in range(1, rounds + 1):
        where = f"round {n}/{rounds}"
        for pair in pairs:
            _record(samples, {pair.path.name: measure.sample(pair, run_plan, all_cpus)}, where)
        _record(samples, channels.sample(channel_pair, run_plan, all_cpus), where)
        _record(samples, ring.sample(run_plan), where)
    return samples


def _record(samples: dict[str, list[Sample]], measured: dict[str, Sample], where: str) -> None:
    for row, s in measured.items():
        samples[row].append(s)
        _progress(f"{where}, {row}: {describe(s)}")


def _note(run_plan: plan.Plan, rounds: int) -> str:
    return (f"Median of {rounds} run{'s' if rounds > 1 else ''} per row. TCP paths: throughput of one iperf3 "
            f"stream; RTT of sockperf TCP ping-pongs of {measure.MESSAGE_BYTES} B (twice its one-way latency); "
            f"connect: p50 of {run_plan.connections} connect() calls one after the other (grafting included); "
            f"redis-benchmark with {redis.CLIENTS} clients, {run_plan.redis_requests} requests per test. "
            f"Channel, AF_UNIX and C ring rows: one stream of {channels.SMALL >> 10} KiB (or 1 MiB) writes, and "
            f"{channels.MESSAGE_BYTES} B ping-pongs timed by the probe itself (Python; the C ring in C). "
            f"Same core: both ends on CPU {plan.PINNED_CPUS}; a spinning path has no same-core figure.")


def _clean_up(lab: Lab) -> bool:
    """Remove what the run made; say what is left and how to find it. True when nothing is left."""
    with _shielded():
        _progress(f"removing the containers and networks of {lab.run_id}")
        problems = lab.close()
    for problem in problems:
        _progress(f"cleanup: {problem}")
    if problems:
        _progress(f"left behind: see `docker ps -a --filter label={engine.LABEL}={lab.run_id}` "
                  f"and `docker network ls --filter label={engine.LABEL}={lab.run_id}`")
    return not problems


def run_bench(short: bool, out_dir: str, repeat: int) -> int:
    """Measure every row, print the table and the targets, write results.csv and results.png; return the status."""
    if repeat < 1:
        raise BenchError("--repeat must be at least 1")
    run_plan, rounds = (plan.SHORT, 1) if short else (plan.FULL, repeat)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)  # a bad --out fails now, not after the measurements
    except OSError as exc:
        raise BenchError(f"cannot write the results into {out_dir}: {exc.strerror}") from None
    started = time.monotonic()
    _progress("building the C ring")
    with CRing() as ring:
        _progress(f"built the C ring in {ring.binary.parent}")
        lab = Lab(_progress)
        ports = ", ".join(f"{port} ({name})" for name, port in vars(lab.ports).items())
        _progress(f"run {lab.run_id}: {len(ROWS)} rows, {rounds} round{'s' if rounds > 1 else ''}, ports {ports}")
        samples = None
        try:
            with _sigterm_as_interrupt():
                samples = _measure(lab, ring, run_plan, rounds)
        except KeyboardInterrupt:
            _progress("interrupted")
        finally:
            clean = _clean_up(lab)
    if samples is None:
        return 130
    results = summarise(samples, BASELINE)
    print(format_table(results, BASELINE))
    print(f"\n{_note(run_plan, rounds)}")
    print("\nTargets of issues 3 and 4 (read, not enforced):")
    print(format_verdicts(check(results)))
    for written in write_reports(results, out, BASELINE):
        _progress(f"wrote {written}")
    _progress(f"done in {time.monotonic() - started:.0f} s")
    return 0 if clean else 1
