"""The orchestrator API: authenticated writes, validated input, leases, lookups and watches.

Every test runs over both directories, SQLite and etcd (the `stores` fixture in conftest.py).
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import closing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freeflow.orchestrator.app import create_app, watch_slots_for
from freeflow.orchestrator.client import follow
from freeflow.orchestrator.schema import Endpoint, Host, Listener

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NET = "k3v7m0z9q2w4e6r8t1y5u3i0o"


@pytest.fixture
def client(directory):
    return create_app(directory, TOKEN, lease_ttl=15, expire_every=None).test_client()


def parked(client, count: int = 1) -> None:
    """Wait until `count` watches long-poll, then a little more: into the directory's own wait, so that the
    change a test makes next wakes them (a change made before that would be found at once)."""
    deadline = time.monotonic() + 10
    while client.get("/v1/health").get_json()["long_polls"] < count:
        assert time.monotonic() < deadline, "the watcher never long-polled"
        time.sleep(0.05)
    time.sleep(0.2)


def put(client, path, body, auth=True):
    response = client.put(path, data=json.dumps(body), headers=AUTH if auth else {})
    return response.status_code, response.get_json()


def endpoint(n: int, host: str = "h1") -> dict:
    return {"network_id": NET, "ip": f"10.0.{n // 250}.{n % 250 + 2}",
            "mac": f"02:42:0a:00:{n // 250:02x}:{n % 250:02x}", "host_id": host}


def test_unauthenticated_and_wrong_token_writes_are_refused(client, directory):
    assert put(client, "/v1/hosts/h1", {"address": "10.99.0.1", "rdma": False}, auth=False)[0] == 401
    response = client.put("/v1/hosts/h1", data=json.dumps({"address": "10.99.0.1", "rdma": False}),
                          headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401 and "token" in response.get_json()["error"]
    assert directory.hosts() == []


def test_register_lookup_and_delete(client):
    assert put(client, "/v1/hosts/h1", {"address": "10.99.0.1", "rdma": False}) == (200, {})
    assert put(client, "/v1/endpoints/ep1", endpoint(0))[0] == 200
    found = client.get(f"/v1/lookup?network={NET}&ip=10.0.0.2").get_json()
    assert found["endpoint"]["endpoint_id"] == "ep1" and found["host"]["address"] == "10.99.0.1"
    assert client.delete("/v1/endpoints/ep1", headers=AUTH).get_json() == {"deleted": True}
    assert client.get(f"/v1/lookup?network={NET}&ip=10.0.0.2").status_code == 404


def test_endpoint_of_an_unknown_host_is_refused(client):
    status, body = put(client, "/v1/endpoints/ep1", endpoint(0))
    assert status == 404 and "heartbeat" in body["error"]


@pytest.mark.parametrize("body, words", [
    ({"address": "not-an-ip", "rdma": False}, "IPv4"),
    ({"address": "10.99.0.1"}, "no rdma"),
    ({"address": "10.99.0.1", "rdma": "yes"}, "true or false"),
    ({"address": "10.99.0.1", "rdma": False, "extra": 1}, "unknown fields"),
    ([1, 2], "JSON object"),
])
def test_bad_host_bodies_say_what_is_wrong(client, body, words):
    status, answer = put(client, "/v1/hosts/h1", body)
    assert status == 400 and words in answer["error"]


def test_leases_expire_with_everything_the_host_owned(directory):
    directory.heartbeat(Host("h1", "10.99.0.1", False), ttl=10, now=100)
    directory.heartbeat(Host("h2", "10.99.0.2", False), ttl=10, now=100)
    directory.put_endpoint(Endpoint("ep1", NET, "10.0.0.2", "02:42:0a:00:00:02", "h1"))
    directory.put_endpoint(Endpoint("ep2", NET, "10.0.0.3", "02:42:0a:00:00:03", "h2"))
    directory.put_listener(Listener(NET, "10.0.0.2", 80, "graft", "h1"))
    directory.heartbeat(Host("h2", "10.99.0.2", False), ttl=10, now=105)
    assert directory.expire(now=111) == ["h1"]
    assert [e.endpoint_id for e in directory.endpoints()] == ["ep2"]
    assert directory.listener(NET, "10.0.0.2", 80, "graft") is None
    _, changes, _ = directory.changes_since(0)
    deleted = {(c["kind"], c["key"]) for c in changes[-3:] if c["op"] == "delete"}
    assert deleted == {("endpoint", "ep1"), ("listener", f"{NET}/10.0.0.2/80/graft"), ("host", "h1")}


def test_a_watcher_wakes_up_on_a_change(client, directory):
    put(client, "/v1/hosts/h1", {"address": "10.99.0.1", "rdma": False})
    revision = client.get("/v1/watch?since=0").get_json()["revision"]
    answers = []
    watcher = threading.Thread(target=lambda: answers.append(client.get(f"/v1/watch?since={revision}&wait=10")))
    watcher.start()
    parked(client)
    put(client, "/v1/endpoints/ep1", endpoint(0))
    watcher.join(5)
    changes = answers[0].get_json()["changes"]
    assert [c["key"] for c in changes] == ["ep1"] and changes[0]["value"]["ip"] == "10.0.0.2"


def test_watches_beyond_the_long_poll_slots_are_answered_at_once_and_told_to_wait(directory):
    """Each long poll holds one of the orchestrator's threads: past `max_watchers` of them, heartbeats would
    queue behind watches until the hosts' leases ran out."""
    client = create_app(directory, TOKEN, expire_every=None, max_watchers=1).test_client()
    put(client, "/v1/hosts/h1", {"address": "10.99.0.1", "rdma": False})
    revision = client.get("/v1/health").get_json()["revision"]
    answers = []
    holder = threading.Thread(target=lambda: answers.append(client.get(f"/v1/watch?since={revision}&wait=10")))
    holder.start()
    parked(client)  # the holder has the one slot
    busy = client.get(f"/v1/watch?since={revision - 1}&wait=10").get_json()
    assert busy["busy"] is True and [c["key"] for c in busy["changes"]] == ["h1"] and not busy["reset"]
    assert put(client, "/v1/hosts/h1", {"address": "10.99.0.9", "rdma": False})[0] == 200  # wakes the holder
    holder.join(5)
    assert "busy" not in answers[0].get_json()
    assert client.get("/v1/health").get_json()["long_polls"] == 0
    assert "busy" not in client.get(f"/v1/watch?since={revision}&wait=1").get_json(), "the slot was given back"


def test_a_follower_told_busy_pauses_instead_of_polling_in_a_loop():
    """A pure-logic check of follow(): it does not list everything again, and it waits before the next poll."""
    calls = {"watch": 0, "resync": 0}
    stop = threading.Event()

    class Busy:
        def revision(self) -> int:
            return 7

        def watch(self, since: int, wait: int = 25) -> dict:
            calls["watch"] += 1
            return {"revision": 7, "changes": [], "reset": False, "busy": True}

    def resync() -> None:
        calls["resync"] += 1

    follower = threading.Thread(target=follow, args=(Busy(), resync, stop, 25))
    follower.start()
    time.sleep(1)
    stop.set()
    follower.join(5)
    assert calls == {"watch": 1, "resync": 1}


def test_a_revision_from_another_life_asks_for_a_reset(client):
    latest = client.get("/v1/health").get_json()["revision"]
    body = client.get(f"/v1/watch?since={latest + 999}").get_json()
    assert body["reset"] is True and body["revision"] == latest


def test_full_report_replaces_a_hosts_endpoints(client, directory):
    put(client, "/v1/hosts/h1", {"address": "10.99.0.1", "rdma": False})
    put(client, "/v1/endpoints/old", endpoint(5))
    status, _ = put(client, "/v1/hosts/h1/endpoints", {"endpoints": [{"endpoint_id": "new", **endpoint(6)}]})
    assert status == 200
    assert [e.endpoint_id for e in directory.endpoints()] == ["new"]
    status, body = put(client, "/v1/hosts/h1/endpoints", {"endpoints": [{"endpoint_id": "x", **endpoint(7, "h2")}]})
    assert status == 400 and "host_id" in body["error"]


def test_state_survives_an_orchestrator_restart(stores):
    first = stores.open("kept")
    first.heartbeat(Host("h1", "10.99.0.1", False), ttl=60)
    first.put_endpoint(Endpoint("ep1", NET, "10.0.0.2", "02:42:0a:00:00:02", "h1"))
    second = stores.open("kept")
    assert second.lookup(NET, "10.0.0.2") is not None and second.revision() == first.revision()


def test_a_silent_host_expires_and_its_watchers_hear_of_it(directory):
    client = create_app(directory, TOKEN, lease_ttl=1, expire_every=None).test_client()
    put(client, "/v1/hosts/h1", {"address": "10.99.0.1", "rdma": False})
    put(client, "/v1/hosts/h1/endpoints", {"endpoints": [{"endpoint_id": "ep1", **endpoint(0)}]})
    assert client.get(f"/v1/lookup?network={NET}&ip=10.0.0.2").status_code == 200
    revision = client.get("/v1/health").get_json()["revision"]
    answers = []
    watcher = threading.Thread(target=lambda: answers.append(client.get(f"/v1/watch?since={revision}&wait=10")))
    watcher.start()
    time.sleep(1.1)  # the lease (1 s) runs out
    assert directory.expire() == ["h1"]
    watcher.join(5)
    changes = answers[0].get_json()["changes"]
    assert ("endpoint", "ep1", "delete") in {(c["kind"], c["key"], c["op"]) for c in changes}
    assert client.get(f"/v1/lookup?network={NET}&ip=10.0.0.2").status_code == 404
    assert client.get("/v1/hosts").get_json() == {"hosts": []}


def test_a_restarted_orchestrator_gives_every_host_a_lease_before_expiring_any(stores):
    """Its leases ran on while it was away: expiring at once would drop every host (and its VXLAN entries on
    every other host) until the next heartbeats."""
    directory = stores.open("restarted")
    away = time.time() - 120  # the hosts' last heartbeats, two minutes before this orchestrator started
    for host in ("h1", "h2"):
        directory.heartbeat(Host(host, "10.99.0.1" if host == "h1" else "10.99.0.2", False), ttl=1, now=away)
    app = create_app(directory, TOKEN, lease_ttl=1, expire_every=0.1)
    client = app.test_client()
    try:
        time.sleep(0.5)
        assert [h.host_id for h in directory.hosts()] == ["h1", "h2"], "expired before a lease had passed"
        deadline = time.monotonic() + 10
        while [h.host_id for h in directory.hosts()] != ["h1"]:  # h1 heartbeats, h2 has gone for good
            assert time.monotonic() < deadline, "h2 never expired"
            assert put(client, "/v1/hosts/h1", {"address": "10.99.0.1", "rdma": False})[0] == 200
            time.sleep(0.2)
    finally:
        app.extensions["freeflow.stop_expiry"].set()


@pytest.mark.parametrize("body, words", [
    ({"network_id": NET, "ip": 167772162, "mac": "02:42:0a:00:00:02", "host_id": "h1"}, "ip must be an IPv4"),
    ("[" * 100_000 + "]" * 100_000, "nests JSON too deeply"),
], ids=["ip-a-number", "deep-nesting"])
def test_an_endpoint_ip_that_is_a_number_and_deep_nesting_are_refused(client, body, words):
    put(client, "/v1/hosts/h1", {"address": "10.99.0.1", "rdma": False})
    data = body if isinstance(body, str) else json.dumps(body)
    response = client.put("/v1/endpoints/ep1", data=data, headers=AUTH)
    assert response.status_code == 400 and words in response.get_json()["error"]
    assert client.get("/v1/endpoints").get_json() == {"endpoints": []}


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                        max_size=4), max_leaves=10)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(path=st.sampled_from(["/v1/hosts/h1", "/v1/endpoints/ep1", "/v1/listeners", "/v1/hosts/h1/endpoints"]),
       body=json_values | st.fixed_dictionaries({"address": json_values, "rdma": json_values}))
def test_fuzzed_writes_never_fail_inside(stores, path, body):
    with closing(stores.open()) as directory:
        app = create_app(directory, TOKEN, expire_every=None).test_client()
        app.put("/v1/hosts/h1", data=json.dumps({"address": "10.99.0.1", "rdma": False}), headers=AUTH)
        response = app.put(path, data=json.dumps(body), headers=AUTH)
        assert response.status_code in (200, 400, 404), response.get_json()
        assert app.get("/v1/health").status_code == 200


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.dictionaries(st.sampled_from(["since", "wait", "network", "ip", "port", "kind"]),
                             st.text(max_size=12), max_size=6))
def test_fuzzed_queries_never_fail_inside(stores, query):
    with closing(stores.open()) as directory:
        app = create_app(directory, TOKEN, expire_every=None).test_client()
        for path in ("/v1/watch", "/v1/lookup", "/v1/listeners", "/v1/endpoints"):
            response = app.get(path, query_string=query)
            assert response.status_code in (200, 400, 404), (path, query, response.get_json())


def test_a_hosts_listener_report_replaces_its_listeners_only(client, directory):
    for host, address in (("h1", "10.99.0.1"), ("h2", "10.99.0.2")):
        put(client, f"/v1/hosts/{host}", {"address": address, "rdma": False})

    def listener(port: int, host: str = "h1", kind: str = "graft") -> dict:
        return {"network_id": NET, "ip": "10.0.0.2" if host == "h1" else "10.0.0.3", "port": port, "kind": kind,
                "host_id": host}

    assert put(client, "/v1/hosts/h2/listeners", {"listeners": [listener(80, "h2")]})[0] == 200
    assert put(client, "/v1/hosts/h1/listeners", {"listeners": [listener(7000), listener(7001)]})[0] == 200
    assert put(client, "/v1/hosts/h1/listeners", {"listeners": [listener(7001), listener(7002, kind="channel")]}
               )[0] == 200
    listed = client.get("/v1/listeners").get_json()["listeners"]
    assert sorted((x["host_id"], x["port"], x["kind"]) for x in listed) == [
        ("h1", 7001, "graft"), ("h1", 7002, "channel"), ("h2", 80, "graft")]
    status, body = put(client, "/v1/hosts/h1/listeners", {"listeners": [listener(81, "h2")]})
    assert status == 400 and "host_id" in body["error"]
    status, body = put(client, "/v1/hosts/h9/listeners", {"listeners": []})
    assert status == 404 and "heartbeat" in body["error"]
    assert put(client, "/v1/hosts/h1/listeners", {"listeners": "no"})[0] == 400
    directory.expire(now=10**12)
    assert client.get("/v1/listeners").get_json()["listeners"] == []


@pytest.mark.parametrize(("threads", "slots"), [(256, 224), (64, 32), (40, 20), (3, 2), (2, 1), (1, 1)])
def test_long_polls_leave_threads_for_everything_else(threads: int, slots: int) -> None:
    """README: 32 of FREEFLOW_ORCHESTRATOR_THREADS (half, below 64) never long-poll; one always may."""
    assert watch_slots_for(threads) == slots
