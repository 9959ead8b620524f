"""The `freeflow` command: `plugin` serves the driver, `router` runs the router, `status` shows it, `bench` measures."""

from __future__ import annotations

import argparse
import sys

from freeflow import logs
from freeflow.config.settings import SETTINGS, load_settings
from freeflow.errors import FreeFlowError
from freeflow.lab.cli import add_lab_parser


def _plugin(args: argparse.Namespace) -> int:
    from freeflow.plugin.server import serve

    settings = load_settings()
    logs.setup(settings.log_level)
    serve(settings)
    return 0


def _router(args: argparse.Namespace) -> int:
    from freeflow.router.server import Router

    settings = load_settings()
    logs.setup(settings.log_level)
    Router(settings).run()
    return 0


def _orchestrator(args: argparse.Namespace) -> int:
    from freeflow.orchestrator.server import serve

    settings = load_settings()
    logs.setup(settings.log_level)
    serve(settings)
    return 0


def _status(args: argparse.Namespace) -> int:
    from freeflow.router.admin import print_status

    return print_status(load_settings(), as_json=args.json)


def _protocol_header(args: argparse.Namespace) -> int:
    from freeflow.router.protocol import c_header

    sys.stdout.write(c_header())
    return 0


def _settings(args: argparse.Namespace) -> int:
    print("| variable | default | meaning |\n|---|---|---|")
    for setting in SETTINGS:
        print(f"| `{setting.env}` | `{setting.default}` | {setting.help} |")
    return 0


def _bench(args: argparse.Namespace) -> int:
    if args.orchestrator:
        from freeflow.bench.orchestrator_load import print_orchestrator_load, run_orchestrator_load

        print_orchestrator_load(run_orchestrator_load(hosts=args.load_hosts, per_host=args.load_endpoints,
                                                      store=args.store))
        return 0
    from freeflow.bench.run import run_bench

    return run_bench(short=args.short, out_dir=args.out, repeat=args.repeat, hosts=args.hosts,
                     existing_lab=args.existing_lab)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="freeflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plugin", help="serve the Docker network driver on its unix socket").set_defaults(run=_plugin)
    sub.add_parser("router", help="run the per-host router (the plugin starts one itself)").set_defaults(
        run=_router)
    sub.add_parser("orchestrator", help="serve the cluster directory (a swarm service)").set_defaults(
        run=_orchestrator)
    status = sub.add_parser("status", help="containers, endpoints and connections with their paths")
    status.add_argument("--json", action="store_true", help="print the router's raw answer")
    status.set_defaults(run=_status)
    sub.add_parser("protocol-header", help="print the C header of the router's control protocol").set_defaults(
        run=_protocol_header)
    sub.add_parser("settings", help="print every setting as a Markdown table").set_defaults(run=_settings)
    bench = sub.add_parser("bench", help="compare freeflow with Docker's networks on this host or across hosts")
    bench.add_argument("--short", action="store_true", help="one quick run of each path (for tests)")
    bench.add_argument("--hosts", action="store_true",
                       help="the cross-host rows, between lab hosts h1 and h2: the lab that is up (global scope), "
                            "or a 2-host lab brought up for the run and taken down after it")
    bench.add_argument("--existing-lab", action="store_true",
                       help="with --hosts: use the lab that is up, and fail if none is (never bring one up)")
    bench.add_argument("--orchestrator", action="store_true",
                       help="instead: load an orchestrator on loopback with simulated routers (lookups, watchers)")
    bench.add_argument("--load-hosts", type=int, default=100, help="with --orchestrator: simulated hosts")
    bench.add_argument("--load-endpoints", type=int, default=100, help="with --orchestrator: endpoints per host")
    bench.add_argument("--store", default="sqlite",
                       help="with --orchestrator: FREEFLOW_ORCHESTRATOR_STORE (sqlite, or a running etcd://HOST:PORT)")
    bench.add_argument("--repeat", type=int, default=5, help="runs per path; the median is reported")
    bench.add_argument("--out", default="bench-results", help="folder for the CSV and the PNG plot")
    bench.set_defaults(run=_bench)
    add_lab_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except FreeFlowError as exc:
        print(f"freeflow: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
