"""Runs the driver: loads the state, serves the protocol with gunicorn and keeps the kernel reconciled."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from freeflow.config.gunicorn import gunicorn_options
from freeflow.config.settings import Settings
from freeflow.errors import SettingsError
from freeflow.orchestrator.client import OrchestratorClient
from freeflow.orchestrator.server import read_token
from freeflow.plugin.app import create_app
from freeflow.plugin.cluster import ClusterSync
from freeflow.plugin.driver import Driver
from freeflow.plugin.kernel import HostKernel
from freeflow.plugin.store import Store
from freeflow.router.supervisor import RouterSupervisor

log = logging.getLogger(__name__)


def _reconcile_forever(driver: Driver, interval: float, stop: threading.Event) -> None:
    """Repair the kernel now (start-up) and then every `interval` seconds; never dies of an error."""
    while True:
        try:
            driver.reconcile()
        except Exception:
            log.exception("reconcile failed; retrying in %.0f s", interval)
        if stop.wait(interval):
            return


def build_app(settings: Settings, stop: threading.Event | None = None) -> Flask:
    driver = Driver(Store(settings.state_dir), HostKernel(settings.host_root), scope=settings.scope,
                    host_address=settings.host_address)
    log.info("freeflow plugin: scope %s, %d networks and %d endpoints in %s", settings.scope,
             len(driver.state.networks), len(driver.state.endpoints), settings.state_dir)
    thread = threading.Thread(target=_reconcile_forever, name="reconcile", daemon=True,
                              args=(driver, settings.reconcile_interval, stop or threading.Event()))
    thread.start()
    if settings.scope == "global" and settings.orchestrator_url:
        client = OrchestratorClient(settings.orchestrator_url, read_token(settings))
        ClusterSync(driver, client, "", settings.lease_ttl / 3).start()
    return create_app(driver)


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return build_app(self.settings)


def serve(settings: Settings) -> None:
    """Serve on `settings.socket` until stopped."""
    os.makedirs(os.path.dirname(settings.socket), exist_ok=True)
    supervisor = RouterSupervisor() if settings.router else None
    if settings.alias_socket and not os.path.isdir(os.path.dirname(settings.alias_socket)):
        raise SettingsError(f"FREEFLOW_ALIAS_SOCKET: folder {os.path.dirname(settings.alias_socket)} is missing")
    if supervisor is not None:
        supervisor.start()
    try:
        _Gunicorn(settings).run()
    finally:
        if supervisor is not None:
            supervisor.stop()
