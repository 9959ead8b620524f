"""What only the SQLite store does: its change log keeps the newest changes, and a write checks its host's lease."""

from __future__ import annotations

import pytest

from freeflow.orchestrator.errors import NotFound
from freeflow.orchestrator.schema import Endpoint, Host, Listener
from freeflow.orchestrator.sqlite_directory import SqliteDirectory

NET = "k3v7m0z9q2w4e6r8t1y5u3i0o"


def test_the_sqlite_change_log_keeps_the_newest_changes_and_resets_watchers_behind_them():
    """Without pruning, every endpoint ever started stayed in the file; a watcher from before the kept history
    lists everything again, one inside it still gets each change once."""
    directory = SqliteDirectory(kept_changes=5)
    directory.heartbeat(Host("h1", "10.99.0.1", False), ttl=60)
    for n in range(20):
        directory.put_endpoint(Endpoint(f"ep{n}", NET, f"10.0.0.{n + 2}", f"02:42:0a:00:00:{n + 2:02x}", "h1"))
    latest = directory.revision()
    assert latest == 21 and directory.db.execute("SELECT COUNT(*) FROM changes").fetchone()[0] == 5
    assert directory.changes_since(0) == (latest, [], True)
    assert directory.changes_since(latest - 6) == (latest, [], True)
    revision, changes, reset = directory.changes_since(latest - 5)
    assert (revision, reset) == (latest, False)
    assert [c["key"] for c in changes] == [f"ep{n}" for n in range(15, 20)]
    directory.close()


def test_a_write_for_a_host_without_a_lease_is_refused_inside_the_write():
    """The API checks the lease first, but the host can expire between that check and the write."""
    directory = SqliteDirectory()
    endpoint = Endpoint("ep1", NET, "10.0.0.2", "02:42:0a:00:00:02", "h1")
    with pytest.raises(NotFound, match="no lease"):
        directory.put_endpoint(endpoint)
    with pytest.raises(NotFound):
        directory.replace_host_listeners("h1", [Listener(NET, "10.0.0.2", 80, "graft", "h1")])
    directory.heartbeat(Host("h1", "10.99.0.1", False), ttl=60)
    directory.put_endpoint(endpoint)
    assert directory.endpoints() == [endpoint] and directory.revision() == 2, "the refused writes left nothing"
    directory.close()

