"""geodiffloc: worldwide image geolocalization with GIS-ready outputs.

The heavy parts are imported lazily, so ``import geodiffloc`` is cheap and the CLI
starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._hooks import before_first_field, provide_trainer
from ._version import __version__
from .show_versions import show_versions


def _register_geoloc_accessor() -> None:
    # The package root is the one place above every layer: it wires the GIS layer's
    # ``da.geoloc`` accessor into the field builder of the bottom layer. Only the
    # accessor module loads (geo's package is lazy), not the plotting or vector code.
    importlib.import_module("geodiffloc.geo.accessor")


def _trainer() -> Any:
    # Likewise ``Model.fit`` (models layer) runs the Lightning path of the train layer
    # above it: the root hands it over, so no model module imports geodiffloc.train.
    return importlib.import_module("geodiffloc.train.fitting").fit


before_first_field(_register_geoloc_accessor)
provide_trainer(_trainer)

_LAZY = {
    "SHDD": "geodiffloc.shdd",
    "GeoCLIP": "geodiffloc.models.geoclip",
    "LocDiff": "geodiffloc.models.locdiff",
    "LocDiffH": "geodiffloc.models.locdiff",
    "HierLoc": "geodiffloc.models.hierloc",
    "G3": "geodiffloc.models.g3",
    "locate": "geodiffloc.pipeline",
    "locate_batch": "geodiffloc.pipeline",
    "geo": "geodiffloc.geo",
    "metrics": "geodiffloc.metrics",
    "sphere": "geodiffloc.sphere",
    "harmonics": "geodiffloc.harmonics",
}

__all__ = ["__version__", "show_versions", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if module.__name__.endswith(name) else getattr(module, name)
    raise AttributeError(f"module 'geodiffloc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
