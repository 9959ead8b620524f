"""`freeflow bench --short` end to end against the real dockerd: every row and metric reported, nothing left behind.

Timing values are never asserted: they depend on the machine and on the tests running beside this one.
check_report() serves the cross-host bench's test on the lab too (tests/lab/test_bench_hosts.py).
"""

from __future__ import annotations

import csv
import re
import subprocess
from pathlib import Path

from freeflow.bench.report import BY_METRIC, COLUMNS, DASH
from freeflow.bench.results import METRICS
from freeflow.bench.suites import SAME_HOST, Suite
from tests.integration.conftest import docker

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}")


def table_cells(stdout: str) -> dict[str, list[str]]:
    """The table's cells by row name, the metrics' cells in COLUMNS order."""
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    header, *body = cells
    assert header[1:] == [column.title for column in COLUMNS]
    return {row[0]: row[1:] for row in body}


def check_report(stdout: str, out: Path, suite: Suite) -> None:
    """The suite's rows in the table and the CSV, a figure for each metric a row has and nothing for the others;
    the plot; every target judged."""
    table = table_cells(stdout)
    assert list(table) == [row.name for row in suite.rows]
    for row in suite.rows:
        for metric, cell in zip(METRICS, table[row.name], strict=True):
            if metric in row.metrics:
                assert re.match(r"\d", cell), f"{row.name}: no {metric} in the table ({cell!r})"
            else:
                assert cell == DASH, f"{row.name}: {metric} should be a dash, not {cell!r}"

    with (out / "results.csv").open(newline="") as f:
        lines = list(csv.DictReader(f))
    assert [line["path"] for line in lines] == [row.name for row in suite.rows]
    for row, line in zip(suite.rows, lines, strict=True):
        for metric in METRICS:
            for name in BY_METRIC[metric].csv_names:
                if metric in row.metrics:
                    assert float(line[name]) > 0, f"{row.name}: {name} is {line[name]!r}"
                else:
                    assert line[name] == "", f"{row.name}: {name} should be empty"
    assert (out / "results.png").read_bytes().startswith(PNG_MAGIC)

    verdicts = re.findall(r"^  (met|not met|missing) +issue \d: ", stdout, re.MULTILINE)
    assert len(verdicts) == len(suite.targets) and "missing" not in verdicts, stdout


def run_label(stderr: str) -> tuple[str, str]:
    """The ID of the run whose progress `stderr` holds, and the label filter of its objects."""
    run_id = re.search(r"run (ffbench-[0-9a-f]+)", stderr)
    assert run_id, stderr
    return run_id[1], f"label=freeflow.bench.run={run_id[1]}"


def test_short_bench_reports_every_row_and_metric_and_cleans_up(tmp_path):
    out = tmp_path / "results"
    swarm_before = swarm_state()
    done = subprocess.run(["freeflow", "bench", "--short", "--out", str(out)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    check_report(done.stdout, out, SAME_HOST)

    run_id, label = run_label(done.stderr)
    assert docker("ps", "--all", "--quiet", "--filter", label) == ""
    assert docker("network", "ls", "--quiet", "--filter", label) == ""
    assert run_id not in docker("ps", "--all", "--format", "{{.Names}}")
    assert swarm_state() == swarm_before
    ring_folder = re.search(r"built the C ring in (\S+)", done.stderr)
    assert ring_folder, done.stderr
    assert not Path(ring_folder[1]).exists(), "the C ring's temporary folder is left"
