"""Every FreeFlow setting in one table: environment variable, type, default and meaning.

The table feeds `load_settings` (validation at start-up), `freeflow settings` and the README's table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from freeflow.errors import SettingsError


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


# The preload library (FF_GRAFT_MS) and the Python client (graft.ROUTER_TIMEOUT) give the router 2 s to answer a
# GRAFT: a longer wait in the router would outlast them, and they would leave on the overlay first.
MAX_GRAFT_WAIT = 1.5


def _graft_wait(text: str) -> float:
    value = _positive_float(text)
    if value > MAX_GRAFT_WAIT:
        raise ValueError(f"must be at most {MAX_GRAFT_WAIT} s: the preload library and the Python client wait 2 s "
                         "for the router's answer")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be a whole number greater than zero")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise ValueError("must be a TCP port, 1 to 65535")
    return value


def _scope(text: str) -> str:
    if text not in ("local", "global"):
        raise ValueError("must be 'local' (a single Docker host) or 'global' (a swarm)")
    return text


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be 1 or 0")


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
    return level


@dataclass(frozen=True)
class EtcdStore:
    """Where an etcd-backed orchestrator directory lives: etcd's client address and a key prefix."""

    host: str
    port: int
    prefix: str


_ETCD_STORE = re.compile(r"etcd://(?P<host>[0-9A-Za-z.-]+):(?P<port>[0-9]{1,5})(?:/(?P<prefix>[0-9A-Za-z_.-]+))?")


def etcd_store(text: str) -> EtcdStore | None:
    """The etcd that FREEFLOW_ORCHESTRATOR_STORE names, or None for `sqlite`; ValueError for anything else."""
    if text == "sqlite":
        return None
    match = _ETCD_STORE.fullmatch(text)
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise ValueError("must be `sqlite` or `etcd://HOST:PORT` (etcd's client address), optionally followed "
                         "by `/PREFIX`, a key prefix that lets several clusters share one etcd (default freeflow)")
    return EtcdStore(match["host"], int(match["port"]), match["prefix"] or "freeflow")


def _store(text: str) -> str:
    etcd_store(text)
    return text


@dataclass(frozen=True)
class Setting:
    """One setting: its attribute name, environment variable, parser, default and help text."""

    name: str
    env: str
    parse: Callable[[str], Any]
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("scope", "FREEFLOW_SCOPE", _scope, "local",
            "Network scope reported to Docker: `local` for one host, `global` for a swarm."),
    Setting("state_dir", "FREEFLOW_STATE_DIR", str, "/var/lib/freeflow",
            "Folder of the persistent state (networks and endpoints) and of the router's admin socket."),
    Setting("socket", "FREEFLOW_SOCKET", str, "/run/docker/plugins/freeflow.sock",
            "Unix socket the plugin serves Docker's remote driver protocol on."),
    Setting("alias_socket", "FREEFLOW_ALIAS_SOCKET", str, "",
            "Second socket, in the host's /run/docker/plugins, that makes `-d freeflow` resolve (empty: none)."),
    Setting("reconcile_interval", "FREEFLOW_RECONCILE_INTERVAL", _positive_float, "5",
            "Seconds between checks that repair bridges and links deleted behind the plugin's back."),
    Setting("host_root", "FREEFLOW_HOST_ROOT", str, "",
            "Prefix under which the host's files are seen; `auto` (inside the managed plugin) finds it."),
    Setting("run_dir", "FREEFLOW_RUN_DIR", str, "/run/freeflow",
            "Host folder where the router publishes what containers mount: the preload library, the Python client."),
    Setting("graft_wait", "FREEFLOW_GRAFT_WAIT", _graft_wait, "0.5",
            "Seconds the router waits for the server to accept a connection before leaving it on the overlay "
            "(at most 1.5)."),
    Setting("graft_buffer", "FREEFLOW_GRAFT_BUFFER", _positive_int, "4194304",
            "Send buffer of each end of a same-host grafted connection, in bytes (the kernel doubles it; at most "
            "net.core.wmem_max). A unix socket charges every small write about 770 bytes, so it sets how many "
            "tiny writes can be in flight."),
    Setting("graft_port", "FREEFLOW_GRAFT_PORT", _port, "7471",
            "TCP port on this host's swarm address where other hosts' routers hand over cross-host connections."),
    Setting("bridge_timeout", "FREEFLOW_BRIDGE_TIMEOUT", _positive_int, "60",
            "Seconds of silence from another host (TCP keepalive, unacknowledged data) after which a channel "
            "bridged to it ends, so that its containers see the end of the stream instead of waiting forever."),
    Setting("channel_memory", "FREEFLOW_CHANNEL_MEMORY", _positive_int, "268435456",
            "Bytes of shared-memory rings each container may hold in live channels."),
    Setting("router", "FREEFLOW_ROUTER", _bool, "1",
            "Run the router beside the plugin (1) or not (0)."),
    Setting("host_address", "FREEFLOW_HOST_ADDRESS", str, "",
            "This host's underlay address for VXLAN; empty: the swarm address Docker reports."),
    Setting("orchestrator_url", "FREEFLOW_ORCHESTRATOR_URL", str, "",
            "Where routers and plugins reach the orchestrator (global scope), e.g. http://10.99.0.1:7470."),
    Setting("orchestrator_bind", "FREEFLOW_ORCHESTRATOR_BIND", str, "0.0.0.0:7470",
            "Address the orchestrator serves its API on."),
    Setting("orchestrator_db", "FREEFLOW_ORCHESTRATOR_DB", str, "/var/lib/freeflow/orchestrator.db",
            "SQLite file of the orchestrator's directory."),
    Setting("orchestrator_store", "FREEFLOW_ORCHESTRATOR_STORE", _store, "sqlite",
            "Where the orchestrator keeps its directory: `sqlite` (the FREEFLOW_ORCHESTRATOR_DB file) or "
            "`etcd://HOST:PORT[/PREFIX]` (etcd v3, which several orchestrators can share)."),
    Setting("orchestrator_token_file", "FREEFLOW_ORCHESTRATOR_TOKEN_FILE", str, "/run/secrets/freeflow_token",
            "File holding the token every orchestrator write needs (a swarm secret in a stack)."),
    Setting("orchestrator_threads", "FREEFLOW_ORCHESTRATOR_THREADS", _positive_int, "256",
            "Requests the orchestrator serves at once. Every host holds two long-polling watches (its plugin's "
            "and its router's); 32 threads (half, below 64) are kept for everything else."),
    Setting("lease_ttl", "FREEFLOW_LEASE_TTL", _positive_float, "15",
            "Seconds a host stays in the directory without a heartbeat."),
    Setting("log_level", "FREEFLOW_LOG_LEVEL", _log_level, "INFO",
            "Log level: DEBUG, INFO, WARNING or ERROR."),
)


@dataclass(frozen=True)
class Settings:
    """Validated settings; build with `load_settings`."""

    scope: str = "local"
    state_dir: str = "/var/lib/freeflow"
    socket: str = "/run/docker/plugins/freeflow.sock"
    alias_socket: str = ""
    reconcile_interval: float = 5.0
    host_root: str = ""
    run_dir: str = "/run/freeflow"
    graft_wait: float = 0.5
    graft_buffer: int = 4194304
    graft_port: int = 7471
    bridge_timeout: int = 60
    channel_memory: int = 268435456
    router: bool = True
    host_address: str = ""
    orchestrator_url: str = ""
    orchestrator_bind: str = "0.0.0.0:7470"
    orchestrator_db: str = "/var/lib/freeflow/orchestrator.db"
    orchestrator_store: str = "sqlite"
    orchestrator_token_file: str = "/run/secrets/freeflow_token"
    orchestrator_threads: int = 256
    lease_ttl: float = 15.0
    log_level: str = "INFO"


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read every setting from `environ` (default: the process environment), validating each.

    Raises SettingsError naming the variable and what it accepts.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env, setting.default)
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{setting.env}={raw!r} is invalid: {exc}. {setting.help}") from None
    known = {f.name for f in fields(Settings)}
    unknown = set(overrides) - known
    if unknown:
        raise SettingsError(f"unknown settings: {', '.join(sorted(unknown))}")
    values.update(overrides)
    return Settings(**values)
