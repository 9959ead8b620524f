"""`freeflow bench`: set up every path, measure them in interleaved rounds, remove everything, then report.

Progress goes to stderr as it happens; the table goes to stdout, the CSV and the plot to the output folder.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from freeflow.bench import engine, measure
from freeflow.bench.errors import BenchError
from freeflow.bench.paths import BASELINE, PATHS, Lab
from freeflow.bench.report import format_table, write_reports
from freeflow.bench.results import Sample, summarise


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


def _measure(lab: Lab, plan: measure.Plan, rounds: int) -> dict[str, list[Sample]]:
    all_cpus = engine.all_cpus()
    pairs = []
    for path in PATHS:
        _progress(f"setting up {path.name}")
        pair = lab.open(path)
        measure.start_servers(pair)
        pairs.append(pair)
    samples: dict[str, list[Sample]] = {path.name: [] for path in PATHS}
    for n in range(1, rounds + 1):
        for pair in pairs:
            s = measure.sample(pair, plan, all_cpus)
            samples[pair.path.name].append(s)
            _progress(f"round {n}/{rounds}, {pair.path.name}: {s.throughput_gbps:.1f} Gbit/s, RTT same core "
                      f"{s.same_core.avg_us:.1f} / {s.same_core.p99_us:.1f} µs, unpinned "
                      f"{s.unpinned.avg_us:.1f} / {s.unpinned.p99_us:.1f} µs (avg / p99)")
    return samples


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
    """Measure every path, print the table, write results.csv and results.png; the exit status is returned."""
    if repeat < 1:
        raise BenchError("--repeat must be at least 1")
    plan, rounds = (measure.SHORT, 1) if short else (measure.FULL, repeat)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)  # a bad --out fails now, not after the measurements
    except OSError as exc:
        raise BenchError(f"cannot write the results into {out_dir}: {exc.strerror}") from None
    started = time.monotonic()
    lab = Lab(_progress)
    _progress(f"run {lab.run_id}: {len(PATHS)} paths, {rounds} round{'s' if rounds > 1 else ''}, "
              f"ports {lab.ports.iperf3} (iperf3) and {lab.ports.sockperf} (sockperf)")
    samples = None
    try:
        with _sigterm_as_interrupt():
            samples = _measure(lab, plan, rounds)
    except KeyboardInterrupt:
        _progress("interrupted")
    finally:
        clean = _clean_up(lab)
    if samples is None:
        return 130
    results = summarise(samples, BASELINE)
    print(format_table(results, BASELINE))
    print(f"\nMedian of {rounds} run{'s' if rounds > 1 else ''} per path. Throughput: one iperf3 TCP stream. "
          f"RTT: sockperf TCP ping-pong, {measure.MESSAGE_BYTES} B messages (twice its one-way latency); "
          f"same core: both containers on CPU {measure.PINNED_CPUS}.")
    for written in write_reports(results, out, BASELINE):
        _progress(f"wrote {written}")
    _progress(f"done in {time.monotonic() - started:.0f} s")
    return 0 if clean else 1
