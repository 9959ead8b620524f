"""The cluster directory in one SQLite file, the default store: tables for hosts, endpoints and listeners,
and a change log whose row IDs are the revisions watchers follow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from freeflow.orchestrator.errors import NotFound
from freeflow.orchestrator.schema import Endpoint, Host, Listener, listener_key
from freeflow.orchestrator.store import DirectoryStore, change, clock, report_changes

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS hosts (
    host_id TEXT PRIMARY KEY, address TEXT NOT NULL, rdma INTEGER NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    endpoint_id TEXT PRIMARY KEY, network_id TEXT NOT NULL, ip TEXT NOT NULL, mac TEXT NOT NULL,
    host_id TEXT NOT NULL REFERENCES hosts(host_id));
CREATE INDEX IF NOT EXISTS endpoints_by_ip ON endpoints(network_id, ip);
CREATE INDEX IF NOT EXISTS endpoints_by_host ON endpoints(host_id);
CREATE TABLE IF NOT EXISTS listeners (
    network_id TEXT NOT NULL, ip TEXT NOT NULL, port INTEGER NOT NULL, kind TEXT NOT NULL,
    host_id TEXT NOT NULL REFERENCES hosts(host_id), PRIMARY KEY (network_id, ip, port, kind));
CREATE TABLE IF NOT EXISTS changes (
    revision INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, key TEXT NOT NULL,
    op TEXT NOT NULL, value TEXT);
"""

ENDPOINT_COLUMNS = "endpoint_id, network_id, ip, mac, host_id"
KEPT_CHANGES = 100_000  # the newest changes kept; a watcher further behind gets `reset` and lists everything


class DamagedFile(sqlite3.DatabaseError):
    """The directory file is not a SQLite database, or SQLite finds it damaged."""


def open_sqlite(path: Path) -> SqliteDirectory:
    """The directory in the file `path`. A damaged file is moved aside (logged) and the directory starts empty:
    the hosts' next heartbeats and reports fill it again, where refusing to start would help nobody."""
    try:
        return SqliteDirectory(str(path))
    except DamagedFile as exc:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        log.error("the directory file %s cannot be read (%s): moved aside to %s. Starting with an empty "
                  "directory; every host's next heartbeat and reports fill it again", path, exc, aside)
        return SqliteDirectory(str(path))


class SqliteDirectory(DirectoryStore):
    """Thread-safe: one connection guarded by a lock; `changed` wakes watchers after each write."""

    def __init__(self, path: str = ":memory:", kept_changes: int = KEPT_CHANGES) -> None:
        self.kept_changes = kept_changes
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._check()
        except BaseException:
            self.db.close()
            raise
        # Endpoints and listeners name their host (REFERENCES): with the check on, a write for a host that
        # expired after the API's lease check fails inside the write, instead of leaving an orphan.
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def _check(self) -> None:
        """Raise DamagedFile if the file is not a database or fails SQLite's quick check."""
        try:
            [verdict] = self.db.execute("PRAGMA quick_check(1)").fetchone()
        except sqlite3.DatabaseError as exc:
            if exc.sqlite_errorname in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
                raise DamagedFile(str(exc)) from exc
            raise  # locked, or an I/O error: the file may be fine
        if verdict != "ok":
            raise DamagedFile(f"quick check: {verdict}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except sqlite3.IntegrityError:
                self.db.execute("ROLLBACK")
                raise NotFound("the host has no lease (it expired just now): send its heartbeat first") from None
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("DELETE FROM changes WHERE revision <= (SELECT MAX(revision) FROM changes) - ?",
                            (self.kept_changes,))
            self.db.execute("COMMIT")
            self.changed.notify_all()

    @staticmethod
    def _log(db: sqlite3.Connection, kind: str, key: str, value: Any = None) -> None:
        db.execute("INSERT INTO changes (kind, key, op, value) VALUES (?, ?, ?, ?)",
                   (kind, key, "put" if value is not None else "delete",
                    None if value is None else json.dumps(value)))

    @staticmethod
    def _put_endpoint(db: sqlite3.Connection, endpoint: Endpoint) -> None:
        db.execute(f"INSERT OR REPLACE INTO endpoints ({ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                   (endpoint.endpoint_id, endpoint.network_id, endpoint.ip, endpoint.mac, endpoint.host_id))
        SqliteDirectory._log(db, "endpoint", endpoint.endpoint_id, asdict(endpoint))

    # Hosts and leases.

    def heartbeat(self, host: Host, ttl: float, now: float | None = None) -> None:
        expires = clock(now) + ttl
        with self._write() as db:
            known = db.execute("SELECT host_id, address, rdma FROM hosts WHERE host_id = ?",
                               (host.host_id,)).fetchone()
            db.execute("INSERT INTO hosts VALUES (?, ?, ?, ?) ON CONFLICT(host_id) DO UPDATE SET "
                       "address = excluded.address, rdma = excluded.rdma, expires = excluded.expires",
                       (host.host_id, host.address, int(host.rdma), expires))
            if known is None or Host(known[0], known[1], bool(known[2])) != host:
                self._log(db, "host", host.host_id, asdict(host))

    def expire(self, now: float | None = None) -> list[str]:
        with self._write() as db:
            gone = [row[0] for row in db.execute("SELECT host_id FROM hosts WHERE expires < ?", (clock(now),))]
            for host_id in gone:
                self._remove_host(db, host_id)
        return gone

    def _remove_host(self, db: sqlite3.Connection, host_id: str) -> None:
        for (endpoint_id,) in db.execute("SELECT endpoint_id FROM endpoints WHERE host_id = ?", (host_id,)).fetchall():
            self._log(db, "endpoint", endpoint_id)
        for network_id, ip, port, kind in db.execute(
                "SELECT network_id, ip, port, kind FROM listeners WHERE host_id = ?", (host_id,)).fetchall():
            self._log(db, "listener", listener_key(network_id, ip, port, kind))
        db.execute("DELETE FROM endpoints WHERE host_id = ?", (host_id,))
        db.execute("DELETE FROM listeners WHERE host_id = ?", (host_id,))
        db.execute("DELETE FROM hosts WHERE host_id = ?", (host_id,))
        self._log(db, "host", host_id)

    def hosts(self) -> list[Host]:
        with self.lock:
            rows = self.db.execute("SELECT host_id, address, rdma FROM hosts ORDER BY host_id").fetchall()
        return [Host(h, a, bool(r)) for h, a, r in rows]

    def host_known(self, host_id: str) -> bool:
        with self.lock:
            return self.db.execute("SELECT 1 FROM hosts WHERE host_id = ?", (host_id,)).fetchone() is not None

    # Endpoints.

    def put_endpoint(self, endpoint: Endpoint) -> None:
        with self._write() as db:
            self._put_endpoint(db, endpoint)

    def delete_endpoint(self, endpoint_id: str) -> bool:
        with self._write() as db:
            gone = db.execute("DELETE FROM endpoints WHERE endpoint_id = ?", (endpoint_id,)).rowcount > 0
            if gone:
                self._log(db, "endpoint", endpoint_id)
        return gone

    def replace_host_endpoints(self, host_id: str, endpoints: list[Endpoint]) -> None:
        with self._write() as db:
            known = {row[0]: Endpoint(*row) for row in db.execute(
                f"SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE host_id = ?", (host_id,))}
            deleted, written = report_changes(known, endpoints)
            for endpoint_id in deleted:
                db.execute("DELETE FROM endpoints WHERE endpoint_id = ?", (endpoint_id,))
                self._log(db, "endpoint", endpoint_id)
            for endpoint in written:
                self._put_endpoint(db, endpoint)

    def lookup(self, network_id: str, ip: str) -> tuple[Endpoint, Host] | None:
        with self.lock:
            row = self.db.execute(
                "SELECT e.endpoint_id, e.network_id, e.ip, e.mac, e.host_id, h.address, h.rdma "
                "FROM endpoints e JOIN hosts h USING (host_id) WHERE e.network_id = ? AND e.ip = ?",
                (network_id, ip)).fetchone()
        if row is None:
            return None
        return Endpoint(*row[:5]), Host(row[4], row[5], bool(row[6]))

    def endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        query = f"SELECT {ENDPOINT_COLUMNS} FROM endpoints"
        with self.lock:
            rows = (self.db.execute(query + " WHERE network_id = ?", (network_id,)) if network_id
                    else self.db.execute(query)).fetchall()
        return [Endpoint(*row) for row in rows]

    # Listeners.

    def put_listener(self, listener: Listener) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO listeners VALUES (?, ?, ?, ?, ?)",
                       (listener.network_id, listener.ip, listener.port, listener.kind, listener.host_id))
            self._log(db, "listener", listener.key, asdict(listener))

    def delete_listener(self, network_id: str, ip: str, port: int, kind: str) -> bool:
        with self._write() as db:
            gone = db.execute("DELETE FROM listeners WHERE network_id = ? AND ip = ? AND port = ? AND kind = ?",
                              (network_id, ip, port, kind)).rowcount > 0
            if gone:
                self._log(db, "listener", listener_key(network_id, ip, port, kind))
        return gone

    def listener(self, network_id: str, ip: str, port: int, kind: str) -> Listener | None:
        with self.lock:
            row = self.db.execute("SELECT network_id, ip, port, kind, host_id FROM listeners WHERE network_id = ? "
                                  "AND ip = ? AND port = ? AND kind = ?", (network_id, ip, port, kind)).fetchone()
        return Listener(*row) if row else None

    def listeners(self) -> list[Listener]:
        with self.lock:
            rows = self.db.execute("SELECT network_id, ip, port, kind, host_id FROM listeners "
                                   "ORDER BY network_id, ip, port, kind").fetchall()
        return [Listener(*row) for row in rows]

    # Watching.

    def _latest(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(revision), 0) FROM changes").fetchone()[0])

    def revision(self) -> int:
        with self.lock:
            return self._latest()

    def changes_since(self, revision: int, wait: float = 0.0,
                      limit: int = 1000) -> tuple[int, list[dict[str, Any]], bool]:
        # A revision past the log's end is from another life of the directory (it restarted empty); one before
        # its start asks for changes pruned since (the log keeps the newest `kept_changes`).
        deadline = time.monotonic() + wait
        with self.changed:
            latest = self._latest()
            oldest = int(self.db.execute("SELECT COALESCE(MIN(revision), 1) FROM changes").fetchone()[0])
            if revision > latest or revision < oldest - 1:  # another life, or history pruned since
                return latest, [], True
            while True:
                rows = self.db.execute("SELECT revision, kind, key, value FROM changes WHERE revision > ? "
                                       "ORDER BY revision LIMIT ?", (revision, limit)).fetchall()
                remaining = deadline - time.monotonic()
                if rows or remaining <= 0:
                    break
                self.changed.wait(remaining)
            latest = self._latest()
            if rows and rows[0][0] > revision + 1:  # pruned while this watcher waited
                return latest, [], True
        changes = [change(r, kind, key, json.loads(value) if value else None) for r, kind, key, value in rows]
        return (changes[-1]["revision"] if changes else max(revision, latest)), changes, False

    def close(self) -> None:
        with self.lock:
            self.db.close()
