"""Metrics per continent or country of the true location (offline Natural Earth)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import ArrayLike

from .core import DEFAULT_THRESHOLDS_KM, as_point_arrays, paired_errors_km, summarize_errors

__all__ = ["UNMATCHED_GROUP", "breakdown", "group_of"]

UNMATCHED_GROUP = "ocean/unknown"
"""Group of true locations in no country polygon and farther than ``max_km`` from one."""

_BY_COLUMN = {"continent": "continent", "country": "name"}


def group_of(
    truth: Any, by: str = "continent", *, scale: Literal["10m", "lowres"] = "10m",
    max_km: float = 50.0
) -> np.ndarray:
    """Continent / country (or another Natural Earth column) of each point.

    Parameters
    ----------
    truth
        Points (see :func:`geodiffloc.metrics.core.as_point_arrays`).
    by
        ``"continent"``, ``"country"`` (the Natural Earth ``name``), or any column of
        :func:`geodiffloc.geo.naturalearth.countries` such as ``"iso_a3"`` or
        ``"subregion"``.
    scale
        ``"10m"`` (250 polygons, needs ``geodiffloc[data]``) or ``"lowres"``.
    max_km
        Points outside every polygon join the nearest one within this geodesic
        distance (coasts, small islands); farther ones are :data:`UNMATCHED_GROUP`.

    Returns
    -------
    numpy.ndarray
        Object array of group names, one per point.

    Raises
    ------
    ValueError
        Invalid points or an unknown ``by`` column.

    Examples
    --------
    >>> group_of([[48.86, 2.35], [0.0, -30.0]], "country", scale="lowres").tolist()
    ['France', 'ocean/unknown']
    """
    from ..geo.naturalearth import country_of  # lazy: geopandas + the polygon file

    lat, lon = as_point_arrays(truth, "truth")
    column = _BY_COLUMN.get(by, by)
    try:
        groups = country_of(lat, lon, scale=scale, column=column, max_km=max_km)
    except ValueError as err:
        if "column" in str(err):
            raise ValueError(
                f"by must be 'continent', 'country' or a Natural Earth column; {err}"
            ) from None
        raise
    missing = np.array([g is None or (isinstance(g, float) and np.isnan(g)) for g in groups])
    groups = groups.astype(object)
    groups[missing] = UNMATCHED_GROUP
    return np.array([str(g) for g in groups], dtype=object)


def breakdown(
    pred: ArrayLike,
    truth: ArrayLike,
    by: str = "continent",
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS_KM,
    method: str = "geodesic",
    *,
    scale: Literal["10m", "lowres"] = "10m",
    max_km: float = 50.0,
) -> pd.DataFrame:
    """:func:`~geodiffloc.metrics.summarize` per group of the **true** location.

    Each true location is joined spatially with the offline Natural Earth countries
    (:func:`geodiffloc.geo.naturalearth.country_of`); its group is that country's
    continent or name. Points in the open ocean form the group ``"ocean/unknown"``.

    Parameters
    ----------
    pred, truth
        Points matched by position (``(n, 2)`` ``(lat, lon)``, GeoDataFrames, ...).
    by
        ``"continent"``, ``"country"``, or another Natural Earth column (``"iso_a3"``,
        ``"subregion"``, ...).
    thresholds, method
        As in :func:`~geodiffloc.metrics.summarize`.
    scale, max_km
        Natural Earth scale and coastal snapping distance, see :func:`group_of`.

    Returns
    -------
    pandas.DataFrame
        One row per group (index named ``by``), most points first (ties by name), with
        the columns of :func:`~geodiffloc.metrics.summarize`.

    Raises
    ------
    ValueError
        Invalid points, mismatched lengths, bad thresholds/method or ``by``.

    Examples
    --------
    >>> t = [[48.86, 2.35], [52.52, 13.40], [-33.87, 151.21]]
    >>> breakdown(t, t, scale="lowres")["n"].to_dict()
    {'Europe': 2, 'Oceania': 1}
    """
    import pandas as pd

    errs = paired_errors_km(pred, truth, method=method)
    groups = group_of(truth, by, scale=scale, max_km=max_km)
    rows = {}
    for g in np.unique(groups):
        rows[g] = summarize_errors(errs[groups == g], thresholds, method)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = by
    order = sorted(rows, key=lambda g: (-rows[g]["n"], g))
    return table.loc[order]
