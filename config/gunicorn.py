"""gunicorn options of the plugin: one worker (the driver's state lives in its memory) with threads whose
client connections time out (plugin/http_worker.py)."""

from __future__ import annotations

from typing import Any

from freeflow.config.settings import Settings


def gunicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "bind": [f"unix:{path}" for path in (settings.socket, settings.alias_socket) if path],
        "workers": 1,
        "worker_class": "freeflow.plugin.http_worker.BoundedThreadWorker",
        "threads": 16,  # a few slow clients (each cut off after CLIENT_TIMEOUT) leave threads for dockerd
        # dockerd waits up to 30 s per call; a worker whose main loop hangs is better killed before that.
        "timeout": 25,
        "graceful_timeout": 5,
        "loglevel": settings.log_level.lower(),
        "accesslog": "-" if settings.log_level == "DEBUG" else None,
        "errorlog": "-",
        "logger_class": "freeflow.plugin.http_worker.RootLogger",
    }
