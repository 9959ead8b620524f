"""The router's event loop: a control socket in every joined container, the broker, and an admin socket.

It follows the plugin's state file (which endpoints are joined, in which sandbox), binds `@freeflow` in
each sandbox, decodes control messages and sends the broker's replies. It is never on the data path, so
killing it loses no established connection; a new router binds the sockets again from the state file.
"""

from __future__ import annotations

import array
import fcntl
import importlib
import json
import logging
import os
import selectors
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import freeflow.client
from freeflow.config.settings import Settings
from freeflow.errors import FreeFlowError
from freeflow.plugin.store import Store
from freeflow.router import protocol as p
from freeflow.router.broker import Broker, Endpoint, Reply
from freeflow.router.errors import NamespaceError, RouterError
from freeflow.router.netns import bind_abstract, host_root, in_root
from freeflow.router.status import connection_status, unix_inodes

log = logging.getLogger(__name__)

MAX_CONNS_PER_SANDBOX = 1024
STATE_POLL = 0.2
# A joined sandbox's namespace file appears when Docker starts the container, often after Join.
NAMESPACE_POLL = 0.02
LIBRARY = Path(freeflow.client.__file__).parent / "preload" / "libfreeflow.so"
# What a Python program in a container needs on PYTHONPATH for `freeflow.client` (standard library only):
# single modules, then whole packages.
CLIENT_MODULES = ("freeflow", "freeflow.errors", "freeflow.router", "freeflow.router.protocol")
CLIENT_PACKAGES = ("freeflow.client", "freeflow.shm")


def _module_path(module: ModuleType) -> str:
    """Where `module` goes under a PYTHONPATH folder: freeflow/router/protocol.py, freeflow/__init__.py."""
    parts = module.__name__.split(".")
    if Path(module.__file__ or "").name == "__init__.py":
        return "/".join([*parts, "__init__.py"])
    return "/".join(parts) + ".py"


def _publish(source: Path, target: Path) -> None:
    """Copy `source` to `target` atomically (a running program may have the old one mapped)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)


@dataclass
class Control:
    """One control connection and what it has sent so far."""

    sock: socket.socket
    sandbox: str
    buffer: bytearray = field(default_factory=bytearray)


class Router:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prefix = host_root(settings.host_root).rstrip("/")
        self.store = Store(settings.state_dir)
        self.run_dir = Path(self.host(settings.run_dir))
        self.broker = Broker(graft_wait=settings.graft_wait, channel_memory=settings.channel_memory)
        self.selector = selectors.DefaultSelector()
        self.sandboxes: dict[str, socket.socket] = {}
        self.conns: dict[socket.socket, Control] = {}
        self.state_mtime = -1.0
        self.wanted: set[str] = set()
        self.unbound_since: dict[str, float] = {}
        self.admin: socket.socket | None = None
        self._lock_file: Any = None

    def host(self, path: str) -> str:
        """`path` of the host's filesystem as this process sees it (through /proc/<pid>/root in the plugin)."""
        return in_root(self.prefix, path)

    # Start-up.

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.run_dir / "router.lock", "w")  # noqa: SIM115 - held for the router's life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RouterError(f"another router holds {self.run_dir / 'router.lock'}") from None
        (self.run_dir / "router.pid").write_text(f"{os.getpid()}\n")
        self._install_library()
        path = str(self.run_dir / "router.sock")
        Path(path).unlink(missing_ok=True)
        self.admin = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.admin.bind(path)
        self.admin.listen(16)
        self.admin.setblocking(False)
        self.selector.register(self.admin, selectors.EVENT_READ, "admin")
        self.follow_state()
        log.info("router ready: %d sandboxes, admin socket %s", len(self.sandboxes), path)

    def _install_library(self) -> None:
        """Publish what containers mount with `-v /run/freeflow:/run/freeflow:ro`: the preload library
        and, under python/, the client package for PYTHONPATH."""
        if LIBRARY.exists():
            _publish(LIBRARY, self.run_dir / "libfreeflow.so")
        else:
            log.warning("no preload library at %s: unmodified programs cannot be accelerated", LIBRARY)
        root = self.run_dir / "python"
        for name in CLIENT_MODULES:
            module = importlib.import_module(name)
            _publish(Path(module.__file__ or ""), root / _module_path(module))
        for name in CLIENT_PACKAGES:
            package = importlib.import_module(name)
            folder = root / Path(_module_path(package)).parent
            for source in Path(package.__file__ or "").parent.glob("*.py"):
                _publish(source, folder / source.name)

    # The plugin's state.

    def follow_state(self) -> None:
        """Re-read the plugin's state when it changed; bind or drop sandbox sockets to match."""
        try:
            mtime = self.store.path.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if mtime != self.state_mtime:
            self.state_mtime = mtime
            try:
                state = self.store.load()
            except FreeFlowError as exc:
                log.error("cannot read the plugin state: %s", exc)
                return
            endpoints = [Endpoint(ep.endpoint_id, ep.network_id, ep.address.split("/")[0], ep.sandbox_key)
                         for ep in state.endpoints.values() if ep.sandbox_key and ep.address]
            self.broker.set_endpoints(endpoints)
            self.wanted = {ep.sandbox for ep in endpoints}
            for sandbox in set(self.sandboxes) - self.wanted:
                self._drop_sandbox(sandbox)
            for sandbox in set(self.unbound_since) - self.wanted:
                del self.unbound_since[sandbox]
        for sandbox in self.wanted - set(self.sandboxes):
            self._bind_sandbox(sandbox)

    def _bind_sandbox(self, sandbox: str) -> None:
        try:
            sock = bind_abstract(self.host(sandbox), p.SOCKET_NAME)
        except NamespaceError as exc:
            first = self.unbound_since.setdefault(sandbox, time.monotonic())
            if time.monotonic() - first > 10:
                log.warning("%s (for %.0f s)", exc, time.monotonic() - first)
                self.unbound_since[sandbox] = time.monotonic()
            return
        self.unbound_since.pop(sandbox, None)
        self.sandboxes[sandbox] = sock
        self.selector.register(sock, selectors.EVENT_READ, ("listener", sandbox))
        log.info("control socket bound in %s", sandbox)

    def _drop_sandbox(self, sandbox: str) -> None:
        sock = self.sandboxes.pop(sandbox)
        self.selector.unregister(sock)
        sock.close()
        for conn in [c for c in self.conns.values() if c.sandbox == sandbox]:
            self._close(conn)
        self.broker.forget_sandbox(sandbox)
        log.info("control socket of %s closed", sandbox)

    # The loop.

    def run(self) -> None:
        self.start()
        next_poll = 0.0
        while True:
            poll = NAMESPACE_POLL if self.wanted - set(self.sandboxes) else STATE_POLL
            deadline = self.broker.next_deadline()
            timeout = poll if deadline is None else max(0.0, min(poll, deadline - time.monotonic()))
            for key, _ in self.selector.select(timeout):
                self._dispatch(key)
            self._send(self.broker.expire())
            if time.monotonic() >= next_poll:
                self.follow_state()
                next_poll = time.monotonic() + poll

    def _dispatch(self, key: selectors.SelectorKey) -> None:
        data = key.data
        if data == "admin":
            self._serve_admin()
        elif isinstance(data, tuple):
            self._accept(data[1])
        else:
            self._read(data)

    def _accept(self, sandbox: str) -> None:
        listener = self.sandboxes[sandbox]
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        if sum(1 for c in self.conns.values() if c.sandbox == sandbox) >= MAX_CONNS_PER_SANDBOX:
            log.warning("%s has %d control connections open: refusing more", sandbox, MAX_CONNS_PER_SANDBOX)
            sock.close()
            return
        sock.setblocking(False)
        control = Control(sock, sandbox)
        self.conns[sock] = control
        self.selector.register(sock, selectors.EVENT_READ, control)

    def _read(self, control: Control) -> None:
        try:
            chunk = control.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._close(control)
            return
        control.buffer += chunk
        try:
            while len(control.buffer) >= p.HEADER.size:
                kind, length = p.parse_header(bytes(control.buffer[:p.HEADER.size]), p.REQUESTS)
                if len(control.buffer) < p.HEADER.size + length:
                    return
                body = bytes(control.buffer[p.HEADER.size:p.HEADER.size + length])
                del control.buffer[:p.HEADER.size + length]
                self._send(self._handle(control, kind.decode_body(body)))
        except p.ProtocolError as exc:
            log.warning("closing a control connection from %s: %s", control.sandbox, exc)
            self._close(control)

    def _handle(self, control: Control, msg: p.Message) -> list[Reply]:
        if isinstance(msg, p.Intent):
            return self.broker.intent(control.sock, control.sandbox, msg)
        if isinstance(msg, p.Graft):
            return self.broker.graft(control.sock, control.sandbox, msg)
        if isinstance(msg, p.Listen):
            return self.broker.listen(control.sock, control.sandbox, msg)
        if isinstance(msg, p.ChannelListen):
            return self.broker.channel_listen(control.sock, control.sandbox, msg)
        if isinstance(msg, p.ChannelConnect):
            return self.broker.channel_connect(control.sock, control.sandbox, msg, unix_inodes())
        raise p.ProtocolError(f"{type(msg).__name__} is not a request")

    def _send(self, replies: list[Reply]) -> None:
        for reply in replies:
            control = self.conns.get(reply.conn)  # type: ignore[call-overload]
            try:
                if control is None:
                    continue
                fds = reply.fds
                ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
                control.sock.sendmsg([reply.message.encode()], ancillary)
            except OSError as exc:
                log.warning("cannot answer a control connection of %s: %s", control.sandbox if control else "?", exc)
                if control is not None:
                    self._close(control)
            finally:
                for fd in reply.fds:
                    os.close(fd)

    def _close(self, control: Control) -> None:
        if self.conns.pop(control.sock, None) is None:
            return
        self.selector.unregister(control.sock)
        self._send(self.broker.closed(control.sock))
        control.sock.close()

    # Admin socket: one JSON request per connection.

    def _serve_admin(self) -> None:
        assert self.admin is not None
        try:
            conn, _ = self.admin.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(2)
            try:
                request = json.loads(conn.recv(4096) or b"{}")
                answer = self.admin_request(request)
            except (ValueError, OSError) as exc:
                answer = {"error": f"bad admin request: {exc}"}
            try:
                conn.sendall(json.dumps(answer).encode())
            except OSError as exc:
                log.warning("admin client went away: %s", exc)

    def admin_request(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or request.get("op") != "status":
            return {"error": "the only admin request is {\"op\": \"status\"}"}
        return connection_status(self.broker, self.sandboxes, self.host)
