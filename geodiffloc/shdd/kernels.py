r"""Mixtures of point kernels on the global grid, from one zonal profile.

The field of the encoding of a point :math:`p` is zonal about :math:`p`: by the addition
theorem, :math:`\sum_m Y_{lm}(p) Y_{lm}(x) = \frac{2l+1}{4\pi} P_l(p \cdot x)`, so

.. math:: f_p(x) = \sum_l t_l \frac{2l+1}{4\pi} P_l(\cos\theta(p, x)),

one function of the angle :math:`\theta` between the cell and :math:`p` (``t_l``: the
encoder's taper). Tabulating it once along a meridian turns each kernel's mass field into
a table look-up over the cells where it is not negligible (within :math:`e^{-30}` of its
peak), instead of a spherical-harmonic synthesis over the whole grid per point.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..sphere import LatLonGrid

if TYPE_CHECKING:
    from .core import SHDD

#: Samples of the profile over [0, pi]: linear interpolation errs by ~h^2 |f''| / 8,
#: ~2e-5 of the log-density at L = 23 and ~1e-4 at L = 47.
_PROFILE_POINTS = 40_001
#: A kernel is read out to where it falls this far (in log) below its peak: the cells
#: beyond hold less than e^-30 of the peak cell each, ~1e-9 of the kernel's mass in all
#: on a 0.5 degree grid (a band-limited kernel's far field never falls much lower).
_NEGLIGIBLE_LOG = 30.0


def zonal_profile(shdd: SHDD) -> tuple[np.ndarray, np.ndarray]:
    """``theta`` (radians, ``[0, pi]``) and the raw field of a point kernel at that angle.

    Computed with the encoder itself (the field of the north pole along a meridian), so
    any taper is included.
    """
    theta = np.linspace(0.0, math.pi, _PROFILE_POINTS)
    lat = 90.0 - np.degrees(theta)
    pts = torch.as_tensor(np.stack([lat, np.zeros_like(lat)], -1), dtype=torch.float64)
    pole = shdd.encode(lat=[90.0], lon=[0.0]).to(torch.float64)
    return theta, shdd.evaluate(pole, pts)[0].numpy()


def kernel_mixture(shdd: SHDD, latlon: torch.Tensor, weights: torch.Tensor,
                   resolution: float = 1.0) -> torch.Tensor:
    """``sum_k w_k`` of the mass fields of the encodings of ``latlon[k]``, float64.

    Each kernel's masses sum to 1 over the global grid, as ``SHDD.field(...,
    kind="mass")`` makes them, so the mixture sums to ``sum(weights)``.

    Parameters
    ----------
    shdd
        The encoder of the kernels.
    latlon
        ``(k, 2)`` centres, degrees.
    weights
        ``(k,)`` mixture weights.
    resolution
        Cell size of the global grid, degrees.

    Returns
    -------
    torch.Tensor
        ``(n_lat, n_lon)`` float64 cell masses.
    """
    pts = torch.as_tensor(latlon, dtype=torch.float64).reshape(-1, 2).numpy()
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1).numpy()
    if len(w) != len(pts):
        raise ValueError(f"weights must have one value per point; got {len(w)} for "
                         f"{len(pts)} points.")
    grid = LatLonGrid.global_(resolution)
    theta, prof = _cached_profile(shdd)
    # beyond the last angle within _NEGLIGIBLE_LOG of the peak, every kernel is ~0
    reach = float(theta[np.nonzero(prof >= prof[0] - _NEGLIGIBLE_LOG)[0][-1]])
    lat_r, lon_r = np.radians(grid.lat), np.radians(grid.lon)
    log_area = np.log(grid.cell_area_sr())
    out = np.zeros(grid.shape)
    for (lat_k, lon_k), w_k in zip(np.radians(pts), w, strict=True):
        rows = np.nonzero(np.abs(lat_r - lat_k) <= reach + 1e-12)[0]
        cols = _columns_within(lat_r[rows], lat_k, lon_k, reach, lon_r)
        cos_t = (np.sin(lat_r[rows])[:, None] * math.sin(lat_k)
                 + np.cos(lat_r[rows])[:, None] * math.cos(lat_k)
                 * np.cos(lon_r[None, cols] - lon_k))
        f = np.interp(np.arccos(np.clip(cos_t, -1.0, 1.0)), theta, prof)
        m = np.exp(f - prof[0] + log_area[rows, None])
        out[np.ix_(rows, cols)] += w_k * m / m.sum()
    return torch.from_numpy(out)


def _columns_within(lat_rows: np.ndarray, lat_k: float, lon_k: float, reach: float,
                    lon_r: np.ndarray) -> np.ndarray:
    """Grid columns holding a cell within ``reach`` (radians) of the centre in any row.

    On the sphere, a row at latitude ``phi`` meets the cap of angular radius ``reach``
    around ``(lat_k, lon_k)`` where ``cos(dlon) >= (cos(reach) - sin(phi) sin(lat_k)) /
    (cos(phi) cos(lat_k))``; the widest row sets one window for the band (all columns
    when the cap holds a pole). Cells outside it are beyond ``reach``: they would get
    less than e^-30 of the peak.
    """
    denom = np.cos(lat_rows) * math.cos(lat_k)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = (math.cos(reach) - np.sin(lat_rows) * math.sin(lat_k)) / denom
    c = np.where(denom > 1e-12, c, -1.0)  # a pole row: every longitude
    half = float(np.arccos(np.clip(c, -1.0, 1.0)).max())
    if half >= math.pi - 1e-9:
        return np.arange(lon_r.size)
    step = float(lon_r[1] - lon_r[0])
    dlon = np.angle(np.exp(1j * (lon_r - lon_k)))  # wrapped to (-pi, pi]
    # one cell of slack: the cap is measured between cell centres
    return np.nonzero(np.abs(dlon) <= half + step)[0]


def _cached_profile(shdd: SHDD) -> tuple[np.ndarray, np.ndarray]:
    cached = getattr(shdd, "_zonal_profile", None)
    if cached is None:
        cached = zonal_profile(shdd)
        shdd._zonal_profile = cached  # type: ignore[attr-defined]
    return cached
