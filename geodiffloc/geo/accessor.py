"""The ``da.geoloc`` xarray accessor: the GIS functions as methods of a field.

The accessor holds only the DataArray xarray hands it; every method recomputes from
that array, so a field edited in place is never served stale results.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import xarray as xr

from ._field import field_parts, masses
from ._validate import check_count, check_finite_masses

if TYPE_CHECKING:
    import folium
    import geopandas as gpd
    from matplotlib.axes import Axes

__all__ = ["GeolocAccessor", "top_cells"]


def top_cells(da: xr.DataArray, k: int = 10) -> gpd.GeoDataFrame:
    """The ``k`` most probable cells of each query as points (cell centres).

    Parameters
    ----------
    da
        A field; probability fields are ranked by cell mass (column ``mass``), score
        fields (similarity/logit) by value (column ``score``).
    k
        Cells per query.

    Returns
    -------
    geopandas.GeoDataFrame
        EPSG:4326 with ``query`` (position of the query), ``rank`` (1 = best), ``lat``,
        ``lon``, ``mass`` or ``score`` and a ``label`` column holding the leading
        coordinate.

    Raises
    ------
    ValueError
        Not a field, or ``k`` not in ``[1, number of cells]``.

    Examples
    --------
    >>> from geodiffloc.sphere import LatLonGrid
    >>> g = LatLonGrid.global_(10.0)
    >>> m = np.zeros(g.shape); m[4, 20] = 1.0
    >>> top_cells(g.to_dataarray(m, kind="mass"), k=1)[["lat", "lon", "mass"]].values.tolist()
    [[45.0, 25.0, 1.0]]
    """
    from .vector import predictions_to_gdf

    parts = field_parts(da)
    n_lat, n_lon = parts.grid.shape
    k = check_count(k, "k", n_lat * n_lon)
    if parts.kind in ("similarity", "logit"):
        vals, col = parts.values, "score"
    else:
        vals, col = masses(parts, "top"), "mass"
        check_finite_masses(vals, "top")
    flat = np.nan_to_num(vals.reshape(parts.n_queries, -1), nan=-np.inf)
    best = np.argsort(-flat, axis=1, kind="stable")[:, :k]
    r, c = np.divmod(best, n_lon)
    latlon = np.stack([parts.grid.lat[r], parts.grid.lon[c]], axis=-1)
    labels = np.asarray(parts.query_labels(), dtype=object)
    return predictions_to_gdf(latlon, **{col: np.take_along_axis(flat, best, axis=1),
                                         "label": labels})


@xr.register_dataarray_accessor("geoloc")
class GeolocAccessor:
    """GIS methods on a field DataArray: ``da.geoloc.to_geotiff(...)``, ``.zonal(...)``, ...

    Works on fields built by geodiffloc and on what ``rioxarray.open_rasterio`` returns
    (``(band, y, x)``; other CRSs are reprojected to EPSG:4326 with a warning).

    Examples
    --------
    >>> from geodiffloc.sphere import LatLonGrid
    >>> g = LatLonGrid.global_(10.0)
    >>> da = g.to_dataarray(np.full(g.shape, 1 / 648), kind="mass")
    >>> da.geoloc.to_density().attrs["units"]
    'km-2'
    """

    __slots__ = ("_da",)

    def __init__(self, da: xr.DataArray) -> None:
        self._da = da

    def to_geotiff(
        self,
        path: str | os.PathLike,
        *,
        kind: Literal["density", "mass"] | None = None,
        driver: Literal["COG", "GTiff"] = "COG",
        compress: str = "deflate",
        overwrite: bool = True,
        nodata: float = math.nan,
        qml: bool = True,
    ) -> Path:
        """Write as GeoTIFF (km⁻² densities by default); see :func:`~geodiffloc.geo.to_geotiff`."""
        from .raster import to_geotiff

        return to_geotiff(self._da, path, kind=kind, driver=driver, compress=compress,
                          overwrite=overwrite, nodata=nodata, qml=qml)

    def zonal(
        self,
        polygons: gpd.GeoDataFrame | gpd.GeoSeries,
        *,
        column: str = "prob",
        layout: Literal["wide", "long"] = "wide",
        supersample: int | None = None,
        progress: bool | None = None,
    ) -> gpd.GeoDataFrame:
        """Probability per polygon; see :func:`geodiffloc.geo.zonal_probability`."""
        from .zonal import zonal_probability

        return zonal_probability(self._da, polygons, column=column, layout=layout,
                                 supersample=supersample, progress=progress)

    def credible_regions(self, levels: Sequence[float] = (0.5, 0.9, 0.95)) -> gpd.GeoDataFrame:
        """Highest-density regions; see :func:`geodiffloc.geo.credible_regions`."""
        from .regions import credible_regions

        return credible_regions(self._da, levels)

    def top(self, k: int = 10) -> gpd.GeoDataFrame:
        """The k most probable cells per query; see :func:`top_cells`."""
        return top_cells(self._da, k)

    def to_mass(self) -> xr.DataArray:
        """Cell masses; see :func:`geodiffloc.geo.to_mass`."""
        from .raster import to_mass

        return to_mass(self._da)

    def to_density(self) -> xr.DataArray:
        """Densities per km²; see :func:`geodiffloc.geo.to_density`."""
        from .raster import to_density

        return to_density(self._da)

    def plot(
        self,
        *,
        points: Any = None,
        truth: Any = None,
        log: bool = False,
        ax: Axes | None = None,
        index: int = 0,
        density: bool = True,
        borders: str | None = "lowres",
        cmap: str = "magma",
        title: str | None = None,
        points_label: str = "prediction",
    ) -> Axes:
        """Static world map; see :func:`geodiffloc.geo.plot_field`.

        ``points``/``truth``: ``(n, 2)`` lat/lon arrays or point GeoDataFrames.
        """
        from .plot import plot_field

        return plot_field(self._da, points=points, truth=truth, log=log, ax=ax, index=index,
                          density=density, borders=borders, cmap=cmap, title=title,
                          points_label=points_label)

    def interactive_map(
        self,
        points: Any = None,
        *,
        truth: Any = None,
        index: int = 0,
        log: bool = False,
        density: bool = True,
        cmap: str = "magma",
        opacity: float = 0.65,
        regions: gpd.GeoDataFrame | None = None,
        points_label: str = "prediction",
    ) -> folium.Map:
        """Folium map with a colour legend; see :func:`geodiffloc.geo.interactive_map`."""
        from .plot import interactive_map

        return interactive_map(self._da, points, truth=truth, index=index, log=log,
                               density=density, cmap=cmap, opacity=opacity, regions=regions,
                               points_label=points_label)
