"""The file that tells a restarted router which of its grafts onto host TCP are still open: their sockets have
no name to find them by, unlike the socket pairs of one host.

Each graft is one JSON line, appended when the graft is made, so a new connection costs one write however many
are open. When ended grafts are forgotten, the file is rewritten with those still open, in one step (a new file
renamed over the old). A line that a crash cut short is skipped when the file is read back. A file that
went away or was replaced under the router is written afresh, as is one a write failed on (retried every
RETRY_AFTER seconds, so a full disk costs one attempt now and then, not one every turn).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

from freeflow.router.kept_files import replace_file

log = logging.getLogger(__name__)

RETRY_AFTER = 5.0


class GraftJournal:
    """Appends and rewrites the file at `path`; `legacy` is the one JSON list that earlier routers wrote
    instead, read back once and removed by the first rewrite. A full or read-only disk costs a warning, not
    the router."""

    def __init__(self, path: Path, legacy: Path | None = None) -> None:
        self.path = path
        self.legacy = legacy
        self._fd: int | None = None
        self.damaged = False  # the file may miss entries or end in a part line until rewritten
        self._retry_at = 0.0

    def needs_rewrite(self) -> bool:
        """Whether the file is damaged and the time to try writing it afresh has come."""
        return self.damaged and time.monotonic() >= self._retry_at

    def append(self, entries: Iterable[object]) -> None:
        data = "".join(json.dumps(entry) + "\n" for entry in entries).encode()
        if not data:
            return
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            elif not self._still_there():
                log.warning("%s was removed or replaced: writing it afresh", self.path)
                self.close()
                self.damaged = True
                return
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            self._failed(exc)

    def rewrite(self, entries: Iterable[object]) -> None:
        """Replace the file with `entries` only."""
        self.close()
        try:
            replace_file(self.path, "".join(json.dumps(entry) + "\n" for entry in entries).encode())
            if self.legacy is not None:
                self.legacy.unlink(missing_ok=True)
        except OSError as exc:
            self._failed(exc)
            return
        self.damaged = False

    def load(self) -> list[object]:
        """Every entry the file holds, with what a legacy file holds; lines that are not JSON are skipped
        (a warning counts them)."""
        entries: list[object] = []
        skipped = 0
        if self.legacy is not None:
            legacy = _read(self.legacy)
            try:
                value = json.loads(legacy) if legacy else []
            except ValueError:
                value, skipped = [], 1
            entries.extend(value if isinstance(value, list) else [])
        for line in _read(self.path).splitlines():
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except ValueError:
                skipped += 1
        if skipped:
            log.warning("%s: skipped %d lines that are not JSON (cut short by a crash?)", self.path, skipped)
        return entries

    def _still_there(self) -> bool:
        """Whether the file this journal appends to is still the one at its path."""
        assert self._fd is not None
        try:
            return os.path.samestat(os.fstat(self._fd), os.stat(self.path))
        except FileNotFoundError:
            return False

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _failed(self, exc: OSError) -> None:
        """Warn once until a rewrite succeeds; the caller rewrites the file when needs_rewrite() says so."""
        self.close()
        self._retry_at = time.monotonic() + RETRY_AFTER
        if not self.damaged:
            log.warning("cannot write %s: %s; a restarted router will not list every graft onto host TCP",
                        self.path, exc.strerror)
        self.damaged = True


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8
        log.warning("ignoring %s: %s", path, exc)
        return ""
