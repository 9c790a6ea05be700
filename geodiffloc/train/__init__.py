"""Training LocDiff and GeoCLIP with Lightning (needs the ``[train]`` extra).

- :func:`train` — config file (or dict) in, exported model + metrics out; the same as
  ``geodiffloc train locdiff|geoclip --config cfg.yaml``.
- :func:`load_config` / :func:`default_config` — the config schema, defaults, validation.
- :class:`GeoDataModule` — loaders over a feature store or in-memory embeddings.
- :class:`LocDiffModule`, :class:`GeoCLIPModule` — the LightningModules.
"""

from .api import build_datamodule, build_module, train
from .config import FAMILIES, SOURCES, default_config, load_config
from .datamodule import EmbeddingDataset, GeoDataModule, split_indices
from .modules import GeoCLIPModule, LocDiffModule, metric_name, training_gallery

__all__ = [
    "FAMILIES",
    "SOURCES",
    "EmbeddingDataset",
    "GeoCLIPModule",
    "GeoDataModule",
    "LocDiffModule",
    "build_datamodule",
    "build_module",
    "default_config",
    "load_config",
    "metric_name",
    "split_indices",
    "train",
    "training_gallery",
]
