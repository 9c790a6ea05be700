"""Benchmark of the GIS face: GeoTIFF export/read-back and zonal sums on Natural Earth 10m.

Run: ``python benchmarks/geo.py [--res 0.25] [--queries 16]``

Rows (each against a baseline measured in the same run):

* export + read-back of ``queries`` fields on a global grid: ``to_geotiff`` (COG, deflate)
  + ``read_geotiff`` vs rioxarray's plain ``.rio.to_raster`` + ``open_rasterio``;
* ``zonal_probability`` on the 250 Natural Earth 10m countries vs a naive per-polygon
  cell-centre mask (every cell of the polygon's bounding box tested with
  ``shapely.contains_xy``, whole cells counted), with the accuracy of both on a uniform
  field against geodesic country areas (pyproj, sphere of the grid's radius).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CITIES = [
    (48.86, 2.35), (40.71, -74.01), (35.68, 139.69), (-33.87, 151.21), (-23.55, -46.63),
    (55.76, 37.62), (19.43, -99.13), (30.04, 31.24), (28.61, 77.21), (-1.29, 36.82),
    (64.15, -21.94), (-17.71, 178.07), (61.22, -149.90), (1.35, 103.82), (-54.80, -68.30),
    (39.90, 116.40),
]


def vmf_fields(grid, n: int, width_km: float = 250.0):
    from geodiffloc.sphere import EARTH_RADIUS_KM

    kappa = (EARTH_RADIUS_KM / width_km) ** 2
    lat, lon = np.meshgrid(np.deg2rad(grid.lat), np.deg2rad(grid.lon), indexing="ij")
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)
    out = np.empty((n, *grid.shape), dtype=np.float64)
    for i in range(n):
        a, b = np.deg2rad(CITIES[i % len(CITIES)])
        mu = np.array([np.cos(a) * np.cos(b), np.cos(a) * np.sin(b), np.sin(a)])
        m = np.exp(kappa * (xyz @ mu - 1.0)) * grid.cell_area_sr()[:, None]
        out[i] = m / m.sum()
    return grid.to_dataarray(out, kind="mass", leading_dim="query",
                             attrs={"model": "vmf-benchmark"})


def naive_zonal(field, polygons) -> np.ndarray:
    """Per-polygon masks of cell centres inside the polygon (no sub-cell coverage)."""
    import shapely

    from geodiffloc.sphere import LatLonGrid

    grid = LatLonGrid.from_dataarray(field)
    n_q = field.shape[0] if field.ndim == 3 else 1
    vals = np.asarray(field.values).reshape(n_q, -1)
    out = np.zeros((len(polygons), n_q))
    for i, geom in enumerate(polygons.geometry):
        minx, miny, maxx, maxy = geom.bounds
        cols = np.flatnonzero((grid.lon >= minx) & (grid.lon <= maxx))
        rows = np.flatnonzero((grid.lat >= miny) & (grid.lat <= maxy))
        if rows.size == 0 or cols.size == 0:
            continue
        la, lo = np.meshgrid(grid.lat[rows], grid.lon[cols], indexing="ij")
        shapely.prepare(geom)
        inside = shapely.contains_xy(geom, lo, la)
        r, c = np.nonzero(inside)
        out[i] = vals[:, rows[r] * grid.shape[1] + cols[c]].sum(axis=1)
    return out


def timed(fn, *args, repeat: int = 1, **kw):
    best, result = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn(*args, **kw)
        best = min(best, time.perf_counter() - t)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", type=float, default=0.25, help="grid resolution (degrees)")
    parser.add_argument("--queries", type=int, default=16, help="fields (bands) per raster")
    args = parser.parse_args()

    import rioxarray
    import shapely
    from pyproj import Geod

    from geodiffloc.geo import countries, read_geotiff, to_geotiff, zonal_probability
    from geodiffloc.sphere import EARTH_RADIUS_KM, LatLonGrid

    grid = LatLonGrid.global_(args.res)
    field = vmf_fields(grid, args.queries)
    rows: list[tuple[str, float, float, str]] = []

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t_ours, _ = timed(to_geotiff, field, d / "cog.tif")
        t_read, back = timed(read_geotiff, d / "cog.tif")
        assert np.allclose(back.values, field.values.astype(np.float32))
        t_base, _ = timed(lambda: field.astype("float32").rio.to_raster(d / "plain.tif"))
        t_bread, _ = timed(lambda: rioxarray.open_rasterio(d / "plain.tif").load())
        size = (d / "cog.tif").stat().st_size / 2**20
        size_base = (d / "plain.tif").stat().st_size / 2**20
    ours, base = t_ours + t_read, t_base + t_bread
    rows.append((f"GeoTIFF export+read ({args.queries} x {grid.shape[0]}x{grid.shape[1]})",
                 ours, base, f"COG {size:.1f} MiB vs plain {size_base:.1f} MiB"))

    world = countries("10m")
    t_zonal, z = timed(zonal_probability, field, world, progress=False)
    t_naive, zn = timed(naive_zonal, field, world)
    diff = np.abs(z[[f"prob_{i}" for i in range(args.queries)]].to_numpy() - zn).max()
    rows.append(("zonal, 250 NE-10m countries x queries", t_zonal, t_naive,
                 f"max |ours - naive| = {diff:.2e}"))

    uniform = grid.to_dataarray(np.broadcast_to(grid.cell_area_sr()[:, None] / (4 * np.pi),
                                                grid.shape).copy(), kind="mass")
    sphere = Geod(a=EARTH_RADIUS_KM * 1e3, b=EARTH_RADIUS_KM * 1e3)
    ref = np.array([abs(sphere.geometry_area_perimeter(shapely.segmentize(g, 0.05))[0])
                    for g in world.geometry]) / (4 * np.pi * (EARTH_RADIUS_KM * 1e3) ** 2)
    zu = zonal_probability(uniform, world, progress=False)
    nu = naive_zonal(uniform, world)[:, 0]
    big = ref > 1e-5
    err_ours = np.abs(zu["prob"].to_numpy() - ref)
    err_naive = np.abs(nu - ref)
    rows.append(("zonal accuracy: median rel. error, countries > 5000 km2",
                 float(np.median(err_ours[big] / ref[big])),
                 float(np.median(err_naive[big] / ref[big])),
                 f"sum error ours {abs(err_ours.sum()):.1e}, naive {abs((nu - ref).sum()):.1e}"))

    print(f"Global {args.res} deg grid, {args.queries} queries; both sides on the same field "
          "in the same process. Times in seconds; the accuracy row gives errors (lower is "
          "better); ratio = baseline / ours.\n")
    print("| case | ours | baseline | ratio | note |")
    print("|---|---:|---:|---:|---|")
    for name, a, b, note in rows:
        print(f"| {name} | {a:.4g} | {b:.4g} | {b / a:.2f}x | {note} |")


if __name__ == "__main__":
    from _record import record

    with record("geo", "GIS export and zonal sums (geo.py)", quick="--quick" in sys.argv):
        main()
