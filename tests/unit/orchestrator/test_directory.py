"""What every directory does, whatever keeps it: each test runs on SQLite and on a real etcd."""

from __future__ import annotations

import threading

from freeflow.orchestrator.schema import Endpoint, Host, Listener

NET = "k3v7m0z9q2w4e6r8t1y5u3i0o"
H1 = Host("h1", "10.99.0.1", False)


def endpoint(n: int, host: str = "h1", network: str = NET) -> Endpoint:
    return Endpoint(f"ep{n}", network, f"10.0.{n // 250}.{n % 250 + 2}", f"02:42:0a:00:{n // 250:02x}:{n % 250:02x}",
                    host)


def test_unchanged_heartbeats_and_reports_change_nothing(directory):
    directory.heartbeat(H1, ttl=60)
    directory.replace_host_endpoints("h1", [endpoint(0), endpoint(1)])
    revision, _, _ = directory.changes_since(0)
    directory.heartbeat(H1, ttl=60)
    directory.replace_host_endpoints("h1", [endpoint(1), endpoint(0)])
    assert directory.changes_since(revision) == (revision, [], False)
    directory.heartbeat(Host("h1", "10.99.0.9", False), ttl=60)
    _, changes, _ = directory.changes_since(revision)
    assert [(c["kind"], c["key"], c["value"]["address"]) for c in changes] == [("host", "h1", "10.99.0.9")]


def test_a_report_of_hundreds_of_endpoints_is_written_whole(directory):
    directory.heartbeat(H1, ttl=60)
    directory.replace_host_endpoints("h1", [endpoint(n) for n in range(300)])
    assert len(directory.endpoints()) == 300
    directory.replace_host_endpoints("h1", [endpoint(n) for n in range(150, 450)])
    assert sorted(e.endpoint_id for e in directory.endpoints()) == sorted(f"ep{n}" for n in range(150, 450))
    assert directory.lookup(NET, endpoint(449).ip) == (endpoint(449), H1)
    assert directory.lookup(NET, endpoint(0).ip) is None


def test_a_watcher_paging_with_a_small_limit_sees_every_change_once(directory):
    directory.heartbeat(H1, ttl=60)
    directory.replace_host_endpoints("h1", [endpoint(n) for n in range(10)])
    directory.replace_host_endpoints("h1", [endpoint(n) for n in range(5, 15)])
    _, everything, _ = directory.changes_since(0)
    seen, revision = [], 0
    while True:
        revision, changes, reset = directory.changes_since(revision, limit=3)
        assert not reset
        if not changes:
            break
        seen += changes
    assert seen == everything and len(everything) == 1 + 10 + 10


def test_an_endpoint_that_moves_is_found_where_it_went(directory):
    directory.heartbeat(H1, ttl=60)
    directory.heartbeat(Host("h2", "10.99.0.2", True), ttl=60)
    directory.put_endpoint(endpoint(0))
    moved = Endpoint("ep0", "othernet", "10.1.0.9", endpoint(0).mac, "h2")
    directory.put_endpoint(moved)
    assert directory.lookup(NET, endpoint(0).ip) is None
    assert directory.lookup("othernet", "10.1.0.9") == (moved, Host("h2", "10.99.0.2", True))
    assert directory.endpoints(NET) == [] and directory.endpoints("othernet") == [moved]
    directory.replace_host_endpoints("h1", [])
    assert directory.endpoints() == [moved]
    assert directory.delete_endpoint("ep0") is True and directory.delete_endpoint("ep0") is False
    assert directory.lookup("othernet", "10.1.0.9") is None


def test_listeners_are_put_found_and_deleted(directory):
    directory.heartbeat(H1, ttl=60)
    listener = Listener(NET, "10.0.0.2", 6379, "channel", "h1")
    directory.put_listener(listener)
    assert directory.listener(NET, "10.0.0.2", 6379, "channel") == listener
    assert directory.listener(NET, "10.0.0.2", 6379, "graft") is None
    assert directory.delete_listener(NET, "10.0.0.2", 6379, "channel") is True
    assert directory.delete_listener(NET, "10.0.0.2", 6379, "channel") is False
    _, changes, _ = directory.changes_since(0)
    assert [(c["kind"], c["op"]) for c in changes[-2:]] == [("listener", "put"), ("listener", "delete")]


def test_a_long_poll_returns_as_soon_as_something_changes(directory):
    directory.heartbeat(H1, ttl=60)
    revision = directory.revision()
    answers = []
    watcher = threading.Thread(target=lambda: answers.append(directory.changes_since(revision, wait=10)))
    watcher.start()
    directory.put_endpoint(endpoint(0))
    watcher.join(5)
    assert not watcher.is_alive()
    reached, changes, reset = answers[0]
    assert not reset and [c["key"] for c in changes] == ["ep0"] and reached == changes[0]["revision"]


def test_two_orchestrators_over_one_store_see_each_others_writes(stores):
    first, second = stores.open("shared"), stores.open("shared")
    first.heartbeat(H1, ttl=60)
    first.put_endpoint(endpoint(0))
    assert second.lookup(NET, endpoint(0).ip) == (endpoint(0), H1)
    assert second.host_known("h1") and second.hosts() == [H1]


def test_two_orchestrators_expiring_together_remove_a_host_once(stores):
    first, second = stores.open("shared"), stores.open("shared")
    first.heartbeat(H1, ttl=10, now=100)
    first.put_endpoint(endpoint(0))
    gone = [first.expire(now=111), second.expire(now=111)]
    assert sorted(gone) == [[], ["h1"]] and second.endpoints() == [] and not first.host_known("h1")
