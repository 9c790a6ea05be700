"""``geodiffloc locate``: geolocate descriptions (or images) and write GIS-ready files.

Examples::

    geodiffloc locate -o out/                      # the built-in example descriptions
    geodiffloc locate "a fishing harbour in northern Norway" "Kyoto temple" -o out/
    geodiffloc locate photos/*.jpg --model my_locdiff.safetensors -o out/
    geodiffloc locate captions.parquet --column caption -o out/       # a batch run
    geodiffloc locate photos/ --model geoclip-official --fields -o out/

Without ``--model`` the built-in place-description geolocator is used; it is trained
once on first use (a few minutes on a CPU, offline) and cached. A folder, a ``.txt``
file or a table as the one input (or ``--batch``) makes it a batch run
(:func:`geodiffloc.pipeline.locate_batch`): streamed GeoParquet parts, a Zarr cube,
resumable, on Dask.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._help import HelpFormatter, examples, paragraph


def add_parser(subparsers: Any) -> None:
    """Register the ``locate`` subcommand."""
    p = subparsers.add_parser(
        "locate",
        help="geolocate place descriptions or images; write GeoTIFF, GeoPackage, map, "
        "per-country CSV",
        description=paragraph(
            "Geolocate inputs with any model (--model) and write predictions.gpkg (points), "
            "probability.tif (COG, one band per input, density per km²) with its QGIS "
            "style probability.qml, map.png and countries.csv (per-country probabilities) "
            "to OUT_DIR. Without --model the built-in offline place-description model is "
            "used (trained and cached on first use). One folder, .txt file or table as the "
            "input makes a batch run (streamed GeoParquet parts, resumable, on Dask; see "
            "'batch runs' below). Results go to stdout, progress to stderr."),
        formatter_class=HelpFormatter,
        epilog=examples(
            'geodiffloc locate "a fishing harbour in northern Norway" "Kyoto temple" -o out/',
            "geodiffloc locate captions.parquet --column caption -o out/ --workers 2",
            "geodiffloc locate photos/ --model geoclip-official --backbone ViT-L-14.pt "
            "--fields -o out/",
        ),
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="place descriptions (or image paths with an image model); or ONE "
                   "folder of images, .txt file (one description per line) or table (.csv, "
                   ".parquet, .geoparquet) for a batch run; default: a few built-in examples")
    p.add_argument("-o", "--out-dir", type=Path, required=True, dest="out_dir",
                   help="output folder (created if missing)")
    p.add_argument("--model", default=None,
                   help="'default' (the built-in model), a LocDiff, GeoCLIP or G3 checkpoint "
                   "(.safetensors), or one of locdiff, geoclip-official, geoclip:PATH, "
                   "locdiff-h:PATH, g3:PATH")
    p.add_argument("--backbone", default=None, metavar="PATH",
                   help="local open_clip ViT-L/14 checkpoint for geoclip-official / "
                   "locdiff-h (default: open_clip's hub weights, if cached or reachable)")
    p.add_argument("--resolution", type=float, default=0.5,
                   help="raster cell size in degrees (default 0.5)")
    p.add_argument("--samples", type=int, default=32,
                   help="diffusion samples per input (default 32)")
    p.add_argument("--sampler", choices=("ddpm", "ddim", "dpm++"), default="dpm++",
                   help="LocDiff sampler (default dpm++ with 20 steps: as accurate as the "
                        "paper's ddpm with 200 steps on the benchmark, ~10x faster)")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps (default: T for ddpm, 20 otherwise)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-names", action="store_false", dest="names",
                   help="text inputs: the model alone, without reading the place names in "
                        "them against the offline gazetteers")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--retrain-default", action="store_true",
                   help="retrain the built-in model instead of using the cached one")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    b = p.add_argument_group(
        "batch runs", "a folder, .txt file or table as the one INPUT, or --batch: streamed "
        "GeoParquet parts (predictions.parquet/), predictions.gpkg, countries.csv, "
        "skipped.csv; rerun the same command to resume")
    b.add_argument("--batch", action="store_true",
                   help="batch outputs even for inputs given on the command line")
    b.add_argument("--column", default=None,
                   help="table column with the descriptions or image paths (default: found "
                   "by name: text, caption, description / path, image, filename)")
    b.add_argument("--fields", action="store_true",
                   help="also write the probability fields as a Zarr cube (fields.zarr) and "
                   "per-country masses")
    b.add_argument("--cogs", action="store_true",
                   help="with --fields: also one Cloud-Optimized GeoTIFF per input "
                   "(cogs/KEY.tif)")
    b.add_argument("--chunk-size", type=int, default=64, dest="chunk_size",
                   help="inputs per task and per GeoParquet part (default 64)")
    b.add_argument("--scheduler", default=None,
                   help="Dask scheduler address (default: $DASK_SCHEDULER_ADDRESS, else a "
                   "local cluster sized to the machine); 'serial' runs in this process")
    b.add_argument("--workers", type=int, default=None,
                   help="workers of the local Dask cluster (default: one per CPU core)")
    p.set_defaults(func=_locate)


def _print_result(res: Any, k: int = 3) -> None:
    top = res.top_countries(k)
    for _, row in res.predictions.iterrows():
        q = row["query"]
        where = row["country"] if isinstance(row["country"], str) else "(at sea)"  # NULL
        print(f"\n{q}")
        print(f"  prediction: {row['lat']:8.3f}, {row['lon']:9.3f}  {where}  "
              f"(confidence {row['confidence']:.2f})")
        if isinstance(row.get("place"), str) and row.get("source") == "names":
            print(f"  read as: {row['place']} (from the name(s) {row['names']})")
        mine = top[top["query"] == q]
        ranked = ", ".join(f"{c} {p:.1%}" for c, p in zip(mine["country"], mine["probability"]))
        print(f"  top countries: {ranked or '-'}")


def _is_collection(inputs: list[str]) -> bool:
    """One INPUT that is a folder, a .txt file or a table: a batch run."""
    if len(inputs) != 1:
        return False
    from ..pipeline.inputs import TABLE_SUFFIXES

    p = Path(inputs[0])
    try:
        return p.is_dir() or (p.is_file() and p.suffix.lower() in (".txt", *TABLE_SUFFIXES))
    except OSError:  # a description too long to be a path
        return False


def _batch(args: argparse.Namespace, source: object) -> int:
    from ..pipeline.batch import locate_batch

    if args.retrain_default and args.model not in (None, "default", "locdiff"):
        raise ValueError("--retrain-default only applies to the built-in model; drop --model.")
    res = locate_batch(
        source, args.out_dir, model=args.model, backbone=args.backbone, column=args.column,
        fields=args.fields, cogs=args.cogs, resolution=args.resolution, n_samples=args.samples,
        sampler=args.sampler, steps=args.steps, seed=args.seed, names=args.names,
        chunk_size=args.chunk_size,
        scheduler=args.scheduler, workers=args.workers, overwrite=args.overwrite,
        retrain_default=args.retrain_default, progress=not args.no_progress,
    )
    print(f"geolocated {res.n_new} input(s) in this run; {res.n_done} in {res.out_dir} in "
          f"total ({res.n_resumed} already done, {res.n_skipped} skipped: see skipped.csv)")
    if res.n_bad_truth:
        print(f"{res.n_bad_truth} input(s) had unusable ground-truth coordinates: geolocated "
              "but not scored (listed in skipped.csv)")
    if res.accuracy:
        a = res.accuracy
        print(f"accuracy on {a['n']} input(s) with a known position: median "
              f"{a['median_km']:.1f} km, within 25 km {a.get('acc@25km_%', 0):.1f}%, within "
              f"750 km {a.get('acc@750km_%', 0):.1f}%")
    print("wrote:")
    for path in res.paths.values():
        print(f"  {path}")
    return 0


def _locate(args: argparse.Namespace) -> int:
    from ..pipeline.locate import EXAMPLE_QUERIES, locate

    if args.chunk_size < 1:
        raise ValueError(f"--chunk-size must be >= 1; got {args.chunk_size}.")
    if _is_collection(args.inputs):
        return _batch(args, args.inputs[0])
    batch_only = [f for f, v in (("--column", args.column), ("--fields", args.fields),
                                 ("--cogs", args.cogs),
                                 ("--scheduler", args.scheduler), ("--workers", args.workers))
                  if v]
    if args.batch:
        if not args.inputs:
            raise ValueError("--batch needs inputs: a folder, a .txt file, a table or "
                             "descriptions.")
        return _batch(args, list(args.inputs))
    if batch_only:
        raise ValueError(f"{', '.join(batch_only)} only apply to batch runs: give one folder, "
                         ".txt file or table as the input, or add --batch.")
    inputs = list(args.inputs) or list(EXAMPLE_QUERIES)
    if not args.inputs:
        print("no inputs given: geolocating the built-in examples", file=sys.stderr)
    if args.model not in (None, "default", "locdiff") and args.retrain_default:
        raise ValueError("--retrain-default only applies to the built-in model; drop --model.")
    res = locate(
        inputs, model=args.model, backbone=args.backbone, out_dir=args.out_dir,
        resolution=args.resolution,
        n_samples=args.samples, sampler=args.sampler, steps=args.steps, seed=args.seed,
        names=args.names, overwrite=args.overwrite, retrain_default=args.retrain_default,
        progress=not args.no_progress,
    )
    _print_result(res)
    print("\nwrote:")
    for path in res.paths.values():
        print(f"  {path}")
    return 0
