"""What `freeflow status` shows: per sandbox, its endpoints and live connections with the path each took.

Grafted connections are alive while either end of their socket pair exists (by inode in /proc/net/unix), or
their host TCP connection to another host (in this namespace's /proc/net/tcp); overlay connections are the
established TCP connections (IPv4 and IPv6) in the sandbox's namespace.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from typing import Any

from freeflow.router.broker import Broker
from freeflow.router.errors import NamespaceError
from freeflow.router.netns import read_tcp_tables

TCP_ESTABLISHED = "01"
TCP_LISTEN = "0A"


def parse_proc_net_unix(data: bytes) -> list[tuple[int, str]]:
    """(inode, path) of each socket in a /proc/net/unix text; an abstract name starts with "@", "" is unnamed.

    Anyone on the host can bind a socket, and its path is printed as it is: bytes that are not UTF-8, spaces,
    even newlines (which make lines of their own). A line that does not parse is skipped, never an error.
    """
    found = []
    for line in data.split(b"\n")[1:]:
        cols = line.split(maxsplit=7)  # the path, last, may hold spaces
        if len(cols) >= 7 and cols[6].isdigit():
            found.append((int(cols[6]), cols[7].decode(errors="replace") if len(cols) == 8 else ""))
    return found


def _proc_net_unix() -> list[tuple[int, str]]:
    with open("/proc/net/unix", "rb") as f:
        return parse_proc_net_unix(f.read())


def unix_inodes() -> set[int]:
    """Inodes of the unix sockets open in this network namespace."""
    return {inode for inode, _ in _proc_net_unix()}


def tcp_inodes() -> set[int]:
    """Inodes of the IPv4 TCP sockets open in this network namespace (the host's, for the router)."""
    with open("/proc/net/tcp") as f:
        next(f)
        return {int(line.split()[9]) for line in f if len(line.split()) > 9}


def named_unix_sockets() -> list[tuple[int, str]]:
    """(inode, name) of the unix sockets bound to abstract names in this network namespace."""
    return [(inode, path[1:]) for inode, path in _proc_net_unix() if path.startswith("@")]


def live_sockets() -> set[int]:
    """Inodes of every unix and IPv4 TCP socket open in this namespace: what grafts and channels are made of."""
    return unix_inodes() | tcp_inodes()


def _address(text: str) -> str:
    """An address of /proc/net/tcp or tcp6 (32-bit words of the address in this host's order, then the port) as
    "ip:port", or "[ip]:port" for IPv6; an IPv4 address on an IPv6 socket (::ffff:a.b.c.d) reads as IPv4."""
    ip_hex, port_hex = text.split(":")
    packed = b"".join(struct.pack("=I", int(ip_hex[i:i + 8], 16)) for i in range(0, len(ip_hex), 8))
    port = int(port_hex, 16)
    if len(packed) == 4:
        return f"{socket.inet_ntoa(packed)}:{port}"
    ip = ipaddress.IPv6Address(packed)
    return f"{ip.ipv4_mapped}:{port}" if ip.ipv4_mapped else f"[{ip}]:{port}"


def listening_ports(proc_net_tcp: str) -> set[int]:
    """Ports of the listening sockets in /proc/net/tcp (and tcp6) texts."""
    ports = set()
    for line in proc_net_tcp.splitlines():
        cols = line.split()
        if len(cols) > 3 and cols[3] == TCP_LISTEN:
            ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def established_tcp(proc_net_tcp: str) -> list[tuple[str, str]]:
    """(local, remote) of each established TCP connection in /proc/net/tcp (and tcp6) texts."""
    found = []
    for line in proc_net_tcp.splitlines():
        cols = line.split()
        if len(cols) > 3 and cols[3] == TCP_ESTABLISHED:
            found.append((_address(cols[1]), _address(cols[2])))
    return found


def connection_status(broker: Broker, sandboxes: dict[str, Any],
                      resolve: Callable[[str], str]) -> dict[str, Any]:
    broker.prune(live_sockets())
    result: dict[str, Any] = {"sandboxes": {}, "overlay_decisions": broker.overlay_decisions}
    for sandbox in sorted(sandboxes):
        endpoints = [ep for ep in broker.endpoints if ep.sandbox == sandbox]
        connections = []
        for g in broker.grafts:
            if sandbox in (g.client_sandbox, g.server_sandbox):
                _, cip, cport, sip, sport = g.key
                local, remote = ((f"{cip}:{cport}", f"{sip}:{sport}") if sandbox == g.client_sandbox
                                 else (f"{sip}:{sport}", f"{cip}:{cport}"))
                connections.append({"local": local, "remote": remote, "path": g.path})
        try:
            for local, remote in established_tcp(read_tcp_tables(resolve(sandbox))):
                connections.append({"local": local, "remote": remote, "path": "overlay"})
        except (NamespaceError, OSError):
            pass
        channels = [{"id": c.channel_id, "client": c.client, "server": c.server, "ring_size": c.ring_size,
                     "bytes_moved": c.bytes_moved(), "path": c.path}
                    for c in broker.channels if sandbox in (c.client_sandbox, c.server_sandbox)]
        result["sandboxes"][sandbox] = {
            "channels": channels,
            "endpoints": [{"endpoint": ep.endpoint_id[:12], "network": ep.network_id[:12], "ip": ep.ip}
                          for ep in endpoints],
            "connections": connections,
        }
    return result
