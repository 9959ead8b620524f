"""The two suites: the rows each reports, in order, with the metrics each has, and targets that name them."""

from __future__ import annotations

import pytest

from freeflow.bench import c_ring, channels, paths
from freeflow.bench.results import METRICS
from freeflow.bench.suites import ACROSS_HOSTS, SAME_HOST

SUITES = pytest.mark.parametrize("suite", [SAME_HOST, ACROSS_HOSTS], ids=["one host", "across hosts"])


@SUITES
def test_row_names_are_unique_and_the_baseline_is_the_first_row(suite):
    names = [row.name for row in suite.rows]
    assert len(names) == len(set(names))
    assert names[0] == suite.baseline


@SUITES
def test_every_target_names_rows_and_metrics_the_suite_has(suite):
    metrics = {row.name: row.metrics for row in suite.rows}
    for t in suite.targets:
        assert t.metric in metrics[t.row], t
        assert t.against is None or t.metric in metrics[t.against], t


def test_on_one_host_the_rows_are_the_paths_then_the_channels_then_the_c_ring():
    names = [row.name for row in SAME_HOST.rows]
    assert names[:len(paths.PATHS)] == [p.name for p in paths.PATHS]
    assert names[-1] == c_ring.ROW
    metrics = {row.name: row.metrics for row in SAME_HOST.rows}
    assert all(metrics[p.name] == set(METRICS) for p in paths.PATHS)
    assert metrics[channels.CHANNEL_64K] == metrics[channels.CHANNEL_1M] == {"throughput_gbps"}
    assert metrics[channels.CHANNEL_SPIN] == {"unpinned"}, "a spinning ping-pong has no same-core figure"
    assert metrics[channels.CHANNEL_SLEEP] == {"same_core", "unpinned"}
    assert metrics[channels.UNIX_PAIR] == {"throughput_gbps", "same_core", "unpinned"}
    assert metrics[channels.UNIX_BETWEEN_ROW] == {"throughput_gbps", "same_core", "unpinned"}
    assert metrics[c_ring.ROW] == {"throughput_gbps", "unpinned"}


def test_across_hosts_the_rows_are_the_five_of_issue_5():
    assert [(row.name, row.metrics) for row in ACROSS_HOSTS.rows] == [
        ("Docker overlay (across hosts)", set(METRICS)),
        ("underlay (host networks)", set(METRICS)),
        ("freeflow overlay (across hosts)", set(METRICS)),
        ("freeflow grafted (across hosts)", set(METRICS)),
        ("freeflow channel (across hosts)", {"throughput_gbps", "same_core", "unpinned"}),
    ]
    assert not ACROSS_HOSTS.c_ring, "the C ring runs on this machine: it is no cross-host row"
    assert {t.issue for t in ACROSS_HOSTS.targets} == {5}
