"""The router's event loop: a control socket in every joined container, the broker, and an admin socket;
in a swarm also the peering port other hosts' routers dial, the dials it makes itself, and channel bridges.

It follows the plugin's state file (which endpoints are joined, in which sandbox), binds `@freeflow` in
each sandbox, decodes control messages and carries out the broker's actions. It is never on the data path
(cross-host channels go through bridge processes of their own), so killing it loses no established
connection; a new router binds the sockets again from the state file.
"""

from __future__ import annotations

import array
import collections
import dataclasses
import errno
import fcntl
import importlib
import json
import logging
import os
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import freeflow.client
from freeflow.config.settings import Settings
from freeflow.errors import FreeFlowError
from freeflow.orchestrator.client import OrchestratorClient
from freeflow.orchestrator.server import read_token
from freeflow.plugin.store import Store
from freeflow.router import peering, ring_maps
from freeflow.router import protocol as p
from freeflow.router.broker import Action, Bridge, Broker, Dial, Endpoint, Offer, Reply, warn_if_capped
from freeflow.router.cluster import ClusterView
from freeflow.router.errors import NamespaceError, RouterError
from freeflow.router.graft_journal import GraftJournal
from freeflow.router.kept_files import KeptJson, replace_file
from freeflow.router.netns import bind_abstract, host_root, in_root, read_tcp_tables
from freeflow.router.status import connection_status, listening_ports, live_sockets, named_unix_sockets, unix_inodes

log = logging.getLogger(__name__)

MAX_CONNS_PER_SANDBOX = 1024
MAX_INBOUND = 64  # connections from one address that have not yet sent their preamble
PREAMBLE_WAIT = 2.0  # seconds another router has to send its preamble
STATE_POLL = 0.2
HOUSEKEEPING = 5.0  # seconds between checks of inherited listeners and of ended connections and channels
# A joined sandbox's namespace file appears when Docker starts the container, often after Join.
NAMESPACE_POLL = 0.02
ACCEPT_PAUSE = 1.0  # seconds a listening socket rests after accept() failed for want of descriptors or memory
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


def _transmit(sock: socket.socket, reply: Reply) -> None:
    """Send `reply` on a control connection, its descriptors with it (SCM_RIGHTS); the caller closes ours."""
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", reply.fds))] if reply.fds else []
    sock.sendmsg([reply.message.encode()], ancillary)


def _discard(action: Reply | Bridge) -> None:
    """Close the descriptors of an action that will not be carried out."""
    if isinstance(action, Bridge):
        action.fds.close()
        action.sock.close()
    else:
        for fd in action.fds:
            os.close(fd)


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


@dataclass
class Dialling:
    """A dial of another host's router: connecting, then waiting for its ACCEPTED byte."""

    dial: Dial
    sock: socket.socket
    deadline: float
    connected: bool = False


@dataclass
class Inbound:
    """Another host's router dialled in; its preamble is still arriving."""

    sock: socket.socket
    source: str
    deadline: float
    buffer: bytearray = field(default_factory=bytearray)


def _raise_descriptor_limit() -> None:
    """Up to the hard limit: every container may hold up to MAX_CONNS_PER_SANDBOX control connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


NAME_KEY_FILE = "graft-names.key"  # beside the state: a restarted router must take back its own pairs


def _name_key(path: Path) -> bytes:
    """The key that signs the names of grafted socket pairs, made on first use and kept (owner only)."""
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot read %s (%s): a restarted router will not list today's grafted connections", path,
                    exc.strerror)
        return b""
    key = os.urandom(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, key, 0o600)
    except OSError as exc:
        log.warning("cannot keep %s (%s): a restarted router will not list today's grafted connections", path,
                    exc.strerror)
    return key


class Router:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prefix = host_root(settings.host_root).rstrip("/")
        self.store = Store(settings.state_dir)
        self.run_dir = Path(self.host(settings.run_dir))
        self.private = Path(settings.state_dir)
        self.token = ""
        self.cluster: ClusterView | None = None
        if settings.scope == "global" and settings.orchestrator_url:
            self.token = read_token(settings)
            self.cluster = ClusterView(OrchestratorClient(settings.orchestrator_url, self.token),
                                       settings.lease_ttl / 3)
        warn_if_capped(settings.graft_buffer)
        self.broker = Broker(graft_wait=settings.graft_wait, graft_buffer=settings.graft_buffer,
                             channel_memory=settings.channel_memory,
                             cluster=self.cluster, name_key=_name_key(self.private / NAME_KEY_FILE))
        self.selector = selectors.DefaultSelector()
        self.peering: socket.socket | None = None
        self.dialling: dict[socket.socket, Dialling] = {}
        self.inbound: dict[socket.socket, Inbound] = {}
        self.bridges: list[subprocess.Popen[bytes]] = []
        # What the next router takes over: listeners, and grafts onto host TCP (their sockets carry no name).
        self.kept_listeners = KeptJson(self.private / "router-listeners.json")
        self.graft_journal = GraftJournal(self.private / "router-host-tcp-grafts.jsonl",
                                          legacy=self.private / "router-host-tcp-grafts.json")
        self.saved_host_tcp_version = -1
        self.saved_listeners_version = -1
        self.sandboxes: dict[str, socket.socket] = {}
        self.conns: dict[socket.socket, Control] = {}
        self.conns_per_sandbox: collections.Counter[str] = collections.Counter()
        self.resting: dict[socket.socket, tuple[float, Any]] = {}  # listening sockets paused: (until, data)
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
        # The router's own files live beside the plugin's state, never in the folder containers mount: a unix
        # socket can be connected to through a read-only mount.
        self.private.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.private / "router.lock", "w")  # noqa: SIM115 - held for the router's life
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RouterError(f"another router holds {self.private / 'router.lock'}") from None
        (self.private / "router.pid").write_text(f"{os.getpid()}\n")
        _raise_descriptor_limit()
        self._install_library()
        path = str(self.private / "router.sock")
        Path(path).unlink(missing_ok=True)
        self.admin = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.admin.bind(path)
        os.chmod(path, 0o600)
        self.admin.listen(16)
        self.admin.setblocking(False)
        self.selector.register(self.admin, selectors.EVENT_READ, "admin")
        self.follow_state()  # learns this host's address before the cluster view copies the directory
        if self.cluster is not None:
            self.cluster.start()
        self._inherit_listeners()
        named = named_unix_sockets()
        recovered = self.broker.recover_grafts(named) + self._restore_host_tcp_grafts()
        if recovered:
            log.info("grafted connections made by the previous router and still open: %d", recovered)
        channels = self.broker.recover_channels(named)
        if channels:
            mapped = ring_maps.map_again(self.broker.channels)
            log.info("channels made by the previous router and still open: %d (what %d of them moved is known)",
                     channels, mapped)
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

    # Listeners across a restart: the registrations live in the old router's memory, and a listener blocked in
    # accept() only registers again on its next connection; the file lets the new router graft that one too.

    def _save_listeners(self) -> None:
        self.kept_listeners.save(sorted(self.broker.registrations()))

    def _save_host_tcp_grafts(self) -> None:
        """Called on every turn of the loop: new grafts are appended, and the whole file is written again
        only when some ended (or it was damaged)."""
        new = self.broker.take_unsaved_host_tcp()  # also when the file is rewritten: the rewrite holds them
        if self.broker.host_tcp_version != self.saved_host_tcp_version or self.graft_journal.needs_rewrite():
            self.saved_host_tcp_version = self.broker.host_tcp_version
            self.graft_journal.rewrite(self.broker.host_tcp_grafts())
        else:
            self.graft_journal.append(new)

    def _restore_host_tcp_grafts(self) -> int:
        return self.broker.restore_host_tcp_grafts(self.graft_journal.load(), live_sockets())

    def _inherit_listeners(self) -> None:
        """Take over the previous router's listeners whose socket still listens in its sandbox."""
        known = self.kept_listeners.load()
        if known is None:
            return
        try:
            if not isinstance(known, list):
                raise TypeError("not a list of [sandbox, port]")
            entries = {(str(sandbox), int(port)) for sandbox, port in known}
        except (ValueError, TypeError) as exc:
            log.warning("ignoring %s: %s", self.kept_listeners.path, exc)
            return
        for sandbox, port in sorted(entries):
            if sandbox in self.sandboxes and port in self._listening_ports(sandbox):
                self.broker.inherit(sandbox, port)
                log.info("listener on port %d in %s inherited from the previous router", port, sandbox)

    def _check_inherited(self) -> None:
        """Inherited listeners that stopped listening before registering again are forgotten."""
        inherited = self.broker.inherited()
        if inherited:
            self.broker.drop_inherited({key for key in inherited if key[1] in self._listening_ports(key[0])})

    def _listening_ports(self, sandbox: str) -> set[int]:
        try:
            return listening_ports(read_tcp_tables(self.host(sandbox)))
        except (NamespaceError, OSError):
            return set()

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
            addresses = {n.local_address for n in state.networks.values() if n.local_address}
            if self.cluster is not None and (self.settings.host_address or addresses):
                self._peer_on(self.settings.host_address or sorted(addresses)[0])
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

    def _peer_on(self, address: str) -> None:
        """Listen for other hosts' routers on this host's swarm address (once it is known)."""
        assert self.cluster is not None
        if self.cluster.host_id == address and self.peering is not None:
            return
        if self.peering is not None:
            self._unregister_listening(self.peering)
            self.peering.close()
            self.peering = None
        self.cluster.host_id = address
        try:
            sock = socket.create_server((address, self.settings.graft_port), backlog=128)
        except OSError as exc:
            log.error("cannot listen for other hosts' routers on %s:%d: %s; cross-host connections stay on the "
                      "overlay", address, self.settings.graft_port, exc.strerror)
            return
        sock.setblocking(False)
        self.peering = sock
        self.selector.register(sock, selectors.EVENT_READ, "peering")
        log.info("listening for other hosts' routers on %s:%d", address, self.settings.graft_port)

    def _drop_sandbox(self, sandbox: str) -> None:
        sock = self.sandboxes.pop(sandbox)
        self._unregister_listening(sock)
        sock.close()
        for conn in [c for c in self.conns.values() if c.sandbox == sandbox]:
            self._close(conn)
        self.broker.forget_sandbox(sandbox)
        log.info("control socket of %s closed", sandbox)

    # The loop.

    def run(self) -> None:
        self.start()
        next_poll = next_check = 0.0
        while True:
            poll = NAMESPACE_POLL if self.wanted - set(self.sandboxes) else STATE_POLL
            deadlines = [d for d in (self.broker.next_deadline(), self._next_peering_deadline()) if d is not None]
            timeout = max(0.0, min([poll, *(d - time.monotonic() for d in deadlines)]))
            for key, events in self.selector.select(timeout):
                self._dispatch(key, events)
            self._send(self.broker.expire())
            self._expire_peering()
            if time.monotonic() >= next_poll:
                self._wake_resting()
                self.follow_state()
                self._reap_bridges()
                next_poll = time.monotonic() + poll
            if time.monotonic() >= next_check:
                self._check_inherited()
                self.broker.prune(live_sockets())  # records of connections and channels that ended
                self._save_listeners()  # again, in case the last write failed
                next_check = time.monotonic() + HOUSEKEEPING
            self._save_host_tcp_grafts()
            if self.broker.listeners_version != self.saved_listeners_version:
                self.saved_listeners_version = self.broker.listeners_version
                self._save_listeners()
                if self.cluster is not None:
                    self.cluster.publish(self.broker.published_listeners())

    def _accept_failed(self, sock: socket.socket, what: str, exc: OSError) -> None:
        """accept() failed for want of descriptors or memory: the socket rests a while, or the loop would spin on
        it; what waits in its backlog is accepted then."""
        key = self.selector.unregister(sock)
        self.resting[sock] = (time.monotonic() + ACCEPT_PAUSE, key.data)
        log.error("cannot accept %s: %s; trying again in %.0f s", what, exc.strerror or exc, ACCEPT_PAUSE)

    def _wake_resting(self) -> None:
        now = time.monotonic()
        for sock, (until, data) in list(self.resting.items()):
            if until <= now:
                del self.resting[sock]
                self.selector.register(sock, selectors.EVENT_READ, data)

    def _unregister_listening(self, sock: socket.socket) -> None:
        if self.resting.pop(sock, None) is None:
            self.selector.unregister(sock)

    def _dispatch(self, key: selectors.SelectorKey, events: int) -> None:
        data = key.data
        if data == "admin":
            self._serve_admin()
        elif data == "peering":
            self._accept_peer()
        elif isinstance(data, Dialling):
            self._dial_progress(data)
        elif isinstance(data, Inbound):
            self._read_preamble(data)
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
        except OSError as exc:
            self._accept_failed(listener, f"a control connection in {sandbox}", exc)
            return
        if self.conns_per_sandbox[sandbox] >= MAX_CONNS_PER_SANDBOX:
            log.warning("%s has %d control connections open: refusing more", sandbox, MAX_CONNS_PER_SANDBOX)
            sock.close()
            return
        sock.setblocking(False)
        control = Control(sock, sandbox)
        self.conns[sock] = control
        self.conns_per_sandbox[sandbox] += 1
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
        except OSError as exc:  # no descriptors or memory for a socket pair or rings: this request fails alone
            log.error("a request from %s failed: %s", control.sandbox, exc)
            self._close(control)

    def _handle(self, control: Control, msg: p.Message) -> list[Action]:
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

    def _send(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Dial):
                self._dial(action)
            elif isinstance(action, Bridge):
                self._start_bridge(action)
            elif isinstance(action, Offer):
                self._offer(action)
            else:
                self._reply(action)

    def _offer(self, offer: Offer) -> None:
        """Offer a channel to its listener, then answer the connector (broker.Offer)."""
        delivered = self._deliver_offer(offer.offer)
        carried, dropped = (offer.ready, offer.refused) if delivered else (offer.refused, offer.ready)
        for action in dropped:
            _discard(action)
        self._send(list(carried))

    def _deliver_offer(self, offer: Reply) -> bool:
        """Send a channel offer (closing its descriptors); False if the listener's queue is full or it is gone."""
        control = self.conns.get(offer.conn)  # type: ignore[call-overload]
        if control is None:
            for fd in offer.fds:
                os.close(fd)
            return False
        try:
            _transmit(control.sock, offer)
            return True
        except BlockingIOError:
            log.warning("the channel listener of %s is not accepting (its queue of offers is full): a channel to "
                        "it is refused", control.sandbox)
            return False
        except OSError as exc:
            log.warning("cannot offer a channel to a listener of %s: %s", control.sandbox, exc)
            self._close(control)
            return False
        finally:
            for fd in offer.fds:
                os.close(fd)

    def _reply(self, reply: Reply) -> None:
        control = self.conns.get(reply.conn)  # type: ignore[call-overload]
        try:
            if control is not None:
                _transmit(control.sock, reply)
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
        self.conns_per_sandbox[control.sandbox] -= 1
        if not self.conns_per_sandbox[control.sandbox]:
            del self.conns_per_sandbox[control.sandbox]
        self.selector.unregister(control.sock)
        self._send(self.broker.closed(control.sock))
        control.sock.close()

    # Other hosts' routers (peering.py).

    def _dial(self, dial: Dial) -> None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        except OSError as exc:
            log.warning("cannot dial %s: %s", dial.host, exc.strerror)
            self._dial_failed(dial)
            return
        try:
            # From this host's swarm address: the other router checks the dial comes from the client's host.
            if self.cluster is not None and self.cluster.host_id:
                sock.bind((self.cluster.host_id, 0))
            code = sock.connect_ex((dial.host, self.settings.graft_port))
        except OSError as exc:
            code = exc.errno or errno.EADDRNOTAVAIL
        if code not in (0, errno.EINPROGRESS):
            log.warning("cannot dial the router of %s: %s", dial.host, os.strerror(code))
            sock.close()
            self._dial_failed(dial)
            return
        # The other router waits graft_wait for its server's GRAFT before it answers.
        dialling = Dialling(dial, sock, time.monotonic() + self.settings.graft_wait + 1.0)
        self.dialling[sock] = dialling
        self.selector.register(sock, selectors.EVENT_WRITE, dialling)

    def _dial_progress(self, dialling: Dialling) -> None:
        sock, dial = dialling.sock, dialling.dial
        if not dialling.connected:
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                log.warning("cannot reach the router of %s: %s", dial.host, os.strerror(error))
                self._end_dial(dialling, accepted=False)
                return
            try:
                sock.send(dial.preamble.encode(self.token))  # a few hundred bytes into an empty buffer
            except OSError as exc:
                log.warning("the router of %s went away: %s", dial.host, exc.strerror)
                self._end_dial(dialling, accepted=False)
                return
            dialling.connected = True
            self.selector.modify(sock, selectors.EVENT_READ, dialling)
            return
        try:
            answer = sock.recv(1)
        except OSError:
            answer = b""
        self._end_dial(dialling, accepted=answer == peering.ACCEPTED)

    def _end_dial(self, dialling: Dialling, accepted: bool) -> None:
        sock, dial = dialling.sock, dialling.dial
        del self.dialling[sock]
        self.selector.unregister(sock)
        if not accepted:
            sock.close()
            self._dial_failed(dial)
            return
        sock.setblocking(True)
        if dial.bridge is not None:
            rdma = dial.preamble.kind == peering.Kind.CHANNEL_RDMA
            self._send([Bridge(dial.bridge, sock, rdma), dial.accepted])
            return
        self.broker.record_graft(dial.preamble.key, dial.sandbox, "", sock)
        dial.accepted.fds.append(sock.detach())
        log.debug("grafted %s:%d -> %s:%d (another host) over host TCP", *dial.preamble.key[1:])
        self._reply(dial.accepted)

    def _dial_failed(self, dial: Dial) -> None:
        for fd in dial.accepted.fds:
            os.close(fd)
        if dial.bridge is not None:
            dial.bridge.close()
        self.broker.overlay_decisions += 1
        self._reply(dial.failed)

    def _accept_peer(self) -> None:
        assert self.peering is not None
        try:
            sock, (source, _) = self.peering.accept()
        except (BlockingIOError, ConnectionAbortedError):
            return
        except OSError as exc:
            self._accept_failed(self.peering, "another host's router", exc)
            return
        if sum(1 for i in self.inbound.values() if i.source == source) >= MAX_INBOUND:
            log.warning("%s has %d connections without a preamble: refusing more", source, MAX_INBOUND)
            sock.close()
            return
        sock.setblocking(False)
        inbound = Inbound(sock, source, time.monotonic() + PREAMBLE_WAIT)
        self.inbound[sock] = inbound
        self.selector.register(sock, selectors.EVENT_READ, inbound)

    def _read_preamble(self, inbound: Inbound) -> None:
        sock = inbound.sock
        try:
            # Never more than the preamble: what follows is the application's and goes with the socket.
            chunk = sock.recv(peering.SIZE - len(inbound.buffer))
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop_inbound(inbound, "closed before its preamble")
            return
        inbound.buffer += chunk
        if len(inbound.buffer) < peering.SIZE:
            return
        try:
            preamble = peering.Preamble.decode(bytes(inbound.buffer), self.token)
        except p.ProtocolError as exc:
            self._drop_inbound(inbound, str(exc))
            return
        del self.inbound[sock]
        self.selector.unregister(sock)
        sock.setblocking(True)
        try:
            actions = self.broker.inbound(preamble, sock, inbound.source, unix_inodes)
        except OSError as exc:  # no memory or descriptors for a channel's rings
            log.error("cannot take a connection from %s: %s", inbound.source, exc)
            sock.close()
            return
        self._send(actions)

    def _drop_inbound(self, inbound: Inbound, why: str) -> None:
        log.warning("dropping a connection from %s: %s", inbound.source, why)
        del self.inbound[inbound.sock]
        self.selector.unregister(inbound.sock)
        inbound.sock.close()

    def _next_peering_deadline(self) -> float | None:
        return min([d.deadline for d in self.dialling.values()] + [i.deadline for i in self.inbound.values()],
                   default=None)

    def _expire_peering(self) -> None:
        now = time.monotonic()
        for dialling in [d for d in self.dialling.values() if d.deadline <= now]:
            log.info("the router of %s did not accept in time: overlay", dialling.dial.host)
            self._end_dial(dialling, accepted=False)
        for inbound in [i for i in self.inbound.values() if i.deadline <= now]:
            self._drop_inbound(inbound, "no preamble in time")

    def _start_bridge(self, bridge: Bridge) -> None:
        """A process of its own moves the channel (it outlives a router restart); our copies are closed."""
        if bridge.accept:
            try:
                bridge.sock.send(peering.ACCEPTED)
            except OSError as exc:
                log.warning("the other host's router went away before its channel was accepted: %s", exc)
                _discard(bridge)
                return
        fds = [*dataclasses.astuple(bridge.fds), bridge.sock.fileno()]
        program = "freeflow.router.rdma_bridge" if bridge.rdma else "freeflow.router.tcp_bridge"
        try:
            self.bridges.append(subprocess.Popen(
                [sys.executable, "-m", program, *map(str, fds)], pass_fds=fds,
                start_new_session=True, env={**os.environ, "FREEFLOW_LOG_LEVEL": self.settings.log_level,
                                              "FREEFLOW_BRIDGE_TIMEOUT": str(self.settings.bridge_timeout)}))
        except OSError as exc:
            log.error("cannot start a channel bridge: %s", exc)
        finally:
            bridge.fds.close()
            bridge.sock.close()

    def _reap_bridges(self) -> None:
        self.bridges = [b for b in self.bridges if b.poll() is None]

    # Admin socket: one JSON request per connection.

    def _serve_admin(self) -> None:
        assert self.admin is not None
        try:
            conn, _ = self.admin.accept()
        except BlockingIOError:
            return
        except OSError as exc:
            self._accept_failed(self.admin, "an admin request", exc)
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
