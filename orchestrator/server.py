"""Runs the orchestrator: the directory in the store the settings choose (SQLite or etcd) behind the API,
served by gunicorn.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from freeflow.config.settings import Settings
from freeflow.errors import SettingsError
from freeflow.orchestrator.app import create_app, watch_slots_for
from freeflow.orchestrator.directory import open_directory

log = logging.getLogger(__name__)


def read_token(settings: Settings) -> str:
    try:
        token = Path(settings.orchestrator_token_file).read_text().strip()
    except OSError as exc:
        raise SettingsError(f"FREEFLOW_ORCHESTRATOR_TOKEN_FILE: cannot read {settings.orchestrator_token_file}: "
                            f"{exc.strerror}") from None
    if len(token) < 16:
        raise SettingsError(f"the token in {settings.orchestrator_token_file} is shorter than 16 characters")
    return token


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, token: str) -> None:
        self.settings = settings
        self.token = token
        super().__init__()

    def load_config(self) -> None:
        # One worker: the directory's watch wake-ups live in its memory; threads serve the long polls.
        for key, value in {"bind": self.settings.orchestrator_bind, "workers": 1, "worker_class": "gthread",
                           "threads": self.settings.orchestrator_threads, "timeout": 60,
                           "loglevel": self.settings.log_level.lower()}.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return create_app(open_directory(self.settings), self.token, self.settings.lease_ttl,
                          max_watchers=watch_slots_for(self.settings.orchestrator_threads))


def serve(settings: Settings) -> None:
    token = read_token(settings)
    log.info("orchestrator on %s", settings.orchestrator_bind)
    _Gunicorn(settings, token).run()
