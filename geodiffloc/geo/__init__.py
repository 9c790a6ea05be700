"""The GIS face of geodiffloc: fields as rasters, predictions as vectors, maps.

Works on any field that follows the grid contract (``LatLonGrid.to_dataarray``):
SHDD fields, GeoCLIP similarity maps, LocDiff mixtures. Every field carries the
``da.geoloc`` xarray accessor: it is registered the first time any field is built,
or when this package is imported.

The other submodules load on first use, so the accessor (and the rest of the library)
can use one part of the GIS layer without loading plotting, rasters and vectors.

Examples
--------
>>> import numpy as np
>>> from geodiffloc.sphere import LatLonGrid
>>> g = LatLonGrid.global_(10.0)
>>> field = g.to_dataarray(np.full(g.shape, 1 / 648), kind="mass")
>>> field.geoloc.top(1).crs.to_epsg()
4326
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .accessor import GeolocAccessor, top_cells

if TYPE_CHECKING:  # static names for type checkers and the API docs
    from .naturalearth import continent_of, countries, country_of
    from .plot import interactive_map, plot_field
    from .raster import read_geotiff, resample_to_grid, to_density, to_geotiff, to_mass
    from .regions import credible_regions, geodesic_area_km2, hpd_mask
    from .vector import join_nearest, join_within, predictions_to_gdf, write_vector
    from .zonal import cell_coverage, zonal_probability

_LAZY = {
    "cell_coverage": "zonal",
    "continent_of": "naturalearth",
    "countries": "naturalearth",
    "country_of": "naturalearth",
    "credible_regions": "regions",
    "geodesic_area_km2": "regions",
    "hpd_mask": "regions",
    "interactive_map": "plot",
    "join_nearest": "vector",
    "join_within": "vector",
    "plot_field": "plot",
    "predictions_to_gdf": "vector",
    "read_geotiff": "raster",
    "resample_to_grid": "raster",
    "to_density": "raster",
    "to_geotiff": "raster",
    "to_mass": "raster",
    "write_vector": "vector",
    "zonal_probability": "zonal",
}

__all__ = [
    "GeolocAccessor",
    "cell_coverage",
    "continent_of",
    "countries",
    "country_of",
    "credible_regions",
    "geodesic_area_km2",
    "hpd_mask",
    "interactive_map",
    "join_nearest",
    "join_within",
    "plot_field",
    "predictions_to_gdf",
    "read_geotiff",
    "resample_to_grid",
    "to_density",
    "to_geotiff",
    "to_mass",
    "top_cells",
    "write_vector",
    "zonal_probability",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
