"""Which directory the orchestrator serves: `open_directory` opens the store the settings name (SQLite by
default, or etcd)."""

from __future__ import annotations

import logging
from pathlib import Path

from freeflow.config.settings import Settings, etcd_store
from freeflow.orchestrator.etcd_directory import EtcdDirectory
from freeflow.orchestrator.sqlite_directory import open_sqlite
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
    return open_sqlite(path)
