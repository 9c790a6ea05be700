"""Point errors, accuracy at thresholds, GeoScore and the one-row summary."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..sphere import as_latlon, geodesic_km, haversine_km

__all__ = [
    "DEFAULT_THRESHOLDS_KM",
    "GEOSCORE_MAX",
    "GEOSCORE_SCALE_KM",
    "METHODS",
    "accuracy_at",
    "as_point_arrays",
    "check_thresholds",
    "errors_km",
    "geoscore",
    "paired_errors_km",
    "summarize",
    "summarize_errors",
    "threshold_key",
]

DEFAULT_THRESHOLDS_KM: tuple[float, ...] = (1.0, 25.0, 200.0, 750.0, 2500.0)
"""Street, city, region, country and continent scales (km) of the geolocation literature."""
GEOSCORE_MAX = 5000.0
"""GeoScore of a perfect prediction (the GeoGuessr-style score of PIGEON and OSV-5M)."""
GEOSCORE_SCALE_KM = 1492.7
"""Decay distance of the GeoScore ``GEOSCORE_MAX * exp(-d / GEOSCORE_SCALE_KM)``."""
METHODS: tuple[str, ...] = ("geodesic", "haversine")
"""Distance methods: WGS84 geodesic (pyproj) or great circle on the mean sphere."""

_LAT_NAMES = ("lat", "latitude")
_LON_NAMES = ("lon", "lng", "long", "longitude")


def _find_column(columns: Iterable[Any], names: tuple[str, ...]) -> str | None:
    lower = {str(c).lower(): c for c in columns}
    for name in names:
        if name in lower:
            return lower[name]
    return None


def as_point_arrays(points: Any, name: str = "points") -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(lat, lon)`` float64 arrays from the point containers metrics accept.

    Parameters
    ----------
    points
        An ``(n, 2)`` array-like or tensor of ``(lat, lon)`` degrees; a GeoDataFrame /
        GeoSeries / sequence of shapely Points (any geographic CRS); or a pandas
        DataFrame with ``lat``/``lon`` columns (any case; ``latitude``/``longitude``
        also recognised).
    name
        Used in error messages.

    Returns
    -------
    lat, lon : numpy.ndarray
        One-dimensional float64 arrays (longitude normalised to ``(-180, 180]``).

    Raises
    ------
    ValueError
        Wrong shape, missing lat/lon columns, or invalid coordinates
        (see :func:`geodiffloc.sphere.as_latlon`).

    Examples
    --------
    >>> lat, lon = as_point_arrays([[48.85, 2.35], [0.0, 190.0]])
    >>> lon.tolist()
    [2.35, -170.0]
    """
    import pandas as pd

    if hasattr(points, "geometry") or _is_shapely_sequence(points):
        try:
            return as_latlon(points=points)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    if isinstance(points, pd.DataFrame):
        lat_col = _find_column(points.columns, _LAT_NAMES)
        lon_col = _find_column(points.columns, _LON_NAMES)
        if lat_col is None or lon_col is None:
            raise ValueError(
                f"{name}: a DataFrame needs 'lat' and 'lon' columns (any case); it has "
                f"{list(points.columns)}."
            )
        points = points[[lat_col, lon_col]].to_numpy(dtype=np.float64)
    if hasattr(points, "detach"):  # torch tensor
        points = points.detach().cpu().double().numpy()
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must hold numbers; got {type(points).__name__}: {err}") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(
            f"{name} must have shape (n, 2) holding (lat, lon) degrees, or be a "
            f"GeoDataFrame of points; got shape {arr.shape}."
        )
    try:
        return as_latlon(lat=arr[:, 0], lon=arr[:, 1])
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def _is_shapely_sequence(points: Any) -> bool:
    import shapely

    if isinstance(points, shapely.Geometry):
        return True
    if isinstance(points, list | tuple) and points:
        return isinstance(points[0], shapely.Geometry)
    return False


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(
            f"method must be one of {METHODS} (WGS84 geodesic or great-circle); got {method!r}."
        )
    return method


def errors_km(
    pred_lat: Any,
    pred_lon: Any,
    true_lat: Any,
    true_lon: Any,
    method: str = "geodesic",
) -> np.ndarray:
    """Distance in km between each prediction and its true location.

    Parameters
    ----------
    pred_lat, pred_lon, true_lat, true_lon
        Degrees, array-likes of one length (a length-1 side is broadcast).
    method
        ``"geodesic"`` (default): shortest path on the WGS84 ellipsoid
        (:func:`geodiffloc.sphere.geodesic_km`, Karney's algorithm, what the papers'
        "km" means in practice); ``"haversine"``: great circle on the sphere of mean
        radius 6371.0088 km (:func:`geodiffloc.sphere.haversine_km`). The two differ by
        at most about 0.5 %.

    Returns
    -------
    numpy.ndarray
        float64 distances, one per pair, never negative.

    Raises
    ------
    ValueError
        Invalid coordinates, mismatched lengths or an unknown ``method``.

    Examples
    --------
    >>> round(float(errors_km(0, 0, 0, 1)[0]), 3)
    111.319
    >>> round(float(errors_km(0, 179.5, 0, -179.5, method="haversine")[0]), 3)
    111.195
    """
    _check_method(method)
    plat, plon = as_latlon(lat=pred_lat, lon=pred_lon)
    tlat, tlon = as_latlon(lat=true_lat, lon=true_lon)
    if plat.size != tlat.size and 1 not in (plat.size, tlat.size):
        raise ValueError(
            f"predictions and truth must have the same length; got {plat.size} and {tlat.size}."
        )
    if method == "geodesic":
        return geodesic_km(plat, plon, tlat, tlon)
    import torch

    t = [torch.tensor(a, dtype=torch.float64) for a in (plat, plon, tlat, tlon)]  # copies
    d = haversine_km(*t).numpy()
    # haversine_km floors its sqrt argument for a finite gradient at 0 (6e-12 km);
    # an evaluation metric reports coincident points as exactly 0.
    return np.where(d < 1e-9, 0.0, d)


def paired_errors_km(pred: Any, truth: Any, method: str = "geodesic") -> np.ndarray:
    """:func:`errors_km` for two point containers matched by position.

    Parameters
    ----------
    pred, truth
        ``(n, 2)`` ``(lat, lon)`` arrays/tensors, GeoDataFrames of points or DataFrames
        with lat/lon columns (see :func:`as_point_arrays`); row ``i`` of ``pred`` is the
        prediction for row ``i`` of ``truth``.
    method
        ``"geodesic"`` or ``"haversine"``.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64 errors in km.

    Raises
    ------
    ValueError
        Invalid or empty input, or different numbers of rows.

    Examples
    --------
    >>> paired_errors_km([[0, 0]], [[0, 0]]).tolist()
    [0.0]
    """
    plat, plon = as_point_arrays(pred, "pred")
    tlat, tlon = as_point_arrays(truth, "truth")
    if plat.size != tlat.size:
        raise ValueError(
            f"pred has {plat.size} points but truth has {tlat.size}; they are matched by "
            "position, so they must be the same length (join on an id first)."
        )
    if plat.size == 0:
        raise ValueError("no points to evaluate: pred and truth are empty.")
    return errors_km(plat, plon, tlat, tlon, method=method)


def check_thresholds(thresholds: Iterable[float]) -> tuple[float, ...]:
    """Sorted, de-duplicated positive finite thresholds in km.

    Raises
    ------
    ValueError
        If empty, non-numeric, non-finite or not positive.

    Examples
    --------
    >>> check_thresholds([750, 25, 25])
    (25.0, 750.0)
    """
    try:
        values = np.asarray(list(thresholds), dtype=np.float64).ravel()
    except (TypeError, ValueError) as err:
        raise ValueError(f"thresholds must be numbers in km; {err}") from None
    if values.size == 0:
        raise ValueError("give at least one threshold in km, e.g. (1, 25, 200, 750, 2500).")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"thresholds must be positive finite km; got {values.tolist()}.")
    return tuple(float(v) for v in np.unique(values))


def threshold_key(threshold_km: float) -> str:
    """Column name of the accuracy at one threshold in :func:`summarize` output.

    Examples
    --------
    >>> threshold_key(25.0), threshold_key(0.5)
    ('acc@25km_%', 'acc@0.5km_%')
    """
    return f"acc@{threshold_km:g}km_%"


def _check_errors(errors: Any) -> np.ndarray:
    if hasattr(errors, "detach"):
        errors = errors.detach().cpu().numpy()
    arr = np.asarray(errors, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError("no errors given: the metric of an empty set is undefined.")
    bad = np.flatnonzero(~np.isfinite(arr) | (arr < 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"errors must be finite, non-negative km; errors[{i}] = {arr[i]} "
            f"({bad.size} bad value(s))."
        )
    return arr


def accuracy_at(
    errors_km: Any, thresholds: Iterable[float] = DEFAULT_THRESHOLDS_KM
) -> dict[float, float]:
    """Fraction of errors within each threshold, thresholds **inclusive** (``d <= t``).

    Parameters
    ----------
    errors_km
        Non-negative distances in km (e.g. from :func:`errors_km`).
    thresholds
        Distances in km; default ``(1, 25, 200, 750, 2500)``.

    Returns
    -------
    dict
        ``{threshold_km: fraction in [0, 1]}``, thresholds ascending.

    Raises
    ------
    ValueError
        Empty, negative or non-finite errors; invalid thresholds.

    Examples
    --------
    >>> accuracy_at([0.5, 25.0, 300.0], thresholds=(1, 25, 200))
    {1.0: 0.3333333333333333, 25.0: 0.6666666666666666, 200.0: 0.6666666666666666}
    """
    errs = _check_errors(errors_km)
    return {t: float(np.mean(errs <= t)) for t in check_thresholds(thresholds)}


def geoscore(errors_km: Any) -> np.ndarray:
    """GeoScore of each error: ``5000 * exp(-d / 1492.7 km)`` (0 km scores 5000).

    Parameters
    ----------
    errors_km
        Non-negative distances in km.

    Returns
    -------
    numpy.ndarray
        float64 scores in ``(0, 5000]``; :func:`summarize` reports their mean.

    Raises
    ------
    ValueError
        Empty, negative or non-finite errors.

    Examples
    --------
    >>> geoscore([0.0, 1492.7]).round(3).tolist()
    [5000.0, 1839.397]
    """
    return GEOSCORE_MAX * np.exp(-_check_errors(errors_km) / GEOSCORE_SCALE_KM)


def summarize_errors(
    errors: Any,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS_KM,
    method: str = "geodesic",
) -> dict[str, Any]:
    """:func:`summarize` for errors already computed (``method`` only labels them).

    Examples
    --------
    >>> summarize_errors([0.0, 10.0], thresholds=(1,))["acc@1km_%"]
    50.0
    """
    errs = _check_errors(errors)
    out: dict[str, Any] = {"n": int(errs.size), "method": _check_method(method)}
    for t, frac in accuracy_at(errs, thresholds).items():
        out[threshold_key(t)] = 100.0 * frac
    out["median_km"] = float(np.median(errs))
    out["mean_km"] = float(np.mean(errs))
    out["geoscore"] = float(np.mean(geoscore(errs)))
    return out


def summarize(
    pred: Any,
    truth: Any,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS_KM,
    method: str = "geodesic",
) -> dict[str, Any]:
    """All standard geolocation metrics for predictions matched to truth by position.

    Parameters
    ----------
    pred, truth
        ``(n, 2)`` ``(lat, lon)`` degrees (numpy/torch/list), GeoDataFrames of points or
        DataFrames with lat/lon columns; row ``i`` of ``pred`` predicts row ``i`` of
        ``truth``.
    thresholds
        Accuracy thresholds in km (inclusive), default ``(1, 25, 200, 750, 2500)``.
    method
        ``"geodesic"`` (WGS84, default) or ``"haversine"`` (mean sphere).

    Returns
    -------
    dict
        Keys, in order: ``n``; ``method`` (the distance used); ``acc@{t}km_%`` for each
        threshold -- the **percentage** (0-100) of predictions with error ``<= t`` km;
        ``median_km``; ``mean_km``; ``geoscore`` (mean GeoScore, 0-5000).
        ``pandas.DataFrame([summary])`` makes it a table.

    Raises
    ------
    ValueError
        Invalid coordinates, different lengths, empty input, bad thresholds or method.

    Examples
    --------
    >>> s = summarize([[0, 0], [0, 1]], [[0, 0], [0, 0]], thresholds=(1, 200))
    >>> s["n"], s["acc@1km_%"], s["acc@200km_%"], round(s["median_km"], 3)
    (2, 50.0, 100.0, 55.66)
    """
    errs = paired_errors_km(pred, truth, method=method)
    return summarize_errors(errs, thresholds, method)
