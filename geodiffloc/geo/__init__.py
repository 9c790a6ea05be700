"""The GIS face of geodiffloc: fields as rasters, predictions as vectors, maps.

Works on any field that follows the grid contract (``LatLonGrid.to_dataarray``):
SHDD fields, GeoCLIP similarity maps, LocDiff mixtures. Importing this package
registers the ``da.geoloc`` xarray accessor.

Examples
--------
>>> import numpy as np
>>> from geodiffloc.sphere import LatLonGrid
>>> g = LatLonGrid.global_(10.0)
>>> field = g.to_dataarray(np.full(g.shape, 1 / 648), kind="mass")
>>> field.geoloc.top(1).crs.to_epsg()
4326
"""

from .accessor import GeolocAccessor, top_cells
from .naturalearth import continent_of, countries, country_of
from .plot import interactive_map, plot_field
from .raster import read_geotiff, resample_to_grid, to_density, to_geotiff, to_mass
from .regions import credible_regions, geodesic_area_km2, hpd_mask
from .vector import join_nearest, join_within, predictions_to_gdf, write_vector
from .zonal import cell_coverage, zonal_probability

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
