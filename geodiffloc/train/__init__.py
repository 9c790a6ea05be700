"""Training LocDiff, GeoCLIP, HierLoc and G3 with Lightning (needs the ``[train]`` extra).

- :func:`train` — config file (or dict) in, exported model + metrics out; the same as
  ``geodiffloc train locdiff|geoclip|hierloc --config cfg.yaml``.
- :func:`fit` — train a model in place on in-memory tensors (behind ``LocDiff.fit``,
  ``GeoCLIP.fit`` and ``HierLoc.fit``), through the same modules, nothing written to disk.
- :func:`load_config` / :func:`default_config` — the config schema (pydantic models in
  :mod:`.schema`), defaults, validation.
- :class:`GeoDataModule` — loaders over a feature store or in-memory embeddings.
- :class:`LocDiffModule`, :class:`GeoCLIPModule`, :class:`HierLocModule`,
  :class:`G3Module` — the LightningModules (:func:`build_hierarchy`: HierLoc's entities
  from a config section; :func:`description_table`: G3's place descriptions).
"""

from .api import build_datamodule, build_module, train
from .config import FAMILIES, SOURCES, default_config, load_config
from .datamodule import EmbeddingDataset, GeoDataModule, split_indices
from .fitting import fit
from .g3_module import G3Module, description_table
from .modules import (
    GeoCLIPModule,
    HierLocModule,
    LocDiffModule,
    build_hierarchy,
    metric_name,
    training_gallery,
    warmup_cosine,
)
from .schema import G3Config, GeoCLIPConfig, HierLocConfig, LocDiffConfig, loss_options

__all__ = [
    "FAMILIES",
    "SOURCES",
    "EmbeddingDataset",
    "G3Config",
    "G3Module",
    "GeoCLIPConfig",
    "GeoCLIPModule",
    "GeoDataModule",
    "HierLocConfig",
    "HierLocModule",
    "LocDiffConfig",
    "LocDiffModule",
    "build_datamodule",
    "build_hierarchy",
    "build_module",
    "default_config",
    "description_table",
    "fit",
    "load_config",
    "loss_options",
    "metric_name",
    "split_indices",
    "train",
    "training_gallery",
    "warmup_cosine",
]
