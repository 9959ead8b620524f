"""The shared-memory channel rows and their AF_UNIX baselines, measured by probe_stream in a channel pair's containers.

CELLS are the same-host rows, ACROSS_CELLS the channel between two hosts (bridged by their routers over TCP).
Each round runs the probe twice: containers free on every CPU, then both pinned to one CPU for "same core".
A spinning wait on one CPU only delays its peer, so spinning has no same-core figure. The AF_UNIX baselines: a
socket between the same two containers (through a folder they share), and a socket pair inside one container.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

from freeflow.bench import engine, probe_stream, programs
from freeflow.bench.errors import BenchError
from freeflow.bench.paths import Pair, PathSpec
from freeflow.bench.plan import PINNED_CPUS, Plan
from freeflow.bench.probe_stream import CHANNEL, PINGPONG, THROUGHPUT, UNIX, UNIX_BETWEEN
from freeflow.bench.results import Sample
from freeflow.bench.streams import Cell, read_results, samples

MESSAGE_BYTES = 64
SMALL, LARGE = 64 << 10, 1 << 20  # bytes of a bulk message
SPINNING = 1.0  # seconds a wait spins before it sleeps: far longer than a round trip, so it never sleeps
SLEEPING = 0.0  # a wait sleeps on its doorbell at once
PROBE_GRACE_S = 60.0
CHECK_TIMEOUT_S = 30.0

CHANNEL_64K = "freeflow channel, 64 KiB messages"
CHANNEL_1M = "freeflow channel, 1 MiB messages"
CHANNEL_SPIN = "freeflow channel, 64 B, spinning"
CHANNEL_SLEEP = "freeflow channel, 64 B, sleeping"
UNIX_BETWEEN_ROW = "AF_UNIX socket between the containers (Python)"
UNIX_PAIR = "AF_UNIX socket pair in one container (Python)"
CELLS = (
    Cell(CHANNEL_64K, "throughput_gbps", CHANNEL, THROUGHPUT, SMALL),
    Cell(CHANNEL_1M, "throughput_gbps", CHANNEL, THROUGHPUT, LARGE),
    Cell(CHANNEL_SPIN, "unpinned", CHANNEL, PINGPONG, MESSAGE_BYTES, SPINNING),
    Cell(CHANNEL_SLEEP, "unpinned", CHANNEL, PINGPONG, MESSAGE_BYTES, SLEEPING),
    Cell(CHANNEL_SLEEP, "same_core", CHANNEL, PINGPONG, MESSAGE_BYTES, SLEEPING),
    Cell(UNIX_BETWEEN_ROW, "throughput_gbps", UNIX_BETWEEN, THROUGHPUT, SMALL),
    Cell(UNIX_BETWEEN_ROW, "unpinned", UNIX_BETWEEN, PINGPONG, MESSAGE_BYTES),
    Cell(UNIX_BETWEEN_ROW, "same_core", UNIX_BETWEEN, PINGPONG, MESSAGE_BYTES),
    Cell(UNIX_PAIR, "throughput_gbps", UNIX, THROUGHPUT, SMALL),
    Cell(UNIX_PAIR, "unpinned", UNIX, PINGPONG, MESSAGE_BYTES),
    Cell(UNIX_PAIR, "same_core", UNIX, PINGPONG, MESSAGE_BYTES),
)
CHANNEL_ACROSS = "freeflow channel (across hosts)"
ACROSS_CELLS = (  # the ends sleep at once, like CHANNEL_SLEEP: the routers' bridge sits between them
    Cell(CHANNEL_ACROSS, "throughput_gbps", CHANNEL, THROUGHPUT, SMALL),
    Cell(CHANNEL_ACROSS, "unpinned", CHANNEL, PINGPONG, MESSAGE_BYTES, SLEEPING),
    Cell(CHANNEL_ACROSS, "same_core", CHANNEL, PINGPONG, MESSAGE_BYTES, SLEEPING),
)


def _socket(path: PathSpec) -> list[str]:
    """The probe's AF_UNIX socket path, when the pair's containers share a folder for it."""
    return [] if path.shared_dir is None else [f"{path.shared_dir}/probe.sock"]


def start_server(pair: Pair) -> None:
    """Check that the containers' client can run every trial, then start the probe's server."""
    out = engine.execute(pair.client, programs.probe(probe_stream, "check"), CHECK_TIMEOUT_S)
    if out.stdout.strip() != "ok":
        said = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
        raise BenchError(f"the channel probe cannot run in {pair.client}: " + (said[-1] if said else "no answer"))
    engine.start(pair.server, programs.probe(probe_stream, "serve", str(pair.ports.channel), *_socket(pair.path)))
    programs.wait_listening(pair.server, [pair.ports.channel], "the channel probe")


def _run(pair: Pair, cells: Sequence[Cell], plan: Plan) -> list[probe_stream.Result]:
    trials = [cell.trial(plan) for cell in cells]
    command = programs.probe(probe_stream, "run", pair.address, str(pair.ports.channel),
                             json.dumps([asdict(trial) for trial in trials]), *_socket(pair.path))
    out = engine.execute(pair.client, command, sum(t.seconds + t.warmup for t in trials) + PROBE_GRACE_S)
    results = read_results(out.stdout, out.stderr, len(trials), "the channel probe")
    for trial, result in zip(trials, results, strict=True):
        if trial.transport == CHANNEL and result.path != "shm":
            raise BenchError(f"the channel from {pair.client} to {pair.server} took the {result.path!r} path, "
                             "not shared memory: is the freeflow router running?")
    return results


def sample(pair: Pair, cells: Sequence[Cell], plan: Plan, all_cpus: str) -> dict[str, Sample]:
    """One run of every cell's trial: a Sample per row."""
    free = [cell for cell in cells if not cell.pinned]
    pinned = [cell for cell in cells if cell.pinned]
    results = _run(pair, free, plan)
    containers = [pair.server, pair.client]
    engine.set_cpus(containers, PINNED_CPUS)
    results += _run(pair, pinned, plan)
    engine.set_cpus(containers, all_cpus)
    return samples([*free, *pinned], results)
