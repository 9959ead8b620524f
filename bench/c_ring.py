"""The limit of the shared-memory rows: c_ring.c, a spinning C ring between two host processes, built with gcc.

The binary is built once per run, before any container starts, into a temporary folder that close() removes.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from freeflow.bench.channels import MESSAGE_BYTES, SMALL
from freeflow.bench.errors import BenchError
from freeflow.bench.plan import Plan
from freeflow.bench.probe_stream import PINGPONG, THROUGHPUT
from freeflow.bench.results import Sample
from freeflow.bench.streams import Cell, read_results, rows, samples

SOURCE = Path(__file__).with_name("c_ring.c")
PATH = "c-ring"  # what the program reports as its path
ROW = "C shared-memory ring, spinning (host)"
CELLS = (  # in the order the program prints its results
    Cell(ROW, "throughput_gbps", PATH, THROUGHPUT, SMALL),
    Cell(ROW, "unpinned", PATH, PINGPONG, MESSAGE_BYTES),
)
ROWS = rows(CELLS)
BUILD_TIMEOUT_S = 60.0
RUN_GRACE_S = 30.0


class CRing:
    """The ring program built for this run; close() removes it."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="ffbench-")
        self.binary = Path(self._folder.name) / "c_ring"
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        command = ["gcc", "-O2", "-std=c11", "-Wall", "-Wextra", "-o", str(self.binary), str(SOURCE)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except FileNotFoundError:
            raise BenchError("the C ring row needs gcc on this host (Debian: apt-get install gcc)") from None
        except subprocess.TimeoutExpired:
            raise BenchError(f"gcc did not build {SOURCE} within {BUILD_TIMEOUT_S:.0f} s") from None
        if done.returncode != 0:
            raise BenchError(f"gcc could not build {SOURCE}: {done.stderr.strip()}")

    def sample(self, plan: Plan) -> dict[str, Sample]:
        """One run of the ring: its throughput, then its ping-pong, a Sample for its row."""
        command = [str(self.binary), str(plan.stream_seconds), str(plan.warmup_seconds), str(SMALL),
                   str(MESSAGE_BYTES)]
        timeout = 2 * plan.stream_seconds + plan.warmup_seconds + RUN_GRACE_S
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchError(f"the C ring did not finish within {timeout:.0f} s") from None
        return samples(CELLS, read_results(done.stdout, done.stderr, len(CELLS), "the C ring"))

    def close(self) -> None:
        self._folder.cleanup()

    def __enter__(self) -> CRing:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
