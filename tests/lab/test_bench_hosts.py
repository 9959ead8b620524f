"""`freeflow bench --hosts --short` on the folder's lab: every cross-host row and metric reported, nothing of the
run left on h1 or h2, and the lab, which the bench did not bring up, left up. Timings are never asserted."""

from __future__ import annotations

import json
import subprocess
import sys

from freeflow.bench.suites import ACROSS_HOSTS
from tests.integration.test_bench import check_report, run_label
from tests.lab.conftest import HOSTS, lab, on, wait_for


def test_short_cross_host_bench_reports_every_row_and_metric_and_cleans_up(tmp_path) -> None:
    out = tmp_path / "results"
    done = subprocess.run([sys.executable, "-m", "freeflow.cli", "bench", "--hosts", "--existing-lab", "--short",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    check_report(done.stdout, out, ACROSS_HOSTS)

    _, label = run_label(done.stderr)
    for host in ("h1", "h2"):
        assert on(host, "docker", "ps", "--all", "--quiet", "--filter", label) == "", host
    assert on("h1", "docker", "network", "ls", "--quiet", "--filter", label) == ""
    wait_for(lambda: on("h2", "docker", "network", "ls", "--quiet", "--filter", label) == "", 30,
             "h2 to drop the run's swarm-scoped networks")
    hosts = json.loads(lab("status", "--json").stdout)
    assert [(h["name"], h["running"]) for h in hosts] == [(name, True) for name in HOSTS], "the lab is left up"
