"""Draw docs/concepts/img/geotiff-export.png: which GeoTIFF export survives GDAL.

Run from the repository root: ``python docs/figures/geotiff_export.py``. It exports one
field twice (density per km², the default, and cell masses), warps both to Web
Mercator with GDAL (through rioxarray, bilinear), reads the first COG overview, and
plots the total probability each raster then holds (1 is right).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import rasterio
import rioxarray
from affine import Affine
from matplotlib.figure import Figure
from rasterio.enums import Resampling

from geodiffloc import SHDD
from geodiffloc.geo import to_geotiff
from geodiffloc.sphere import EARTH_RADIUS_KM, LatLonGrid

OUT = Path(__file__).resolve().parents[1] / "concepts" / "img" / "geotiff-export.png"
HALF = 20037508.342789244  # Web Mercator half-width, metres
A_KM = 6378.137            # Web Mercator sphere radius


def _field():
    shdd, grid = SHDD(23), LatLonGrid.global_(0.5)
    lat, lon, w = np.array([(38.72, -9.14, 0.45), (41.15, -8.61, 0.30),
                            (-22.91, -43.17, 0.25)]).T
    per_peak = shdd.field(shdd.encode(lat=lat, lon=lon), resolution=0.5)
    return grid.to_dataarray(np.tensordot(w, per_peak.values, axes=1), kind="mass")


def _warp_total(path: Path, kind: str) -> float:
    px = 2 * HALF / 1024
    warped = rioxarray.open_rasterio(path, masked=True).isel(band=0).rio.reproject(
        "EPSG:3857", shape=(1024, 1024), transform=Affine(px, 0, -HALF, 0, -px, HALF),
        resampling=Resampling.bilinear)
    vals = warped.fillna(0.0).values.astype(np.float64)
    if kind == "mass":
        return float(vals.sum())
    lat = 2 * np.arctan(np.exp(warped["y"].values / (A_KM * 1e3))) - np.pi / 2
    area = px * px / 1e6 * (EARTH_RADIUS_KM / A_KM) ** 2 * np.cos(lat) ** 2
    return float((vals * area[:, None]).sum())


def _overview_total(path: Path, kind: str) -> float:
    with rasterio.open(path, overview_level=0) as ds:
        vals = ds.read(1, masked=True).filled(0.0).astype(np.float64)
        if kind == "mass":
            return float(vals.sum())
        res = ds.transform.a
    grid = LatLonGrid.global_(res)
    return float((vals * grid.cell_area_km2()[:, None]).sum())


def main() -> None:
    field = _field()
    with tempfile.TemporaryDirectory() as tmp:
        dens = to_geotiff(field, Path(tmp) / "density.tif")
        mass = to_geotiff(field, Path(tmp) / "mass.tif", kind="mass", driver="GTiff")
        # a COG of masses as GDAL would build it by default (averaged overviews)
        cog_mass = Path(tmp) / "mass_cog.tif"
        with rasterio.open(mass) as src:
            rasterio.shutil.copy(src, cog_mass, driver="COG", OVERVIEW_RESAMPLING="AVERAGE")
        rows = {
            "warped to EPSG:3857 (bilinear)": (_warp_total(dens, "density"),
                                               _warp_total(mass, "mass")),
            "first COG overview (averaged)": (_overview_total(dens, "density"),
                                              _overview_total(cog_mass, "mass")),
        }
    fig = Figure(figsize=(7.5, 3.4), layout="constrained")  # no GUI backend needed
    ax = fig.subplots()
    y = np.arange(len(rows))
    d = [v[0] for v in rows.values()]
    m = [v[1] for v in rows.values()]
    ax.barh(y + 0.2, d, height=0.38, color="tab:green", label="density per km² (default)")
    ax.barh(y - 0.2, m, height=0.38, color="tab:red", label="cell probabilities (kind='mass')")
    for yy, v in [*zip(y + 0.2, d), *zip(y - 0.2, m)]:
        ax.text(v, yy, f" {v:.3f}", va="center", fontsize="small")
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(y, list(rows))
    ax.set_xlabel("total probability the raster holds afterwards (1 is right)")
    fig.legend(loc="outside lower center", ncols=2, fontsize="small")
    ax.set_xlim(0, max(max(d), max(m)) * 1.2)
    fig.savefig(OUT, dpi=110)
    print(OUT, rows)


if __name__ == "__main__":
    main()
