"""Runs the external commands the lab is made with (ip, iptables, docker) and turns failures into CommandError."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

from freeflow.lab.errors import CommandError


def run(argv: Sequence[str], *, timeout: float = 60, env: Mapping[str, str] | None = None) -> str:
    """Run `argv`; return its output without the trailing newline. Raises CommandError with its error output."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise CommandError(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from None
    except FileNotFoundError:
        raise CommandError(f"`{argv[0]}` is not installed") from None
    if done.returncode != 0:
        raise CommandError(f"`{' '.join(argv)}` failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout.rstrip("\n")


def succeeds(argv: Sequence[str], *, timeout: float = 30) -> bool:
    """Whether `argv` exits with 0 (its output is discarded)."""
    try:
        done = subprocess.run(list(argv), capture_output=True, timeout=timeout)
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return False
    return done.returncode == 0
