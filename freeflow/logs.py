"""Logging of every FreeFlow process: records below WARNING on stdout, WARNING and above on stderr.

Inside the managed plugin, dockerd logs what a plugin writes on stdout at level info and what it writes on
stderr at level error, so the split keeps an operator's `level=error` alerts for real problems.
"""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def setup(level: str, fmt: str = FORMAT) -> None:
    """Configure the root logger once for this process, at `level` (a name such as INFO)."""
    formatter = logging.Formatter(fmt)
    quiet = logging.StreamHandler(sys.stdout)
    quiet.addFilter(_BelowWarning())
    loud = logging.StreamHandler(sys.stderr)
    loud.setLevel(logging.WARNING)
    for handler in (quiet, loud):
        handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[quiet, loud])
