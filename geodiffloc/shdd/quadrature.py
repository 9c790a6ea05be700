r"""Log-partition :math:`\log Z(e) = \log\int_{S^2} \exp f_e\, d\Omega` in log space.

At degree ``L`` the field of an encoded point peaks at :math:`(L+1)^2/4\pi` (~183 at
L = 47, ~1300 at L = 127), so ``exp`` overflows in float32 and the peak is only a few
km wide: a global grid fine enough to resolve it would have billions of cells. The
integral is therefore computed adaptively:

1. ``f`` is synthesised on a coarse equiangular grid of ``2(L+1) x 4(L+1)`` cells;
2. cells within 20 (log units) of the maximum, dilated by one cell, are integrated
   with a ``k x k`` tensor Gauss–Legendre rule whose node spacing resolves the peak
   (``k`` from the field's largest curvature there, measured on the coarse grid);
3. cells within ``margin`` (40) of the maximum get a 3 x 3 rule;
4. the rest, at least ``exp(-margin)`` below the peak, use the midpoint rule.

Everything is accumulated as ``max + log(sum(w * exp(f - max)))``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import _sh_numba
from ..harmonics import real_sph_harm
from .decoding import refine_modes
from .synthesis import synthesize

__all__ = ["log_partition"]

_TOP_MARGIN = 20.0  # exp(-20) ~ 2e-9: below this, cells get the cheap 3 x 3 rule


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    """Grow a ``(n_lat, n_lon)`` boolean mask by one cell (wrapping in longitude)."""
    m = mask.float()[None, None]
    m = torch.cat([m[..., -1:], m, m[..., :1]], dim=-1)
    m = torch.nn.functional.max_pool2d(m, 3, stride=1, padding=(1, 0))
    return m[0, 0] > 0


def log_partition(coeffs: torch.Tensor, L: int, *, margin: float = 40.0,
                  max_nodes: int = 64) -> torch.Tensor:
    """``log Z`` per vector (``(n,)`` float64) for ``f = sum c_lm Y_lm`` on the unit sphere.

    Parameters
    ----------
    coeffs
        ``(n, (L+1)**2)`` coefficient vectors.
    margin
        Cells more than ``margin`` (in log units) below the coarse maximum use the
        midpoint rule; their relative contribution is below ``exp(-margin)``.
    max_nodes
        Cap on the Gauss–Legendre order per hot cell and dimension.
    """
    n_lat, n_lon = 2 * (L + 1), 4 * (L + 1)
    h = math.pi / n_lat
    lat_c = 90.0 - (np.arange(n_lat) + 0.5) * math.degrees(h)
    lon_c = -180.0 + (np.arange(n_lon) + 0.5) * math.degrees(h)
    area = h * (np.sin(np.deg2rad(lat_c) + h / 2) - np.sin(np.deg2rad(lat_c) - h / 2))
    coarse = synthesize(coeffs, L, lat_c, lon_c)  # (n, n_lat, n_lon) float64
    dev = coarse.device
    area_t = torch.as_tensor(area, device=dev)[:, None].expand(n_lat, n_lon)
    out = torch.empty(coeffs.shape[0], dtype=torch.float64, device=dev)
    for i in range(coeffs.shape[0]):
        f = coarse[i]
        # A peak narrower than the coarse cells can sit far above every cell centre:
        # locate the true maximum by Newton ascent from the best centre, and make sure
        # its cell is treated as the top.
        flat = int(f.argmax())
        start = torch.tensor([[lat_c[flat // n_lon], lon_c[flat % n_lon]]], dtype=torch.float64)
        peak = refine_modes(L, coeffs[i : i + 1], start)
        f_peak = float(real_sph_harm(peak, L)[0] @ coeffs[i].to(torch.float64))
        fmax = f.max()  # cells are selected relative to the coarse maximum ...
        sigma_peak = 2.0 / ((L + 1) * math.sqrt(max(f_peak - float(f.median()), 1.0)))
        peak_cell = torch.as_tensor(
            _cells_near(peak[0].cpu().numpy(), lat_c, lon_c, h,
                        math.sqrt(2 * _TOP_MARGIN) * sigma_peak),
            device=f.device)
        hot = _dilate((f > fmax - margin) | peak_cell)
        # Cells far below the maximum hold a negligible share of the mass; a 3 x 3 rule
        # is plenty there, and the fine rule is kept for cells near the top.
        top = _dilate((f > fmax - _TOP_MARGIN) | peak_cell)
        warm = hot & ~top
        cold_terms = torch.log(area_t[~hot]) + f[~hot]
        # Width of exp(f) near its maxima, sigma = 1 / sqrt(curvature): the smaller of
        # (a) the exact width for a delta of the same amplitude, 2 / ((L+1) sqrt(amp)),
        # and (b) the largest curvature seen by second differences of the coarse grid
        # (which can miss a peak sitting between rows, e.g. at a pole). Nodes ~ sigma / 2.5
        # # apart: Gauss-Legendre is spectrally accurate on a Gaussian at that spacing.
        amp = max(f_peak, float(fmax)) - float(f.median())  # ... widths from the true one
        sigma_amp = 2.0 / ((L + 1) * math.sqrt(max(amp, 1.0)))
        sigma_curv = 1.0 / math.sqrt(max(_max_curvature(f, top, h, lat_c), 1.0))
        sigma = min(sigma_amp, sigma_curv)
        k = int(min(max_nodes, max(3, math.ceil(2.5 * h / sigma))))
        cell_nodes = int(top.sum()) * k * k + int(warm.sum()) * 9
        if cell_nodes * 20 >= (n_lat * k) * (n_lon * k):
            # The mass is spread over much of the sphere: one global Gauss-Legendre grid
            # at the same node density, synthesised by FFT, is far cheaper than cells.
            out[i] = _global_gauss_legendre(coeffs[i : i + 1], L, n_lat * k, n_lon * k)
            continue
        top_terms = _hot_cells(coeffs[i], L, lat_c, lon_c, top, h, k)
        warm_terms = _hot_cells(coeffs[i], L, lat_c, lon_c, warm, h, 3)
        out[i] = torch.logsumexp(torch.cat([cold_terms, warm_terms, top_terms]), dim=0)
    return out


def _cells_near(p: np.ndarray, lat_c: np.ndarray, lon_c: np.ndarray, h: float,
                radius: float) -> np.ndarray:
    """Cells of the coarse grid that come within ``radius`` (rad) of point ``p`` (deg).

    The nearest point of a lat/lon cell to ``p`` has ``p``'s latitude and longitude
    clamped into the cell (longitude difference wrapped); near a pole the cells are
    narrow wedges, which is exactly where centre-based tests miss mass.
    """
    hd = math.degrees(h)
    lat = np.clip(p[0], lat_c - hd / 2, lat_c + hd / 2)
    dlon = (p[1] - lon_c + 180.0) % 360.0 - 180.0
    dlon = np.clip(dlon, -hd / 2, hd / 2) - dlon  # offset from p's lon to the nearest edge
    lat_r, p_lat = np.deg2rad(lat)[:, None], math.radians(p[0])
    cosd = (np.sin(lat_r) * math.sin(p_lat)
            + np.cos(lat_r) * math.cos(p_lat) * np.cos(np.deg2rad(dlon))[None, :])
    return np.arccos(np.clip(cosd, -1.0, 1.0)) <= radius


def _global_gauss_legendre(c: torch.Tensor, L: int, n_lat: int, n_lon: int) -> torch.Tensor:
    """``log Z`` with Gauss–Legendre rows in ``sin(lat)`` times uniform longitudes."""
    x, w = np.polynomial.legendre.leggauss(n_lat)
    lat = np.rad2deg(np.arcsin(x))
    lon = -180.0 + (np.arange(n_lon) + 0.5) * 360.0 / n_lon
    f = synthesize(c, L, lat, lon)[0]
    log_w = torch.log(torch.as_tensor(w * 2 * math.pi / n_lon, device=f.device))[:, None]
    return torch.logsumexp((f + log_w).flatten(), dim=0)


def _max_curvature(f: torch.Tensor, hot: torch.Tensor, h: float, lat_c: np.ndarray) -> float:
    """Largest downward curvature of ``f`` (per rad²) over hot cells, along both axes."""
    d_lat = -(f[2:] - 2 * f[1:-1] + f[:-2]) / h**2
    coslat = torch.as_tensor(np.cos(np.deg2rad(lat_c)), device=f.device)[:, None]
    # Longitude steps shrink with cos(lat); skip the rows next to the poles.
    d_lon = -(torch.roll(f, 1, 1) - 2 * f + torch.roll(f, -1, 1)) / (h * coslat.clamp_min(0.2)) ** 2
    k_lat = d_lat[hot[1:-1]].max() if hot[1:-1].any() else f.new_tensor(0.0)
    k_lon = d_lon[hot].max()
    return float(torch.maximum(k_lat, k_lon))


def _hot_cells(c: torch.Tensor, L: int, lat_c: np.ndarray, lon_c: np.ndarray,
               hot: torch.Tensor, h: float, k: int) -> torch.Tensor:
    """``log(w) + f`` at Gauss–Legendre nodes of every hot cell.

    ``k`` nodes across the cell in latitude; in longitude the count shrinks with the
    cell's physical width (``cos(lat)``), so polar wedges are not oversampled.
    """
    rows, cols = np.nonzero(hot.cpu().numpy())
    if rows.size == 0:
        return c.new_empty(0, dtype=torch.float64)
    hd = math.degrees(h)
    widest = np.cos(np.deg2rad(np.maximum(np.abs(lat_c[rows]) - hd / 2, 0.0)))
    k_lon = np.maximum(3, np.ceil(k * widest)).astype(int)
    lat_parts, lon_parts, w_parts = [], [], []
    x_lat, w_lat = np.polynomial.legendre.leggauss(k)
    for kl in np.unique(k_lon):
        sel = k_lon == kl
        x_lon, w_lon = np.polynomial.legendre.leggauss(int(kl))
        lat_n = lat_c[rows[sel]][:, None, None] + (x_lat * hd / 2)[None, :, None]
        lon_n = lon_c[cols[sel]][:, None, None] + (x_lon * hd / 2)[None, None, :]
        lat_n, lon_n = np.broadcast_arrays(lat_n, lon_n)
        # Weight: (h/2)^2 * w_i w_j * cos(lat) (area element in radians).
        wts = (h / 2) ** 2 * (w_lat[:, None] * w_lon[None, :])[None] * np.cos(np.deg2rad(lat_n))
        lat_parts.append(lat_n.ravel())
        lon_parts.append(lon_n.ravel())
        w_parts.append(wts.ravel())
    lat_f, lon_f, w_f = (np.concatenate(p) for p in (lat_parts, lon_parts, w_parts))
    keep = w_f > 0
    dev = c.device
    latlon = torch.as_tensor(np.stack([lat_f[keep], lon_f[keep]], 1), device=dev)
    cd = c.to(torch.float64)
    if _sh_numba.available() and dev.type == "cpu":
        # Fused: the field at each node without storing (nodes x (L+1)^2) harmonics.
        f = torch.from_numpy(_sh_numba.field_values(latlon.numpy(), cd.numpy(), L))
    else:
        step = max(1, 30_000_000 // (L + 1) ** 2)
        f = torch.cat([real_sph_harm(latlon[s : s + step], L) @ cd
                       for s in range(0, latlon.shape[0], step)])
    return f + torch.log(torch.as_tensor(w_f[keep], device=dev))
