"""The path list, the ports, and the swarm rule: initialise only when inactive, leave only what this run made."""

from __future__ import annotations

import re

import pytest

from freeflow.bench import paths as paths_module
from freeflow.bench import swarm as swarm_module
from freeflow.bench.engine import LOCAL, Container, DockerHost
from freeflow.bench.errors import BenchError, DockerError
from freeflow.bench.paths import (
    ACROSS_BASELINE,
    ACROSS_CHANNELS,
    ACROSS_PATHS,
    BASELINE,
    CHANNELS,
    GRAFTED,
    GRAFTED_ACROSS,
    PATHS,
    Lab,
    PathSpec,
    Placement,
    free_ports,
)
from freeflow.bench.swarm import Swarm, parse_addresses


@pytest.mark.parametrize("specs", [PATHS, ACROSS_PATHS], ids=["one host", "across hosts"])
def test_paths_have_unique_names_and_docker_safe_keys(specs):
    assert len({p.name for p in specs}) == len(specs)
    assert len({p.key for p in specs}) == len(specs)
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", p.key) for p in specs)


def test_the_baselines_are_dockers_bridge_and_overlay_and_measured_first():
    assert BASELINE == PATHS[0].name == "Docker bridge"
    assert PATHS[0].network == "bridge"
    assert ACROSS_PATHS[0].name == ACROSS_BASELINE
    assert ACROSS_PATHS[0].create_args == ("--driver", "overlay", "--attachable")


@pytest.mark.parametrize("spec", [*PATHS, CHANNELS, *ACROSS_PATHS, ACROSS_CHANNELS], ids=lambda p: p.name)
def test_every_path_either_uses_or_creates_a_network(spec):
    assert (spec.network is None) == bool(spec.create_args)
    assert not spec.needs_swarm or spec.network is None


def test_cross_host_freeflow_networks_are_swarm_scoped_and_attachable():
    created = [p for p in (*ACROSS_PATHS, ACROSS_CHANNELS) if "freeflow" in " ".join(p.create_args)]
    assert len(created) == 3
    for p in created:
        assert p.create_args == ("--driver", "freeflow/driver:latest", "--attachable") and p.needs_swarm, p.name


def test_free_ports_are_distinct():
    ports = list(vars(free_ports()).values())
    assert len(ports) == len(set(ports)) == 5
    assert all(1024 <= port < 65536 for port in ports)


@pytest.mark.parametrize(("specs", "grafted_name", "channels"), [(PATHS, GRAFTED, CHANNELS),
                                                                  (ACROSS_PATHS, GRAFTED_ACROSS, ACROSS_CHANNELS)])
def test_the_grafted_path_preloads_the_library_and_channels_get_the_client(specs, grafted_name, channels):
    grafted = next(p for p in specs if p.name == grafted_name)
    assert [p for p in specs if p.grafted] == [grafted]
    assert grafted.create_args == channels.create_args
    assert "LD_PRELOAD=/run/freeflow/libfreeflow.so" in grafted.run_args
    assert "PYTHONPATH=/run/freeflow/python" in channels.run_args
    assert all("/run/freeflow:/run/freeflow:ro" in p.run_args for p in (grafted, channels))
    assert channels.key not in {p.key for p in specs}


def test_addresses_from_ip_output():
    out = ("4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\\       valid_lft forever\n"
           "5: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\       valid_lft forever\n")
    assert parse_addresses(out) == ["192.0.2.2", "172.17.0.1"]


class FakeEngine:
    """Plays dockerd's swarm commands; `refuse` holds advertise addresses whose init fails."""

    def __init__(self, state: str = "inactive", refuse: tuple[str, ...] = ()) -> None:
        self.state, self.node, self.refuse = state, "" if state == "inactive" else "theirs", refuse
        self.commands: list[tuple[str, ...]] = []

    def swarm_state(self, host: DockerHost = LOCAL) -> tuple[str, str]:
        return self.state, self.node

    def docker(self, *args: str, host: DockerHost = LOCAL, timeout: float = 60) -> str:
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


H1 = DockerHost("h1", "unix:///run/docker-h1.sock", "10.99.0.1")
H2 = DockerHost("h2", "unix:///run/docker-h2.sock", "10.99.0.2")
ACROSS = Placement(server=H2, client=H1, manager=H1)


class FakeLabEngine:
    """Holds this run's labelled objects per engine; a network refuses removal `busy` times (endpoints going)."""

    def __init__(self, busy: int = 0) -> None:
        self.containers = {LOCAL: ["c1", "c2"], H1: ["c1"], H2: ["c2"]}
        self.networks, self.busy = ["n1"], busy
        self.volumes: dict[DockerHost, list[str]] = {LOCAL: [], H1: [], H2: []}
        self.commands: list[tuple[str, tuple[str, ...]]] = []  # (engine, arguments)
        self.run_args: dict[str, tuple[str, ...]] = {}  # container name -> its extra `docker run` arguments

    def labelled_containers(self, run_id: str, host: DockerHost = LOCAL) -> list[str]:
        return list(self.containers[host])

    def labelled_networks(self, run_id: str, host: DockerHost = LOCAL) -> list[str]:
        return list(self.networks)

    def labelled_volumes(self, run_id: str, host: DockerHost = LOCAL) -> list[str]:
        return list(self.volumes[host])

    def create_volume(self, name: str, run_id: str, host: DockerHost = LOCAL) -> None:
        self.commands.append((host.name, ("volume", "create", name)))
        self.volumes[host].append(name)

    def docker(self, *args: str, host: DockerHost = LOCAL, timeout: float = 60) -> str:
        self.commands.append((host.name, args))
        if args[:2] == ("network", "rm"):
            if self.busy:
                self.busy -= 1
                raise DockerError("network n1 has active endpoints")
            self.networks.remove(args[2])
        elif args[0] == "rm":
            self.containers[host] = [c for c in self.containers[host] if c not in args]
        elif args[:2] == ("volume", "rm"):
            self.volumes[host] = [v for v in self.volumes[host] if v not in args]
        return ""

    def create_network(self, name: str, run_id: str, create_args: tuple[str, ...], host: DockerHost = LOCAL) -> None:
        self.commands.append((host.name, ("network", "create", name)))

    def run_container(self, name: str, run_id: str, network: str, run_args: tuple[str, ...] = (),
                      host: DockerHost = LOCAL) -> Container:
        self.commands.append((host.name, ("run", name, network)))
        self.run_args[name] = tuple(run_args)
        return Container(name, host)

    def container_ip(self, container: Container, network: str) -> str:
        return "10.0.0.2"

    def swarm_state(self, host: DockerHost = LOCAL) -> tuple[str, str]:
        return "active", "theirs"


@pytest.fixture
def lab_engine(monkeypatch):
    def install(busy: int = 0) -> FakeLabEngine:
        engine = FakeLabEngine(busy)
        for name in ("labelled_containers", "labelled_networks", "labelled_volumes", "docker", "create_network",
                     "create_volume", "run_container", "container_ip"):
            monkeypatch.setattr(paths_module.engine, name, getattr(engine, name))
        monkeypatch.setattr(swarm_module.engine, "swarm_state", engine.swarm_state)
        monkeypatch.setattr(paths_module.time, "sleep", lambda _: None)
        return engine

    return install


def test_close_removes_the_runs_containers_then_retries_a_busy_network(lab_engine):
    engine = lab_engine(busy=3)
    assert Lab(progress=lambda _: None).close() == []
    assert engine.commands[0] == ("this host", ("rm", "--force", "--volumes", "c1", "c2"))
    assert engine.containers[LOCAL] == [] and engine.networks == []


def test_close_reports_what_it_could_not_remove(lab_engine):
    engine = lab_engine(busy=Lab.NETWORK_RM_TRIES)
    problems = Lab(progress=lambda _: None).close()
    assert len(problems) == 1 and "active endpoints" in problems[0]
    assert engine.networks == ["n1"]


def test_across_hosts_the_network_is_made_on_the_manager_and_each_container_on_its_host(lab_engine):
    engine = lab_engine()
    lab = Lab(progress=lambda _: None, placement=ACROSS)
    pair = lab.open(PathSpec("overlay", "overlay", create_args=("--driver", "overlay"), needs_swarm=True))
    network = f"{lab.run_id}-overlay"
    assert engine.commands == [("h1", ("network", "create", network)),
                               ("h2", ("run", f"{lab.run_id}-overlay-srv", network)),
                               ("h1", ("run", f"{lab.run_id}-overlay-cli", network))]
    assert (pair.server.host, pair.client.host, pair.address, pair.listen) == (H2, H1, "10.0.0.2", "0.0.0.0")


@pytest.mark.parametrize(("placement", "address"), [(None, "127.0.0.1"), (ACROSS, "10.99.0.2")])
def test_a_host_stack_server_listens_on_its_hosts_address(lab_engine, placement, address):
    lab_engine()
    lab = Lab(lambda _: None) if placement is None else Lab(lambda _: None, placement)
    pair = lab.open(PathSpec("host", "host", network="host", host_stack=True))
    assert (pair.address, pair.listen) == (address, address)


def test_close_across_hosts_removes_the_containers_on_each_host_and_the_networks_on_the_manager(lab_engine):
    engine = lab_engine()
    assert Lab(progress=lambda _: None, placement=ACROSS).close() == []
    assert engine.commands == [("h1", ("rm", "--force", "--volumes", "c1")),
                               ("h2", ("rm", "--force", "--volumes", "c2")),
                               ("h1", ("network", "rm", "n1"))]


def test_a_shared_folder_is_a_volume_of_the_run_in_both_containers_and_goes_with_it(lab_engine):
    engine = lab_engine()
    lab = Lab(progress=lambda _: None)
    lab.open(PathSpec("channels", "channel", create_args=("--driver", "freeflow"), shared_dir="/shared"))
    volume = f"{lab.run_id}-channel-shared"
    assert ("this host", ("volume", "create", volume)) in engine.commands
    for role in ("srv", "cli"):
        assert engine.run_args[f"{lab.run_id}-channel-{role}"][-2:] == ("-v", f"{volume}:/shared")
    assert lab.close() == []
    assert engine.volumes[LOCAL] == []


def test_containers_on_two_hosts_cannot_share_a_folder(lab_engine):
    lab_engine()
    with pytest.raises(BenchError, match="cannot share a folder"):
        Lab(progress=lambda _: None, placement=ACROSS).open(PathSpec("channels", "channel", shared_dir="/shared"))


def test_a_placement_lists_each_engine_once_manager_first():
    assert ACROSS.hosts == [H1, H2]
    assert Placement(LOCAL, LOCAL, LOCAL).hosts == [LOCAL]
