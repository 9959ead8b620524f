"""The protocol application driven with the request shapes dockerd really sends (captured from dockerd 20.10)."""

from __future__ import annotations

import io
import json

import pytest

from freeflow.plugin import protocol as p
from freeflow.plugin.app import create_app
from freeflow.plugin.driver import Driver, bridge_name, veth_names
from freeflow.plugin.store import Store
from tests.unit.plugin.fake_kernel import FakeKernel

NET = "9efad358398a37dc4939eb85475e48ef811c9ed37144681f8290b21393681134"
EP = "1dc01e31440ced72a239a3abe1fd1e666a1e3ec3cf8dfdf1e215b27ce7bfc1c3"
SWARM_NET = "k3v7m0z9q2w4e6r8t1y5u3i0o"  # 25 characters of [0-9a-z]


def create_network_body(net: str = NET, generic: dict | None = None) -> dict:
    return {
        "NetworkID": net,
        "Options": {"com.docker.network.enable_ipv6": False,
                    "com.docker.network.generic": generic if generic is not None else {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Gateway": "10.55.0.128/24", "Pool": "10.55.0.0/24"}],
        "IPv6Data": [],
    }


def create_endpoint_body(ep: str = EP, mac: str = "") -> dict:
    return {"NetworkID": NET, "EndpointID": ep,
            "Interface": {"Address": "10.55.0.129/24", "AddressIPv6": "", "MacAddress": mac},
            "Options": {"com.docker.network.endpoint.exposedports": [], "com.docker.network.portmap": []}}


@pytest.fixture
def kernel() -> FakeKernel:
    return FakeKernel()


@pytest.fixture
def driver(tmp_path, kernel) -> Driver:
    return Driver(Store(tmp_path), kernel)


@pytest.fixture
def client(driver):
    return create_app(driver).test_client()


def call(client, method: str, body=None, raw: bytes | None = None):
    """POST like dockerd: no Content-Type, Docker's Accept header."""
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    response = client.post(f"/{method}", data=data,
                           headers={"Accept": "application/vnd.docker.plugins.v1.2+json"})
    return response.status_code, json.loads(response.data)


def test_activate_and_capabilities_with_empty_bodies(client):
    assert call(client, "Plugin.Activate") == (200, {"Implements": ["NetworkDriver"]})
    assert call(client, "NetworkDriver.GetCapabilities") == (200, {"Scope": "local", "ConnectivityScope": "local"})


def test_global_scope_is_a_setting(tmp_path):
    client = create_app(Driver(Store(tmp_path), FakeKernel(), scope="global")).test_client()
    assert call(client, "NetworkDriver.GetCapabilities")[1]["Scope"] == "global"


def test_unknown_method_is_404_with_err(client):
    status, body = call(client, "NetworkDriver.Frobnicate", {})
    assert status == 404 and "Frobnicate" in body["Err"]


def test_bad_json_is_a_clear_err_and_the_app_stays_up(client):
    status, body = call(client, "NetworkDriver.CreateNetwork", raw=b"{not json")
    assert status == 400 and "not valid JSON" in body["Err"]
    status, body = call(client, "NetworkDriver.CreateNetwork", raw=b"[1, 2]")
    assert status == 400 and "JSON object" in body["Err"]
    assert call(client, "Plugin.Activate")[0] == 200


@pytest.mark.parametrize("body, words", [
    ({}, "no NetworkID"),
    ({"NetworkID": "../../etc"}, "Docker ID"),
    ({"NetworkID": NET, "IPv4Data": "x"}, "IPv4Data must be a list"),
    ({"NetworkID": NET, "IPv4Data": [{"Pool": "nonsense"}]}, "CIDR"),
    ({"NetworkID": NET, "Options": {"com.docker.network.generic": 3}}, "JSON object"),
])
def test_malformed_create_network_names_the_field(client, kernel, body, words):
    status, answer = call(client, "NetworkDriver.CreateNetwork", body)
    assert status == 400 and words in answer["Err"]
    assert kernel.links == {}


def test_create_network_makes_bridge_rule_and_state(client, kernel, tmp_path):
    assert call(client, "NetworkDriver.CreateNetwork",
                create_network_body(generic={"com.docker.network.driver.mtu": "1450"})) == (200, {})
    bridge = bridge_name(NET)
    assert len(bridge) <= 15
    assert kernel.links[bridge] == {"kind": "bridge", "mtu": 1450}
    assert bridge in kernel.rules
    assert Store(tmp_path).load().networks[NET].mtu == 1450


def test_swarm_network_ids_are_accepted(client, kernel):
    assert call(client, "NetworkDriver.CreateNetwork", create_network_body(net=SWARM_NET))[0] == 200
    assert bridge_name(SWARM_NET) in kernel.links


def test_unknown_option_is_refused_naming_it_and_leaves_nothing(client, kernel):
    status, body = call(client, "NetworkDriver.CreateNetwork", create_network_body(generic={"foo": "bar"}))
    assert status == 400
    assert "'foo'" in body["Err"] and "com.docker.network.driver.mtu" in body["Err"]
    assert kernel.links == {} and kernel.rules == set()


@pytest.mark.parametrize("mtu", ["abc", "0", "70000", "-5"])
def test_malformed_mtu_is_refused(client, kernel, mtu):
    status, body = call(client, "NetworkDriver.CreateNetwork",
                        create_network_body(generic={"com.docker.network.driver.mtu": mtu}))
    assert status == 400 and "com.docker.network.driver.mtu" in body["Err"]
    assert kernel.links == {}


def test_failed_bridge_leaves_nothing(client, kernel):
    kernel.fail_on = bridge_name(NET)
    status, body = call(client, "NetworkDriver.CreateNetwork", create_network_body())
    assert status == 500 and "refused" in body["Err"]
    assert kernel.links == {} and kernel.rules == set()


def test_create_network_twice_is_idempotent_but_a_different_one_conflicts(client):
    assert call(client, "NetworkDriver.CreateNetwork", create_network_body())[0] == 200
    assert call(client, "NetworkDriver.CreateNetwork", create_network_body())[0] == 200
    status, body = call(client, "NetworkDriver.CreateNetwork",
                        create_network_body(generic={"com.docker.network.driver.mtu": "1400"}))
    assert status == 409 and "other settings" in body["Err"]


def test_endpoint_lifecycle(client, kernel, tmp_path):
    call(client, "NetworkDriver.CreateNetwork", create_network_body())
    status, body = call(client, "NetworkDriver.CreateEndpoint", create_endpoint_body())
    assert status == 200
    assert body == {"Interface": {"MacAddress": "02:42:0a:37:00:81"}}
    host, peer = veth_names(EP)
    assert kernel.links[host]["master"] == bridge_name(NET)
    assert kernel.links[peer]["mac"] == "02:42:0a:37:00:81"

    status, body = call(client, "NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP,
                                                         "SandboxKey": "/var/run/docker/netns/a2ece2b2a80d",
                                                         "Options": {}})
    assert status == 200
    assert body["InterfaceName"] == {"SrcName": peer, "DstPrefix": "eth"}
    assert body["Gateway"] == ""
    assert Store(tmp_path).load().endpoints[EP].sandbox_key == "/var/run/docker/netns/a2ece2b2a80d"

    ep_body = {"NetworkID": NET, "EndpointID": EP}
    assert call(client, "NetworkDriver.EndpointOperInfo", ep_body)[1]["Value"]["host_veth"] == host
    assert call(client, "NetworkDriver.ProgramExternalConnectivity", {**ep_body, "Options": {}}) == (200, {})
    assert call(client, "NetworkDriver.RevokeExternalConnectivity", ep_body) == (200, {})
    assert call(client, "NetworkDriver.Leave", ep_body) == (200, {})
    assert call(client, "NetworkDriver.DeleteEndpoint", ep_body) == (200, {})
    assert host not in kernel.links and peer not in kernel.links
    assert call(client, "NetworkDriver.DeleteNetwork", {"NetworkID": NET}) == (200, {})
    assert kernel.links == {} and kernel.rules == set()
    assert Store(tmp_path).load().networks == {}


def test_given_mac_is_used_and_not_returned(client, kernel):
    call(client, "NetworkDriver.CreateNetwork", create_network_body())
    status, body = call(client, "NetworkDriver.CreateEndpoint", create_endpoint_body(mac="02:aa:bb:cc:dd:ee"))
    assert (status, body) == (200, {})
    assert kernel.links[veth_names(EP)[1]]["mac"] == "02:aa:bb:cc:dd:ee"


def test_endpoint_on_unknown_network_is_refused(client):
    status, body = call(client, "NetworkDriver.CreateEndpoint", create_endpoint_body())
    assert status == 404 and "not a freeflow network" in body["Err"]


def test_join_of_unknown_endpoint_is_refused(client):
    status, body = call(client, "NetworkDriver.Join",
                        {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x", "Options": {}})
    assert status == 404 and "does not exist" in body["Err"]


@pytest.mark.parametrize("method, body", [
    ("NetworkDriver.Leave", {"NetworkID": NET, "EndpointID": EP}),
    ("NetworkDriver.DeleteEndpoint", {"NetworkID": NET, "EndpointID": EP}),
    ("NetworkDriver.DeleteNetwork", {"NetworkID": NET}),
    ("NetworkDriver.FreeNetwork", {"NetworkID": SWARM_NET}),
])
def test_stale_removals_succeed_for_unknown_ids(client, method, body):
    assert call(client, method, body) == (200, {})


def test_allocate_network_echoes_options_and_validates(client):
    """Swarm's allocator sends the network's `-o` options as a flat map (swarmkit's cnmallocator copies
    Spec.DriverConfig.Options), not nested as in CreateNetwork."""
    options = {"com.docker.network.driver.mtu": "1400"}
    body = {"NetworkID": SWARM_NET, "Options": options, "IPv4Data": [], "IPv6Data": []}
    assert call(client, "NetworkDriver.AllocateNetwork", body) == (200, {"Options": options})
    for bad, said in (({"bogus": "1"}, "unknown option 'bogus'"),
                      ({"com.docker.network.driver.mtu": "12"}, "must be between 68 and 65535, got 12")):
        body["Options"] = bad
        status, answer = call(client, "NetworkDriver.AllocateNetwork", body)
        assert status == 400 and said in answer["Err"], answer
    body["Options"] = {"com.docker.network.driver.mtu": "1279"}
    body["IPv6Data"] = [{"AddressSpace": "GlobalDefault", "Pool": "fd00:1::/64", "Gateway": "fd00:1::1/64"}]
    assert call(client, "NetworkDriver.AllocateNetwork", body)[0] == 400, "below IPv6's minimum MTU"


def test_discovery_with_self(client, driver):
    body = {"DiscoveryType": 1, "DiscoveryData": {"Address": "10.99.0.2", "Self": True}}
    assert call(client, "NetworkDriver.DiscoverNew", body) == (200, {})
    other = {"DiscoveryType": 1, "DiscoveryData": {"Address": "10.99.0.7", "Self": True}}
    assert call(client, "NetworkDriver.DiscoverDelete", other) == (200, {})
    assert driver.host_address == "10.99.0.2", "a deleted address is not taken for this host's"
    assert call(client, "NetworkDriver.DiscoverNew", {"DiscoveryType": "one"})[0] == 400
    assert call(client, "NetworkDriver.DiscoverDelete", {"DiscoveryType": "one"})[0] == 400


def test_discovery_of_an_address_that_is_no_ip_is_refused_and_the_old_one_kept(client, driver):
    good = {"DiscoveryType": 1, "DiscoveryData": {"Address": "10.99.0.2", "Self": True}}
    assert call(client, "NetworkDriver.DiscoverNew", good) == (200, {})
    bad = {"DiscoveryType": 1, "DiscoveryData": {"Address": "999.1.1.1", "Self": True}}
    status, answer = call(client, "NetworkDriver.DiscoverNew", bad)
    assert status == 400 and "'999.1.1.1' is not an IP address" in answer["Err"] and "10.99.0.2" in answer["Err"]
    assert driver.host_address == "10.99.0.2"


def test_request_shapes_round_trip():
    body = create_endpoint_body()
    assert p.CreateEndpointRequest.parse(body).to_wire() == body
    net = create_network_body()
    assert p.CreateNetworkRequest.parse(net).to_wire()["IPv4Data"][0]["Pool"] == "10.55.0.0/24"


def test_unexpected_failure_answers_500_and_app_survives(client, driver, monkeypatch):
    def boom(req):
        raise RuntimeError("kaboom")
    monkeypatch.setattr(driver, "create_network", boom)
    app_client = create_app(driver).test_client()
    status, body = call(app_client, "NetworkDriver.CreateNetwork", create_network_body())
    assert status == 500 and "plugin log" in body["Err"]
    assert call(app_client, "Plugin.Activate")[0] == 200


@pytest.mark.parametrize("verb, path, status", [("get", "/Plugin.Activate", 405), ("post", "/", 404),
                                                ("put", "/NetworkDriver.Join", 405)])
def test_wrong_paths_and_methods_answer_json_errors(client, verb, path, status):
    response = getattr(client, verb)(path)
    assert response.status_code == status
    assert "POST /<Interface>.<Method>" in json.loads(response.data)["Err"]


def test_an_oversized_body_is_refused_and_the_app_stays_up(client, kernel):
    status, answer = call(client, "NetworkDriver.CreateNetwork", raw=b"{" + b" " * (5 << 20) + b"}")
    assert status == 413 and "larger than" in answer["Err"]
    assert kernel.links == {}
    assert call(client, "NetworkDriver.CreateNetwork", create_network_body()) == (200, {})


def test_json_nested_too_deeply_is_a_clear_400(client):
    status, answer = call(client, "NetworkDriver.CreateNetwork", raw=b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "nests JSON too deeply" in answer["Err"]


def test_a_body_shorter_than_its_length_is_a_clear_400(client):
    response = client.post("/NetworkDriver.CreateNetwork", input_stream=io.BytesIO(b"{}"),
                           environ_overrides={"CONTENT_LENGTH": "100"})
    assert response.status_code == 400
    assert "before the 100 bytes it declared" in json.loads(response.data)["Err"]


@pytest.mark.parametrize("ipam, words", [([1], "IPv4Data[0] must be a JSON object"), ([{}], "IPv4Data[0] has no Pool"),
                                         ([{"Pool": "10.9.0.0/24"}, 7], "IPv4Data[1]")])
def test_a_bad_address_pool_is_named_by_its_place(client, ipam, words):
    status, answer = call(client, "NetworkDriver.CreateNetwork", {"NetworkID": NET, "IPv4Data": ipam})
    assert status == 400 and words in answer["Err"]


@pytest.mark.parametrize("mtu", [" 1400", "1400 ", "\uff11\uff15\uff10\uff10", "+1400", "1e3", True])
def test_an_mtu_must_be_plain_digits(client, kernel, mtu):
    status, body = call(client, "NetworkDriver.CreateNetwork",
                        create_network_body(generic={"com.docker.network.driver.mtu": mtu}))
    assert status == 400 and "whole number" in body["Err"]
    assert kernel.links == {}


def test_an_ipv6_network_needs_an_mtu_of_at_least_1280(client, kernel):
    body = create_network_body(generic={"com.docker.network.driver.mtu": "1279"})
    body["IPv6Data"] = [{"AddressSpace": "LocalDefault", "Pool": "fd00:205::/64", "Gateway": "fd00:205::1/64"}]
    status, answer = call(client, "NetworkDriver.CreateNetwork", body)
    assert status == 400 and "at least 1280" in answer["Err"] and kernel.links == {}
    body["Options"]["com.docker.network.generic"]["com.docker.network.driver.mtu"] = "1280"
    assert call(client, "NetworkDriver.CreateNetwork", body) == (200, {})
    assert call(client, "NetworkDriver.CreateNetwork",
                create_network_body(net=SWARM_NET, generic={"com.docker.network.driver.mtu": "1000"}))[0] == 200, \
        "an IPv4-only network may go lower"


@pytest.mark.parametrize("mac", ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "03:42:0a:01:00:02"])
def test_a_multicast_or_zero_mac_is_refused(client, kernel, mac):
    call(client, "NetworkDriver.CreateNetwork", create_network_body())
    status, answer = call(client, "NetworkDriver.CreateEndpoint", create_endpoint_body(mac=mac))
    assert status == 400 and "unicast" in answer["Err"]
    assert veth_names(EP)[0] not in kernel.links
