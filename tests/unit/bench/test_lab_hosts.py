"""Which lab `--hosts` runs on: the one that is up when it suits (left up), else one brought up and taken down."""

from __future__ import annotations

from dataclasses import replace

import pytest

from freeflow.bench import lab_hosts
from freeflow.bench.errors import BenchError
from freeflow.bench.lab_hosts import PLACEMENT, check_usable, lab_placement
from freeflow.lab.lifecycle import HostStatus
from freeflow.lab.state import HostRecord, LabState

GLOBAL = LabState(hosts=[HostRecord("h1", 10), HostRecord("h2", 20), HostRecord("h3", 30)], plugin_scope="global")
UP = [HostStatus("h1", "10.99.0.1", 10, True, "manager", "enabled", "unix:///run/docker-h1.sock"),
      HostStatus("h2", "10.99.0.2", 20, True, "worker", "enabled", "unix:///run/docker-h2.sock"),
      HostStatus("h3", "10.99.0.3", 30, False, "-", "-", "unix:///run/docker-h3.sock")]


def test_clients_on_h1_the_manager_and_servers_on_h2():
    assert (PLACEMENT.client.name, PLACEMENT.manager.name, PLACEMENT.server.name) == ("h1", "h1", "h2")
    assert (PLACEMENT.server.url, PLACEMENT.server.address) == ("unix:///run/docker-h2.sock", "10.99.0.2")


def test_a_global_lab_with_h1_and_h2_up_is_usable_whatever_its_other_hosts():
    check_usable(GLOBAL, UP)


@pytest.mark.parametrize(("found", "says"), [
    (UP[1:], "has no host h1"),
    ([replace(UP[0], running=False), UP[1]], r"h1 is not running: `freeflow lab start h1`"),
    ([replace(UP[0], swarm="worker"), UP[1]], "h1 is worker in the swarm, not manager"),
    ([UP[0], replace(UP[1], swarm="none")], "h2 is none in the swarm, not manager or worker"),
    ([UP[0], replace(UP[1], plugin="disabled")], "plugin is disabled on lab host h2"),
])
def test_an_unusable_lab_is_refused_saying_why(found, says):
    with pytest.raises(BenchError, match=says):
        check_usable(GLOBAL, found)


def test_a_local_scope_lab_is_refused_with_what_to_do():
    with pytest.raises(BenchError, match=r"local scope.*need global scope.*freeflow lab down"):
        check_usable(replace(GLOBAL, plugin_scope="local"), UP)


class FakeLab:
    """Plays lifecycle and state: `lab` is the lab that is up (None: none); records ups and downs."""

    def __init__(self, lab: LabState | None) -> None:
        self.lab, self.calls = lab, []

    def load(self) -> LabState | None:
        return self.lab

    def status(self) -> list[HostStatus]:
        return UP

    def up(self, count: int, scope: str, report) -> LabState:
        self.calls.append(("up", count, scope))
        report("lab up: 2 Docker hosts\n  h1 ...\nTry: ...")
        self.lab = GLOBAL
        return GLOBAL

    def down(self, report) -> None:
        self.calls.append(("down",))
        report("lab removed")


@pytest.fixture
def fake(monkeypatch):
    def install(lab: LabState | None) -> FakeLab:
        fake_lab = FakeLab(lab)
        monkeypatch.setattr(lab_hosts.state, "load", fake_lab.load)
        for name in ("status", "up", "down"):
            monkeypatch.setattr(lab_hosts.lifecycle, name, getattr(fake_lab, name))
        return fake_lab

    return install


def test_the_lab_that_is_up_is_used_and_left_up(fake):
    lab = fake(GLOBAL)
    with lab_placement(lambda _: None, existing=False) as placement:
        assert placement == PLACEMENT
    assert lab.calls == []


def test_with_no_lab_up_one_is_brought_up_and_taken_down_even_after_a_failure(fake):
    lab = fake(None)
    said: list[str] = []
    with pytest.raises(BenchError, match="measuring failed"), lab_placement(said.append, existing=False):
        assert lab.calls == [("up", 2, "global")]
        raise BenchError("measuring failed")
    assert lab.calls == [("up", 2, "global"), ("down",)]
    assert "lab: lab up: 2 Docker hosts" in said and "lab: lab removed" in said, "the lab's first lines only"


def test_existing_lab_refuses_to_bring_one_up(fake):
    lab = fake(None)
    with pytest.raises(BenchError, match="no lab is up"), lab_placement(lambda _: None, existing=True):
        pass
    assert lab.calls == []
