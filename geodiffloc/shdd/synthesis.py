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
    dev, dt = coeffs.device, coeffs.dtype
    cos_scale = torch.from_numpy(scale).to(dev, dt)
    sin_scale = torch.from_numpy(np.where(idx_sin > 0, scale, 0.0)).to(dev, dt)
    cos_part = coeffs[:, torch.from_numpy(idx_cos).to(dev)] * cos_scale
    sin_part = coeffs[:, torch.from_numpy(idx_sin).to(dev)] * sin_scale
    return cos_part, sin_part


def _legendre_sum(p_mil: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``out[n, i, m, k] = sum_l P[i, l, m] x[n, l, m, k]`` as one batched matmul over m."""
    n, lp1, _, k = x.shape
    x_mlr = x.permute(2, 1, 0, 3).reshape(lp1, lp1, n * k)  # (m, l, n*k)
    out = torch.bmm(p_mil, x_mlr)  # (m, i, n*k)
    return out.reshape(lp1, -1, n, k).permute(2, 1, 0, 3).contiguous()


def synthesize(
    coeffs: torch.Tensor,
    L: int,
    lat: np.ndarray | torch.Tensor,
    lon: np.ndarray | torch.Tensor,
    *,
    ptable: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
    row_offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """Evaluate ``f = sum c_lm Y_lm`` on the tensor grid ``lat x lon`` (regular ``lon``).

    Parameters
    ----------
    coeffs
        ``(n, (L+1)**2)`` coefficient vectors.
    lat
        ``(n_lat,)`` latitudes in degrees (any spacing, e.g. Gauss–Legendre rows).
    lon
        ``(n_lon,)`` longitudes in degrees; equally spaced over the full circle (any
        start, e.g. cell centres) takes the FFT path, any others a direct Fourier sum.
    ptable
        Optional precomputed :func:`~geodiffloc.harmonics.legendre_table` for ``lat``.
    dtype
        ``torch.float64`` (default; quadrature needs it) or ``torch.float32`` (half the
        memory and about twice as fast; the Legendre table is still built in float64
        and rounded once, so the field is accurate to ~1e-7 of its largest terms).
    row_offset
        Optional ``(n_lat,)`` constants added to every value of each latitude row (e.g.
        log cell areas); free on the FFT path, where it is a zero-frequency term.

    Returns
    -------
    torch.Tensor
        ``(n, n_lat, n_lon)`` in ``dtype`` on the coefficients' device.

    Examples
    --------
    >>> c = torch.zeros(1, 4, dtype=torch.float64); c[0, 0] = 1.0   # Y_00 only
    >>> f = synthesize(c, 1, [0.0, 45.0], [0.0, 90.0, 180.0, 270.0])
    >>> round(float(f.max() - f.min()), 12)
    0.0
    """
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}.")
    dev = coeffs.device
    c = coeffs.to(dtype)
    lat_t = torch.as_tensor(np.asarray(lat, np.float64), device=dev)
    lon_np = np.asarray(lon, np.float64)
    n_lon = lon_np.size
    if ptable is None:
        ptable = legendre_table(lat_t, L)
    # (m, i, l): the sum over l becomes one batched matmul per order m.
    p_mil = ptable.to(dev, dtype).permute(2, 0, 1).contiguous()
    cos_part, sin_part = _split_coeffs(c, L)
    m = torch.arange(L + 1, dtype=torch.float64, device=dev)
    step = float(lon_np[1] - lon_np[0]) if n_lon > 1 else 0.0
    if (n_lon >= 2 * L + 2 and n_lon > 1 and np.allclose(np.diff(lon_np), step)
            and abs(step * n_lon - 360.0) < 1e-6):
        # f_j = Re sum_m (A_m - i B_m) e^{i m phi_0} e^{i m j dphi}: an inverse real
        # FFT. The phase, the 1/2 of m > 0 and irfft's 1/n_lon are folded into the
        # (small) coefficients; irfft zero-pads the L+1 frequencies itself, so the
        # only full-size array is f.
        phase = torch.exp(1j * m * math.radians(float(lon_np[0]))) * n_lon
        phase[1:] *= 0.5
        re = cos_part * phase.real.to(dtype) + sin_part * phase.imag.to(dtype)
        im = cos_part * phase.imag.to(dtype) - sin_part * phase.real.to(dtype)
        spec = _legendre_sum(p_mil, torch.stack([re, im], dim=-1))  # (n, i, m, 2)
        if row_offset is not None:
            spec[:, :, 0, 0] += (row_offset.to(dev, dtype) * n_lon)[None]
        return torch.fft.irfft(torch.view_as_complex(spec), n=n_lon, dim=-1)
    ab = _legendre_sum(p_mil, torch.stack([cos_part, sin_part], dim=-1))
    a, b = ab[..., 0], ab[..., 1]
    phi = torch.deg2rad(torch.as_tensor(lon_np, device=dev))
    ang = m[:, None] * phi[None, :]
    f = a @ torch.cos(ang).to(dtype) + b @ torch.sin(ang).to(dtype)
    if row_offset is not None:
        f += row_offset.to(dev, dtype)[None, :, None]
    return f
