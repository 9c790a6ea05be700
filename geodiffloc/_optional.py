"""Optional dependencies: imported where used, with an error that names the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise ModuleNotFoundError saying which extra installs it.

    Parameters
    ----------
    module
        Module to import (e.g. ``"matplotlib"``).
    extra
        The ``geodiffloc[...]`` extra that installs it (e.g. ``"plot"``).
    feature
        What needs it, for the message (e.g. ``"plot_field"``).

    Examples
    --------
    >>> require("math", extra="none", feature="a doctest").sqrt(4.0)
    2.0
    >>> require("no_such_module_xyz", extra="plot", feature="maps")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ModuleNotFoundError: maps needs ... 'no_such_module_xyz', ... "geodiffloc[plot]"
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        raise ModuleNotFoundError(
            f"{feature} needs the optional package {top!r}, which the core install does not "
            f'include; install it with: pip install "geodiffloc[{extra}]"'
        ) from err
