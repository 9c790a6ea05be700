"""The sphere layer: coordinates, the CRS rule, distances, anchor sets and the lat/lon grid."""

from .anchors import (
    cap_random,
    fibonacci_lattice,
    gallery_anchors,
    regular_grid_anchors,
    uniform_random,
)
from .coords import as_latlon, check_latlon_tensor, normalize_lon
from .crs import to_epsg4326
from .distance import (
    EARTH_RADIUS_KM,
    geodesic_km,
    haversine_km,
    latlon_to_xyz,
    pairwise_haversine_km,
    spherical_mean,
    xyz_to_latlon,
)
from .grid import FIELD_KINDS, LatLonGrid

__all__ = [
    "EARTH_RADIUS_KM",
    "FIELD_KINDS",
    "LatLonGrid",
    "as_latlon",
    "cap_random",
    "check_latlon_tensor",
    "fibonacci_lattice",
    "gallery_anchors",
    "geodesic_km",
    "haversine_km",
    "latlon_to_xyz",
    "normalize_lon",
    "pairwise_haversine_km",
    "regular_grid_anchors",
    "spherical_mean",
    "to_epsg4326",
    "uniform_random",
    "xyz_to_latlon",
]
