"""``geodiffloc.show_versions()``: everything a bug report needs in one paste."""

from __future__ import annotations

import importlib.metadata
import platform
import sys

__all__ = ["show_versions"]

_PACKAGES = (
    "torch", "torchvision", "numpy", "scipy", "pandas", "xarray", "rioxarray", "rasterio",
    "geopandas", "pyogrio", "shapely", "pyproj", "matplotlib", "open_clip_torch",
    "sentence-transformers", "lightning", "diffusers", "geoclip", "folium",
)


def _gdal_version() -> str:
    try:
        import rasterio

        return str(rasterio.__gdal_version__)
    except Exception:  # pragma: no cover - rasterio missing
        return "not installed"


def show_versions(file=None) -> dict[str, str]:
    """Print (and return) versions of Python, geodiffloc, its dependencies, GDAL and devices.

    Examples
    --------
    >>> info = show_versions(file=open("/dev/null", "w"))
    >>> "geodiffloc" in info and "python" in info
    True
    """
    from ._version import __version__

    info = {
        "geodiffloc": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "gdal": _gdal_version(),
    }
    for name in _PACKAGES:
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            info[name] = "not installed"
    try:
        import torch

        info["cuda"] = (
            f"{torch.version.cuda} ({torch.cuda.get_device_name(0)})"
            if torch.cuda.is_available()
            else "not available"
        )
        info["torch threads"] = str(torch.get_num_threads())
    except Exception:  # pragma: no cover
        pass
    width = max(map(len, info))
    for k, v in info.items():
        print(f"{k:<{width}} : {v}", file=file or sys.stdout)
    return info
