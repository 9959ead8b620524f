"""Files a router keeps for the next one (its listeners, the key of its pair names), each written in one
step: a new file, flushed to disk, renamed over the old one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def replace_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Put `data` at `path` in one step (a new file renamed over the old one); raises OSError."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())  # a power cut must not leave an empty file renamed over the last one
    os.replace(tmp, path)


class KeptJson:
    """A JSON file the router rewrites whenever its value changes, and the next router reads back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._saved: object = KeptJson  # nothing written yet

    def save(self, value: object) -> None:
        """Write `value` if it changed; a full or read-only disk costs a warning, not the router."""
        if value == self._saved:
            return
        try:
            replace_file(self.path, json.dumps(value).encode())
        except OSError as exc:
            log.warning("cannot write %s: %s; a restarted router will not know what it holds", self.path,
                        exc.strerror)
            return
        self._saved = value

    def load(self) -> object | None:
        """What an earlier router saved; None when nothing was, or the file is unreadable (a warning)."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.path, exc)
            return None
