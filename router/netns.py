"""Sockets and reads inside a container's network namespace, from a thread that enters it.

setns(CLONE_NEWNET) changes only the calling thread, so each operation runs in a short-lived thread and
the router's own threads stay in the host namespace. A socket keeps the namespace it was created in.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

from freeflow.router.errors import NamespaceError

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

T = TypeVar("T")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NamespaceError(f"setns failed: {os.strerror(err)}")


def run_in_netns(path: str, action: Callable[[], T]) -> T:
    """Run `action` in a thread that has entered the network namespace at `path`; return its result."""
    result: list[T] = []
    failure: list[BaseException] = []

    def enter_and_run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            failure.append(NamespaceError(f"cannot open network namespace {path}: {exc.strerror}"))
            return
        try:
            _setns(fd)
            result.append(action())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)
        finally:
            os.close(fd)

    thread = threading.Thread(target=enter_and_run, name="netns")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def bind_abstract(path: str, name: bytes, backlog: int = 128) -> socket.socket:
    """A listening AF_UNIX socket bound to abstract `name` inside the namespace at `path`."""

    def bind() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.bind(name)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    try:
        return run_in_netns(path, bind)
    except OSError as exc:
        raise NamespaceError(f"cannot bind @{name[1:].decode()} in {path}: {exc.strerror}") from exc


def host_root(setting: str) -> str:
    """The prefix under which the host's files are seen; `auto` finds it through the process tree.

    Inside the managed plugin (own mount namespace, host PID namespace) the nearest ancestor in another
    mount namespace is containerd's shim, whose root is the host's: /proc/<pid>/root. /proc/1/root is not
    used because some hosts deny it even to root.
    """
    if setting != "auto":
        return setting
    own = os.stat("/proc/self/ns/mnt").st_ino
    pid = os.getpid()
    while pid > 1:
        with open(f"/proc/{pid}/status") as status:
            pid = next(int(line.split()[1]) for line in status if line.startswith("PPid:"))
        try:
            if pid > 0 and os.stat(f"/proc/{pid}/ns/mnt").st_ino != own:
                return f"/proc/{pid}/root"
        except OSError:
            continue
    return ""


def in_root(prefix: str, path: str) -> str:
    """`path` as seen under the root folder `prefix`, following its symlinks inside that root.

    Absolute symlinks met under /proc/<pid>/root would otherwise resolve in our own root (/var/run ->
    /run is one on every Debian host).
    """
    if not prefix:
        return path
    parts = [part for part in path.split("/") if part]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        if part == ".":
            continue
        candidate = prefix + "/" + "/".join([*resolved, part])
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise NamespaceError(f"too many symlinks in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved.append(part)
    return prefix + "/" + "/".join(resolved)


def read_tcp_tables(path: str) -> str:
    """The namespace's /proc/net/tcp and tcp6 texts, one after the other, read through /proc/thread-self (a
    kernel without IPv6 has no tcp6: its part is empty)."""

    def read() -> str:
        with open("/proc/thread-self/net/tcp") as f:
            tcp = f.read()
        try:
            with open("/proc/thread-self/net/tcp6") as f:
                return tcp + f.read()
        except FileNotFoundError:
            return tcp

    return run_in_netns(path, read)
