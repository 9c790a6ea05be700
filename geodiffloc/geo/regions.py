"""Highest-density credible regions of a field, as (multi)polygons."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..sphere import LatLonGrid
from ._antimeridian import polygon_parts, to_lonlat_window
from ._field import field_parts, masses
from ._validate import check_finite_masses

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray as xr
    from shapely.geometry.base import BaseGeometry

__all__ = ["credible_regions", "geodesic_area_km2", "hpd_mask"]


def hpd_mask(mass: np.ndarray, area: np.ndarray, level: float) -> np.ndarray:
    """Cells of the highest-density region holding at least ``level`` of the mass.

    Cells are ranked by density (mass / area), so small polar cells are not favoured or
    penalised for their size; all cells tied with the threshold density are included.

    Parameters
    ----------
    mass
        ``(n_lat, n_lon)`` non-negative cell masses.
    area
        Cell areas broadcastable to ``mass``.
    level
        Credibility level in (0, 1].

    Returns
    -------
    numpy.ndarray
        Boolean mask of the region.

    Examples
    --------
    >>> hpd_mask(np.array([[0.6, 0.3, 0.1]]), np.ones(3), 0.8).tolist()
    [[True, True, False]]
    """
    dens = (mass / area).ravel()
    flat = mass.ravel()
    order = np.argsort(-dens, kind="stable")
    cum = np.cumsum(flat[order])
    k = min(int(np.searchsorted(cum, level * cum[-1] * (1 - 1e-12))), cum.size - 1)
    return (dens >= dens[order[k]]).reshape(mass.shape)


def geodesic_area_km2(geom: BaseGeometry, *, max_segment_deg: float = 0.25) -> float:
    """Area of a lon/lat (multi)polygon on the WGS84 ellipsoid, in km².

    Edges are densified first (to at most ``max_segment_deg``) so cell edges along
    parallels are followed, not replaced by one long geodesic.

    Examples
    --------
    >>> import shapely
    >>> round(geodesic_area_km2(shapely.box(0, 0, 1, 1)))  # ~111 km x 111 km
    12308
    """
    import shapely
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    total = 0.0
    for poly in polygon_parts(geom):
        dense = shapely.segmentize(shapely.geometry.polygon.orient(poly, 1.0), max_segment_deg)
        area, _ = geod.geometry_area_perimeter(dense)
        total += abs(area)
    return total / 1e6


def _check_levels(levels: Any) -> np.ndarray:
    """``levels`` as a 1-D float array of numbers in (0, 1]; strings and ``None`` refused."""
    seq = [levels] if isinstance(levels, int | float | np.number) else levels
    try:
        if isinstance(seq, str | bytes) or seq is None:
            raise TypeError
        lv = np.asarray(list(seq), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"levels must be a sequence of numbers in (0, 1], e.g. (0.5, 0.9); "
                         f"got {levels!r}.") from None
    if lv.size == 0 or not ((lv > 0) & (lv <= 1)).all():
        raise ValueError(f"levels must be numbers in (0, 1], e.g. (0.5, 0.9); got "
                         f"{lv.tolist()}.")
    return lv


def _polygonize(mask: np.ndarray, grid: LatLonGrid) -> Any:
    import shapely
    from rasterio.features import shapes

    polys = [shapely.geometry.shape(geom) for geom, _ in
             shapes(mask.astype(np.uint8), mask=mask, transform=grid.transform, connectivity=4)]
    geom = polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
    # regional grids crossing the antimeridian have cells past +180: fold them back
    return to_lonlat_window(geom)


def credible_regions(
    field: xr.DataArray,
    levels: Sequence[float] = (0.5, 0.9, 0.95),
) -> gpd.GeoDataFrame:
    """Highest-density credible regions of a field as a GeoDataFrame of (multi)polygons.

    Parameters
    ----------
    field
        A probability field (``mass``, ``density`` or ``log_density``), 2-D or with a
        leading query/sample dim.
    levels
        Credibility levels in (0, 1].

    Returns
    -------
    geopandas.GeoDataFrame
        EPSG:4326, one row per query and level with columns ``query`` (leading
        coordinate, 0 for a 2-D field), ``level``, ``mass`` (the probability actually
        enclosed, >= level of the field's total), ``area_km2`` (geodesic, WGS84),
        ``n_cells`` and ``geometry``. Regions touching ±180° are split at the
        antimeridian into closed parts; polar caps are closed along the pole.

    Raises
    ------
    ValueError
        Not a probability field, negative masses, a query with no mass, or levels
        outside (0, 1].

    Examples
    --------
    >>> g = LatLonGrid.global_(10.0)
    >>> m = np.zeros(g.shape); m[4, 18] = 0.7; m[4, 19] = 0.3
    >>> r = credible_regions(g.to_dataarray(m, kind="mass"), levels=(0.5, 0.9))
    >>> r["n_cells"].tolist()
    [1, 2]
    """
    import geopandas as gpd

    lv = _check_levels(levels)
    parts = field_parts(field)
    m = masses(parts, "credible_regions")
    check_finite_masses(m, "credible_regions")
    if (m < 0).any():
        raise ValueError("the field has negative masses; credible regions need a probability "
                         "field (non-negative, e.g. from SHDD.field or to_mass).")
    area = parts.grid.cell_area_km2()[:, None]
    rows = []
    for q, label in enumerate(parts.query_labels()):
        total = float(m[q].sum())
        if not total > 0:
            raise ValueError(f"query {label!r} has no probability mass; cannot form regions.")
        for level in lv:
            mask = hpd_mask(m[q], area, float(level))
            geom = _polygonize(mask, parts.grid)
            rows.append({
                "query": label,
                "level": float(level),
                "mass": float(m[q][mask].sum()),
                "area_km2": geodesic_area_km2(geom, max_segment_deg=parts.grid.resolution),
                "n_cells": int(mask.sum()),
                "geometry": geom,
            })
    return gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
