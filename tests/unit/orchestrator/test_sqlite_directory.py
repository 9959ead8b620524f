"""What only the SQLite store does: its change log keeps the newest changes."""

from __future__ import annotations

from freeflow.orchestrator.schema import Endpoint, Host
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
