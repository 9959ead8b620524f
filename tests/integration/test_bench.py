"""`freeflow bench --short` end to end against the real dockerd: every path reported, nothing left behind.

Timing values are never asserted: they depend on the machine and on the tests running beside this one.
"""

from __future__ import annotations

import csv
import re
import subprocess

from freeflow.bench.paths import PATHS
from tests.integration.conftest import docker

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}")


def test_short_bench_reports_every_path_and_cleans_up(tmp_path):
    out = tmp_path / "results"
    swarm_before = swarm_state()
    done = subprocess.run(["freeflow", "bench", "--short", "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr

    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    for path in PATHS:
        assert any(row.startswith(f"| {path.name} ") for row in rows), f"no table row for {path.name}"

    with (out / "results.csv").open(newline="") as f:
        assert [row["path"] for row in csv.DictReader(f)] == [path.name for path in PATHS]
    assert (out / "results.png").read_bytes().startswith(PNG_MAGIC)

    run_id = re.search(r"run (ffbench-[0-9a-f]+)", done.stderr)
    assert run_id, done.stderr
    label = f"label=freeflow.bench.run={run_id[1]}"
    assert docker("ps", "--all", "--quiet", "--filter", label) == ""
    assert docker("network", "ls", "--quiet", "--filter", label) == ""
    assert run_id[1] not in docker("ps", "--all", "--format", "{{.Names}}")
    assert swarm_state() == swarm_before
