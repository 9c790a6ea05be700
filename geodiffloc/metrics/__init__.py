"""Geolocation metrics: errors, accuracy at distance thresholds, GeoScore, breakdowns.

The numbers the geolocalization papers report, computed the same way for the user's
own data:

* :func:`errors_km` -- WGS84 geodesic (default, :class:`pyproj.Geod`) or great-circle
  (haversine, mean Earth radius) distances between predictions and truth;
* :func:`accuracy_at` -- share of predictions within 1, 25, 200, 750 and 2500 km
  (street, city, region, country, continent), thresholds inclusive;
* :func:`geoscore` -- ``5000 * exp(-d / 1492.7 km)`` as reported by PIGEON / OSV-5M;
* :func:`summarize` / :func:`breakdown` -- one row of all of these, overall or per
  continent / country of the true location (Natural Earth, offline);
* :func:`density_coverage` -- the density / coverage of Naeem et al. (2020) on the
  sphere, as used by Dufour et al. (2024) for generative geolocation samples;
* :func:`read_locations`, :func:`write_table`, :func:`plot_errors` -- the file side of
  ``geodiffloc evaluate``.
"""

from .core import (
    DEFAULT_THRESHOLDS_KM,
    GEOSCORE_MAX,
    GEOSCORE_SCALE_KM,
    METHODS,
    accuracy_at,
    as_point_arrays,
    check_thresholds,
    errors_km,
    geoscore,
    paired_errors_km,
    summarize,
    summarize_errors,
    threshold_key,
)
from .generative import density_coverage
from .groups import UNMATCHED_GROUP, breakdown, group_of
from .report import format_markdown, plot_errors, read_locations, write_table

__all__ = [
    "DEFAULT_THRESHOLDS_KM",
    "GEOSCORE_MAX",
    "GEOSCORE_SCALE_KM",
    "METHODS",
    "UNMATCHED_GROUP",
    "accuracy_at",
    "as_point_arrays",
    "breakdown",
    "check_thresholds",
    "density_coverage",
    "errors_km",
    "format_markdown",
    "geoscore",
    "group_of",
    "paired_errors_km",
    "plot_errors",
    "read_locations",
    "summarize",
    "summarize_errors",
    "threshold_key",
    "write_table",
]
