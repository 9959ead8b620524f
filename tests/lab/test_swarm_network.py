"""A swarm-wide freeflow network across three real Docker hosts: VXLAN between them, addresses from swarm,
endpoints in the orchestrator; and what happens when the orchestrator or a host goes away."""

from __future__ import annotations

import subprocess
import textwrap
import time
from importlib.resources import files

from tests.lab.conftest import DRIVER, HOSTS, LAB_DIR, directory_ips, lab, on, our_links, run_on, wait_for

SINK = textwrap.dedent("""
    import hashlib, socket
    srv = socket.create_server(("0.0.0.0", 7300))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", 7301))
    data, peer = udp.recvfrom(100)
    udp.sendto(data.upper(), peer)
    conn, _ = srv.accept()
    digest = hashlib.sha256()
    while chunk := conn.recv(1 << 16):
        digest.update(chunk)
    conn.sendall(digest.hexdigest().encode())
""")

SOURCE = textwrap.dedent("""
    import hashlib, os, socket, sys
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(2)
    for _ in range(10):
        udp.sendto(b"datagram", (sys.argv[1], 7301))
        try:
            print(udp.recv(100).decode())
            break
        except TimeoutError:
            pass
    data = os.urandom(100_000_000)
    sock = socket.create_connection((sys.argv[1], 7300), timeout=30)
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    print(sock.recv(100).decode() == hashlib.sha256(data).hexdigest())
""")


RECONCILE_S = 5.0  # the plugin's FREEFLOW_RECONCILE_INTERVAL (its default)


def pings(source_host: str, container: str, target: str) -> bool:
    out = on(source_host, "docker", "exec", container, "ping", "-c", "1", "-W", "1", target, check=False)
    return "1 received" in out


def plugin_logs(host: str, lines: int = 30) -> str:
    """The last lines the freeflow plugin of `host` logged (they are in its dockerd's log)."""
    log = (LAB_DIR / host / "dockerd.log").read_text(errors="replace").splitlines()
    return f"{host}:\n" + "\n".join([line for line in log if "plugin=" in line][-lines:])


def container_ip(host: str, container: str, net: str) -> str:
    template = f"{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"
    return on(host, "docker", "inspect", "--format", template, container)


def network_id(net: str) -> str:
    return on("h1", "docker", "network", "inspect", "--format", "{{.Id}}", net)


def test_containers_on_three_hosts_reach_each_other_by_name(swarm_network) -> None:
    net = swarm_network()
    names = {host: run_on(host, net, host) for host in HOSTS}
    for host, name in names.items():
        for other in HOSTS:
            if other != host:
                wait_for(lambda h=host, n=name, o=names[other]: pings(h, n, o), 30, f"{name} to ping {names[other]}")
    assert "mtu 1450" in on("h2", "docker", "exec", names["h2"], "ip", "link", "show", "eth0"), \
        "the MTU leaves room for the VXLAN header"


def test_driver_options_reach_the_workers(swarm_network) -> None:
    """The manager's AllocateNetwork echoes the -o options: a worker creates the network with them too."""
    net = swarm_network("-o", "com.docker.network.driver.mtu=1400")
    worker = run_on("h3", net, "w")
    assert "mtu 1400" in on("h3", "docker", "exec", worker, "ip", "link", "show", "eth0")


def test_a_bad_driver_option_is_refused_by_the_managers_allocation() -> None:
    """Swarm allocates a network after `docker network create` has returned: the manager's AllocateNetwork
    refuses a bad option (its log names it, with the accepted ones), and no container can attach to it."""
    name = "ffl-badopt"
    on("h1", "docker", "network", "create", "-d", DRIVER, "--attachable", "-o", "bogus=1", name)
    try:
        wait_for(lambda: "unknown option 'bogus' for a freeflow network; accepted options: "
                         "com.docker.network.driver.mtu" in (LAB_DIR / "h1" / "dockerd.log").read_text(),
                 30, "the manager's refusal in its log")
        answer = on("h1", "docker", "run", "--rm", "--network", name, "freeflow-tools", "true", check=False)
        assert "attaching to network failed" in answer, answer
    finally:
        on("h1", "docker", "network", "rm", name, check=False)


def test_a_veth_deleted_under_a_running_container_is_reported_once_with_the_fix(swarm_network) -> None:
    """Its other end was inside the container, set up by dockerd: the plugin cannot build it again, and its
    log says so once, with what to do."""
    net = swarm_network()
    name = run_on("h2", net, "cut")
    endpoint = on("h2", "docker", "inspect", "--format",
                  f"{{{{(index .NetworkSettings.Networks \"{net}\").EndpointID}}}}", name)
    veth = f"ffh{endpoint[:12]}"
    assert veth in our_links("h2")
    subprocess.run(["ip", "-n", "h2", "link", "del", veth], check=True)
    said = f"the veth {veth} of endpoint {endpoint[:12]} was deleted under its running container"
    wait_for(lambda: said in plugin_logs("h2", 400), 30, "the plugin's log to report the veth")
    assert "run `docker network disconnect` and `docker network connect` for it" in plugin_logs("h2", 400)
    time.sleep(2 * RECONCILE_S + 1)
    assert plugin_logs("h2", 400).count(said) == 1, "said once"


def test_udp_and_a_100_mb_tcp_transfer_cross_hosts_intact(swarm_network) -> None:
    net = swarm_network()
    sink = run_on("h1", net, "sink")
    source = run_on("h3", net, "source")
    on("h1", "docker", "exec", "-d", sink, "python3", "-c", SINK)
    wait_for(lambda: pings("h3", source, sink), 30, "the hosts to know each other's endpoints")
    assert on("h3", "docker", "exec", source, "python3", "-c", SOURCE, sink).split() == ["DATAGRAM", "True"]


def test_network_rm_leaves_no_link_on_any_host(swarm_network) -> None:
    net = swarm_network()
    for host in HOSTS:
        run_on(host, net, host)
    assert all(our_links(host) for host in HOSTS)
    for host in HOSTS:
        on(host, "docker", "rm", "-f", f"{net}-{host}")
    on("h1", "docker", "network", "rm", net)
    wait_for(lambda: not any(our_links(host) for host in HOSTS), 30, "every host to remove the network's links")


def test_the_example_stack_runs_across_hosts(tag: str) -> None:
    stack = f"demo{tag}"
    compose = str(files("freeflow.config").joinpath("demo-stack.yml"))
    try:
        on("h1", "docker", "stack", "deploy", "--resolve-image", "never", "--compose-file", compose, stack)

        def every_client_benchmarked() -> bool:
            logs = on("h1", "docker", "service", "logs", "--raw", f"{stack}_client", check=False)
            return logs.count("requests per second") == 2 * len(HOSTS)  # a GET and a SET line per node

        wait_for(every_client_benchmarked, 120, "redis-benchmark to finish on every node")
    finally:
        on("h1", "docker", "stack", "rm", stack, check=False)


def test_with_the_orchestrator_away_paths_keep_working_and_it_is_rebuilt(swarm_network) -> None:
    net = swarm_network()
    a, b = run_on("h1", net, "a"), run_on("h2", net, "b")
    wait_for(lambda: pings("h1", a, b), 30, "a to reach b")
    ips = directory_ips(network_id(net))
    assert len(ips) == 2
    on("h1", "docker", "service", "scale", "--detach", "freeflow_orchestrator=0")
    try:
        wait_for(lambda: not directory_ips(network_id(net)), 60, "the orchestrator to stop")
        wait_for(lambda: on("h1", "docker", "ps", "-aq", "--filter", "name=freeflow_orchestrator") == "", 60,
                 "its container to be removed")
        on("h1", "docker", "volume", "rm", "freeflow_orchestrator-data")  # it comes back knowing nothing
        assert pings("h1", a, b) and pings("h2", b, a), "existing paths do not need the orchestrator"
        on("h2", "docker", "exec", "-d", b, "python3", "-c", SINK)
        wait_for(lambda: ":1C84 " in on("h2", "docker", "exec", b, "cat", "/proc/net/tcp"), 20, "b to listen")
        assert on("h1", "docker", "exec", a, "python3", "-c", SOURCE, b).split() == ["DATAGRAM", "True"], \
            "new connections to known peers work"
    finally:
        on("h1", "docker", "service", "scale", "--detach", "freeflow_orchestrator=1")
    wait_for(lambda: directory_ips(network_id(net)) == ips, 90, "the hosts to rebuild the directory")


def test_a_lost_host_expires_from_the_directory_and_comes_back(swarm_network) -> None:
    net = swarm_network()
    a, b, c = run_on("h1", net, "a"), run_on("h2", net, "b"), run_on("h3", net, "c")
    wait_for(lambda: pings("h1", a, c) and pings("h1", a, b), 30, "a to reach b and c")
    c_ip = container_ip("h3", c, net)
    assert lab("kill", "h3").returncode == 0
    wait_for(lambda: c_ip not in directory_ips(network_id(net)), 40, "h3's endpoint to expire with its lease")
    assert pings("h1", a, b) and pings("h2", b, a), "the rest of the cluster is unaffected"
    assert lab("start", "h3").returncode == 0
    wait_for(lambda: "Ready" in on("h1", "docker", "node", "inspect", "--format", "{{.Status.State}}", "h3")
             .title(), 60, "h3 to be a ready node again")
    on("h3", "docker", "rm", "-f", c)
    c = run_on("h3", net, "c2")
    wait_for(lambda: pings("h1", a, c) and pings("h3", c, b), 60, "h3's new container to reach the others")
    c2_ip = container_ip("h3", c, net)

    def h3_endpoints() -> list[str]:
        return [ip for ip, host in directory_ips(network_id(net)).items() if host == "10.99.0.3"]

    # The container that died with the host never got a Leave: the plugin lets its endpoint go.
    wait_for(lambda: h3_endpoints() == [c2_ip], 60, "h3 to report exactly its running container")


def test_a_host_cut_off_leaves_the_others_alone_and_rejoins(swarm_network) -> None:
    net = swarm_network()
    a, b, c = run_on("h1", net, "a"), run_on("h2", net, "b"), run_on("h3", net, "c")
    wait_for(lambda: pings("h1", a, c) and pings("h1", a, b), 30, "a to reach b and c")
    count = len(directory_ips(network_id(net)))
    subprocess.run(["ip", "link", "set", "fflab-h3", "down"], check=True)
    try:
        wait_for(lambda: len(directory_ips(network_id(net))) == count - 1, 40, "h3's endpoint to expire")
        assert pings("h1", a, b) and pings("h2", b, a), "the rest of the cluster is unaffected"
    finally:
        subprocess.run(["ip", "link", "set", "fflab-h3", "up"], check=True)
    wait_for(lambda: len(directory_ips(network_id(net))) == count, 60, "h3 to report its endpoint again")
    # By address: names of a host that was away come back with swarm's gossip, on its own schedule.
    c_ip, b_ip = container_ip("h3", c, net), container_ip("h2", b, net)
    try:
        wait_for(lambda: pings("h1", a, c_ip) and pings("h3", c, b_ip), 30, "h3's container to be reachable again")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{plugin_logs('h1')}\n{plugin_logs('h3')}") from None


PRELOAD = ("-v", "/run/freeflow:/run/freeflow:ro", "-e", "LD_PRELOAD=/run/freeflow/libfreeflow.so")
PYTHON_CLIENT = ("-v", "/run/freeflow:/run/freeflow:ro", "-e", "PYTHONPATH=/run/freeflow/python")

# An unmodified server under the preload library; it answers each connection with the sha256 of what it got
# and the peer its socket really has (a raw system call, past the library): another host's address when the
# connection was grafted onto host TCP, the client's overlay address otherwise.
RAW_PEER_SERVER = textwrap.dedent("""
    import ctypes, hashlib, socket
    libc = ctypes.CDLL(None, use_errno=True)
    def raw_peer(fd):
        addr, size = ctypes.create_string_buffer(16), ctypes.c_uint32(16)
        libc.syscall(52, fd, addr, ctypes.byref(size))
        return socket.inet_ntoa(addr.raw[4:8])
    srv = socket.create_server(("0.0.0.0", 7400))
    while True:
        conn, _ = srv.accept()
        digest = hashlib.sha256()
        while chunk := conn.recv(1 << 20):
            digest.update(chunk)
        conn.sendall(f"{raw_peer(conn.fileno())} {digest.hexdigest()}".encode())
        conn.close()
""")

RAW_PEER_CLIENT = textwrap.dedent("""
    import hashlib, os, socket, sys
    data = os.urandom(int(sys.argv[2]))
    sock = socket.create_connection((sys.argv[1], 7400), timeout=30)
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)
    peer, digest = sock.recv(200).decode().split()
    print(peer, digest == hashlib.sha256(data).hexdigest())
""")


def test_an_accelerated_connection_across_hosts_is_grafted_onto_host_tcp(swarm_network) -> None:
    net = swarm_network()
    server = run_on("h2", net, "srv", *PRELOAD)
    client = run_on("h1", net, "cli", *PRELOAD)
    on("h2", "docker", "exec", "-d", server, "python3", "-c", RAW_PEER_SERVER)
    wait_for(lambda: pings("h1", client, server), 30, "the hosts to know each other's endpoints")
    answers: list[list[str]] = []

    def grafted() -> bool:
        answers.append(on("h1", "docker", "exec", client, "python3", "-c", RAW_PEER_CLIENT, server, "1000").split())
        return answers[-1][0] == "10.99.0.1"

    # The server's listener reaches h1's router through the orchestrator: the first connections may be plain.
    wait_for(grafted, 30, "a connection from h1 to be grafted onto host TCP")
    assert all(answer[1] == "True" for answer in answers), "a connection lost data"
    assert on("h1", "docker", "exec", client, "python3", "-c", RAW_PEER_CLIENT, server, "50000000").split() == [
        "10.99.0.1", "True"]


def test_a_channel_across_hosts_is_bridged_by_the_routers(swarm_network) -> None:
    from tests.router.test_cross_host import CHANNEL_CLIENT, CHANNEL_SERVER

    net = swarm_network()
    server = run_on("h3", net, "srv", *PYTHON_CLIENT)
    client = run_on("h1", net, "cli", *PYTHON_CLIENT)
    on("h3", "docker", "exec", "-d", server, "python3", "-c", CHANNEL_SERVER)
    wait_for(lambda: pings("h1", client, server), 30, "the hosts to know each other's endpoints")

    def bridged(size: int) -> bool:
        path, intact = on("h1", "docker", "exec", client, "python3", "-c", CHANNEL_CLIENT, server, str(size)).split()
        assert intact == "True", f"a channel over {path} lost data"
        return path == "shm"

    wait_for(lambda: bridged(1000), 30, "a channel from h1 to h3 over shared memory and the routers' bridge")
    assert bridged(64_000_000)
