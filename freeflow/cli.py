"""The `freeflow` command: `plugin` serves the driver, `bench` measures, `settings` lists the settings."""

from __future__ import annotations

import argparse
import logging
import sys

from freeflow.config.settings import SETTINGS, load_settings
from freeflow.errors import FreeFlowError


def _plugin(args: argparse.Namespace) -> int:
    from freeflow.plugin.server import serve

    settings = load_settings()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(settings)
    return 0


def _settings(args: argparse.Namespace) -> int:
    print("| variable | default | meaning |\n|---|---|---|")
    for setting in SETTINGS:
        print(f"| `{setting.env}` | `{setting.default}` | {setting.help} |")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from freeflow.bench.run import run_bench

    return run_bench(short=args.short, out_dir=args.out, repeat=args.repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="freeflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("plugin", help="serve the Docker network driver on its unix socket").set_defaults(run=_plugin)
    sub.add_parser("settings", help="print every setting as a Markdown table").set_defaults(run=_settings)
    bench = sub.add_parser("bench", help="compare freeflow with Docker's networks on this host")
    bench.add_argument("--short", action="store_true", help="one quick run of each path (for tests)")
    bench.add_argument("--repeat", type=int, default=5, help="runs per path; the median is reported")
    bench.add_argument("--out", default="bench-results", help="folder for the CSV and the PNG plot")
    bench.set_defaults(run=_bench)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except FreeFlowError as exc:
        print(f"freeflow: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
