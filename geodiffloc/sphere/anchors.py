"""Anchor sets: finite sets of points on the sphere, as ``(n, 2)`` ``(lat, lon)`` tensors.

Used as quadrature/decoding anchors (SHDD), retrieval galleries (GeoCLIP) and
candidate sets. All return float64 tensors unless a dtype is given.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from .._memory import check_allocation
from .coords import as_latlon
from .distance import EARTH_RADIUS_KM, latlon_to_xyz, xyz_to_latlon

__all__ = [
    "cap_random",
    "fibonacci_lattice",
    "gallery_anchors",
    "regular_grid_anchors",
    "uniform_random",
]


def fibonacci_lattice(n: int, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n`` near-uniform points on the sphere (golden-angle spiral, equal-area in z).

    Examples
    --------
    >>> fibonacci_lattice(1000).shape
    torch.Size([1000, 2])
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or int(n) < 1:
        raise ValueError(f"n must be a positive integer number of points; got {n!r}.")
    check_allocation(6.0 * int(n) * 16, f"a Fibonacci lattice of {int(n):,} points",
                     "use fewer points (1e6 gives ~20 km spacing)")
    i = torch.arange(n, dtype=torch.float64) + 0.5
    lat = torch.rad2deg(torch.asin(1.0 - 2.0 * i / n))
    golden = math.pi * (3.0 - math.sqrt(5.0))
    lon = torch.remainder(torch.rad2deg(golden * i) + 180.0, 360.0) - 180.0
    return torch.stack([lat, lon], dim=1).to(dtype)


def regular_grid_anchors(resolution: float, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Cell centres of the global lat/lon grid at ``resolution`` degrees, row-major.

    The same centres as :func:`geodiffloc.sphere.grid.LatLonGrid.latlon`.
    """
    from .grid import LatLonGrid

    return LatLonGrid.global_(resolution).latlon(dtype=dtype)


def uniform_random(
    n: int,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``n`` points drawn uniformly (by area) on the sphere.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> bool((uniform_random(5, generator=g).abs() <= 180).all())
    True
    """
    u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
    lat = torch.rad2deg(torch.asin(2.0 * u[:, 0] - 1.0))
    lon = 360.0 * u[:, 1] - 180.0
    return torch.stack([lat, lon], 1).to(dtype=dtype, device=device)


def cap_random(
    centers: torch.Tensor,
    k: int,
    radius_km: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``k`` points uniform by area in the spherical cap of ``radius_km`` around each centre.

    Parameters
    ----------
    centers
        ``(n, 2)`` ``(lat, lon)`` degrees.

    Returns
    -------
    torch.Tensor
        ``(n, k, 2)`` in the dtype/device of ``centers``.
    """
    n = centers.shape[0]
    dev, dt = centers.device, centers.dtype
    alpha = radius_km / EARTH_RADIUS_KM
    u = torch.rand(n, k, 2, generator=generator, dtype=torch.float64).to(dev)
    cos_t = 1.0 - u[..., 0] * (1.0 - math.cos(alpha))
    sin_t = torch.sqrt((1.0 - cos_t**2).clamp_min(0.0))
    psi = 2 * math.pi * u[..., 1]
    c = latlon_to_xyz(centers.double())  # (n, 3)
    # Orthonormal tangent frame at each centre (east, north); well defined at the poles
    # because the reference axis switches to x there.
    ref = torch.where(
        (c[:, 2].abs() > 0.9)[:, None],
        torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, device=dev),
        torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=dev),
    )
    e1 = torch.nn.functional.normalize(torch.cross(ref, c, dim=1), dim=1)
    e2 = torch.cross(c, e1, dim=1)
    xyz = (
        cos_t[..., None] * c[:, None, :]
        + (sin_t * torch.cos(psi))[..., None] * e1[:, None, :]
        + (sin_t * torch.sin(psi))[..., None] * e2[:, None, :]
    )
    return xyz_to_latlon(xyz).to(dt)


def gallery_anchors(source: Any, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Anchors from a user gallery: ``(n, 2)`` array/tensor, a CSV path, a DataFrame or points.

    Parameters
    ----------
    source
        * an ``(n, 2)`` array-like of ``(lat, lon)`` degrees;
        * a path to a CSV with ``LAT`` and ``LON`` columns (MP16 layout; lower case works);
        * a pandas DataFrame with those columns;
        * a GeoDataFrame/GeoSeries of points (any geographic CRS).

    Raises
    ------
    ValueError
        Empty gallery, missing columns, or invalid coordinates (see
        :func:`~geodiffloc.sphere.as_latlon`).

    Examples
    --------
    >>> gallery_anchors([[10, 20], [30, 200]]).tolist()
    [[10.0, 20.0], [30.0, -160.0]]
    """
    import pandas as pd

    if isinstance(source, str | os.PathLike):
        if not os.path.exists(source):
            raise ValueError(f"gallery file {os.fspath(source)!r} does not exist.")
        source = pd.read_csv(source)
    if hasattr(source, "geometry") or type(source).__name__ in ("GeoSeries", "Point"):
        lat, lon = as_latlon(points=source)
    elif isinstance(source, pd.DataFrame):
        cols = {c.lower(): c for c in source.columns}
        if "lat" not in cols or "lon" not in cols:
            raise ValueError(
                f"gallery table needs LAT and LON columns (degrees); found {list(source.columns)}."
            )
        lat, lon = as_latlon(lat=source[cols["lat"]], lon=source[cols["lon"]])
    else:
        arr = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else source
        arr = np.asarray(arr, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError(
                f"gallery array must have shape (n, 2) of (lat, lon) degrees; got {arr.shape}."
            )
        lat, lon = as_latlon(lat=arr[:, 0], lon=arr[:, 1])
    if lat.size == 0:
        raise ValueError("the gallery is empty; give at least one (lat, lon) point.")
    return torch.from_numpy(np.stack([lat, lon], axis=1)).to(dtype)
