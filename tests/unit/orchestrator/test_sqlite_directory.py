"""What only the SQLite store does: its change log keeps the newest changes, and a write checks its host's lease."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from freeflow.orchestrator.errors import NotFound
from freeflow.orchestrator.schema import Endpoint, Host, Listener
from freeflow.orchestrator.sqlite_directory import SqliteDirectory, open_sqlite

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



class Parked(threading.Condition):
    """The directory's condition, telling when a watcher waits on it (the write after that finds it waiting:
    the watcher holds the lock until its wait lets go of it)."""

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__(lock)
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def test_a_watcher_whose_changes_were_pruned_while_it_waited_is_reset():
    directory = SqliteDirectory(kept_changes=5)
    directory.changed = parked = Parked(directory.lock)
    directory.heartbeat(Host("h1", "10.99.0.1", False), ttl=60)
    since = directory.revision()
    answers = []
    watcher = threading.Thread(target=lambda: answers.append(directory.changes_since(since, wait=10)))
    watcher.start()
    assert parked.waiting.wait(10), "the watcher waits"
    directory.replace_host_endpoints("h1", [
        Endpoint(f"ep{n}", NET, f"10.0.0.{n + 2}", f"02:42:0a:00:00:{n + 2:02x}", "h1") for n in range(10)])
    watcher.join(10)
    assert answers == [(since + 10, [], True)], "ten changes in one write, the first five pruned: list again"
    directory.close()


def test_a_locked_directory_file_is_not_taken_for_a_damaged_one(tmp_path):
    path = tmp_path / "directory.db"
    holder = sqlite3.connect(path, isolation_level=None)  # a rollback journal: its exclusive lock stops readers
    holder.execute("CREATE TABLE kept (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            open_sqlite(path)
    finally:
        holder.close()
    assert list(tmp_path.glob("*.corrupt-*")) == [], "a good file stays where it is"
