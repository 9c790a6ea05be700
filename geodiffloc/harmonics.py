r"""Real orthonormal spherical harmonics, batched in torch.

.. math::

    Y_{lm}(\theta, \phi) = \begin{cases}
        \sqrt{2}\,\bar P_{l|m|}(\cos\theta)\,\sin(|m|\phi) & m < 0 \\
        \bar P_{l0}(\cos\theta) & m = 0 \\
        \sqrt{2}\,\bar P_{lm}(\cos\theta)\,\cos(m\phi) & m > 0
    \end{cases}

with :math:`\theta` the colatitude (``90 - lat``), :math:`\phi` the longitude and
:math:`\bar P_{lm} = \sqrt{\tfrac{2l+1}{4\pi}\tfrac{(l-m)!}{(l+m)!}}\,P_{lm}` the fully
normalised associated Legendre functions *without* the Condon–Shortley phase, so that
:math:`\int Y_{lm} Y_{l'm'} \,d\Omega = \delta_{ll'}\delta_{mm'}`. This equals the usual
real form of scipy's complex harmonics (``sqrt(2) (-1)^m Re/Im Y_l^{|m|}``).
Coefficient ``(l, m)`` sits at index ``l*l + l + m``.

The :math:`\bar P_{lm}` come from the fully normalised recurrences (sectoral seed
:math:`\bar P_{mm} = \sqrt{(2m+1)/(2m)}\,\sin\theta\,\bar P_{m-1,m-1}` and the
three-term recurrence in :math:`l`), which neither overflow nor underflow for the
degrees used here (tested to L = 255). The recurrence always runs in float64; only
the output is cast, so float32 results are accurate to ~1e-7.

On CPU without autograd a fused numba kernel (:mod:`geodiffloc._sh_numba`) writes each
output row once, with the recurrence in float64 registers; it runs at the speed of
writing the output to memory. Elsewhere (GPU, autograd, numba missing) the same
recurrence runs as chunked torch operations.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from . import _sh_numba

__all__ = ["degree_order", "legendre_table", "n_coeffs", "real_sph_harm"]


def n_coeffs(L: int) -> int:
    """Number of real harmonics with degree ``<= L``: ``(L + 1)**2``."""
    return (int(L) + 1) ** 2


def degree_order(L: int) -> tuple[np.ndarray, np.ndarray]:
    """Degree ``l`` and order ``m`` of every coefficient index up to ``L``.

    Examples
    --------
    >>> l, m = degree_order(1)
    >>> l.tolist(), m.tolist()
    ([0, 1, 1, 1], [0, -1, 0, 1])
    """
    l = np.repeat(np.arange(L + 1), 2 * np.arange(L + 1) + 1)
    m = np.concatenate([np.arange(-k, k + 1) for k in range(L + 1)])
    return l, m


def _check_L(L: int) -> int:
    if not isinstance(L, int | np.integer) or L < 0:
        raise ValueError(f"L must be a non-negative integer degree; got {L!r}.")
    return int(L)


@functools.lru_cache(maxsize=32)
def _recurrence(L: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mirrored recurrence coefficients ``a[l, L+m], b[l, L+m]`` and sectoral factors.

    ``P_lm = a_lm x P_{l-1,m} - b_lm P_{l-2,m}`` for ``|m| < l``; entries outside the
    band are zero, which also makes ``P_{m+1,m} = a x P_mm`` come out of the same line.
    """
    a = np.zeros((L + 1, 2 * L + 1))
    b = np.zeros((L + 1, 2 * L + 1))
    for l in range(1, L + 1):
        m = np.arange(0, l)
        am = np.sqrt((4.0 * l * l - 1.0) / (l * l - m * m))
        bm = np.where(
            l - 2 >= m,
            np.sqrt(np.clip(((l - 1.0) ** 2 - m * m) * (2 * l + 1), 0, None)
                    / np.maximum((2.0 * l - 3.0) * (l * l - m * m), 1e-300)),
            0.0,
        )
        a[l, L + m] = am
        a[l, L - m] = am
        b[l, L + m] = bm
        b[l, L - m] = bm
    sect = np.zeros(L + 1)
    sect[1:] = np.sqrt((2.0 * np.arange(1, L + 1) + 1) / (2.0 * np.arange(1, L + 1)))
    return a, b, sect


def _trig(lon_rad: torch.Tensor, L: int) -> torch.Tensor:
    """``(n, 2L+1)``: column ``L+m`` holds sqrt2 cos(m phi) (m>0), 1 (m=0), sqrt2 sin(|m| phi)."""
    m = torch.arange(1, L + 1, dtype=lon_rad.dtype, device=lon_rad.device)
    ang = lon_rad[:, None] * m
    root2 = math.sqrt(2.0)
    return torch.cat(
        [root2 * torch.sin(ang).flip(1), torch.ones_like(lon_rad)[:, None], root2 * torch.cos(ang)],
        dim=1,
    )


def _legendre_rows(x: torch.Tensor, s: torch.Tensor, L: int):
    """Yield ``(l, Q_l)`` with ``Q_l[:, L+m] = Pbar_{l|m|}`` for ``|m| <= l`` (float64)."""
    a_np, b_np, sect = _recurrence(L)
    dev = x.device
    a = torch.from_numpy(a_np).to(dev, x.dtype)
    b = torch.from_numpy(b_np).to(dev, x.dtype)
    n = x.shape[0]
    sectoral = torch.full((n,), 1.0 / math.sqrt(4.0 * math.pi), dtype=x.dtype, device=dev)
    q_prev2 = None
    q_prev = torch.zeros(n, 2 * L + 1, dtype=x.dtype, device=dev)
    q_prev = q_prev.index_fill(1, torch.tensor([L], device=dev), 0.0) + _col(sectoral, L, L)
    yield 0, q_prev
    for l in range(1, L + 1):
        band = slice(L - l + 1, L + l)  # |m| <= l - 1
        inner = a[l, band] * x[:, None] * q_prev[:, band]
        if q_prev2 is not None:
            inner = inner - b[l, band] * q_prev2[:, band]
        sectoral = sect[l] * s * sectoral
        q = torch.cat(
            [
                torch.zeros(n, L - l, dtype=x.dtype, device=dev),
                sectoral[:, None],
                inner,
                sectoral[:, None],
                torch.zeros(n, L - l, dtype=x.dtype, device=dev),
            ],
            dim=1,
        )
        yield l, q
        q_prev2, q_prev = q_prev, q


def _col(v: torch.Tensor, col: int, L: int) -> torch.Tensor:
    out = torch.zeros(v.shape[0], 2 * L + 1, dtype=v.dtype, device=v.device)
    out[:, col] = v
    return out


def _sph_harm_autograd(latlon: torch.Tensor, L: int) -> torch.Tensor:
    """Differentiable path (no in-place writes); same maths as the fast path."""
    lat = torch.deg2rad(latlon[:, 0])
    lon = torch.deg2rad(latlon[:, 1])
    x, s = torch.sin(lat), torch.cos(lat)
    trig = _trig(lon, L)
    blocks = [q[:, L - l : L + l + 1] * trig[:, L - l : L + l + 1]
              for l, q in _legendre_rows(x, s, L)]
    return torch.cat(blocks, dim=1)


def _sph_harm_fast(latlon: torch.Tensor, L: int, out: torch.Tensor, chunk: int) -> None:
    """Chunked, in-place fast path: float64 recurrence kept in cache, cast on write."""
    a_np, b_np, sect = _recurrence(L)
    dev = latlon.device
    a = torch.from_numpy(a_np).to(dev)
    b = torch.from_numpy(b_np).to(dev)
    inv_sqrt4pi = 1.0 / math.sqrt(4.0 * math.pi)
    width = 2 * L + 1
    for c0 in range(0, latlon.shape[0], chunk):
        ll = latlon[c0 : c0 + chunk].to(torch.float64)
        n = ll.shape[0]
        lat, lon = torch.deg2rad(ll[:, 0]), torch.deg2rad(ll[:, 1])
        x, s = torch.sin(lat)[:, None], torch.cos(lat)
        trig = _trig(lon, L)
        o = out[c0 : c0 + n]
        q_prev2 = torch.zeros(n, width, dtype=torch.float64, device=dev)
        q_prev = torch.zeros(n, width, dtype=torch.float64, device=dev)
        # zeros, not empty: entries outside the band are read (times a zero coefficient)
        q = torch.zeros(n, width, dtype=torch.float64, device=dev)
        sectoral = torch.full((n,), inv_sqrt4pi, dtype=torch.float64, device=dev)
        q_prev[:, L] = sectoral
        o[:, 0] = inv_sqrt4pi
        for l in range(1, L + 1):
            band = slice(L - l + 1, L + l)
            qb = q[:, band]
            torch.mul(q_prev[:, band], x, out=qb)
            qb.mul_(a[l, band])
            qb.addcmul_(q_prev2[:, band], b[l, band], value=-1.0)
            sectoral = sectoral * s * sect[l]
            q[:, L - l] = sectoral
            q[:, L + l] = sectoral
            full = slice(L - l, L + l + 1)
            torch.mul(q[:, full], trig[:, full], out=o[:, l * l : (l + 1) * (l + 1)])
            q_prev2, q_prev, q = q_prev, q, q_prev2


def real_sph_harm(
    latlon: torch.Tensor,
    L: int,
    *,
    dtype: torch.dtype | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    r"""Evaluate all real orthonormal spherical harmonics of degree ``<= L``.

    Parameters
    ----------
    latlon
        ``(n, 2)`` tensor of ``(lat, lon)`` in degrees, on any device.
    L
        Maximum degree.
    dtype
        Output dtype (default: the input's floating dtype). The recurrence runs in
        float64 either way.
    chunk
        Points per chunk on the torch (GPU / no numba) path: default 2048 on CPU (keeps
        the recurrence in cache), 65536 on GPUs (fewer kernel launches). The numba
        kernel needs no chunks.

    Returns
    -------
    torch.Tensor
        ``(n, (L+1)**2)``; column ``l*l + l + m`` is :math:`Y_{lm}`.

    Raises
    ------
    ValueError
        For a wrong shape or negative ``L``.

    Notes
    -----
    When ``latlon`` requires grad (and grad mode is on) a differentiable path without
    in-place writes is used, so the result can be back-propagated to the coordinates.

    Examples
    --------
    >>> import math
    >>> y = real_sph_harm(torch.tensor([[90.0, 0.0]], dtype=torch.float64), 2)
    >>> abs(float(y[0, 0]) - 1 / math.sqrt(4 * math.pi)) < 1e-15   # Y_00
    True
    >>> abs(float(y[0, 2]) - math.sqrt(3 / (4 * math.pi))) < 1e-15  # Y_10 at the pole
    True
    """
    L = _check_L(L)
    if not isinstance(latlon, torch.Tensor) or latlon.ndim != 2 or latlon.shape[1] != 2:
        shape = tuple(latlon.shape) if isinstance(latlon, torch.Tensor) else type(latlon)
        raise ValueError(f"latlon must be an (n, 2) tensor of (lat, lon) degrees; got {shape}.")
    if not latlon.is_floating_point():
        latlon = latlon.double()
    out_dtype = dtype or latlon.dtype
    if latlon.requires_grad and torch.is_grad_enabled():
        return _sph_harm_autograd(latlon.to(torch.float64), L).to(out_dtype)
    out = torch.empty(latlon.shape[0], n_coeffs(L), dtype=out_dtype, device=latlon.device)
    if _use_numba(out):
        _sh_numba.fill_real_sph_harm(latlon.detach().numpy(), L, out.numpy(),
                                     threads=torch.get_num_threads())
        return out
    with torch.no_grad():
        if chunk is None:
            chunk = 2048 if latlon.device.type == "cpu" else 65536
        _sph_harm_fast(latlon, L, out, max(1, int(chunk)))
    return out


def _use_numba(out: torch.Tensor) -> bool:
    return (_sh_numba.available() and out.device.type == "cpu"
            and out.dtype in (torch.float32, torch.float64) and out.numel() > 0)


def legendre_table(lat_deg: torch.Tensor, L: int) -> torch.Tensor:
    r"""Fully normalised :math:`\bar P_{lm}(\sin(\mathrm{lat}))` for ``0 <= m <= l <= L``.

    Returns
    -------
    torch.Tensor
        ``(n, L+1, L+1)`` float64 indexed ``[i, l, m]`` (zero for ``m > l``); used by
        field synthesis (one table per latitude row, then an FFT along longitude).
    """
    L = _check_L(L)
    lat_deg = lat_deg.to(torch.float64)
    if _sh_numba.available() and lat_deg.device.type == "cpu" and not lat_deg.requires_grad:
        # At lon = 0, Y_l0 = P_l0, Y_lm = sqrt2 P_lm (m > 0), Y_l,-m = 0: one kernel call.
        y = real_sph_harm(torch.stack([lat_deg, torch.zeros_like(lat_deg)], 1), L)
        idx, scale = _table_index(L)
        return y[:, idx] * scale
    lat = torch.deg2rad(lat_deg)
    x, s = torch.sin(lat), torch.cos(lat)
    rows = [q[:, L : 2 * L + 1] for _, q in _legendre_rows(x, s, L)]
    return torch.stack(rows, dim=1)


@functools.lru_cache(maxsize=16)
def _table_index(L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Column of ``Y_lm`` for table entry ``[l, m]`` and the factor undoing sqrt2 (0 if m > l)."""
    l, m = np.meshgrid(np.arange(L + 1), np.arange(L + 1), indexing="ij")
    idx = np.where(m <= l, l * l + l + m, 0)
    scale = np.where(m <= l, np.where(m > 0, 1 / math.sqrt(2.0), 1.0), 0.0)
    return torch.from_numpy(idx), torch.from_numpy(scale)
