"""Turning an ensemble of sampled SHDD vectors into one place per input.

Two aggregations:

* ``"centroid"`` — the paper's geographic centre of the decoded samples: the
  normalised mean of their unit vectors (:func:`geodiffloc.sphere.spherical_mean`),
  never a mean of degrees (which puts 179.9 and -179.9 at 0). Fine when the samples
  agree; when they split between two places the centre lands between them (a Paris
  and a Las Vegas sample average into the Atlantic).
* ``"mixture_mode"`` (default) — the mode of the mixture of the samples' densities,
  ``p(x) = 1/K sum_j q_j(x)`` with ``q_j`` the normalised SHDD density of sample ``j``.
  Candidates are the decoded samples themselves (each sits on a peak of its own
  density), the best is then refined by a shrinking local pattern search. A multimodal
  ensemble thus answers with its heaviest mode, always a place the model proposed.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ...harmonics import real_sph_harm
from ...sphere import EARTH_RADIUS_KM, latlon_to_xyz, pairwise_haversine_km, xyz_to_latlon
from ...sphere import spherical_mean as _spherical_mean

__all__ = [
    "AGGREGATIONS",
    "agreement",
    "centroid",
    "grid_log_partition",
    "mixture_log_density",
    "mixture_mode",
    "sample_log_density",
]

AGGREGATIONS = ("mixture_mode", "centroid")


def centroid(samples: torch.Tensor) -> torch.Tensor:
    """Geographic centre of ``(n, k, 2)`` samples -> ``(n, 2)`` (lat, lon) degrees.

    Examples
    --------
    >>> s = torch.tensor([[[0.0, 179.9], [0.0, -179.9]]], dtype=torch.float64)
    >>> abs(abs(float(centroid(s)[0, 1])) - 180.0) < 1e-6
    True
    """
    return _spherical_mean(samples.to(torch.float64))


def partition_rows(shdd: Any, max_rows: int = 2048) -> int:
    """Rows of :func:`grid_log_partition`'s global grid: a cell per density width.

    At least ``4 (L + 1)`` and 90 rows, at most ``max_rows``; a grid with as many rows
    or more gives ``log Z`` as accurately (the midpoint rule's error falls with the cell).
    """
    res = math.degrees(float(shdd.width_rad))
    return int(min(max_rows, max(4 * (shdd.L + 1), 90, math.ceil(180.0 / res))))


def grid_log_partition(shdd: Any, coeffs: torch.Tensor, *, max_rows: int = 2048,
                       chunk_cells: int = 8_000_000,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``log Z`` of ``(N, d)`` fields by the midpoint rule on a global grid, ``(N,)`` float64.

    The cell size is the width (std-dev) of an encoded point's density (at least
    ``4 (L + 1)`` and 90 rows, at most ``max_rows``). The midpoint rule on a Gaussian
    peak sampled at its standard deviation has relative error ~exp(-2 pi^2) ~ 3e-9;
    smooth broad fields carry the rule's O(h^2) error, ~1e-5 in ``log Z`` at L = 7 to 23,
    and a peak within a cell of a pole ~5e-2 (polar cells are coarse). That is ample for
    weighting the samples of a mixture and costs one FFT synthesis per vector, orders of
    magnitude less than the adaptive :meth:`SHDD.log_partition`.

    The synthesis runs in ``dtype``: float32 (default) is about 4x faster than float64
    and rounds ``log Z`` by ~1e-5 at most (the log cell areas are added inside the
    synthesis as a free zero-frequency term, so no grid-sized temporary is made);
    float64 for quadrature-grade sums.
    """
    from ...shdd import synthesize

    n_lat = partition_rows(shdd, max_rows)
    h = math.pi / n_lat
    lat = 90.0 - (torch.arange(n_lat, dtype=torch.float64) + 0.5) * math.degrees(h)
    lon = -180.0 + (torch.arange(2 * n_lat, dtype=torch.float64) + 0.5) * math.degrees(h)
    lat_r = torch.deg2rad(lat)
    log_area = torch.log(h * (torch.sin(lat_r + h / 2) - torch.sin(lat_r - h / 2)))
    c = coeffs.to(torch.float64)
    step = max(1, chunk_cells // (2 * n_lat * n_lat))
    out = []
    for s in range(0, c.shape[0], step):
        f = synthesize(c[s:s + step], shdd.L, lat.numpy(), lon.numpy(), dtype=dtype,
                       row_offset=log_area.to(c.device))
        out.append(torch.logsumexp(f.flatten(1), dim=1).to(torch.float64))
    return torch.cat(out).cpu()


def sample_log_density(shdd: Any, coeffs: torch.Tensor, points: torch.Tensor,
                       log_z: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised log-density (per steradian) of each of ``(N, d)`` fields at ``(N, m, 2)`` points.

    Returns
    -------
    torch.Tensor
        ``(N, m)`` float64.
    """
    c = coeffs.to(torch.float64)
    if log_z is None:
        log_z = grid_log_partition(shdd, c)
    return shdd.evaluate(c, points.to(c.device, torch.float64)) - log_z.to(c.device)[:, None]


def mixture_log_density(shdd: Any, coeffs: torch.Tensor, points: torch.Tensor,
                        log_z: torch.Tensor | None = None) -> torch.Tensor:
    """Log of the equal-weight mixture of the ``K`` sample densities of each input.

    Parameters
    ----------
    shdd
        The SHDD space.
    coeffs
        ``(n, K, d)`` SHDD coefficients (unscaled).
    points
        ``(n, m, 2)`` query points per input.
    log_z
        Optional precomputed ``(n * K,)`` log-partitions (see :func:`grid_log_partition`).

    Returns
    -------
    torch.Tensor
        ``(n, m)``: ``log(1/K sum_j q_j(points))`` per steradian.
    """
    n, k, d = coeffs.shape
    m = points.shape[1]
    c = coeffs.to(torch.float64)
    if log_z is None:
        log_z = grid_log_partition(shdd, c.reshape(n * k, d))
    # the K samples of an input share its points: harmonics once per point, not per sample
    y = real_sph_harm(points.reshape(n * m, 2).to(c.device, torch.float64), shdd.L,
                      dtype=torch.float64).reshape(n, m, d)
    f = torch.einsum("nkd,nmd->nkm", c, y)
    ld = f - log_z.to(c.device, torch.float64).reshape(n, k, 1)
    return torch.logsumexp(ld, dim=1) - math.log(k)


def _ring_pattern(center: torch.Tensor, radius_km: float, n_rings: int = 2,
                  n_per_ring: int = 8) -> torch.Tensor:
    """``(n, 1 + n_rings * n_per_ring, 2)`` deterministic points around ``(n, 2)`` centres."""
    c = latlon_to_xyz(center.to(torch.float64))
    ref = torch.where((c[:, 2].abs() > 0.9)[:, None],
                      torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
                      torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    e1 = torch.nn.functional.normalize(torch.cross(ref, c, dim=1), dim=1)
    e2 = torch.cross(c, e1, dim=1)
    pts = [c]
    for r in range(1, n_rings + 1):
        ang = (radius_km * r / n_rings) / EARTH_RADIUS_KM
        for j in range(n_per_ring):
            psi = 2 * math.pi * (j + 0.5 * (r % 2)) / n_per_ring
            tangent = math.cos(psi) * e1 + math.sin(psi) * e2
            pts.append(math.cos(ang) * c + math.sin(ang) * tangent)
    return xyz_to_latlon(torch.stack(pts, dim=1))


@torch.no_grad()
def mixture_mode(shdd: Any, coeffs: torch.Tensor, samples: torch.Tensor, *,
                 refine_steps: int = 8, radius_km: float | None = None,
                 log_z: torch.Tensor | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mode of the mixture of the samples' SHDD densities, per input.

    Parameters
    ----------
    shdd
        The SHDD space.
    coeffs
        ``(n, K, d)`` sampled coefficients (unscaled).
    samples
        ``(n, K, 2)`` their decoded locations (the candidate starting points).
    refine_steps
        Rounds of local pattern search around the best candidate; the radius starts at
        ``radius_km`` (default ``shdd.width_km``) and halves each round.
    log_z
        Optional ``(n * K,)`` log-partitions of the samples, if known (e.g. from the
        grid of a field of the same samples); default :func:`grid_log_partition`.

    Returns
    -------
    (latlon, log_density)
        ``(n, 2)`` float64 modes and ``(n,)`` the mixture's log-density there.

    Examples
    --------
    See :meth:`geodiffloc.models.locdiff.LocDiff.predict`.
    """
    samples = samples.to(torch.float64)
    if log_z is None:
        log_z = grid_log_partition(shdd, coeffs.reshape(-1, coeffs.shape[-1]))
    elif log_z.shape != (coeffs.shape[0] * coeffs.shape[1],):
        raise ValueError(f"log_z must be (n * K,) = ({coeffs.shape[0] * coeffs.shape[1]},); "
                         f"got {tuple(log_z.shape)}.")
    best_val = mixture_log_density(shdd, coeffs, samples, log_z)  # (n, K)
    idx = best_val.argmax(dim=1)
    ar = torch.arange(samples.shape[0])
    best, val = samples[ar, idx], best_val[ar, idx]
    radius = float(radius_km if radius_km is not None else shdd.width_km)
    for _ in range(int(refine_steps)):
        cand = _ring_pattern(best, radius)
        v = mixture_log_density(shdd, coeffs, cand, log_z)
        j = v.argmax(dim=1)
        better = v[ar, j] > val
        best = torch.where(better[:, None], cand[ar, j], best)
        val = torch.where(better, v[ar, j], val)
        radius /= 2.0
    return best, val


def agreement(samples: torch.Tensor, prediction: torch.Tensor, radius_km: float) -> torch.Tensor:
    """Fraction of each input's ``(n, K, 2)`` samples within ``radius_km`` of its prediction."""
    d = torch.stack([pairwise_haversine_km(prediction[i:i + 1].to(torch.float64),
                                           samples[i].to(torch.float64))[0]
                     for i in range(samples.shape[0])])
    return (d <= radius_km).to(torch.float64).mean(dim=1)
