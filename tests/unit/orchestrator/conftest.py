"""Fixtures of the orchestrator tests: every directory test runs on SQLite and on a real etcd.

The etcd is Debian's etcd-server, started on free loopback ports with its data in a temporary folder.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from freeflow.orchestrator.errors import StoreError
from freeflow.orchestrator.etcd_directory import EtcdDirectory
from freeflow.orchestrator.etcd_gateway import EtcdGateway
from freeflow.orchestrator.sqlite_directory import SqliteDirectory
from freeflow.orchestrator.store import DirectoryStore

INSTALL_ETCD = ("etcd is not installed: the etcd store is tested against a real etcd. Install Debian's "
                "etcd-server (apt-get install etcd-server, or scripts/install-prereqs.sh; CI installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EtcdProcess:
    """A single-member etcd on loopback; `stop()` and `start()` again keep its ports and data."""

    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="freeflow-etcd-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def store(self) -> str:
        """The FREEFLOW_ORCHESTRATOR_STORE value that names this etcd."""
        return f"etcd://{self.host}:{self.port}"

    def start(self) -> None:
        binary = shutil.which("etcd")
        if binary is None:
            pytest.fail(INSTALL_ETCD, pytrace=False)
        client, peer = f"http://{self.host}:{self.port}", f"http://{self.host}:{self.peer_port}"
        with open(self.folder / "etcd.log", "ab") as log:
            self.process = subprocess.Popen(
                [binary, "--name", "test", "--data-dir", str(self.folder / "data"),
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"test={peer}", "--log-level", "warn"],
                stdout=log, stderr=log)
        gateway = EtcdGateway(self.host, self.port, timeout=1)
        deadline = time.monotonic() + 15
        try:
            while not self._answers(gateway):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"etcd did not start: {(self.folder / 'etcd.log').read_text()[-2000:]}")
                time.sleep(0.05)
        finally:
            gateway.close()

    @staticmethod
    def _answers(gateway: EtcdGateway) -> bool:
        try:
            gateway.revision()
        except StoreError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def running_etcd() -> Iterator[EtcdProcess]:
    etcd = EtcdProcess()
    try:
        etcd.start()
        yield etcd
    finally:
        etcd.remove()


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdProcess]:
    """One etcd for the session; each test keeps to keys of its own (a prefix of its own)."""
    yield from running_etcd()


@pytest.fixture
def own_etcd() -> Iterator[EtcdProcess]:
    """An etcd for one test that compacts, stops or restarts it."""
    yield from running_etcd()


@dataclass
class Stores:
    """Opens directories on one backend: `open(name)` twice gives two orchestrators over the same store."""

    backend: str
    folder: Path
    etcd: EtcdProcess | None
    opened: list[DirectoryStore] = field(default_factory=list)
    test_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def open(self, name: str | None = None) -> DirectoryStore:
        """The directory in store `name`; without a name, a store of its own."""
        directory: DirectoryStore
        if self.etcd is None:
            directory = SqliteDirectory(str(self.folder / f"{name}.db") if name else ":memory:")
        else:
            directory = EtcdDirectory(self.etcd.host, self.etcd.port,
                                      prefix=f"test-{self.test_id}-{name or uuid.uuid4().hex[:12]}")
        self.opened.append(directory)
        return directory

    def close(self) -> None:
        for directory in self.opened:
            directory.close()


@pytest.fixture(params=["sqlite", "etcd"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    etcd = request.getfixturevalue("etcd_server") if request.param == "etcd" else None
    opened = Stores(request.param, tmp_path, etcd)
    yield opened
    opened.close()


@pytest.fixture
def directory(stores: Stores) -> DirectoryStore:
    return stores.open("main")
