"""`freeflow lab` itself: real dockerds in network namespaces joined in a real swarm, the managed plugin on
each, the orchestrator deployed; each host is its own machine with no way out."""

from __future__ import annotations

import json
from pathlib import Path

from tests.lab.conftest import HOSTS, LAB_DIR, directory, lab, on, run_on, wait_for


def test_hosts_join_the_swarm_and_the_orchestrator_knows_them() -> None:
    nodes = on("h1", "docker", "node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}")
    assert sorted(line.strip() for line in nodes.splitlines()) == ["h1 Ready Leader", "h2 Ready", "h3 Ready"]
    status = json.loads(lab("status", "--json").stdout)
    assert [(h["name"], h["running"], h["swarm"]) for h in status] == [
        ("h1", True, "manager"), ("h2", True, "worker"), ("h3", True, "worker")]
    wait_for(lambda: len(directory("/v1/hosts")["hosts"]) == 3, 30, "every plugin to heartbeat")
    assert sorted(h["address"] for h in directory("/v1/hosts")["hosts"]) == ["10.99.0.1", "10.99.0.2", "10.99.0.3"]


def test_each_host_is_its_own_machine_with_no_way_out() -> None:
    for index, host in enumerate(HOSTS, start=1):
        assert on(host, "hostname") == host
        assert f"inet 10.99.0.{index}/24" in on(host, "ip", "-4", "-o", "address", "show", "dev", "eth0")
        assert on(host, "ip", "route", "show", "default") == ""
        assert on(host, "sh", "-c", "echo $DOCKER_HOST") == f"unix:///run/docker-{host}.sock"


def test_plugin_is_enabled_in_global_scope_on_every_host() -> None:
    for host in HOSTS:
        assert on(host, "docker", "plugin", "inspect", "--format", "{{.Enabled}}", "freeflow/driver") == "true"
        settings = on(host, "docker", "plugin", "inspect", "--format", "{{json .Settings.Env}}", "freeflow/driver")
        assert "FREEFLOW_SCOPE=global" in json.loads(settings)


def test_docker_overlay_connects_containers_on_two_hosts_by_name(tag: str) -> None:
    net = f"lab-{tag}"
    try:
        on("h1", "docker", "network", "create", "-d", "overlay", "--attachable", net)
        a = run_on("h1", net, "a")
        b = run_on("h2", net, "b")

        def pinged() -> bool:
            return on("h1", "docker", "exec", a, "ping", "-c", "2", "-W", "2", b, check=False).count("bytes from") == 2

        wait_for(pinged, 30, f"{a} on h1 to ping {b} on h2 by name")
    finally:
        on("h1", "docker", "rm", "-f", f"{net}-a", check=False)
        on("h2", "docker", "rm", "-f", f"{net}-b", check=False)
        on("h1", "docker", "network", "rm", net, check=False)


def test_services_run_on_every_node_without_a_registry(tag: str) -> None:
    service = f"svc-{tag}"
    try:
        on("h1", "docker", "service", "create", "--detach", "--quiet", "--no-resolve-image", "--endpoint-mode",
           "dnsrr", "--mode", "global", "--name", service, "freeflow-tools", "sleep", "infinity")

        def running_everywhere() -> bool:
            tasks = on("h1", "docker", "service", "ps", "--filter", "desired-state=running", "--format",
                       "{{.Node}} {{.CurrentState}}", service).splitlines()
            return sorted(task.split()[:2] for task in tasks) == [[h, "Running"] for h in HOSTS]

        wait_for(running_everywhere, 60, f"a running task of {service} on every host")
    finally:
        on("h1", "docker", "service", "rm", service, check=False)


def test_plugin_state_sockets_and_router_are_per_host(swarm_network) -> None:
    """Each host's plugin keeps its state, sockets and router in its own folder, not in the machine's."""
    net = swarm_network()
    network_id = on("h1", "docker", "network", "inspect", "--format", "{{.Id}}", net)
    for host in HOSTS:
        run_on(host, net, host)
    main_state = Path("/var/lib/freeflow/state.json")
    main_text = main_state.read_text() if main_state.exists() else ""
    assert network_id not in main_text
    for host in HOSTS:
        state = json.loads((LAB_DIR / host / "state" / "state.json").read_text())
        [endpoint] = [e for e in state["endpoints"].values() if e["network_id"] == network_id]
        assert endpoint["sandbox_key"].startswith(f"/run/docker-{host}/netns/")
        plugin_id = on(host, "docker", "plugin", "inspect", "--format", "{{.Id}}", "freeflow/driver")
        assert (LAB_DIR / host / "plugins" / plugin_id).is_dir()
        assert (LAB_DIR / host / "plugins" / "freeflow.sock").is_socket()
        assert not Path("/run/docker/plugins", plugin_id).exists()
        assert (LAB_DIR / host / "state" / "router.sock").is_socket()
        assert (LAB_DIR / host / "run" / "libfreeflow.so").is_file()
        assert not (LAB_DIR / host / "run" / "router.sock").exists(), "containers mount the run folder"


def test_up_again_reports_the_lab_and_commands_refuse_unknown_hosts() -> None:
    again = lab("up", "--hosts", str(len(HOSTS)))
    assert again.returncode == 0 and "already up" in again.stdout
    other = lab("up", "--hosts", "2")
    assert other.returncode == 2 and "lab down" in other.stderr
    for command in (["exec", "h5", "--", "true"], ["kill", "h5"], ["start", "h5"]):
        unknown = lab(*command)
        assert unknown.returncode == 2 and "not a host of the lab" in unknown.stderr


def test_up_rebuilds_a_lab_whose_every_host_was_killed() -> None:
    """What a run killed mid-test leaves (namespaces, folders, the record, no dockerd): `up` clears it and builds
    a new lab, where `up` on a live lab only reports it. The rest of the folder's tests run on the new lab."""
    old = {host["name"]: host["pid"] for host in json.loads(lab("status", "--json").stdout)}
    for host in HOSTS:
        assert lab("kill", host).returncode == 0
    again = lab("up", "--hosts", str(len(HOSTS)), "--plugin-scope", "global")
    assert again.returncode == 0, f"lab up failed:\n{again.stdout}\n{again.stderr}"
    assert "left behind" in again.stdout and "already up" not in again.stdout
    status = json.loads(lab("status", "--json").stdout)
    assert [(h["name"], h["running"], h["swarm"]) for h in status] == [
        ("h1", True, "manager"), ("h2", True, "worker"), ("h3", True, "worker")]
    assert all(h["pid"] != old[h["name"]] for h in status)
    wait_for(lambda: len(directory("/v1/hosts")["hosts"]) == 3, 60, "every plugin to heartbeat the new orchestrator")
