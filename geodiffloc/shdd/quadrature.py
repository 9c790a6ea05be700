r"""Log-partition :math:`\log Z(e) = \log\int_{S^2} \exp f_e\, d\Omega` in log space.

At degree ``L`` the field of an encoded point peaks at :math:`(L+1)^2/4\pi` (~183 at
L = 47, ~1300 at L = 127), so ``exp`` overflows in float32 and the peak is only a few
km wide: a global grid fine enough to resolve it would have billions of cells. The
integral is therefore computed adaptively:

1. ``f`` is synthesised on a coarse equiangular grid of ``2(L+1) x 4(L+1)`` cells;
2. cells whose value is within ``margin`` of the maximum (dilated by one cell) are
   "hot": their contribution is integrated with a ``k x k`` tensor Gauss–Legendre rule
   whose node spacing resolves the peak (``k`` grows with the field's amplitude);
3. cold cells, at least ``exp(-margin)`` below the peak, use the midpoint rule.

Everything is accumulated as ``max + log(sum(w * exp(f - max)))``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..harmonics import real_sph_harm
from .synthesis import synthesize

__all__ = ["log_partition"]


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
        fmax = f.max()
        amp = float(fmax - f.median())
        hot = _dilate(f > fmax - margin)
        cold_terms = torch.log(area_t[~hot]) + f[~hot]
        # Peak std-dev of exp(f) ~ 2 / ((L+1) sqrt(amplitude)) rad (exact for a delta);
        # use nodes about a third of it apart.
        sigma = 2.0 / ((L + 1) * math.sqrt(max(amp, 1.0)))
        k = int(min(max_nodes, max(2, math.ceil(3.0 * h / sigma))))
        hot_terms = _hot_cells(coeffs[i], L, lat_c, lon_c, hot, h, k)
        out[i] = torch.logsumexp(torch.cat([cold_terms, hot_terms]), dim=0)
    return out


def _hot_cells(c: torch.Tensor, L: int, lat_c: np.ndarray, lon_c: np.ndarray,
               hot: torch.Tensor, h: float, k: int) -> torch.Tensor:
    """``log(w) + f`` at the ``k x k`` Gauss–Legendre nodes of every hot cell."""
    x, w = np.polynomial.legendre.leggauss(k)
    rows, cols = np.nonzero(hot.cpu().numpy())
    hd = math.degrees(h)
    # Nodes in degrees, per cell: lat_c + x * h/2, lon_c + x * h/2.
    dlat = x * hd / 2
    lat_n = lat_c[rows][:, None, None] + dlat[None, :, None] + 0 * dlat[None, None, :]
    lon_n = lon_c[cols][:, None, None] + 0 * dlat[None, :, None] + dlat[None, None, :]
    lat_n = np.clip(lat_n, -90.0, 90.0)
    # Weight: (h/2)^2 * w_i w_j * cos(lat) (area element in radians).
    wts = (h / 2) ** 2 * (w[:, None] * w[None, :])[None] * np.cos(np.deg2rad(lat_n))
    lat_f, lon_f, w_f = lat_n.ravel(), lon_n.ravel(), wts.ravel()
    keep = w_f > 0
    dev = c.device
    latlon = torch.as_tensor(np.stack([lat_f[keep], lon_f[keep]], 1), device=dev)
    terms = []
    cd = c.to(torch.float64)
    step = max(1, 2_000_000 // (L + 1) ** 2)
    for s in range(0, latlon.shape[0], step):
        y = real_sph_harm(latlon[s : s + step], L)
        terms.append(y @ cd)
    f = torch.cat(terms)
    return f + torch.log(torch.as_tensor(w_f[keep], device=dev))
