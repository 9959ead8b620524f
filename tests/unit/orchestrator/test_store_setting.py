"""FREEFLOW_ORCHESTRATOR_STORE: validated with a message saying what it accepts, and it picks the directory."""

from __future__ import annotations

import pytest

from freeflow.config.settings import EtcdStore, etcd_store, load_settings
from freeflow.errors import SettingsError
from freeflow.orchestrator.directory import open_directory
from freeflow.orchestrator.etcd_directory import EtcdDirectory
from freeflow.orchestrator.sqlite_directory import SqliteDirectory


@pytest.mark.parametrize("value, store", [
    ("sqlite", None),
    ("etcd://127.0.0.1:2379", EtcdStore("127.0.0.1", 2379, "freeflow")),
    ("etcd://etcd.cluster.local:2379/lab-3", EtcdStore("etcd.cluster.local", 2379, "lab-3")),
])
def test_store_values(value, store):
    assert etcd_store(value) == store
    assert load_settings({"FREEFLOW_ORCHESTRATOR_STORE": value}).orchestrator_store == value


@pytest.mark.parametrize("value", ["postgres", "etcd://", "etcd://host", "etcd://host:0", "etcd://host:99999",
                                   "http://127.0.0.1:2379", "etcd://h:2379/a b", "SQLITE"])
def test_bad_store_values_say_what_is_accepted(value):
    with pytest.raises(SettingsError, match=r"FREEFLOW_ORCHESTRATOR_STORE=.*etcd://HOST:PORT"):
        load_settings({"FREEFLOW_ORCHESTRATOR_STORE": value})


def test_the_setting_picks_the_directory(tmp_path, etcd_server):
    sqlite = open_directory(load_settings({"FREEFLOW_ORCHESTRATOR_DB": str(tmp_path / "d" / "directory.db")}))
    etcd = open_directory(load_settings({"FREEFLOW_ORCHESTRATOR_STORE": f"{etcd_server.store}/picked"}))
    try:
        assert isinstance(sqlite, SqliteDirectory) and (tmp_path / "d" / "directory.db").exists()
        assert isinstance(etcd, EtcdDirectory) and etcd.root == "/picked/"
    finally:
        sqlite.close()
        etcd.close()


def test_a_directory_file_that_is_no_database_is_moved_aside_and_the_directory_starts_empty(tmp_path, caplog):
    """The directory is rebuilt from the hosts' heartbeats and reports; a crash loop on a bad file helps nobody."""
    path = tmp_path / "directory.db"
    path.write_bytes(b"not a database, " * 512)
    directory = open_directory(load_settings({"FREEFLOW_ORCHESTRATOR_DB": str(path)}))
    try:
        assert directory.hosts() == [] and directory.revision() == 0
        [aside] = tmp_path.glob("directory.db.corrupt-*")
        assert aside.read_bytes().startswith(b"not a database")
        assert "moved aside" in caplog.text and str(aside) in caplog.text
    finally:
        directory.close()
    again = open_directory(load_settings({"FREEFLOW_ORCHESTRATOR_DB": str(path)}))
    again.close()
    assert len(list(tmp_path.glob("directory.db.corrupt-*"))) == 1, "a good file is kept"
