"""Predictions as GeoDataFrames, vector export, and geodesic joins with polygons/points."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._io import atomic_path, check_writable
from ..sphere.crs import to_epsg4326
from ._antimeridian import to_lonlat_window

if TYPE_CHECKING:
    import geopandas as gpd
    from numpy.typing import ArrayLike

__all__ = ["join_nearest", "join_within", "predictions_to_gdf", "write_vector"]

_SHP_NAME_MAX = 10
_DRIVERS = {
    ".gpkg": "GPKG",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".parquet": "GeoParquet",
    ".geoparquet": "GeoParquet",
    ".shp": "ESRI Shapefile",
}
_SHP_SIDECARS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".qmd")


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def predictions_to_gdf(latlon: ArrayLike, **columns: Any) -> gpd.GeoDataFrame:
    """Point predictions as a GeoDataFrame (EPSG:4326, ``points_from_xy(lon, lat)``).

    Parameters
    ----------
    latlon
        ``(n, 2)`` array/tensor of ``(lat, lon)`` degrees: one row per input; or
        ``(n, k, 2)`` for top-k: ``n * k`` rows with ``query`` (input index) and
        ``rank`` (1 = best) columns.
    **columns
        Extra columns (``score=..., conf=...``): length ``n`` (repeated over the k
        ranks) or shape ``(n, k)``. Names must be at most 10 characters so shapefile
        export keeps them.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns ``[query, rank,] lat, lon, *columns, geometry``.

    Raises
    ------
    ValueError
        Bad shapes, invalid coordinates, or a column name longer than 10 characters or
        clashing with the built-in columns.

    Examples
    --------
    >>> gdf = predictions_to_gdf(np.array([[48.86, 2.35], [-33.87, 151.21]]), score=[0.9, 0.4])
    >>> gdf.crs.to_epsg(), gdf.columns.tolist()
    (4326, ['lat', 'lon', 'score', 'geometry'])
    """
    import geopandas as gpd

    from ..sphere import as_latlon

    arr = _as_numpy(latlon).astype(np.float64)
    if arr.ndim not in (2, 3) or arr.shape[-1] != 2:
        raise ValueError(
            f"latlon must have shape (n, 2) or (n, k, 2) holding (lat, lon) degrees; got "
            f"{arr.shape}."
        )
    n = arr.shape[0]
    k = arr.shape[1] if arr.ndim == 3 else 1
    lat, lon = as_latlon(lat=arr[..., 0].ravel(), lon=arr[..., 1].ravel())
    data: dict[str, Any] = {}
    if arr.ndim == 3:
        data["query"] = np.repeat(np.arange(n), k)
        data["rank"] = np.tile(np.arange(1, k + 1), n)
    data["lat"], data["lon"] = lat, lon
    for name, values in columns.items():
        if len(name) > _SHP_NAME_MAX:
            raise ValueError(
                f"column name {name!r} has {len(name)} characters; use at most "
                f"{_SHP_NAME_MAX} so shapefile export keeps it (e.g. {name[:_SHP_NAME_MAX]!r})."
            )
        if name in data or name == "geometry":
            raise ValueError(f"column name {name!r} is reserved; choose another.")
        v = _as_numpy(values)
        if v.shape == (n,) and k > 1:
            v = np.repeat(v, k)
        elif v.shape in ((n, k), (n * k,)) or (k == 1 and v.shape == (n,)):
            v = v.reshape(n * k)
        else:
            raise ValueError(
                f"column {name!r} must have length {n} or shape ({n}, {k}); got {v.shape}."
            )
        data[name] = v
    return gpd.GeoDataFrame(data, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")


def _driver_for(path: Path, driver: str | None) -> str:
    if driver is not None:
        known = sorted(set(_DRIVERS.values()))
        if driver not in known:
            raise ValueError(f"driver must be one of {known}; got {driver!r}.")
        return driver
    if path.suffix.lower() not in _DRIVERS:
        raise ValueError(
            f"cannot tell the format of {path.name!r} from its suffix; use one of "
            f"{sorted(_DRIVERS)} or pass driver=... ('GPKG' is the default choice)."
        )
    return _DRIVERS[path.suffix.lower()]


def _write_shapefile(gdf: Any, target: Path, overwrite: bool) -> None:
    long_names = [c for c in gdf.columns if c != gdf.geometry.name and len(str(c)) > 10]
    if long_names:
        raise ValueError(
            f"shapefile field names are limited to 10 characters; rename {long_names} "
            "(gdf.rename(columns=...)) or write a GeoPackage instead."
        )
    siblings = [target.with_suffix(s) for s in _SHP_SIDECARS]
    existing = [p for p in siblings if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{existing[0]} already exists; pass overwrite=True (CLI: --overwrite) to replace "
            "the shapefile."
        )
    # every sidecar is written in a private folder first, then moved in one go
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{target.stem}.", dir=target.parent))
    try:
        gdf.to_file(tmpdir / target.name, driver="ESRI Shapefile", engine="pyogrio")
        written = sorted(tmpdir.iterdir())
        if not overwrite and any(target.with_suffix(p.suffix).exists() for p in written):
            raise FileExistsError(f"{target} appeared while writing; not replacing it.")
        for old in existing:  # stale sidecars (e.g. an old .qix) would not match the data
            if old.suffix not in {p.suffix for p in written}:
                old.unlink()
        for p in written:
            os.replace(p, target.with_suffix(p.suffix))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def write_vector(
    gdf: gpd.GeoDataFrame,
    path: str | os.PathLike,
    *,
    driver: str | None = None,
    overwrite: bool = False,
    layer: str | None = None,
) -> Path:
    """Write a GeoDataFrame atomically: GeoPackage, GeoJSON, GeoParquet or shapefile.

    Parameters
    ----------
    gdf
        The GeoDataFrame.
    path
        Target file; the format follows the suffix (``.gpkg``, ``.geojson``/``.json``,
        ``.parquet``/``.geoparquet``, ``.shp``) unless ``driver`` is given.
    driver
        ``"GPKG"``, ``"GeoJSON"``, ``"GeoParquet"`` or ``"ESRI Shapefile"``.
    overwrite
        Replace existing file(s); otherwise refuse. A shapefile's sidecar files
        (``.shx``, ``.dbf``, ``.prj``, ``.cpg``) are written together in a temporary
        folder and moved into place only if none would be clobbered.
    layer
        Layer name for GeoPackage (default: the file stem).

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        Not a GeoDataFrame, unknown format, column names too long for a shapefile.
    FileExistsError
        The target exists and ``overwrite`` is false.

    Examples
    --------
    >>> import tempfile, pathlib, geopandas as gpd
    >>> gdf = predictions_to_gdf(np.array([[48.86, 2.35]]))
    >>> p = write_vector(gdf, pathlib.Path(tempfile.mkdtemp()) / "pred.gpkg")
    >>> len(gpd.read_file(p))
    1
    """
    import geopandas as gpd

    if not isinstance(gdf, gpd.GeoDataFrame):
        raise ValueError(f"expected a GeoDataFrame; got {type(gdf).__name__}.")
    target = Path(path)
    drv = _driver_for(target, driver)
    if drv == "ESRI Shapefile":
        check_writable(target, overwrite)
        _write_shapefile(gdf, target, overwrite)
        return target
    with atomic_path(target, overwrite=overwrite) as tmp:
        if drv == "GeoParquet":
            gdf.to_parquet(tmp)
        elif drv == "GPKG":
            # GeoPackage 1.2: what GDAL < 3.7 (QGIS LTR on Debian 12) reads without a warning
            gdf.to_file(tmp, driver="GPKG", layer=layer or target.stem, engine="pyogrio",
                        VERSION="1.2")
        else:
            gdf.to_file(tmp, driver=drv, engine="pyogrio")
    return target


# -- joins ----------------------------------------------------------------------------------
def _points_4326(points: Any) -> Any:
    import geopandas as gpd

    if not isinstance(points, gpd.GeoDataFrame):
        raise ValueError(f"points must be a GeoDataFrame; got {type(points).__name__}.")
    pts = to_epsg4326(points, what="the points")
    if not (pts.geometry.geom_type == "Point").all():
        raise ValueError("points must hold Point geometries (use centroids after projecting).")
    return pts


def _targets_4326(targets: Any) -> Any:
    import geopandas as gpd

    if not isinstance(targets, gpd.GeoDataFrame):
        raise ValueError(f"targets must be a GeoDataFrame; got {type(targets).__name__}.")
    t = to_epsg4326(targets, what="the targets")
    return t.set_geometry([to_lonlat_window(g) if g is not None and g.geom_type in (
        "Polygon", "MultiPolygon") else g for g in t.geometry], crs="EPSG:4326")


def join_within(points: gpd.GeoDataFrame | gpd.GeoSeries, polygons: gpd.GeoDataFrame, *,
                how: str = "left") -> gpd.GeoDataFrame:
    """Attach to each point the attributes of the polygon containing it.

    Containment is topological (no distances); polygons in any CRS are brought to
    EPSG:4326 and cut at the antimeridian first, so Fiji or Chukotka match correctly.

    Parameters
    ----------
    points
        GeoDataFrame of points (e.g. from :func:`predictions_to_gdf`).
    polygons
        GeoDataFrame of polygons in any CRS.
    how
        ``"left"`` keeps points outside every polygon (with NaN attributes), ``"inner"``
        drops them.

    Returns
    -------
    geopandas.GeoDataFrame
        The points (EPSG:4326) joined with polygon columns; ``index_right`` names the
        polygon row. A point on a shared border keeps its first match.

    Raises
    ------
    ValueError
        Missing CRS or non-point geometries.

    Examples
    --------
    >>> import shapely, geopandas as gpd
    >>> poly = gpd.GeoDataFrame({"zone": ["A"]}, geometry=[shapely.box(0, 0, 10, 10)],
    ...                         crs="EPSG:4326")
    >>> join_within(predictions_to_gdf(np.array([[5.0, 5.0], [50.0, 5.0]])), poly)["zone"].tolist()
    ['A', nan]
    """
    import geopandas as gpd

    pts = _points_4326(points)
    polys = _targets_4326(polygons)
    joined = gpd.sjoin(pts, polys, how=how, predicate="within")
    return joined[~joined.index.duplicated(keep="first")]


def _aeqd(lat: float, lon: float) -> str:
    return f"+proj=aeqd +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m +no_defs"


def _search_boxes(lat: float, lon: float, radius_km: float) -> list[Any]:
    """Degree boxes that surely contain everything within ``radius_km`` (a filter only)."""
    import shapely

    dlat = radius_km / 110.0 + 1e-6
    s, n = max(lat - dlat, -90.0), min(lat + dlat, 90.0)
    coslat = float(np.cos(np.deg2rad(max(abs(s), abs(n)))))
    dlon = 180.0 if coslat < 1e-6 else min(radius_km / (110.0 * coslat) + 1e-6, 180.0)
    if dlon >= 180.0 or n >= 90.0 or s <= -90.0:
        return [shapely.box(-180.0, s, 180.0, n)]
    w, e = lon - dlon, lon + dlon
    if w < -180.0:
        return [shapely.box(w + 360.0, s, 180.0, n), shapely.box(-180.0, s, e, n)]
    if e > 180.0:
        return [shapely.box(w, s, 180.0, n), shapely.box(-180.0, s, e - 360.0, n)]
    return [shapely.box(w, s, e, n)]


def nearest_geodesic(geoms: Any, sindex: Any, lat: float, lon: float,
                     max_km: float | None) -> tuple[int | None, float]:
    """Index of the geometry nearest to a point and its geodesic distance in km.

    Candidates come from a spatial-index query on degree boxes (a filter only); their
    distance is measured in an azimuthal equidistant projection centred on the point,
    where distance from the origin is the geodesic distance. Without ``max_km`` the
    search radius doubles from 100 km until something is found.
    """
    import geopandas as gpd
    import shapely

    radius = max_km if max_km is not None else 100.0
    while True:
        best, best_d = None, np.inf
        for box in _search_boxes(lat, lon, radius):
            rows = sindex.query(box, predicate="intersects")
            if rows.size == 0:
                continue
            clipped = gpd.GeoSeries(shapely.intersection(np.asarray(geoms)[rows], box),
                                    crs="EPSG:4326").to_crs(_aeqd(lat, lon))
            dist = clipped.distance(shapely.Point(0.0, 0.0)).to_numpy() / 1000.0
            dist = np.where(np.isfinite(dist), dist, np.inf)
            j = int(np.argmin(dist))
            if dist[j] < best_d:
                best, best_d = int(rows[j]), float(dist[j])
        if best is not None and best_d <= radius:
            return best, best_d
        if max_km is not None or radius >= 25_000.0:
            return None, np.inf
        radius *= 2.0


def join_nearest(
    points: gpd.GeoDataFrame | gpd.GeoSeries,
    targets: gpd.GeoDataFrame,
    *,
    max_km: float | None = None,
    distance_col: str = "dist_km",
) -> gpd.GeoDataFrame:
    """Attach to each point the nearest target (polygon, line or point) by geodesic distance.

    Distances are WGS84 geodesic kilometres (measured in an azimuthal equidistant
    projection centred on each point), never degrees; a point inside a polygon is at 0.

    Parameters
    ----------
    points
        GeoDataFrame of points.
    targets
        GeoDataFrame of any geometries in any CRS.
    max_km
        Ignore targets farther than this (the point then gets NaN attributes).
    distance_col
        Name of the distance column.

    Returns
    -------
    geopandas.GeoDataFrame
        The points (EPSG:4326) with the nearest target's columns, ``index_right`` and
        ``distance_col``.

    Raises
    ------
    ValueError
        Missing CRS, non-point geometries, a negative ``max_km`` or clashing columns.

    Examples
    --------
    >>> import geopandas as gpd
    >>> cities = gpd.GeoDataFrame({"city": ["Paris", "Lyon"]},
    ...     geometry=gpd.points_from_xy([2.35, 4.84], [48.86, 45.76]), crs="EPSG:4326")
    >>> out = join_nearest(predictions_to_gdf(np.array([[45.5, 4.9]])), cities)
    >>> out["city"].tolist(), bool(out["dist_km"].iloc[0] < 40)
    (['Lyon'], True)
    """
    import pandas as pd

    if max_km is not None and not max_km >= 0:
        raise ValueError(f"max_km must be >= 0 or None; got {max_km}.")
    pts = _points_4326(points)
    tg = _targets_4326(targets)
    clash = {distance_col, "index_right"} & set(pts.columns)
    if clash:
        raise ValueError(f"points already have column(s) {sorted(clash)}; rename them first.")
    geoms = tg.geometry.to_numpy()
    sindex = tg.sindex
    found: list[Any] = []
    dists = np.full(len(pts), np.nan)
    for i, (lat, lon) in enumerate(zip(pts.geometry.y, pts.geometry.x)):
        j, d = nearest_geodesic(geoms, sindex, float(lat), float(lon), max_km)
        found.append(j)
        if j is not None:
            dists[i] = d
    attrs = tg.drop(columns=tg.geometry.name)
    right = pd.DataFrame(
        [attrs.iloc[j].to_dict() if j is not None else {} for j in found],
        index=pts.index, columns=attrs.columns,
    )
    out = pts.join(right.add_suffix("_right").rename(
        columns=lambda c: c[:-6] if c[:-6] not in pts.columns else c))
    out["index_right"] = [tg.index[j] if j is not None else None for j in found]
    out[distance_col] = dists
    return out
