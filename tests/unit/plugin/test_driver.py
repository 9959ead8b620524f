"""The driver's persistence and reconciliation, against a fake kernel."""

from __future__ import annotations

import time

import pytest

from freeflow.plugin import protocol as p
from freeflow.plugin.driver import Driver, bridge_name, mac_for, veth_names
from freeflow.plugin.errors import DriverError
from freeflow.plugin.store import Store
from tests.unit.plugin.fake_kernel import FakeKernel
from tests.unit.plugin.test_app import EP, NET, create_endpoint_body, create_network_body


def make(tmp_path, kernel=None) -> Driver:
    return Driver(Store(tmp_path), kernel or FakeKernel())


def joined(tmp_path, kernel: FakeKernel, sandbox: str, **settings: float) -> Driver:
    """A driver with the test network and its endpoint, joined to the container namespace `sandbox`."""
    driver = Driver(Store(tmp_path), kernel, **settings)
    driver.create_network(p.CreateNetworkRequest.parse(create_network_body()))
    driver.create_endpoint(p.CreateEndpointRequest.parse(create_endpoint_body()))
    driver.join(p.JoinRequest(NET, EP, sandbox))
    return driver


def test_state_survives_a_restart(tmp_path):
    first = make(tmp_path)
    first.create_network(p.CreateNetworkRequest.parse(create_network_body()))
    first.create_endpoint(p.CreateEndpointRequest.parse(create_endpoint_body()))
    second = make(tmp_path, first.kernel)
    assert second.state == first.state
    assert second.state.endpoints[EP].address == "10.55.0.129/24"


def test_reconcile_recreates_a_deleted_bridge_and_reattaches_ports(tmp_path):
    kernel = FakeKernel()
    driver = make(tmp_path, kernel)
    driver.create_network(p.CreateNetworkRequest.parse(create_network_body()))
    driver.create_endpoint(p.CreateEndpointRequest.parse(create_endpoint_body()))
    del kernel.links[bridge_name(NET)]
    kernel.rules.clear()
    repairs = driver.reconcile()
    assert f"recreated bridge {bridge_name(NET)}" in repairs
    assert bridge_name(NET) in kernel.links and bridge_name(NET) in kernel.rules
    assert kernel.links[veth_names(EP)[0]]["master"] == bridge_name(NET)
    assert driver.reconcile() == []


def test_reconcile_goes_on_past_a_network_it_cannot_repair_and_says_so_once(tmp_path):
    """One network whose bridge the kernel refuses does not leave the others unrepaired."""
    kernel = FakeKernel()
    driver = make(tmp_path, kernel)
    other = "5" * 64
    for net in (NET, other):
        driver.create_network(p.CreateNetworkRequest.parse(create_network_body(net)))
    driver.create_endpoint(p.CreateEndpointRequest.parse(create_endpoint_body()))
    kernel.links.clear()
    kernel.fail_on = bridge_name(NET)
    repairs = driver.reconcile()
    assert bridge_name(other) in kernel.links and f"recreated bridge {bridge_name(other)}" in repairs
    assert f"recreated bridge {bridge_name(NET)}" not in repairs
    failed = [line for line in repairs if line.startswith("could not repair")]
    assert failed == [f"could not repair network {NET[:12]}: refused {bridge_name(NET)} (trying again at every pass)",
                      f"could not repair endpoint {EP[:12]}: bridge {bridge_name(NET)} is missing "
                      "(trying again at every pass)"]
    assert driver.reconcile() == [], "said once while it fails the same way"
    kernel.fail_on = None
    repairs = driver.reconcile()
    assert f"recreated bridge {bridge_name(NET)}" in repairs and f"recreated veth {veth_names(EP)[0]}" in repairs
    assert not [line for line in repairs if line.startswith("could not repair")]


def test_reconcile_after_reboot_recreates_links_of_unjoined_endpoints(tmp_path):
    driver = make(tmp_path)
    driver.create_network(p.CreateNetworkRequest.parse(create_network_body()))
    driver.create_endpoint(p.CreateEndpointRequest.parse(create_endpoint_body()))
    rebooted = make(tmp_path, FakeKernel())
    rebooted.reconcile()
    assert set(rebooted.kernel.links) == {bridge_name(NET), *veth_names(EP)}


def test_reconcile_removes_orphans_it_owns_only(tmp_path):
    kernel = FakeKernel()
    kernel.links.update({"ff-deadbeef0000": {}, "ffhdeadbeef0000": {}, "eth0": {}, "docker0": {},
                         "ffx-test": {}, "ffhome": {}})
    kernel.rules.update({"ff-deadbeef0000", "docker0"})
    driver = make(tmp_path, kernel)
    repairs = driver.reconcile()
    assert set(kernel.links) == {"eth0", "docker0", "ffx-test", "ffhome"}, "names not of our shape are kept"
    assert kernel.rules == {"docker0"}
    assert len(repairs) == 3


def test_reconcile_keeps_orphans_a_running_container_uses_and_says_so_once(tmp_path):
    """A state file lost or replaced leaves every link unnamed: those a container's traffic goes through stay."""
    kernel = FakeKernel()
    kernel.links.update({"ff-deadbeef0000": {}, "ffhdeadbeef0000": {}, "ffxdeadbeef0000": {},
                         "ff-feedbeef0000": {}, "ffhfeedbeef0000": {}})
    kernel.rules.update({"ff-deadbeef0000", "ff-feedbeef0000"})
    kernel.in_use = {"ff-deadbeef0000", "ffhdeadbeef0000", "ffxdeadbeef0000"}
    driver = make(tmp_path, kernel)
    repairs = driver.reconcile()
    assert set(kernel.links) == kernel.in_use and kernel.rules == {"ff-deadbeef0000"}
    assert sorted(line.split(",")[0] for line in repairs if line.startswith("kept")) == [
        "kept link ff-deadbeef0000", "kept link ffhdeadbeef0000", "kept link ffxdeadbeef0000"]
    assert driver.reconcile() == [], "said once"
    kernel.in_use = set()  # its container went away
    assert sorted(driver.reconcile()) == [
        "removed orphan link ff-deadbeef0000", "removed orphan link ffhdeadbeef0000",
        "removed orphan link ffxdeadbeef0000", "removed orphan rule of ff-deadbeef0000"]


def test_delete_network_removes_its_endpoints(tmp_path):
    driver = make(tmp_path)
    driver.create_network(p.CreateNetworkRequest.parse(create_network_body()))
    driver.create_endpoint(p.CreateEndpointRequest.parse(create_endpoint_body()))
    driver.delete_network(p.NetworkRequest(NET))
    assert driver.kernel.links == {} and make(tmp_path).state.endpoints == {}


def test_mac_for_is_deterministic_for_ipv4_and_local_otherwise():
    assert mac_for("10.0.0.2/24") == "02:42:0a:00:00:02"
    random_mac = mac_for("")
    assert int(random_mac.split(":")[0], 16) & 0x03 == 0x02


@pytest.mark.parametrize("text", [
    '{"version": 1, "networks": {"x": {"bogus": 1}}, "endpoints": {}}',
    '{"version": 1, "networks": [], "endpoints": {}}',
    '{"version": 1, "networks": {"x": []}, "endpoints": {}}',
    '[]',
    '"state"',
])
def test_damaged_state_file_is_a_clear_error(tmp_path, text):
    """A DriverError, which the router and the plugin report and survive (any other error killed them)."""
    (tmp_path / "state.json").write_text(text)
    with pytest.raises(DriverError, match="damaged"):
        make(tmp_path)


def test_swarm_wide_network_gets_a_vxlan_and_programs_remote_endpoints(tmp_path):
    from freeflow.plugin.driver import vni_for, vxlan_name

    kernel = FakeKernel()
    driver = Driver(Store(tmp_path), kernel, scope="global")
    with pytest.raises(DriverError, match="address"):
        driver.create_network(p.CreateNetworkRequest.parse(create_network_body()))
    driver.discover(p.DiscoveryRequest(1, {"Address": "10.99.0.2", "Self": True}))
    driver.create_network(p.CreateNetworkRequest.parse(create_network_body()))
    vx = kernel.links[vxlan_name(NET)]
    assert vx["vni"] == vni_for(NET) and vx["local"] == "10.99.0.2" and vx["mtu"] == 1450
    assert 0 < vni_for(NET) < 1 << 24

    remote = [(NET, "10.55.0.7", "02:42:0a:37:00:07", "10.99.0.3"), ("othernet" * 8, "10.9.0.2", "02:aa", "x")]
    driver.set_remote_endpoints(remote)
    assert kernel.remotes[vxlan_name(NET)] == {("10.55.0.7", "02:42:0a:37:00:07", "10.99.0.3")}
    driver.set_remote_endpoints([])
    assert kernel.remotes[vxlan_name(NET)] == set()
    assert vxlan_name(NET) not in driver.reconcile() and vxlan_name(NET) in kernel.links
    driver.delete_network(p.NetworkRequest(NET))
    assert kernel.links == {}


def test_a_restarted_plugin_knows_its_address_before_dockers_discovery(tmp_path):
    """Its heartbeats (which need the address) start at once; Docker may not send discovery again."""
    driver = Driver(Store(tmp_path), FakeKernel(), scope="global")
    driver.discover(p.DiscoveryRequest(1, {"Address": "10.99.0.2", "Self": True}))
    driver.create_network(p.CreateNetworkRequest.parse(create_network_body()))
    restarted = Driver(Store(tmp_path), FakeKernel(), scope="global")
    assert restarted.heartbeat_address == "10.99.0.2"
    with pytest.raises(DriverError, match="address"):  # the saved address may be stale: not for new networks
        restarted.create_network(p.CreateNetworkRequest.parse(create_network_body("n2" * 32)))
    restarted.discover(p.DiscoveryRequest(1, {"Address": "10.99.0.7", "Self": True}))
    assert restarted.heartbeat_address == "10.99.0.7", "Docker's discovery wins"
    assert Driver(Store(tmp_path), FakeKernel(), scope="global", host_address="10.99.0.5").heartbeat_address == \
        "10.99.0.5", "so does FREEFLOW_HOST_ADDRESS"


def test_a_new_address_of_this_host_moves_its_tunnels(tmp_path):
    """After a reboot with a new lease, Docker's discovery tells another address: the VXLAN devices start from
    it (saved), and dockerd's replayed CreateNetwork still matches the network."""
    from freeflow.plugin.driver import vxlan_name

    kernel = FakeKernel()
    driver = Driver(Store(tmp_path), kernel, scope="global")
    driver.discover(p.DiscoveryRequest(1, {"Address": "10.99.0.2", "Self": True}))
    driver.create_network(p.CreateNetworkRequest.parse(create_network_body()))
    driver.set_remote_endpoints([(NET, "10.55.0.7", "02:42:0a:37:00:07", "10.99.0.3")])
    restarted = Driver(Store(tmp_path), kernel, scope="global")
    restarted.discover(p.DiscoveryRequest(1, {"Address": "10.99.0.9", "Self": True}))
    assert kernel.links[vxlan_name(NET)]["local"] == "10.99.0.9"
    assert Driver(Store(tmp_path), kernel, scope="global").state.networks[NET].local_address == "10.99.0.9"
    restarted.create_network(p.CreateNetworkRequest.parse(create_network_body()))  # no Conflict
    restarted.set_remote_endpoints([(NET, "10.55.0.7", "02:42:0a:37:00:07", "10.99.0.3")])
    assert kernel.remotes[vxlan_name(NET)] == {("10.55.0.7", "02:42:0a:37:00:07", "10.99.0.3")}
    configured = Driver(Store(tmp_path), kernel, scope="global", host_address="10.99.0.4")
    assert "10.99.0.4" not in str(configured.reconcile()), "a move is logged, not a repair"
    assert kernel.links[vxlan_name(NET)]["local"] == "10.99.0.4", "FREEFLOW_HOST_ADDRESS changed: at reconcile"


def test_an_endpoint_whose_sandbox_vanished_leaves_it_after_the_grace_time(tmp_path):
    kernel = FakeKernel()
    driver = joined(tmp_path, kernel, "/var/run/docker/netns/gone", stale_sandbox=0.2)
    kernel.lost_sandboxes.add("/var/run/docker/netns/gone")
    kernel.delete_link(veth_names(EP)[0])  # the kernel takes the veth away with the namespace
    [gone] = driver.reconcile()
    assert "is gone with its namespace" in gone, "a namespace may appear after Join: no verdict at first sight"
    assert driver.state.endpoints[EP].sandbox_key
    time.sleep(0.3)
    [line] = driver.reconcile()
    assert "left /var/run/docker/netns/gone" in line
    assert Driver(Store(tmp_path), kernel).state.endpoints[EP].sandbox_key == "", "the leave is saved"
    driver.join(p.JoinRequest(NET, EP, "/var/run/docker/netns/new"))
    assert driver.reconcile() == []


def test_an_endpoint_whose_veth_crosses_keeps_its_sandbox_however_its_namespace_looks(tmp_path):
    """A namespace this process cannot see (another mount layout) is no proof the container is gone while the
    veth's other end is in another namespace; a veth whose both ends are here is."""
    kernel = FakeKernel()
    driver = joined(tmp_path, kernel, "/var/run/docker/netns/unseen", stale_sandbox=0.0)
    kernel.lost_sandboxes.add("/var/run/docker/netns/unseen")
    kernel.in_use = {veth_names(EP)[0]}
    assert driver.reconcile() == [] and driver.reconcile() == []
    assert driver.state.endpoints[EP].sandbox_key == "/var/run/docker/netns/unseen"
    kernel.in_use = set()  # its other end never left this namespace
    [line] = driver.reconcile()
    assert "left /var/run/docker/netns/unseen" in line


def test_reconcile_keeps_forwarding_rules_of_bridges_not_named_like_ours(tmp_path):
    kernel = FakeKernel()
    kernel.rules.update({"ff-rvA-test", "ff-deadbeef0000"})
    assert make(tmp_path, kernel).reconcile() == ["removed orphan rule of ff-deadbeef0000"]
    assert kernel.rules == {"ff-rvA-test"}, "an operator's own ff-… rule is not ours to remove"


def test_reconcile_restores_a_deleted_forwarding_rule_and_says_so(tmp_path):
    kernel = FakeKernel()
    driver = make(tmp_path, kernel)
    driver.create_network(p.CreateNetworkRequest.parse(create_network_body()))
    kernel.rules.clear()
    assert driver.reconcile() == [f"restored the forwarding rule of {bridge_name(NET)}"]
    assert kernel.rules == {bridge_name(NET)}
    assert driver.reconcile() == []


def test_reconcile_moves_a_forwarding_rule_found_above_docker_user(tmp_path):
    kernel = FakeKernel()
    driver = make(tmp_path, kernel)
    driver.create_network(p.CreateNetworkRequest.parse(create_network_body()))
    kernel.misplaced.add(bridge_name(NET))
    assert driver.reconcile() == [f"restored the forwarding rule of {bridge_name(NET)}"]
    assert kernel.misplaced == set() and driver.reconcile() == []


def test_a_deleted_veth_under_a_running_container_is_reported_once(tmp_path):
    kernel = FakeKernel()
    driver = joined(tmp_path, kernel, "/var/run/docker/netns/c1")
    kernel.delete_link(veth_names(EP)[0])
    [line] = driver.reconcile()
    assert veth_names(EP)[0] in line and "docker network connect" in line
    assert driver.reconcile() == [], "said once, not every few seconds"
    driver.leave(p.EndpointRequest(NET, EP))
    driver.join(p.JoinRequest(NET, EP, "/var/run/docker/netns/c1"))  # a reconnect rebuilds it
    assert kernel.link_exists(veth_names(EP)[0]) and driver.reconcile() == []
    kernel.delete_link(veth_names(EP)[0])
    assert len(driver.reconcile()) == 1, "lost again after the repair: said again"


def test_after_a_reboot_a_joined_endpoints_missing_veth_is_not_said_to_cut_off_a_running_container(tmp_path):
    """Its namespace went with the reboot: no container is running on it, dockerd's Leave follows."""
    joined(tmp_path, FakeKernel(), "/var/run/docker/netns/c1")
    rebooted = FakeKernel()
    rebooted.lost_sandboxes.add("/var/run/docker/netns/c1")
    [said] = [line for line in make(tmp_path, rebooted).reconcile() if veth_names(EP)[0] in line]
    assert "is gone with its namespace /var/run/docker/netns/c1" in said and "running container" not in said


class FullDisk(Store):
    """A state folder that refuses the next `failures` writes."""

    failures = 0

    def save(self, state) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(28, "No space left on device")
        super().save(state)


def test_a_change_whose_state_cannot_be_written_is_undone_and_said_so(tmp_path):
    store = FullDisk(tmp_path)
    driver = Driver(store, FakeKernel())
    driver.create_network(p.CreateNetworkRequest.parse(create_network_body()))
    store.failures = 1
    with pytest.raises(DriverError, match=r"cannot write the state file .*No space left on device; the plugin keeps"):
        driver.create_endpoint(p.CreateEndpointRequest.parse(create_endpoint_body()))
    assert EP not in driver.state.endpoints, "not in memory either: the next save would have written it"
    other = create_network_body()
    other["NetworkID"] = "f" * 64
    driver.create_network(p.CreateNetworkRequest.parse(other))
    assert EP not in make(tmp_path).state.endpoints
    assert f"removed orphan link {veth_names(EP)[0]}" in driver.reconcile(), "its veth goes with the next pass"


def test_a_state_file_that_cannot_be_read_says_what_to_do(tmp_path):
    (tmp_path / "state.json").write_text('{"version": 1, "networks": {')
    with pytest.raises(DriverError, match="move it aside: running containers keep their links"):
        make(tmp_path)
