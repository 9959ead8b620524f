"""The router's file of grafts onto host TCP: appended a line a graft, rewritten when some end, read back by the
next router whatever a crash or an older router left in it."""

from __future__ import annotations

import json
import logging
import os
import socket

import pytest

from freeflow.config.settings import Settings
from freeflow.router import graft_journal
from freeflow.router.graft_journal import GraftJournal
from freeflow.router.server import Router
from freeflow.router.status import live_sockets

ONE = [["net", "10.0.0.2", 40000, "10.0.1.5", 7000], "sandbox-a", "", [111]]
TWO = [["net", "10.0.0.2", 40001, "10.0.1.5", 7000], "sandbox-a", "", [222]]
THREE = [["net", "10.0.0.3", 40002, "10.0.1.5", 7000], "", "sandbox-b", [333]]


@pytest.fixture
def journal(tmp_path):
    journal = GraftJournal(tmp_path / "grafts.jsonl", legacy=tmp_path / "grafts.json")
    yield journal
    journal.close()


def test_each_graft_is_one_line_appended_and_a_rewrite_keeps_only_what_it_is_given(journal) -> None:
    journal.append([ONE])
    journal.append([TWO, THREE])
    journal.append([])
    assert journal.path.read_text().count("\n") == 3
    assert GraftJournal(journal.path).load() == [ONE, TWO, THREE]
    journal.rewrite([TWO])
    journal.append([THREE])
    assert GraftJournal(journal.path).load() == [TWO, THREE], "appends go on in the new file"
    assert not journal.path.with_suffix(".tmp").exists()


def test_a_line_cut_short_by_a_crash_is_skipped_and_counted(journal, caplog) -> None:
    journal.append([ONE, TWO])
    journal.close()
    with open(journal.path, "ab") as f:
        f.write(json.dumps(THREE).encode()[:-5])  # the router died inside this write
    with caplog.at_level(logging.WARNING):
        assert journal.load() == [ONE, TWO]
    assert "skipped 1 lines" in caplog.text


def test_what_an_older_router_wrote_is_read_back_and_then_removed(journal) -> None:
    journal.legacy.write_text(json.dumps([ONE, TWO]))
    journal.append([THREE])
    assert journal.load() == [ONE, TWO, THREE]
    journal.rewrite([ONE, TWO, THREE])
    assert not journal.legacy.exists()
    assert journal.load() == [ONE, TWO, THREE]


def test_a_broken_or_missing_file_gives_nothing_to_take_back(journal) -> None:
    assert journal.load() == []
    journal.legacy.write_bytes(b"\xff\xfe not text")
    journal.path.write_text("not json\n")
    assert journal.load() == []


def test_blank_lines_are_no_damage(journal, caplog) -> None:
    journal.path.write_text("\n" + json.dumps(ONE) + "\n\n")
    with caplog.at_level(logging.WARNING):
        assert journal.load() == [ONE]
    assert "skipped" not in caplog.text


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_file_removed_or_replaced_under_the_router_is_written_afresh(journal, how) -> None:
    journal.append([ONE])
    if how == "removed":
        journal.path.unlink()
    else:
        journal.path.rename(journal.path.with_suffix(".old"))
        journal.path.write_text("")
    journal.append([TWO])
    assert journal.needs_rewrite(), "the appends would go to a file nobody reads"
    journal.rewrite([ONE, TWO])
    journal.append([THREE])
    assert not journal.needs_rewrite() and journal.load() == [ONE, TWO, THREE]


def test_a_full_disk_damages_the_journal_until_it_is_rewritten(tmp_path, caplog, monkeypatch) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    journal = GraftJournal(tmp_path / "grafts.jsonl")
    journal.path.symlink_to("/dev/full")  # every write fails with ENOSPC
    with caplog.at_level(logging.WARNING):
        journal.append([ONE])
        journal.append([TWO])
    assert journal.damaged and caplog.text.count("No space left on device") == 1
    assert not journal.needs_rewrite(), "not tried again on every turn of the router's loop"
    monkeypatch.setattr(graft_journal, "RETRY_AFTER", 0.0)
    journal.append([TWO])
    assert journal.needs_rewrite()
    journal.path.unlink()
    journal.rewrite([ONE, TWO])
    assert not journal.damaged and journal.load() == [ONE, TWO]
    journal.close()


def test_the_router_appends_new_grafts_and_rewrites_the_file_when_some_ended(tmp_path) -> None:
    settings = Settings(state_dir=str(tmp_path / "state"), run_dir=str(tmp_path / "run"))
    router = Router(settings)
    path = router.graft_journal.path
    router._save_host_tcp_grafts()  # the first turn of the loop writes the file afresh
    first_file = open(path)  # noqa: SIM115 - what this file holds later tells appends from a new file
    sockets = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]  # listed in /proc/net/tcp
    try:
        for n, sock in enumerate(sockets):
            router.broker.record_graft(("net", "10.0.0.2", 40000 + n, "10.0.1.5", 7000), "sandbox-a", "", sock)
            router._save_host_tcp_grafts()
            assert len(router.graft_journal.load()) == n + 1
        assert len(first_file.read().splitlines()) == 2, "new grafts are appended to the file"
        sockets.pop(0).close()
        router.broker.prune(live_sockets())
        router._save_host_tcp_grafts()
        assert first_file.read() == "" and not os.path.samestat(os.fstat(first_file.fileno()), os.stat(path)), \
            "an ended graft: the file is written again"
        [entry] = router.graft_journal.load()
        assert entry[0][2] == 40001
        # A graft made in a turn that also rewrites the file (another ended) is written once, not twice.
        sockets.append(socket.create_server(("127.0.0.1", 0)))
        router.broker.record_graft(("net", "10.0.0.2", 40002, "10.0.1.5", 7000), "sandbox-a", "", sockets[-1])
        router.broker.host_tcp_version += 1
        router._save_host_tcp_grafts()
        router._save_host_tcp_grafts()
        assert [entry[0][2] for entry in router.graft_journal.load()] == [40001, 40002]
        successor = Router(settings)
        assert successor._restore_host_tcp_grafts() == 2
        assert [g.key[2] for g in successor.broker.grafts] == [40001, 40002]
    finally:
        first_file.close()
        router.graft_journal.close()
        for sock in sockets:
            sock.close()
