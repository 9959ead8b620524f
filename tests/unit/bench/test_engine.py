"""The docker command aimed at an engine: `--host` only for another dockerd, commands per engine, failures quoted."""

from __future__ import annotations

import subprocess

import pytest

from freeflow.bench import engine
from freeflow.bench.engine import LOCAL, Container, DockerHost
from freeflow.bench.errors import DockerError

H1 = DockerHost("h1", "unix:///run/docker-h1.sock", "10.99.0.1")
H2 = DockerHost("h2", "unix:///run/docker-h2.sock", "10.99.0.2")


class FakeDocker:
    """Records each command line; fails those whose arguments hold `refuse`."""

    def __init__(self, refuse: str = "") -> None:
        self.argvs: list[list[str]] = []
        self.refuse = refuse

    def run(self, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        self.argvs.append(argv)
        if self.refuse and self.refuse in argv:
            return subprocess.CompletedProcess(argv, 1, "", "Error: no such container\n")
        return subprocess.CompletedProcess(argv, 0, "4\n", "")


@pytest.fixture
def fake(monkeypatch):
    def install(refuse: str = "") -> FakeDocker:
        docker = FakeDocker(refuse)
        monkeypatch.setattr(engine.subprocess, "run", docker.run)
        return docker

    return install


def test_the_machines_dockerd_gets_no_host_flag_and_another_gets_its_socket(fake):
    docker = fake()
    engine.docker("ps")
    engine.docker("ps", host=H1)
    assert docker.argvs == [["docker", "ps"], ["docker", "--host", "unix:///run/docker-h1.sock", "ps"]]


def test_a_container_is_driven_through_the_engine_it_runs_on(fake):
    docker = fake()
    server = engine.run_container("srv", "ffbench-1", "net", ("-e", "X=1"), host=H2)
    engine.execute(server, ["ss", "-Hltn"], timeout=5)
    engine.start(server, ["sleep", "1"])
    assert server == Container("srv", H2) and str(server) == "srv"
    assert all(argv[1:3] == ["--host", H2.url] for argv in docker.argvs)
    assert [argv[3] for argv in docker.argvs] == ["run", "exec", "exec"]


def test_pinning_updates_the_containers_of_each_engine_in_one_command(fake):
    docker = fake()
    engine.set_cpus([Container("srv", H2), Container("cli", H1), Container("srv2", H2)], "0")
    assert docker.argvs == [["docker", "--host", H2.url, "update", "--cpuset-cpus", "0", "srv", "srv2"],
                            ["docker", "--host", H1.url, "update", "--cpuset-cpus", "0", "cli"]]


def test_the_cpus_of_an_engine(fake):
    fake()
    assert engine.all_cpus(H1) == "0-3"


def test_a_failure_quotes_the_command_with_its_engine(fake):
    fake(refuse="gone")
    with pytest.raises(DockerError, match=r"`docker --host unix:///run/docker-h1.sock rm gone` failed: Error: no such"):
        engine.docker("rm", "gone", host=H1)
    assert LOCAL.url is None and LOCAL.address == "127.0.0.1"
