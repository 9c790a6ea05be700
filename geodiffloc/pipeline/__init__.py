"""End-to-end jobs over the public API: the built-in default model and ``locate``.

- :func:`default_model` -- the offline place-description geolocator (LocDiff on MiniLM
  text embeddings of GeoNames places), trained on first use and cached;
- :func:`locate` -- inputs in; predictions (GeoPackage), probability raster (GeoTIFF),
  map (PNG) and per-country probabilities (CSV) out.
"""

from .default_model import (
    DEFAULT_MODEL_CONFIG,
    DEFAULT_MODEL_TEMPLATES,
    default_model,
    default_model_path,
    read_manifest,
    train_default_model,
)
from .locate import EXAMPLE_QUERIES, LocateResult, locate

__all__ = [
    "DEFAULT_MODEL_CONFIG",
    "DEFAULT_MODEL_TEMPLATES",
    "EXAMPLE_QUERIES",
    "LocateResult",
    "default_model",
    "default_model_path",
    "locate",
    "read_manifest",
    "train_default_model",
]
