r"""Fast synthesis of SH fields on regular lat/lon grids.

.. math::

    f(\theta_i, \phi_j) = \sum_{m=0}^{L} \big[A_m(\theta_i)\cos m\phi_j
                                           + B_m(\theta_i)\sin m\phi_j\big],\quad
    A_m(\theta_i) = \sum_{l \ge m} w_{lm} c_{l,m} \bar P_{lm}(\cos\theta_i)

A Legendre table per latitude row reduces the coefficients to Fourier coefficients
(one batched matrix product), and an inverse real FFT evaluates all longitudes at once
(cell-centre longitudes are reached by a phase shift). When the grid has fewer than
``2L + 2`` longitudes the FFT would alias, so a small cos/sin matrix product is used
instead. Cost: ``O(n_lat L^2 + n_lat n_lon log n_lon)`` per vector instead of the
``O(n_lat n_lon L^2)`` of a dense basis matrix.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from ..harmonics import legendre_table

__all__ = ["synthesize"]


@functools.lru_cache(maxsize=16)
def _split_index(L: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices of ``c_{l,m}`` and ``c_{l,-m}`` laid out as ``(L+1, L+1)`` and a scale."""
    l, m = np.meshgrid(np.arange(L + 1), np.arange(L + 1), indexing="ij")
    valid = m <= l
    idx_cos = np.where(valid, l * l + l + m, 0)
    idx_sin = np.where(valid & (m > 0), l * l + l - m, 0)
    scale = np.where(valid, np.where(m > 0, math.sqrt(2.0), 1.0), 0.0)
    return idx_cos, idx_sin, scale


def _split_coeffs(coeffs: torch.Tensor, L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, d) -> (n, L+1, L+1)`` cos-part ``[.., l, m]`` and sin-part (``m >= 1``)."""
    idx_cos, idx_sin, scale = _split_index(L)
    dev = coeffs.device
    scale_t = torch.as_tensor(scale, device=dev, dtype=coeffs.dtype)
    sin_scale = torch.as_tensor(np.where(idx_sin > 0, scale, 0.0), device=dev, dtype=coeffs.dtype)
    cos_part = coeffs[:, torch.as_tensor(idx_cos, device=dev)] * scale_t
    sin_part = coeffs[:, torch.as_tensor(idx_sin, device=dev)] * sin_scale
    return cos_part, sin_part


def synthesize(
    coeffs: torch.Tensor,
    L: int,
    lat: np.ndarray | torch.Tensor,
    lon: np.ndarray | torch.Tensor,
    *,
    ptable: torch.Tensor | None = None,
) -> torch.Tensor:
    """Evaluate ``f = sum c_lm Y_lm`` on the tensor grid ``lat x lon`` (regular ``lon``).

    Parameters
    ----------
    coeffs
        ``(n, (L+1)**2)`` coefficient vectors.
    lat
        ``(n_lat,)`` latitudes in degrees (any spacing, e.g. Gauss–Legendre rows).
    lon
        ``(n_lon,)`` equally spaced longitudes in degrees (any start, e.g. cell centres).
    ptable
        Optional precomputed :func:`~geodiffloc.harmonics.legendre_table` for ``lat``.

    Returns
    -------
    torch.Tensor
        ``(n, n_lat, n_lon)`` float64 on the coefficients' device.
    """
    dev = coeffs.device
    c = coeffs.to(torch.float64)
    lat_t = torch.as_tensor(np.asarray(lat, np.float64), device=dev)
    lon_np = np.asarray(lon, np.float64)
    n_lon = lon_np.size
    if ptable is None:
        ptable = legendre_table(lat_t, L)
    ptable = ptable.to(dev)
    cos_part, sin_part = _split_coeffs(c, L)
    # A[n, i, m] = sum_l P[i, l, m] * cos_part[n, l, m]
    a = torch.einsum("ilm,nlm->nim", ptable, cos_part)
    b = torch.einsum("ilm,nlm->nim", ptable, sin_part)
    m = torch.arange(L + 1, dtype=torch.float64, device=dev)
    if n_lon >= 2 * L + 2 and n_lon > 1:
        step = float(lon_np[1] - lon_np[0])
        if not np.allclose(np.diff(lon_np), step):
            raise ValueError("synthesis needs equally spaced longitudes.")
        if abs(step * n_lon - 360.0) < 1e-6:
            # f_j = Re sum_m (A_m - i B_m) e^{i m phi_0} e^{i m j dphi}: an inverse real FFT.
            phase = torch.exp(1j * m * math.radians(float(lon_np[0])))
            spec = (a - 1j * b) * phase
            spec[..., 1:] *= 0.5
            spec = spec * n_lon
            full = torch.zeros(*spec.shape[:-1], n_lon // 2 + 1, dtype=spec.dtype, device=dev)
            full[..., : L + 1] = spec
            return torch.fft.irfft(full, n=n_lon, dim=-1)
    phi = torch.deg2rad(torch.as_tensor(lon_np, device=dev))
    ang = m[:, None] * phi[None, :]
    return a @ torch.cos(ang) + b @ torch.sin(ang)
