"""The path list, the ports, and the swarm rule: initialise only when inactive, leave only what this run made."""

from __future__ import annotations

import re

import pytest

from freeflow.bench import paths as paths_module
from freeflow.bench import swarm as swarm_module
from freeflow.bench.errors import BenchError, DockerError
from freeflow.bench.paths import BASELINE, CHANNELS, GRAFTED, PATHS, Lab, free_ports
from freeflow.bench.swarm import Swarm, parse_addresses


def test_paths_have_unique_names_and_docker_safe_keys():
    assert len({p.name for p in PATHS}) == len(PATHS)
    assert len({p.key for p in PATHS}) == len(PATHS)
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", p.key) for p in PATHS)


def test_the_baseline_is_dockers_bridge_and_measured_first():
    assert BASELINE == PATHS[0].name == "Docker bridge"
    assert PATHS[0].network == "bridge"


def test_every_path_either_uses_or_creates_a_network():
    for p in PATHS:
        assert (p.network is None) == bool(p.create_args), p.name
        assert not p.needs_swarm or p.network is None, p.name


def test_free_ports_are_distinct():
    ports = list(vars(free_ports()).values())
    assert len(ports) == len(set(ports)) == 5
    assert all(1024 <= port < 65536 for port in ports)


def test_the_grafted_path_preloads_the_library_and_channels_get_the_client():
    grafted = next(p for p in PATHS if p.name == GRAFTED)
    assert grafted.create_args == CHANNELS.create_args == ("--driver", "freeflow")
    assert "LD_PRELOAD=/run/freeflow/libfreeflow.so" in grafted.run_args
    assert "PYTHONPATH=/run/freeflow/python" in CHANNELS.run_args
    assert all("/run/freeflow:/run/freeflow:ro" in p.run_args for p in (grafted, CHANNELS))
    assert CHANNELS.key not in {p.key for p in PATHS}


def test_addresses_from_ip_output():
    out = ("4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever\n"
           "5: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\       valid_lft forever\n")
    assert parse_addresses(out) == ["192.0.2.2", "172.17.0.1"]


class FakeEngine:
    """Plays dockerd's swarm commands; `refuse` holds advertise addresses whose init fails."""

    def __init__(self, state: str = "inactive", refuse: tuple[str, ...] = ()) -> None:
        self.state, self.node, self.refuse = state, "" if state == "inactive" else "theirs", refuse
        self.commands: list[tuple[str, ...]] = []

    def swarm_state(self) -> tuple[str, str]:
        return self.state, self.node

    def docker(self, *args: str, timeout: float = 60) -> str:
        self.commands.append(args)
        if args[:2] == ("swarm", "init"):
            if args[-1] in self.refuse:
                raise DockerError(f"cannot use {args[-1]}")
            self.state, self.node = "active", "ours"
        elif args[:2] == ("swarm", "leave"):
            self.state, self.node = "inactive", ""
        return ""


@pytest.fixture
def fake(monkeypatch):
    def install(**kwargs) -> FakeEngine:
        engine = FakeEngine(**kwargs)
        monkeypatch.setattr(swarm_module.engine, "docker", engine.docker)
        monkeypatch.setattr(swarm_module.engine, "swarm_state", engine.swarm_state)
        monkeypatch.setattr(swarm_module, "candidate_addresses", lambda: ["127.0.0.1", "192.0.2.2"])
        return engine

    return install


def test_inactive_engine_gets_a_loopback_swarm_that_is_left_at_the_end(fake):
    engine = fake()
    swarm = Swarm(progress=lambda _: None)
    swarm.join()
    assert engine.commands == [("swarm", "init", "--advertise-addr", "127.0.0.1")]
    swarm.leave()
    assert engine.commands[-1] == ("swarm", "leave", "--force") and engine.state == "inactive"


def test_a_refused_address_falls_back_to_the_next(fake):
    engine = fake(refuse=("127.0.0.1",))
    Swarm(progress=lambda _: None).join()
    assert engine.commands[-1] == ("swarm", "init", "--advertise-addr", "192.0.2.2")
    assert engine.state == "active"


def test_no_usable_address_is_an_error_naming_each(fake):
    fake(refuse=("127.0.0.1", "192.0.2.2"))
    with pytest.raises(BenchError, match=r"127\.0\.0\.1.*192\.0\.2\.2"):
        Swarm(progress=lambda _: None).join()


def test_an_existing_swarm_is_used_and_never_left(fake):
    engine = fake(state="active")
    swarm = Swarm(progress=lambda _: None)
    swarm.join()
    swarm.leave()
    assert engine.commands == [] and engine.state == "active"


def test_a_swarm_replaced_meanwhile_is_not_left(fake):
    engine = fake()
    swarm = Swarm(progress=lambda _: None)
    swarm.join()
    engine.node = "someone else's"
    swarm.leave()
    assert ("swarm", "leave", "--force") not in engine.commands


def test_a_locked_swarm_is_refused(fake):
    fake(state="locked")
    with pytest.raises(BenchError, match="locked"):
        Swarm(progress=lambda _: None).join()


class FakeLabEngine:
    """Holds this run's labelled objects; a network refuses removal `busy` times (endpoints still going)."""

    def __init__(self, busy: int) -> None:
        self.containers, self.networks, self.busy = ["c1", "c2"], ["n1"], busy
        self.commands: list[tuple[str, ...]] = []

    def labelled_containers(self, run_id: str) -> list[str]:
        return list(self.containers)

    def labelled_networks(self, run_id: str) -> list[str]:
        return list(self.networks)

    def docker(self, *args: str, timeout: float = 60) -> str:
        self.commands.append(args)
        if args[:2] == ("network", "rm"):
            if self.busy:
                self.busy -= 1
                raise DockerError("network n1 has active endpoints")
            self.networks.remove(args[2])
        elif args[0] == "rm":
            self.containers = [c for c in self.containers if c not in args]
        return ""


@pytest.fixture
def lab_engine(monkeypatch):
    def install(busy: int) -> FakeLabEngine:
        engine = FakeLabEngine(busy)
        for name in ("labelled_containers", "labelled_networks", "docker"):
            monkeypatch.setattr(paths_module.engine, name, getattr(engine, name))
        monkeypatch.setattr(paths_module.time, "sleep", lambda _: None)
        return engine

    return install


def test_close_removes_the_runs_containers_then_retries_a_busy_network(lab_engine):
    engine = lab_engine(busy=3)
    assert Lab(progress=lambda _: None).close() == []
    assert engine.commands[0] == ("rm", "--force", "--volumes", "c1", "c2")
    assert engine.containers == [] and engine.networks == []


def test_close_reports_what_it_could_not_remove(lab_engine):
    engine = lab_engine(busy=Lab.NETWORK_RM_TRIES)
    problems = Lab(progress=lambda _: None).close()
    assert len(problems) == 1 and "active endpoints" in problems[0]
    assert engine.networks == ["n1"]
