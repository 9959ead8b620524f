"""`freeflow lab up|down|status|exec`: the command line of the lab; freeflow/cli.py adds it as a subcommand."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from freeflow.lab.layout import MAX_HOSTS


def _up(args: argparse.Namespace) -> int:
    from freeflow.lab.lifecycle import up

    up(args.hosts, plugin_dir=args.plugin_dir, scope=args.plugin_scope)
    return 0


def _down(args: argparse.Namespace) -> int:
    from freeflow.lab.lifecycle import down

    down()
    return 0


def _status(args: argparse.Namespace) -> int:
    from freeflow.lab.lifecycle import status

    found = status()
    if args.json:
        print(json.dumps([asdict(host) for host in found], indent=1))
    elif not found:
        print("no lab is up")
    else:
        print(f"{'host':<5} {'address':<11} {'dockerd':<16} {'swarm':<9} {'plugin':<9} DOCKER_HOST")
        for host in found:
            dockerd = f"{host.pid} running" if host.running else f"{host.pid} stopped"
            print(f"{host.name:<5} {host.address:<11} {dockerd:<16} {host.swarm:<9} {host.plugin:<9} "
                  f"{host.docker_host}")
    return 0


def _kill(args: argparse.Namespace) -> int:
    from freeflow.lab.lifecycle import kill_host

    kill_host(args.host)
    return 0


def _start(args: argparse.Namespace) -> int:
    from freeflow.lab.lifecycle import start_host

    start_host(args.host)
    return 0


def _exec(args: argparse.Namespace) -> int:
    from freeflow.lab.lifecycle import exec_command

    argv, env = exec_command(args.host, args.command)
    os.execvpe(argv[0], argv, env)


def add_lab_parser(sub: Any) -> None:
    """Add `lab` and its subcommands to the `freeflow` parser's subparsers `sub`."""
    lab = sub.add_parser("lab", help="several Docker hosts on this machine, in one swarm, with the plugin",
                         description="A lab of Docker hosts on this machine: one dockerd per network namespace "
                                     "(h1..hN at 10.99.0.N), joined in a swarm, each with the freeflow plugin.")
    commands = lab.add_subparsers(dest="lab_command", required=True)
    up = commands.add_parser("up", help="start the hosts, join them in a swarm, load images, install the plugin")
    up.add_argument("--hosts", type=int, default=2, help=f"number of hosts, 1 to {MAX_HOSTS} (default 2)")
    up.add_argument("--plugin-dir", type=Path, default=None,
                    help="plugin build folder with config.json and rootfs/ (default: the project's build/plugin)")
    up.add_argument("--plugin-scope", choices=("local", "global"), default="local",
                    help="FREEFLOW_SCOPE of the plugin on every host (default local)")
    up.set_defaults(run=_up)
    commands.add_parser("down", help="remove the lab and everything it made").set_defaults(run=_down)
    status = commands.add_parser("status", help="list the hosts and how they are doing")
    status.add_argument("--json", action="store_true", help="print the hosts as JSON")
    status.set_defaults(run=_status)
    kill = commands.add_parser("kill",
                               help="SIGKILL every process of a host (dockerd, plugin, containers): a lost host")
    kill.add_argument("host", help="h1, h2, ...")
    kill.set_defaults(run=_kill)
    start = commands.add_parser("start", help="start a killed host's dockerd again; it rejoins the swarm")
    start.add_argument("host", help="h1, h2, ...")
    start.set_defaults(run=_start)
    on_host = commands.add_parser("exec", help="run a command on a host (DOCKER_HOST set, in its namespaces)",
                              description="Run COMMAND in host HOST's mount, UTS and network namespaces with "
                                          "DOCKER_HOST aimed at its dockerd; with no COMMAND, a shell.")
    on_host.add_argument("host", help="h1, h2, ...")
    on_host.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    on_host.set_defaults(run=_exec)
