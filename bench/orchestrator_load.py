"""Load test of the orchestrator with simulated routers: many hosts and endpoints, lookups and watchers.

Runs a real orchestrator process on loopback, registers `hosts` x `per_host` endpoints, measures lookup
latency, then makes one change and measures how long each watcher takes to see it.
"""

from __future__ import annotations

import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from freeflow.orchestrator.client import OrchestratorClient, OrchestratorUnavailable
from freeflow.orchestrator.schema import Endpoint, Host

NETWORK = "loadtestnetwork0000000000"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_orchestrator_load(hosts: int = 100, per_host: int = 100, lookups: int = 2000,
                          store: str = "sqlite") -> dict[str, float]:
    """`store` is FREEFLOW_ORCHESTRATOR_STORE: `sqlite`, or a running etcd (etcd://HOST:PORT/PREFIX)."""
    with tempfile.TemporaryDirectory() as work:
        token = secrets.token_hex(16)
        Path(work, "token").write_text(token)
        port = _free_port()
        env = {**os.environ, "FREEFLOW_ORCHESTRATOR_BIND": f"127.0.0.1:{port}",
               "FREEFLOW_ORCHESTRATOR_DB": f"{work}/directory.db", "FREEFLOW_ORCHESTRATOR_TOKEN_FILE": f"{work}/token",
               "FREEFLOW_ORCHESTRATOR_STORE": store, "FREEFLOW_LEASE_TTL": "600", "FREEFLOW_LOG_LEVEL": "WARNING"}
        server = subprocess.Popen([sys.executable, "-m", "freeflow.cli", "orchestrator"], env=env)
        client = OrchestratorClient(f"http://127.0.0.1:{port}", token)
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    client.hosts()
                    break
                except OrchestratorUnavailable:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            started = time.monotonic()
            for h in range(hosts):
                host = Host(f"h{h}", f"10.99.{h // 250}.{h % 250 + 1}", False)
                client.heartbeat(host)
                client.report(host.host_id, [
                    Endpoint(f"ep-{h}-{e}", NETWORK, f"10.{h // 250}.{h % 250}.{e + 2}",
                             f"02:42:{h // 250:02x}:{h % 250:02x}:{e // 250:02x}:{e % 250:02x}", host.host_id)
                    for e in range(per_host)])
            register_s = time.monotonic() - started

            latencies = []
            for _ in range(lookups):
                h, e = random.randrange(hosts), random.randrange(per_host)
                asked = time.perf_counter()
                client._call("GET", f"/v1/lookup?network={NETWORK}&ip=10.{h // 250}.{h % 250}.{e + 2}")
                latencies.append((time.perf_counter() - asked) * 1000)

            revision = client.revision()
            seen: list[float] = []
            lock = threading.Lock()
            ready = threading.Barrier(hosts + 1)

            def watcher() -> None:
                ready.wait()
                answer = client.watch(revision, wait=20)
                if answer["changes"]:
                    with lock:
                        seen.append(time.monotonic())

            threads = [threading.Thread(target=watcher) for _ in range(hosts)]
            for thread in threads:
                thread.start()
            ready.wait()
            time.sleep(0.5)  # every watcher is parked in its long poll
            changed = time.monotonic()
            client.put_endpoint(Endpoint("ep-new", NETWORK, "10.200.0.2", "02:42:c8:00:00:02", "h0"))
            for thread in threads:
                thread.join(30)
            delays = [(s - changed) * 1000 for s in seen]
        finally:
            server.terminate()
            server.wait(10)
    return {
        "endpoints": hosts * per_host, "hosts": hosts, "register_s": register_s,
        "lookup_p50_ms": statistics.median(latencies), "lookup_p99_ms": _percentile(latencies, 0.99),
        "watchers_notified": len(delays), "notify_max_ms": max(delays) if delays else float("nan"),
        "notify_p99_ms": _percentile(delays, 0.99) if delays else float("nan"),
    }


def print_orchestrator_load(result: dict[str, float]) -> None:
    print(f"orchestrator load: {result['endpoints']} endpoints on {result['hosts']} hosts "
          f"(registered in {result['register_s']:.1f} s)")
    print(f"  lookup p50 {result['lookup_p50_ms']:.2f} ms, p99 {result['lookup_p99_ms']:.2f} ms")
    print(f"  one change reached {result['watchers_notified']}/{result['hosts']} watchers: "
          f"p99 {result['notify_p99_ms']:.0f} ms, slowest {result['notify_max_ms']:.0f} ms")
