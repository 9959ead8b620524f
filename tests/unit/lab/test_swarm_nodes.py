"""Reading `docker node ls`: a node that has just joined may not have its hostname yet."""

from __future__ import annotations

from freeflow.lab.swarm import parse_nodes


def test_ready_and_down_nodes_are_read_by_hostname() -> None:
    assert parse_nodes("h1\tReady\nh2\tDown\n") == {"h1": "ready", "h2": "down"}


def test_a_node_without_a_hostname_yet_is_left_out() -> None:
    assert parse_nodes("h1\tReady\n\tUnknown\n") == {"h1": "ready"}


def test_an_empty_listing_is_no_nodes() -> None:
    assert parse_nodes("") == {}
