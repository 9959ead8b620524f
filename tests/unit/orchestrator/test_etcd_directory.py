"""What only the etcd store does: etcd's own lease expiry, compacted history, etcd away and back."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from freeflow.orchestrator.app import create_app
from freeflow.orchestrator.errors import StoreUnavailable
from freeflow.orchestrator.etcd_directory import EtcdDirectory
from freeflow.orchestrator.schema import Endpoint, Host
from tests.unit.orchestrator.conftest import EtcdProcess, free_port

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NET = "k3v7m0z9q2w4e6r8t1y5u3i0o"
EP1 = {"endpoint_id": "ep1", "network_id": NET, "ip": "10.0.0.2", "mac": "02:42:0a:00:00:02", "host_id": "h1"}


@pytest.fixture
def etcd_directory(etcd_server: EtcdProcess) -> Iterator[EtcdDirectory]:
    directory = EtcdDirectory(etcd_server.host, etcd_server.port, prefix=f"test-{uuid.uuid4().hex[:12]}")
    yield directory
    directory.close()


def put(client, path, body):
    response = client.put(path, data=json.dumps(body), headers=AUTH)
    return response.status_code, response.get_json()


def watch_in_background(client, revision: int) -> tuple[threading.Thread, list]:
    answers: list = []
    watcher = threading.Thread(target=lambda: answers.append(
        client.get(f"/v1/watch?since={revision}&wait=10").get_json()))
    watcher.start()
    return watcher, answers


def until(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_api_over_etcd_from_heartbeat_to_lease_expiry(etcd_directory):
    app = create_app(etcd_directory, TOKEN, lease_ttl=1, expire_every=0.2)
    client = app.test_client()
    try:
        assert put(client, "/v1/hosts/h1", {"address": "10.99.0.1", "rdma": False}) == (200, {})
        revision = client.get("/v1/health").get_json()["revision"]
        watcher, answers = watch_in_background(client, revision)
        assert put(client, "/v1/hosts/h1/endpoints", {"endpoints": [EP1]}) == (200, {})
        watcher.join(5)
        assert [(c["key"], c["op"]) for c in answers[0]["changes"]] == [("ep1", "put")]
        found = client.get(f"/v1/lookup?network={NET}&ip=10.0.0.2").get_json()
        assert found == {"endpoint": EP1, "host": {"host_id": "h1", "address": "10.99.0.1", "rdma": False}}

        watcher, answers = watch_in_background(client, answers[0]["revision"])
        watcher.join(5)  # no more heartbeats: the app's expiry thread removes h1 after its 1 s lease
        assert {(c["kind"], c["key"], c["op"]) for c in answers[0]["changes"]} == {
            ("endpoint", "ep1", "delete"), ("host", "h1", "delete")}
        assert client.get(f"/v1/lookup?network={NET}&ip=10.0.0.2").status_code == 404
        assert client.get("/v1/endpoints").get_json() == {"endpoints": []}
    finally:
        app.extensions["freeflow.stop_expiry"].set()


def test_etcd_drops_a_silent_host_by_itself_when_no_orchestrator_sweeps(etcd_directory):
    client = create_app(etcd_directory, TOKEN, lease_ttl=1, expire_every=None).test_client()
    put(client, "/v1/hosts/h1", {"address": "10.99.0.1", "rdma": False})
    put(client, "/v1/hosts/h1/endpoints", {"endpoints": [EP1]})
    revision = client.get("/v1/health").get_json()["revision"]
    # Nobody calls expire(): etcd's lease (twice the host's) runs out on its own.
    assert until(lambda: client.get(f"/v1/lookup?network={NET}&ip=10.0.0.2").status_code == 404, 6)
    changes = client.get(f"/v1/watch?since={revision}&wait=5").get_json()["changes"]
    assert ("endpoint", "ep1", "delete") in {(c["kind"], c["key"], c["op"]) for c in changes}
    assert etcd_directory.hosts() == []


def test_a_renewed_lease_outlives_etcds_own_expiry(etcd_directory):
    for _ in range(6):  # 3 s, longer than etcd's 2 s lease
        etcd_directory.heartbeat(Host("h1", "10.99.0.1", False), ttl=1)
        time.sleep(0.5)
    assert etcd_directory.host_known("h1")


def test_an_orchestrator_that_died_mid_sweep_costs_a_live_host_nothing(etcd_directory):
    host = Host("h1", "10.99.0.1", False)
    etcd_directory.heartbeat(host, ttl=60)
    etcd_directory.replace_host_endpoints("h1", [Endpoint(**EP1)])
    gateway, lease_key = etcd_directory.gateway, etcd_directory._lease_key("h1")
    (record,) = gateway.read(lease_key)
    gateway.delete(lease_key)  # the sweep's first step; it died before revoking the lease
    etcd_directory.heartbeat(host, ttl=60)  # a new lease
    etcd_directory.replace_host_endpoints("h1", [Endpoint(**EP1)])  # the router's next report
    gateway.revoke(json.loads(record.value)["lease"])  # the old lease ends at last
    assert etcd_directory.lookup(NET, "10.0.0.2") == (Endpoint(**EP1), host)


def test_a_watcher_behind_etcds_compacted_history_lists_everything_again(own_etcd):
    first = EtcdDirectory(own_etcd.host, own_etcd.port)
    try:
        first.heartbeat(Host("h1", "10.99.0.1", False), ttl=60)
        old = first.revision()
        first.put_endpoint(Endpoint(**EP1))
        first.heartbeat(Host("h1", "10.99.0.9", False), ttl=60)
        latest = first.revision()
        assert len(first.changes_since(old)[1]) == 2
        first.gateway.call("kv/compaction", {"revision": str(latest)})
        assert len(first.changes_since(old)[1]) == 2, "a feed already following keeps what it has"
    finally:
        first.close()
    second = EtcdDirectory(own_etcd.host, own_etcd.port)  # an orchestrator started after the compaction
    try:
        assert second.changes_since(old, wait=5) == (latest, [], True)
        assert second.changes_since(latest) == (latest, [], False)
        assert second.lookup(NET, "10.0.0.2") is not None
    finally:
        second.close()


def test_etcd_away_is_a_503_that_names_it_and_the_watch_carries_on_when_it_is_back(own_etcd):
    directory = EtcdDirectory(own_etcd.host, own_etcd.port)
    client = create_app(directory, TOKEN, expire_every=None).test_client()
    try:
        put(client, "/v1/hosts/h1", {"address": "10.99.0.1", "rdma": False})
        revision = client.get("/v1/health").get_json()["revision"]
        own_etcd.stop()
        status, body = put(client, "/v1/hosts/h1", {"address": "10.99.0.1", "rdma": False})
        assert status == 503 and f"etcd at {own_etcd.host}:{own_etcd.port} cannot be reached" in body["error"]
        assert client.get(f"/v1/watch?since={revision}").status_code == 503
        own_etcd.start()
        watcher, answers = watch_in_background(client, revision)
        assert put(client, "/v1/endpoints/ep1", {k: v for k, v in EP1.items() if k != "endpoint_id"})[0] == 200
        watcher.join(10)
        assert [c["key"] for c in answers[0]["changes"]] == ["ep1"]
    finally:
        directory.close()


def test_no_etcd_at_the_address_says_so():
    directory = EtcdDirectory("127.0.0.1", free_port(), timeout=1)
    try:
        with pytest.raises(StoreUnavailable, match=r"cannot be reached.*FREEFLOW_ORCHESTRATOR_STORE"):
            directory.hosts()
        answer = create_app(directory, TOKEN, expire_every=None).test_client().get("/v1/health")
        assert answer.status_code == 503 and "cannot be reached" in answer.get_json()["error"]
    finally:
        directory.close()
