"""Which directory the orchestrator serves: `open_directory` opens the store the settings name (SQLite by
default, or etcd)."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

from freeflow.config.settings import Settings, etcd_store
from freeflow.orchestrator.etcd_directory import EtcdDirectory
from freeflow.orchestrator.sqlite_directory import SqliteDirectory
from freeflow.orchestrator.store import DirectoryStore

log = logging.getLogger(__name__)


def open_directory(settings: Settings) -> DirectoryStore:
    """The directory FREEFLOW_ORCHESTRATOR_STORE names: the SQLite file, or a prefix in etcd."""
    etcd = etcd_store(settings.orchestrator_store)
    if etcd is not None:
        log.info("directory in etcd at %s:%d, keys under /%s/", etcd.host, etcd.port, etcd.prefix)
        return EtcdDirectory(etcd.host, etcd.port, etcd.prefix)
    log.info("directory in the SQLite file %s", settings.orchestrator_db)
    path = Path(settings.orchestrator_db)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return SqliteDirectory(str(path))
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        log.error("the directory file %s cannot be read (%s): moved aside to %s. Starting with an empty "
                  "directory; every host's next heartbeat and reports fill it again", path, exc, aside)
        return SqliteDirectory(str(path))
