"""``geodiffloc`` command: subcommands are registered by small modules in this package.

Each command module defines ``add_parser(subparsers)`` which adds its subparser and
sets ``func`` (a callable taking the parsed namespace and returning an exit code).
Modules are imported only to build the parser; their heavy imports happen in ``func``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import pickle
import sys

from .._interrupt import Interrupted, handle_signals
from .._version import __version__
from ._help import HelpFormatter, examples

#: Set to 1 to get Python tracebacks instead of one-line errors.
DEBUG_ENV = "GEODIFFLOC_DEBUG"

#: Errors that mean "the input or the environment is wrong", not "geodiffloc is wrong".
EXPECTED: tuple[type[BaseException], ...] = (
    ValueError, OSError, MemoryError, pickle.UnpicklingError, FloatingPointError,
)

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


def _check_utf8(argv: list[str]) -> None:
    """Arguments that are not UTF-8 (``surrogateescape``-decoded bytes) are refused here."""
    for i, a in enumerate(argv):
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            shown = a.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
            raise ValueError(
                f"argument {i + 1} ({shown!r}) is not valid UTF-8 text; re-encode it as UTF-8 "
                "(e.g. iconv -f latin1 -t utf-8) or set a UTF-8 locale."
            ) from None


def _describe(err: BaseException) -> tuple[str, int]:
    """(one-line message, exit code) for an error; exit 2 for expected errors, 1 for bugs."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        where = f" writing {err.filename}" if err.filename else ""
        msg = f"no space left on the device{where}; free some space or choose another folder."
        return msg, 2
    if isinstance(err, OSError) and not str(err).strip():
        return f"{type(err).__name__} on {err.filename}", 2
    if isinstance(err, OSError) and err.strerror and err.filename and str(err).startswith("["):
        return f"{err.strerror}: {err.filename}", 2
    if isinstance(err, MemoryError) and not isinstance(err, ValueError):  # a real OOM
        return (f"out of memory{': ' + str(err) if str(err) else ''}; use a coarser "
                "--resolution, fewer --samples or fewer inputs per run.", 2)
    if isinstance(err, EXPECTED) or type(err).__name__ in ("OutOfMemoryError",
                                                           "UnpicklingError"):
        return str(err) or type(err).__name__, 2
    return (f"unexpected {type(err).__name__}: {err} (this is a bug in geodiffloc; rerun with "
            f"{DEBUG_ENV}=1 to see the traceback and please report it)", 1)


def main(argv: list[str] | None = None) -> int:
    """Run the ``geodiffloc`` command; returns the exit status.

    Expected errors (bad input, missing or unwritable files, no memory or disk space)
    print one line on stderr and return 2; SIGINT / SIGTERM stop the run cleanly and
    return 130 / 143; anything else is a bug: one line, status 1 (set
    ``GEODIFFLOC_DEBUG=1`` for the traceback).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    with handle_signals():
        try:
            _check_utf8(argv)
            return int(args.func(args) or 0)
        except Interrupted as stop:
            print(f"geodiffloc {args.command}: interrupted by {stop.name} while "
                  f"{stop.during}; temporary files were removed and no partial outputs "
                  "were left.", file=sys.stderr)
            return stop.exit_code
        except Exception as err:
            if debug:
                raise
            msg, code = _describe(err)
            print(f"geodiffloc {args.command}: error: {' '.join(msg.split())}", file=sys.stderr)
            return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
