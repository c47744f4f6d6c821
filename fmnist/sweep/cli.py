"""`python -m fmnist.sweep run|report|certs`: run a grid of experiments on Dask, then collect them and pick a point."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from fmnist.sweep import clusters, driver, report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fmnist.sweep", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help=driver.__doc__.splitlines()[0])
    driver.add_arguments(run)
    summary = commands.add_parser("report", help="pull the experiments; mean ± std over seeds per point; the pick")
    where = summary.add_mutually_exclusive_group()
    where.add_argument(
        "--output",
        type=Path,
        default=report.DEFAULT_OUTPUT,
        help=f"directory of the report (default: {report.DEFAULT_OUTPUT}, git-ignored)",
    )
    where.add_argument(
        "--publish",
        dest="output",
        action="store_const",
        const=report.PUBLISHED_OUTPUT,
        help=f"write the committed report, {report.PUBLISHED_OUTPUT} (the same as --output {report.PUBLISHED_OUTPUT})",
    )
    summary.add_argument("--rev", default="HEAD", help="the commit the experiments were run from (default: HEAD)")
    summary.add_argument("--git-remote", default="origin", help="pull experiments from it (default: origin)")
    certs = commands.add_parser(
        "certs", help="a CA for one Dask cluster and its scheduler, worker, client certificates"
    )
    clusters.add_certs_arguments(certs)
    args = parser.parse_args(argv)
    if args.command == "certs":
        return clusters.certs_main(args)
    return driver.main(args) if args.command == "run" else report.report(args)
