"""``geodiffloc`` command: subcommands are registered by small modules in this package.

Each command module defines ``add_parser(subparsers)`` which adds its subparser and
sets ``func`` (a callable taking the parsed namespace and returning an exit code).
Modules are imported only to build the parser; their heavy imports happen in ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .._version import __version__
from ._help import HelpFormatter, examples

COMMAND_MODULES: list[str] = [
    "geodiffloc.cli.evaluate_cmd",
    "geodiffloc.cli.geo_cmd",
    "geodiffloc.cli.locate_cmd",
    "geodiffloc.cli.train_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geodiffloc",
        description="Worldwide image geolocalization with GIS-ready outputs "
        "(GeoTIFF probability rasters, GeoPackages, per-polygon probabilities).",
    )
    parser.add_argument("--version", action="version", version=f"geodiffloc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    versions = sub.add_parser(
        "versions", help="print versions of geodiffloc and dependencies",
        formatter_class=HelpFormatter,
        epilog=examples("geodiffloc versions", "geodiffloc versions > versions.txt"),
    )
    versions.set_defaults(func=_versions)
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def _versions(args: argparse.Namespace) -> int:
    from ..show_versions import show_versions

    show_versions()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"geodiffloc {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
