"""The library's one reprojection rule.

Every function that takes GeoDataFrames or GeoSeries applies it through
:func:`to_epsg4326`: the CRS the user declared is trusted, whatever it is (geographic
or projected), and the data are reprojected to EPSG:4326 explicitly; only data that
*could* carry a CRS but do not are refused, because their units are unknown. Plain
numbers (``lat=``, ``lon=``) and bare shapely geometries carry no CRS: they are
degrees, and projected coordinates passed that way fail the range checks of
:func:`~geodiffloc.sphere.as_latlon`.
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["to_epsg4326"]

T = TypeVar("T")


def to_epsg4326(data: T, *, what: str = "the data") -> T:
    """Reproject a GeoDataFrame or GeoSeries to EPSG:4326 (lon/lat degrees).

    Parameters
    ----------
    data
        A ``geopandas.GeoDataFrame`` or ``GeoSeries`` (anything with ``.crs`` and
        ``.to_crs``) in any CRS.
    what
        How error messages name ``data`` (e.g. ``"the polygons"``).

    Returns
    -------
    Same type as ``data``
        ``data`` itself when already EPSG:4326, else ``data.to_crs("EPSG:4326")``.

    Raises
    ------
    ValueError
        ``data`` has no CRS (``.crs is None``): its coordinates could be degrees or
        metres, and guessing would put points in the wrong place silently.

    Examples
    --------
    >>> import geopandas as gpd
    >>> # the origin of Lambert-93 (EPSG:2154) is 3°E 46.5°N
    >>> pts = gpd.GeoSeries(gpd.points_from_xy([700_000.0], [6_600_000.0]), crs="EPSG:2154")
    >>> p = to_epsg4326(pts).iloc[0]
    >>> round(p.y, 2), round(p.x, 2), to_epsg4326(pts).crs.to_epsg()
    (46.5, 3.0, 4326)
    """
    crs = getattr(data, "crs", _MISSING)
    if crs is _MISSING or not hasattr(data, "to_crs"):
        raise ValueError(
            f"{what} must be a GeoDataFrame or GeoSeries (something with a CRS); got "
            f"{type(data).__name__}."
        )
    if crs is None:
        raise ValueError(
            f"{what} has no CRS, so their units are unknown; set the CRS they are in, "
            "e.g. gdf.set_crs('EPSG:4326') for lon/lat degrees or gdf.set_crs('EPSG:3857') "
            "for Web Mercator metres. Any CRS is accepted and reprojected to EPSG:4326."
        )
    if _is_epsg4326(crs):
        return data
    return data.to_crs("EPSG:4326")


_MISSING = object()


def _is_epsg4326(crs: Any) -> bool:
    try:
        return crs.to_epsg() == 4326
    except AttributeError:  # a CRS given as a plain string or code by a duck type
        from pyproj import CRS

        return CRS.from_user_input(crs).to_epsg() == 4326
