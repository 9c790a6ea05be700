"""Validation of coordinates at the public edge.

Every public function that takes locations funnels them through :func:`as_latlon`
(array-likes and shapely/geopandas points) or :func:`check_latlon_tensor` (``(n, 2)``
tensors of ``(lat, lon)`` degrees), so the rules live in one place:

* NaN/inf, ``|lat| > 90`` and mismatched shapes raise :class:`ValueError` naming the
  first offending index and value;
* latitude is never clamped or wrapped;
* longitudes in ``(180, 360]`` are normalised to ``(-180, 180]``;
* a GeoDataFrame/GeoSeries in any CRS is reprojected to EPSG:4326 explicitly, and one
  without a CRS is refused (:func:`~geodiffloc.sphere.to_epsg4326`, the one rule);
  projected coordinates passed as plain numbers fail the degree range checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .crs import to_epsg4326

__all__ = ["as_latlon", "check_latlon_tensor", "normalize_lon"]

_FIX_PROJECTED = (
    "If these are projected coordinates (metres), reproject to EPSG:4326 first "
    "(e.g. gdf.to_crs('EPSG:4326')); if latitude and longitude are swapped, pass "
    "lat=..., lon=... explicitly."
)


def normalize_lon(lon: np.ndarray) -> np.ndarray:
    """Map longitudes given in ``(180, 360]`` onto ``(-180, 180]``.

    Examples
    --------
    >>> normalize_lon(np.array([0.0, 190.0, 360.0, -170.0])).tolist()
    [0.0, -170.0, 0.0, -170.0]
    """
    lon = np.asarray(lon, dtype=np.float64)
    return np.where(lon > 180.0, lon - 360.0, lon)


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    elif hasattr(x, "to_numpy"):  # pandas Series / Index
        x = x.to_numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} must be numbers (numpy, torch, list or pandas); got {type(x).__name__}: {err}"
        ) from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be one-dimensional (one value per point); got shape {arr.shape}. "
            "For an (n, 2) array of (lat, lon) use lat=a[:, 0], lon=a[:, 1]."
        )
    return arr


def _check_values(lat: np.ndarray, lon: np.ndarray) -> None:
    for name, arr in (("lat", lat), ("lon", lon)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{name}[{i}] = {arr[i]} is not a finite number ({bad.size} bad value(s) in all); "
                "drop or fill missing coordinates before geolocating."
            )
    bad = np.flatnonzero(np.abs(lat) > 90.0)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"lat[{i}] = {lat[i]} is outside [-90, 90] ({bad.size} bad value(s) in all); "
            f"latitude is never clamped. {_FIX_PROJECTED}"
        )
    bad = np.flatnonzero((lon < -180.0) | (lon > 360.0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"lon[{i}] = {lon[i]} is outside [-180, 360] ({bad.size} bad value(s) in all). "
            f"{_FIX_PROJECTED}"
        )


def _points_to_latlon(points: Any) -> tuple[np.ndarray, np.ndarray]:
    import shapely

    if hasattr(points, "crs"):  # GeoSeries/GeoDataFrame: the one CRS rule
        points = to_epsg4326(points, what="the points")
    geoms = getattr(points, "geometry", points)
    if isinstance(geoms, shapely.Geometry):
        geoms = [geoms]
    arr = np.asarray(list(geoms), dtype=object)
    is_point = np.array([isinstance(g, shapely.Point) and not g.is_empty for g in arr], bool)
    if not is_point.all():
        i = int(np.flatnonzero(~is_point)[0])
        raise ValueError(
            f"geometry at position {i} is {arr[i]!r}, not a non-empty Point; "
            "use centroids (gdf.centroid after projecting) or representative points."
        )
    return shapely.get_y(arr).astype(np.float64), shapely.get_x(arr).astype(np.float64)


def as_latlon(
    lat: Any = None, lon: Any = None, *, points: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate coordinates and return ``(lat, lon)`` as float64 numpy arrays in degrees.

    Parameters
    ----------
    lat, lon
        Array-likes of degrees (numpy, torch, list, pandas), same length; a scalar is
        one point.
    points
        Alternatively, shapely Points (degrees), a GeoSeries or a GeoDataFrame (any
        CRS, reprojected to EPSG:4326; one without a CRS is refused).

    Returns
    -------
    lat, lon : numpy.ndarray
        One-dimensional float64 arrays; longitudes normalised to ``(-180, 180]``.

    Raises
    ------
    ValueError
        NaN/inf, ``|lat| > 90``, longitude outside ``[-180, 360]``, mismatched lengths,
        non-point geometries, a GeoSeries/GeoDataFrame without a CRS, or both/neither
        of lat/lon and points.

    Examples
    --------
    >>> lat, lon = as_latlon(lat=[48.85, -33.9], lon=[2.35, 200.0])
    >>> lon.tolist()
    [2.35, -160.0]
    """
    if points is not None:
        if lat is not None or lon is not None:
            raise ValueError("pass either lat=/lon= or points=, not both.")
        lat_a, lon_a = _points_to_latlon(points)
    else:
        if lat is None or lon is None:
            raise ValueError("both lat= and lon= are required (degrees), or pass points=.")
        lat_a, lon_a = _to_numpy(lat, "lat"), _to_numpy(lon, "lon")
        if lat_a.shape != lon_a.shape:
            raise ValueError(
                f"lat and lon must have the same length; got {lat_a.size} and {lon_a.size}."
            )
    _check_values(lat_a, lon_a)
    return lat_a, normalize_lon(lon_a)


def check_latlon_tensor(latlon: torch.Tensor, name: str = "latlon") -> torch.Tensor:
    """Validate an ``(n, 2)`` tensor of ``(lat, lon)`` degrees; return it with lon normalised.

    The dtype and device are kept and autograd is not broken (normalisation is a
    ``torch.where``).

    Examples
    --------
    >>> check_latlon_tensor(torch.tensor([[10.0, 350.0]])).tolist()
    [[10.0, -10.0]]
    """
    if not isinstance(latlon, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (n, 2); got {type(latlon)}.")
    if latlon.ndim != 2 or latlon.shape[1] != 2:
        raise ValueError(
            f"{name} must have shape (n, 2) holding (lat, lon) degrees; got {tuple(latlon.shape)}."
        )
    if not latlon.is_floating_point():
        latlon = latlon.double()
    with torch.no_grad():
        lat_np = latlon[:, 0].detach().cpu().double().numpy()
        lon_np = latlon[:, 1].detach().cpu().double().numpy()
    _check_values(lat_np, lon_np)
    lon = latlon[:, 1]
    lon = torch.where(lon > 180.0, lon - 360.0, lon)
    return torch.stack([latlon[:, 0], lon], dim=1)
