"""End-to-end jobs over the public API: the built-in default model, ``locate``, batches.

- :func:`default_model` -- the offline place-description geolocator (LocDiff on MiniLM
  text embeddings of GeoNames places), trained on first use and cached;
- :func:`locate` -- inputs in; predictions (GeoPackage), probability raster (GeoTIFF),
  map (PNG) and per-country probabilities (CSV) out;
- :func:`locate_batch` -- a folder, text file or table in; GeoParquet parts, a Zarr
  probability cube and summaries out, streamed, resumable, on Dask;
- :func:`resolve_runner` -- any model name, checkpoint or object behind one interface.
"""

from .batch import BatchResult, local_client, locate_batch, read_predictions
from .default_model import (
    DEFAULT_MODEL_CONFIG,
    DEFAULT_MODEL_TEMPLATES,
    default_model,
    default_model_path,
    read_manifest,
    train_default_model,
)
from .inputs import InputReader, read_inputs
from .locate import EXAMPLE_QUERIES, LocateResult, locate
from .models import MODEL_NAMES, Runner, resolve_runner

__all__ = [
    "DEFAULT_MODEL_CONFIG",
    "DEFAULT_MODEL_TEMPLATES",
    "EXAMPLE_QUERIES",
    "MODEL_NAMES",
    "BatchResult",
    "InputReader",
    "LocateResult",
    "Runner",
    "default_model",
    "default_model_path",
    "local_client",
    "locate",
    "locate_batch",
    "read_inputs",
    "read_manifest",
    "read_predictions",
    "resolve_runner",
    "train_default_model",
]
