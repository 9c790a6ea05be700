"""Input checks of the GIS functions (zonal sums, GeoTIFF export), kept apart from them.

A zonal sum over a field that is not a probability field (negative, infinite or
un-normalised masses) or over zones that are not areas (points, lines) has no meaning,
so it is refused with a message that says what to fix instead of returning numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._memory import check_allocation

__all__ = ["as_zone_frame", "check_count", "check_finite_masses", "check_masses",
           "check_real_values", "check_supersample"]

#: A global field's masses may exceed 1 by this much (quadrature and float32 rounding).
MASS_TOLERANCE = 1e-2


def as_zone_frame(polygons: Any) -> Any:
    """A GeoDataFrame of (multi)polygon zones; points, lines and non-geo objects refused."""
    import geopandas as gpd

    if isinstance(polygons, gpd.GeoSeries):
        polygons = gpd.GeoDataFrame(geometry=polygons, crs=polygons.crs)
    if not isinstance(polygons, gpd.GeoDataFrame):
        raise ValueError(
            f"polygons must be a GeoDataFrame or GeoSeries; got {type(polygons).__name__}. "
            "Read files with geopandas.read_file(path)."
        )
    kinds = polygons.geometry.geom_type
    bad = ~(kinds.isin(["Polygon", "MultiPolygon"]) | kinds.isna()
            | polygons.geometry.is_empty.fillna(True))
    if bool(bad.any()):
        rows = np.flatnonzero(bad.to_numpy())[:5].tolist()
        raise ValueError(
            f"zones must be polygons; rows {rows} are {sorted(set(kinds[bad]))}. Buffer points "
            "or lines into areas first (e.g. gdf.to_crs(3857).buffer(10_000).to_crs(4326))."
        )
    return polygons


def check_count(value: Any, name: str, upper: int) -> int:
    """``value`` as a whole number in ``[1, upper]``; bools, strings and fractions refused."""
    ok = not isinstance(value, bool) and isinstance(value, int | np.integer | float | np.floating)
    if not ok or not float(value).is_integer() or not 1 <= int(value) <= upper:
        raise ValueError(f"{name} must be a whole number in [1, {upper}]; got {value!r}.")
    return int(value)


def check_finite_masses(m: np.ndarray, what: str) -> None:
    """Cell masses must not hold +/-inf (NaN cells are nodata and count as 0)."""
    if np.isinf(m).any():
        raise ValueError(f"{what}: the field holds inf; it is not a probability field. "
                         "Mask or replace infinite cells first.")


def check_masses(m: np.ndarray, what: str) -> None:
    """Cell masses must be finite, non-negative and sum to at most 1 per query."""
    if not np.isfinite(m).all():
        raise ValueError(f"{what}: the field holds +inf; it is not a probability field. "
                         "Mask or replace infinite cells first.")
    if (m < 0).any():
        raise ValueError(f"{what}: the field holds negative values (min {float(m.min()):.3g}); "
                         "probabilities cannot be negative. Is it a log-density? Pass "
                         "kind='log_density' when building the field.")
    totals = m.reshape(m.shape[0], -1).sum(axis=1)
    if (totals > 1.0 + MASS_TOLERANCE).any():
        raise ValueError(
            f"{what}: the field's cell masses sum to {float(totals.max()):.4g} > 1; it is not "
            "normalised. Divide it by its sum (field / field.sum(('lat', 'lon'))) first."
        )


def check_supersample(supersample: Any, chunk: int) -> int:
    """``supersample`` as an int >= 1 whose per-chunk sampling arrays fit in memory."""
    if isinstance(supersample, bool) or not float(supersample).is_integer() \
            or int(supersample) < 1:
        raise ValueError(f"supersample must be a whole number >= 1; got {supersample!r}.")
    s = int(supersample)
    # xs, ys, jitter and the inside mask for a chunk of boundary cells
    check_allocation(4.0 * chunk * s * s * 8, f"zonal sums with supersample={s}",
                     "use a smaller supersample (8-16 is plenty)")
    return s


def check_real_values(da: Any) -> None:
    """GeoTIFF bands of probabilities must be real numbers."""
    dtype = np.asarray(getattr(da, "values", da)).dtype
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
            or dtype.kind == "b"):
        raise ValueError(f"the raster values must be real numbers; got dtype {dtype}. Take "
                         "the real part or convert the values first.")
