"""Runs a Python program accelerated, as `python3` would run it: inside a container,
`PYTHONPATH=/run/freeflow/python python3 -m freeflow.client.run app.py [args]` (or `-m module [args]`).
"""

from __future__ import annotations

import os
import runpy
import sys

from freeflow.client import install

USAGE = "usage: python3 -m freeflow.client.run (script.py | -m module) [args...]"


def main(argv: list[str]) -> None:
    if not argv or argv[0] in ("-h", "--help") or argv == ["-m"]:
        sys.exit(USAGE)
    install()
    if argv[0] == "-m":
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
