"""Injection point between the field builder (bottom layer) and the GIS layer above it.

Every field is built by :meth:`geodiffloc.sphere.LatLonGrid.to_dataarray`, in the
bottom layer, yet the ``da.geoloc`` accessor that every field should carry is GIS code
(it writes GeoTIFFs, draws maps) and sits above every model. The bottom layer must not
import it. Instead the package root, which sits above every layer and is imported
before any of them, registers here a callable that imports the accessor; the builder
runs the registered callables once, just before the first field is built.

This module imports nothing heavy: ``import geodiffloc`` loads it.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["before_first_field", "run_before_first_field"]

_pending: list[Callable[[], object]] = []


def before_first_field(fn: Callable[[], object]) -> None:
    """Run ``fn()`` once, before the next field is built (now, if one already was)."""
    _pending.append(fn)


def run_before_first_field() -> None:
    """Run (once each) the callables registered with :func:`before_first_field`."""
    while _pending:
        _pending.pop(0)()
