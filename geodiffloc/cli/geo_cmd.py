"""``geodiffloc zonal`` and ``geodiffloc regions``: GIS commands over geodiffloc.geo.

Examples::

    geodiffloc zonal field.tif countries.gpkg -o per_country.gpkg
    geodiffloc regions field.tif --levels 0.5 0.9 -o regions.gpkg
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ._help import HelpFormatter, examples, paragraph


def add_parser(subparsers: Any) -> None:
    """Register the ``zonal`` and ``regions`` subcommands."""
    zonal = subparsers.add_parser(
        "zonal",
        help="probability of a field raster inside each polygon of a vector file",
        description=paragraph(
            "Sum a probability raster (GeoTIFF in EPSG:4326, e.g. from --raster or locate) "
            "over each polygon of a vector file (any CRS) with exact cell coverage; writes the "
            "polygons plus one probability column per band, named after the band."),
        formatter_class=HelpFormatter,
        epilog=examples(
            "geodiffloc zonal out/probability.tif districts.shp -o districts_prob.gpkg",
            "geodiffloc zonal out/probability.tif admin.gpkg --layer provinces -o prov.gpkg",
            "geodiffloc zonal field.tif countries.geojson -o per_country.parquet --column p",
        ),
    )
    zonal.add_argument("field", type=Path, help="probability raster (GeoTIFF, EPSG:4326)")
    zonal.add_argument("polygons", type=Path, help="polygons (GeoPackage, shapefile, ...)")
    zonal.add_argument("-o", "--output", type=Path, required=True,
                       help="output vector file (.gpkg, .geojson, .parquet, .shp)")
    zonal.add_argument("--layer", default=None, help="layer of the polygon file to read")
    zonal.add_argument("--column", default="prob", help="probability column name (default prob)")
    zonal.add_argument("--supersample", type=int, default=None,
                       help="deprecated and ignored: cell coverage is exact")
    zonal.add_argument("--overwrite", action="store_true", help="replace an existing output")
    zonal.set_defaults(func=_zonal)

    regions = subparsers.add_parser(
        "regions",
        help="highest-density credible regions of a field raster as polygons",
        description=paragraph(
            "Turn a probability raster into highest-density credible regions "
            "(one (multi)polygon per band and level, with geodesic area in km²)."),
        formatter_class=HelpFormatter,
        epilog=examples(
            "geodiffloc regions out/probability.tif -o regions.gpkg",
            "geodiffloc regions out/probability.tif --levels 0.5 0.9 -o regions.geojson",
            "geodiffloc regions field.tif --levels 0.95 -o search_area.shp --overwrite",
        ),
    )
    regions.add_argument("field", type=Path, help="probability raster (GeoTIFF, EPSG:4326)")
    regions.add_argument("--levels", type=float, nargs="+", default=[0.5, 0.9, 0.95],
                         help="credibility levels in (0, 1] (default 0.5 0.9 0.95)")
    regions.add_argument("-o", "--output", type=Path, required=True,
                         help="output vector file (.gpkg, .geojson, .parquet, .shp)")
    regions.add_argument("--overwrite", action="store_true", help="replace an existing output")
    regions.set_defaults(func=_regions)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the shared ``--raster``, ``--out`` and ``--overwrite`` options to a model command.

    Model commands (predict, probability maps) call this, then :func:`write_outputs`.
    """
    parser.add_argument("--raster", type=Path, default=None,
                        help="write the probability field(s) as a GeoTIFF (COG, EPSG:4326)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write predictions as a vector file (.gpkg, .geojson, .parquet, "
                        ".shp)")
    if not any(a.dest == "overwrite" for a in parser._actions):
        parser.add_argument("--overwrite", action="store_true",
                            help="replace existing output files")


def write_outputs(args: argparse.Namespace, *, field: Any = None,
                  predictions: Any = None) -> list[Path]:
    """Write ``--raster`` (a field DataArray) and ``--out`` (a GeoDataFrame) if requested.

    Both targets are checked before anything is written, so a refused ``--out`` never
    leaves a lone raster behind.
    """
    from ..geo import to_geotiff, write_vector

    overwrite = bool(getattr(args, "overwrite", False))
    raster, out = getattr(args, "raster", None), getattr(args, "out", None)
    if raster is not None and field is None:
        raise ValueError("--raster was given but this command produced no probability field.")
    for path in (raster, out):
        if path is not None:
            _check_output(Path(path), overwrite)
    written = []
    if raster is not None:
        written.append(to_geotiff(field, raster, overwrite=overwrite))
    if out is not None and predictions is not None:
        written.append(write_vector(predictions, out, overwrite=overwrite))
    return written


def _read_polygons(path: Path, layer: str | None) -> Any:
    import geopandas as gpd

    if not path.exists():
        raise FileNotFoundError(f"vector file {path} does not exist.")
    try:
        gdf = gpd.read_file(path, layer=layer, engine="pyogrio")
    except Exception as err:  # pyogrio raises several error types for unreadable files
        raise ValueError(f"cannot read {path} as a vector file: {err}") from None
    if len(gdf) == 0 or not gdf.geom_type.isin(["Polygon", "MultiPolygon"]).any():
        raise ValueError(f"{path} holds no polygons; zonal needs polygon features.")
    return gdf


def _check_output(path: Path, overwrite: bool) -> None:
    from .._io import check_writable

    check_writable(path, overwrite)  # fail before the (possibly long) computation


def _zonal(args: argparse.Namespace) -> int:
    from ..geo import read_geotiff, write_vector, zonal_probability

    _check_output(args.output, args.overwrite)
    field = read_geotiff(args.field)
    polygons = _read_polygons(args.polygons, args.layer)
    out = zonal_probability(field, polygons, column=args.column, supersample=args.supersample)
    write_vector(out, args.output, overwrite=args.overwrite)
    print(f"wrote {len(out)} polygons with probabilities to {args.output}")
    return 0


def _regions(args: argparse.Namespace) -> int:
    from ..geo import credible_regions, read_geotiff, write_vector

    _check_output(args.output, args.overwrite)
    field = read_geotiff(args.field)
    regions = credible_regions(field, levels=args.levels)
    regions["query"] = regions["query"].astype(str)  # mixed labels -> one column type
    write_vector(regions, args.output, overwrite=args.overwrite)
    print(f"wrote {len(regions)} credible regions to {args.output}")
    return 0
