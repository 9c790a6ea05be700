"""Injection points where a lower layer needs a service of a higher one.

**Fields.** Every field is built by :meth:`geodiffloc.sphere.LatLonGrid.to_dataarray`, in the
bottom layer, yet the ``da.geoloc`` accessor that every field should carry is GIS code
(it writes GeoTIFFs, draws maps) and sits above every model. The bottom layer must not
import it. Instead the package root, which sits above every layer and is imported
before any of them, registers here a callable that imports the accessor; the builder
runs the registered callables once, just before the first field is built.

**Training.** ``LocDiff.fit`` and ``GeoCLIP.fit`` (the models layer) are conveniences
over the Lightning training path, which sits above the models (``geodiffloc.train``
imports the models, never the other way round). The package root registers the
trainer with :func:`provide_trainer`; a model's ``fit`` gets it from :func:`trainer`.

This module imports nothing heavy: ``import geodiffloc`` loads it.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["before_first_field", "provide_trainer", "run_before_first_field", "trainer"]

_pending: list[Callable[[], object]] = []
_trainer: list[Callable[[], Callable[..., list[float]]]] = []


def before_first_field(fn: Callable[[], object]) -> None:
    """Run ``fn()`` once, before the next field is built (now, if one already was)."""
    _pending.append(fn)


def run_before_first_field() -> None:
    """Run (once each) the callables registered with :func:`before_first_field`."""
    while _pending:
        _pending.pop(0)()


def provide_trainer(loader: Callable[[], Callable[..., list[float]]]) -> None:
    """Register ``loader``, which returns the in-memory training function (imported lazily)."""
    _trainer[:] = [loader]


def trainer() -> Callable[..., list[float]]:
    """The in-memory training function registered by the package root.

    Raises
    ------
    RuntimeError
        If nothing registered one (the package root always does).
    """
    if not _trainer:
        raise RuntimeError("no trainer registered; import geodiffloc (the package root) first.")
    return _trainer[0]()
