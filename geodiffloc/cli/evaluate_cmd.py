"""``geodiffloc evaluate``: geolocation metrics of a predictions file against the truth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._help import examples

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
Join PREDICTIONS and TRUTH on an id column and report the share of predictions within
1, 25, 200, 750 and 2500 km (inclusive), the median and mean error and the mean GeoScore.
Files: CSV with lat/lon (or LAT/LON) columns, GeoPackage or any vector file of points,
GeoParquet. Errors are WGS84 geodesic distances unless --method haversine.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand."""
    p = subparsers.add_parser(
        "evaluate",
        help="accuracy at 1/25/200/750/2500 km, median error, GeoScore of predictions",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples(
            "geodiffloc evaluate out/predictions.gpkg truth.csv --id-column query",
            "geodiffloc evaluate preds.csv truth.csv --by continent -o accuracy.md",
            "geodiffloc evaluate preds.parquet truth.gpkg --plot errors.png --intersection",
        ),
    )
    p.add_argument("predictions", type=Path, help="predicted locations (CSV/GPKG/GeoParquet)")
    p.add_argument("truth", type=Path, help="true locations (CSV/GPKG/GeoParquet)")
    p.add_argument("--id-column", default="id", help="column joining the two files (default: id)")
    p.add_argument(
        "--thresholds", type=float, nargs="+", default=None, metavar="KM",
        help="accuracy thresholds in km (default: 1 25 200 750 2500)",
    )
    p.add_argument(
        "--method", choices=("geodesic", "haversine"), default="geodesic",
        help="distance: WGS84 geodesic (default) or great circle on the mean sphere",
    )
    p.add_argument(
        "--by", default=None, metavar="GROUP",
        help="also break down by 'continent' or 'country' of the true location "
        "(Natural Earth, needs geodiffloc[data]); other Natural Earth columns work too",
    )
    p.add_argument(
        "--intersection", action="store_true",
        help="evaluate the ids present in both files instead of failing on missing ids",
    )
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="write the table to this .csv or .md file")
    p.add_argument("--plot", type=Path, default=None,
                   help="write an error-distribution plot (.png/.svg/.pdf)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)
    return p


def _check_outputs(args: argparse.Namespace) -> None:
    """Fail before the (possibly slow) work if an output cannot be written."""
    from .._io import check_writable

    if args.output is not None and args.output.suffix.lower() not in (".csv", ".md", ".markdown"):
        raise ValueError(f"--output must end in .csv or .md; got {args.output.name!r}.")
    if args.plot is not None and args.plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ValueError(f"--plot must end in .png, .svg or .pdf; got {args.plot.name!r}.")
    for path in (args.output, args.plot):
        if path is not None:
            check_writable(path, args.overwrite)


def join_on_ids(
    pred: Any, truth: Any, *, intersection: bool = False,
    names: tuple[str, str] = ("predictions", "truth"),
) -> Any:
    """Rows of ``pred`` and ``truth`` (from ``read_locations``) matched on ``id``.

    Raises ValueError naming the missing ids on either side unless ``intersection``.
    """
    only_pred = sorted(set(pred["id"]) - set(truth["id"]))
    only_truth = sorted(set(truth["id"]) - set(pred["id"]))
    if (only_pred or only_truth) and not intersection:
        parts = []
        if only_truth:
            parts.append(f"{len(only_truth)} id(s) of {names[1]} have no prediction "
                         f"(e.g. {', '.join(map(repr, only_truth[:5]))})")
        if only_pred:
            parts.append(f"{len(only_pred)} id(s) of {names[0]} are not in {names[1]} "
                         f"(e.g. {', '.join(map(repr, only_pred[:5]))})")
        raise ValueError(
            f"the files do not hold the same ids ({len(pred)} predictions, {len(truth)} "
            f"truths): {'; '.join(parts)}. Fix the id column or pass --intersection."
        )
    joined = truth.merge(pred, on="id", how="inner", suffixes=("_true", "_pred"))
    if len(joined) == 0:
        raise ValueError(f"no id is shared by {names[0]} and {names[1]}; check --id-column.")
    return joined


def run(args: argparse.Namespace) -> int:
    """Run ``evaluate``; returns the exit code."""
    import pandas as pd

    from .. import metrics

    thresholds = metrics.check_thresholds(
        args.thresholds if args.thresholds is not None else metrics.DEFAULT_THRESHOLDS_KM
    )
    _check_outputs(args)
    pred = metrics.read_locations(args.predictions, args.id_column)
    truth = metrics.read_locations(args.truth, args.id_column)
    joined = join_on_ids(pred, truth, intersection=args.intersection,
                         names=(str(args.predictions), str(args.truth)))
    dropped = max(len(pred), len(truth)) - len(joined)
    if dropped:
        print(f"note: {dropped} unmatched row(s) left out (--intersection)", file=sys.stderr)
    p_ll = joined[["lat_pred", "lon_pred"]].to_numpy()
    t_ll = joined[["lat_true", "lon_true"]].to_numpy()
    errors = metrics.paired_errors_km(p_ll, t_ll, method=args.method)

    table = pd.DataFrame([metrics.summarize_errors(errors, thresholds, args.method)],
                         index=pd.Index(["all"], name="group"))
    if args.by:
        per = metrics.breakdown(p_ll, t_ll, by=args.by, thresholds=thresholds,
                                method=args.method)
        per.index.name = "group"
        table = pd.concat([table, per])
    print(metrics.format_markdown(table), end="")
    if args.output is not None:
        metrics.write_table(table, args.output, overwrite=args.overwrite)
        print(f"wrote {args.output}", file=sys.stderr)
    if args.plot is not None:
        title = f"{args.predictions.name} vs {args.truth.name} ({args.method}, n={len(errors)})"
        metrics.plot_errors(errors, thresholds, args.plot, title=title,
                            overwrite=args.overwrite)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
