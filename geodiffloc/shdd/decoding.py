r"""The mode-seeking SHDD decoder (LocDiff eq. 14) and a continuous refinement.

Eq. 14 scores every anchor :math:`a_j` by the field mass of the anchors within
:math:`\beta` of it and returns the best anchor:

.. math:: \hat p = \arg\max_{a_j} \sum_i \mathbb 1\{d(a_j, a_i) < \beta\}\, e^{f(a_i)}

(in log space: a log-sum-exp). The paper leaves :math:`\beta` open; a fixed beta of a
degree or so makes the decoder pick a neighbour of the mode at high L (the density is
only ~20 km wide at L = 47) and favour crowded anchors at low L, so the default is tied
to the width of the field: ``beta_km = 2 * SHDD.width_km``.

Search (``method="grid"``, the default): the full field, which is also the matched
filter of a point in white noise, is synthesised on a lat/lon grid of spacing
``~0.9 / (L+1)`` rad by the fast synthesis of :mod:`~geodiffloc.shdd.synthesis`
(per vector ``O(rows L^2 + rows cols log cols)`` instead of ``anchors x (L+1)^2``), and
eq. 14 decides among the anchors near its three best cells that lie at least
``3.2 / (L+1)`` rad (about two half-widths of the main lobe) apart. Where no anchor lies
near any of them (an uneven anchor set), the dense search answers.

``method="coarse_to_fine"`` (the default before the grid search, kept as an option):

1. a low-pass field (degree ``min(L, 23)``) on a fixed 16,384-point Fibonacci lattice
   picks the most promising regions;
2. a mid-pass field (degree ``min(L, 31)``) ranks the anchors near those regions;
3. the full field, and eq. 14's neighbourhood sums, decide among the anchors near the
   best mid-pass anchors.

A vector whose low-pass peak does not stand at least 8 standard deviations above the
low-pass field's mean (heavy white noise: a peak grows like L^2, noise like L) has no
reliable low-pass region and takes the grid search instead. On the benchmark
(``benchmarks/shdd.py``: 512 noisy vectors, L = 47, 100,000 anchors) both searches pick
the dense search's anchor for every vector, and the grid search is faster at every
noise level; at L = 127 it costs about as much as coarse-to-fine.

``method="dense"`` evaluates the full field at every anchor (the reference; memory and
time grow with anchors x (L+1)^2). All end with :func:`refine_modes`, a Newton ascent
of :math:`f` on the sphere (finite differences in a local tangent frame, float64),
which is not limited by the anchor spacing and reaches metres.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._fingerprint import fingerprint
from ..harmonics import legendre_table, n_coeffs, real_sph_harm
from ..sphere import (
    EARTH_RADIUS_KM,
    fibonacci_lattice,
    gallery_anchors,
    latlon_to_xyz,
    xyz_to_latlon,
)
from .synthesis import synthesize

if TYPE_CHECKING:
    from .core import SHDD

__all__ = ["decode", "default_anchors", "refine_modes"]

_COARSE_N = 16384
_COARSE_L = 23
_COARSE_K = 3
_MID_L = 31
_MID_K = 3
_R1_SPACINGS = 1.5  # stage-1 search radius, in coarse-lattice spacings
_BLOCK_FLOATS = 60_000_000  # per block of vectors: ~240 MB of float32 candidate harmonics
_CLEAR_Z = 8.0  # low-pass peak height in std-devs of the low-pass field below which -> dense
_R2_LOBES = 0.5  # stage-3 search radius, in half-widths pi/(Lm+1) of the mid-pass lobe
_Y_BUDGET = 250_000_000  # floats of cached anchor harmonics (1 GB in float32; goal: <= 1 GB)


def default_anchors(L: int) -> torch.Tensor:
    """Fibonacci lattice with spacing about a quarter of the field's main lobe.

    ``n = 16 (L+1)^2`` points (spacing ``~0.89 / (L+1)`` rad, 118 km at L = 47), capped
    at 200,000.
    """
    return fibonacci_lattice(int(min(200_000, max(4096, 16 * (L + 1) ** 2))))


class _AnchorIndex:
    """Anchors with a KD-tree on unit vectors and (if affordable) cached harmonics."""

    def __init__(self, anchors: torch.Tensor, L: int) -> None:
        from scipy.spatial import cKDTree

        self.latlon = anchors.to(torch.float64)
        self.xyz = latlon_to_xyz(self.latlon).numpy()
        self.tree = cKDTree(self.xyz)
        self.L = L
        n = self.latlon.shape[0]
        # Harmonics cached in two contiguous column blocks (degrees <= _MID_L, the rest)
        # so the mid-pass gathers only the short rows it needs.
        self.d_mid = n_coeffs(min(L, _MID_L))
        self.Y_lo: torch.Tensor | None = None
        self.Y_hi: torch.Tensor | None = None
        if n * n_coeffs(L) <= _Y_BUDGET:
            y = real_sph_harm(self.latlon, L, dtype=torch.float32)
            self.Y_lo = y[:, : self.d_mid].contiguous()
            self.Y_hi = y[:, self.d_mid :].contiguous()
            del y
        self.spacing = math.sqrt(4 * math.pi / n)  # mean spacing, radians

    def field(self, idx: torch.Tensor, c: torch.Tensor, L: int) -> torch.Tensor:
        """``f`` truncated at degree ``L`` at anchors ``idx`` ``(n, k)`` for vectors ``c``."""
        d = n_coeffs(L)
        y_lo, y_hi = self.Y_lo, self.Y_hi
        if y_lo is None or y_hi is None:
            y = real_sph_harm(self.latlon[idx.flatten()], L, dtype=torch.float32)
            return torch.einsum("nkd,nd->nk", y.reshape(*idx.shape, d), c[:, :d])
        d_lo = min(d, self.d_mid)
        f = torch.einsum("nkd,nd->nk", y_lo[idx, :d_lo] if d_lo < self.d_mid
                         else y_lo[idx], c[:, :d_lo])
        if d > self.d_mid:
            f = f + torch.einsum("nkd,nd->nk", y_hi[idx, : d - self.d_mid],
                                 c[:, self.d_mid : d])
        return f

    def dense_field(self, c: torch.Tensor, L: int) -> torch.Tensor:
        """``f`` at every anchor, ``(n, n_anchors)``."""
        y_lo, y_hi = self.Y_lo, self.Y_hi
        if y_lo is None or y_hi is None:
            return torch.cat([c @ real_sph_harm(self.latlon[a : a + 20000], L,
                                                dtype=torch.float32).T
                              for a in range(0, self.latlon.shape[0], 20000)], dim=1)
        f = c[:, : self.d_mid] @ y_lo.T
        if y_hi.shape[1]:
            f = f + c[:, self.d_mid :] @ y_hi.T
        return f


_INDEX_CACHE: dict[tuple[str, int], _AnchorIndex] = {}
_COARSE_CACHE: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}


def _index_for(anchors: torch.Tensor, L: int) -> _AnchorIndex:
    key = (fingerprint(anchors, length=32), L)
    if key not in _INDEX_CACHE:
        if len(_INDEX_CACHE) >= 4:
            _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
        _INDEX_CACHE[key] = _AnchorIndex(anchors, L)
    return _INDEX_CACHE[key]


def _coarse(Lc: int) -> tuple[torch.Tensor, torch.Tensor]:
    if Lc not in _COARSE_CACHE:
        lattice = fibonacci_lattice(_COARSE_N)
        _COARSE_CACHE[Lc] = (lattice, real_sph_harm(lattice, Lc, dtype=torch.float32))
    return _COARSE_CACHE[Lc]


def _chord(angle_rad: float) -> float:
    return 2.0 * math.sin(min(angle_rad, math.pi) / 2.0)


def _padded(lists: list[list[int]], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(x) for x in lists))
    idx = np.full((len(lists), width), fill, dtype=np.int64)
    mask = np.zeros((len(lists), width), dtype=bool)
    for i, x in enumerate(lists):
        idx[i, : len(x)] = x
        mask[i, : len(x)] = True
    return torch.from_numpy(idx), torch.from_numpy(mask)


def _neighbour_scores(f: torch.Tensor, xyz: np.ndarray, idx: torch.Tensor, mask: torch.Tensor,
                      beta_rad: float) -> torch.Tensor:
    """Eq. 14 in log space among each row's candidate anchors: ``logsumexp`` within beta."""
    pts = torch.from_numpy(xyz)[idx]  # (n, k, 3)
    chord2 = torch.cdist(pts, pts) ** 2
    near = (chord2 <= _chord(beta_rad) ** 2) & mask[:, None, :] & mask[:, :, None]
    f64 = f.to(torch.float64).masked_fill(~mask, -math.inf)
    scores = torch.logsumexp(f64[:, None, :].masked_fill(~near, -math.inf), dim=-1)
    return scores.masked_fill(~mask, -math.inf)


def _search_coarse_to_fine(shdd: SHDD, c: torch.Tensor, index: _AnchorIndex,
                           beta_rad: float) -> torch.Tensor:
    L = shdd.L
    cpu = c.detach().to("cpu", torch.float32)
    n = cpu.shape[0]
    # 1. low-pass field on a fixed coarse lattice -> promising regions.
    Lc = min(L, _COARSE_L)
    lattice, yc = _coarse(Lc)
    f_c = cpu[:, : n_coeffs(Lc)] @ yc.T
    # A vector whose low-pass peak does not stand clear of its own spread (white noise
    # grows like L while a peak grows like L^2, so heavy noise can hide in the low-pass)
    # is searched densely instead: correctness first, speed where it is safe.
    z = (f_c.max(dim=1).values - f_c.mean(dim=1)) / f_c.std(dim=1).clamp_min(1e-12)
    unclear = z < _CLEAR_Z
    if bool(unclear.all()):
        return _search_grid(shdd, c, index, beta_rad)
    kc = _COARSE_K
    top_c = torch.topk(f_c, k=kc, dim=1).indices
    lat_xyz = latlon_to_xyz(lattice).numpy()
    r1 = max(_R1_SPACINGS * math.sqrt(4 * math.pi / _COARSE_N), 1.5 * index.spacing)
    hits = index.tree.query_ball_point(lat_xyz[top_c.numpy().ravel()], _chord(r1))
    cand = [sorted(set().union(*hits[i * kc:(i + 1) * kc])) for i in range(n)]
    idx1, m1 = _padded(cand, 0)
    # 2. mid-pass field on those anchors -> best few anchors.
    Lm = min(L, _MID_L)
    f_m = index.field(idx1, cpu, Lm)
    f_m = f_m.masked_fill(~m1, -math.inf)
    k2 = min(_MID_K, idx1.shape[1])
    best_m = torch.gather(idx1, 1, torch.topk(f_m, k=k2, dim=1).indices)
    # 3. full field + eq. 14 near them.
    r2 = max(_R2_LOBES * math.pi / (Lm + 1), 1.5 * index.spacing) + beta_rad
    hits2 = index.tree.query_ball_point(index.xyz[best_m.numpy().ravel()], _chord(r2))
    cand2 = [sorted(set().union(*hits2[i * k2:(i + 1) * k2])) for i in range(n)]
    idx2, m2 = _padded(cand2, 0)
    f_full = index.field(idx2, cpu, L)
    scores = _neighbour_scores(f_full, index.xyz, idx2, m2, beta_rad)
    best = torch.gather(idx2, 1, scores.argmax(dim=1, keepdim=True))[:, 0]
    out = index.latlon[best]
    if bool(unclear.any()):
        rows = torch.nonzero(unclear).flatten()
        out[rows] = _search_grid(shdd, c[rows], index, beta_rad)
    return out


_GRID_K = 3  # peaks of the full field followed per vector
_GRID_TOP = 48  # best grid cells the peaks are chosen from
_GRID_CACHE: dict[int, tuple[np.ndarray, np.ndarray, torch.Tensor]] = {}


def _grid(L: int) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Cell-centre rows and columns (spacing ~0.9 / (L+1) rad) and their Legendre table."""
    if L not in _GRID_CACHE:
        n_lat = max(L + 1, math.ceil(math.pi / (0.9 / (L + 1))))
        lat = 90.0 - (np.arange(n_lat) + 0.5) * 180.0 / n_lat
        lon = -180.0 + (np.arange(2 * n_lat) + 0.5) * 180.0 / n_lat
        _GRID_CACHE[L] = (lat, lon, legendre_table(torch.from_numpy(lat), L))
    return _GRID_CACHE[L]


def _search_grid(shdd: SHDD, c: torch.Tensor, index: _AnchorIndex,
                 beta_rad: float) -> torch.Tensor:
    """Full field on a lat/lon grid (fast synthesis) -> its best local maxima -> eq. 14.

    The full-degree field is the matched filter of a point under white noise, so its
    maxima stay where the point is when the low-pass peak drowns; synthesis on a grid
    costs ``O(rows L^2 + rows cols log cols)`` per vector instead of ``anchors x L^2``.
    """
    L = shdd.L
    cpu = c.detach().to("cpu", torch.float32)
    n = cpu.shape[0]
    lat, lon, ptable = _grid(L)
    f = synthesize(cpu, L, lat, lon, ptable=ptable, dtype=torch.float32)  # (n, rows, cols)
    # the best cells, thinned greedily to _GRID_K peaks at least ~2 lobe half-widths apart
    top = torch.topk(f.flatten(1), k=min(_GRID_TOP, f[0].numel()), dim=1).indices
    rows, cols = np.divmod(top.numpy(), lon.size)
    cells = torch.from_numpy(np.stack([lat[rows], lon[cols]], -1))  # (n, top, 2)
    xyz = latlon_to_xyz(cells)
    far = (xyz @ xyz.transpose(1, 2)) < math.cos(3.2 / (L + 1))  # (n, top, top)
    keep = torch.zeros(far.shape[:2], dtype=torch.bool)
    keep[:, 0] = True
    alive = far[:, 0].clone()
    for _ in range(_GRID_K - 1):
        nxt = alive.float().argmax(dim=1)
        ok = alive.gather(1, nxt[:, None])[:, 0]
        keep[ok, nxt[ok]] = True
        alive &= far[torch.arange(n), nxt] | ~ok[:, None]
    step = math.radians(180.0 / lat.size)
    r = 0.75 * step + index.spacing + beta_rad
    centres = xyz[keep].numpy()
    owner = torch.nonzero(keep)[:, 0].numpy()
    hits = index.tree.query_ball_point(centres, _chord(r))
    cand: list[set[int]] = [set() for _ in range(n)]
    for i, h in zip(owner, hits, strict=True):
        cand[i].update(h)
    idx, mask = _padded([sorted(x) for x in cand], 0)
    scores = _neighbour_scores(index.field(idx, cpu, L), index.xyz, idx, mask, beta_rad)
    out = index.latlon[torch.gather(idx, 1, scores.argmax(dim=1, keepdim=True))[:, 0]]
    empty = torch.nonzero(~mask.any(dim=1)).flatten()
    if empty.numel():  # an uneven anchor set with no anchor near any peak
        out[empty] = _search_dense(shdd, c[empty], index, beta_rad)
    return out


def _search_dense(shdd: SHDD, c: torch.Tensor, index: _AnchorIndex,
                  beta_rad: float) -> torch.Tensor:
    from scipy.sparse import coo_matrix

    cpu = c.detach().to("cpu", torch.float32)
    n_a = index.latlon.shape[0]
    pairs = index.tree.query_pairs(_chord(beta_rad), output_type="ndarray")
    rows = np.concatenate([pairs[:, 0], pairs[:, 1], np.arange(n_a)])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0], np.arange(n_a)])
    nbr = coo_matrix((np.ones(rows.size), (rows, cols)), shape=(n_a, n_a)).tocsr()
    best = torch.empty(cpu.shape[0], dtype=torch.long)
    step = max(1, 50_000_000 // max(n_a, 1))
    for s in range(0, cpu.shape[0], step):
        blk = cpu[s : s + step]
        f = index.dense_field(blk, shdd.L).to(torch.float64).numpy()
        fmax = f.max(axis=1, keepdims=True)
        score = np.log(np.maximum(nbr @ np.exp(f - fmax).T, 1e-300)).T + fmax
        best[s : s + step] = torch.from_numpy(score.argmax(axis=1))
    return index.latlon[best]


def _tangent_frame(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ref = torch.zeros_like(p)
    polar = p[:, 2].abs() > 0.9
    ref[:, 2] = (~polar).to(p.dtype)
    ref[:, 0] = polar.to(p.dtype)
    e1 = torch.nn.functional.normalize(torch.cross(ref, p, dim=1), dim=1)
    return e1, torch.cross(p, e1, dim=1)


_STENCIL = torch.tensor([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1], [1, 1], [1, -1], [-1, 1],
                         [-1, -1]], dtype=torch.float64)


_POLAR_LAT = 88.0  # analytic derivatives divide by cos(lat): the stencil takes the caps


def refine_modes(shdd: SHDD | int, coeffs: torch.Tensor, start: torch.Tensor, *, steps: int = 7,
                 h0_rad: float | None = None, method: str = "auto") -> torch.Tensor:
    """Newton ascent of ``f`` on the sphere from ``start`` ``(n, 2)``; returns ``(n, 2)``.

    ``method="newton"`` uses the exact gradient and Hessian of ``f`` (one fused
    numba pass per step: the Legendre recurrence with its latitude derivatives and the
    covariant Hessian on the sphere), takes the Newton step inside a trust radius when
    the Hessian is negative definite (a gradient step otherwise), and keeps it only if
    ``f`` increases; it stops when every proposed step is below 6 mm. Points within 2
    degrees of a pole use the stencil.

    ``method="stencil"`` fits the gradient and Hessian by central differences on a
    3 x 3 stencil of spacing ``h`` in the local tangent plane, with the same safeguards,
    shrinking ``h`` threefold per step (``steps`` steps). Device-agnostic.

    ``"auto"`` (default): ``"newton"`` on CPU when numba is installed, else
    ``"stencil"``. Float64 throughout.
    """
    from .. import _sh_numba

    if method not in ("auto", "newton", "stencil"):
        raise ValueError(f"method must be 'auto', 'newton' or 'stencil'; got {method!r}.")
    L = int(shdd) if isinstance(shdd, int) else int(shdd.L)
    newton_ok = _sh_numba.available() and coeffs.device.type == "cpu"
    if method == "newton" and not newton_ok:
        raise ValueError("method='newton' needs numba and CPU tensors; use 'stencil'.")
    if method == "stencil" or not newton_ok:
        return _refine_stencil(L, coeffs, start, steps=steps, h0_rad=h0_rad)
    c = coeffs.detach().to(torch.float64)
    out = start.detach().to(torch.float64).clone()
    polar = out[:, 0].abs() >= _POLAR_LAT
    rows = torch.nonzero(~polar).flatten()
    if rows.numel():
        out[rows] = _refine_newton(L, c[rows], out[rows], h0_rad=h0_rad)
    polar = out[:, 0].abs() >= _POLAR_LAT  # starts near a pole, or ends there
    if bool(polar.any()):
        rows = torch.nonzero(polar).flatten()
        out[rows] = _refine_stencil(L, c[rows], out[rows], steps=steps, h0_rad=h0_rad)
    return out


def _refine_newton(L: int, c: torch.Tensor, start: torch.Tensor, *, max_steps: int = 12,
                   h0_rad: float | None = None) -> torch.Tensor:
    from .._sh_numba import field_derivatives

    cn = c.numpy()
    p = start.numpy().copy()
    radius = np.full(p.shape[0], h0_rad if h0_rad is not None else 0.5 * math.pi / (L + 1))
    d = field_derivatives(p, cn, L)
    for _ in range(max_steps):
        lat, lon = np.deg2rad(p[:, 0]), np.deg2rad(p[:, 1])
        x, s = np.sin(lat), np.cos(lat)
        f, ft, fp, ftt, ftp, fpp = d.T
        # Gradient and covariant Hessian in the orthonormal (north, east) frame.
        gn, ge = ft, fp / s
        hnn = ftt
        hne = (ftp + x / s * fp) / s
        hee = (fpp - x * s * ft) / s**2
        det = hnn * hee - hne**2
        newton = (hnn < 0) & (det > 0)
        safe = np.where(newton, det, 1.0)
        dn = np.where(newton, -(hee * gn - hne * ge) / safe, 0.0)
        de = np.where(newton, -(hnn * ge - hne * gn) / safe, 0.0)
        gnorm = np.maximum(np.hypot(gn, ge), 1e-300)
        dn = np.where(newton, dn, radius * gn / gnorm)
        de = np.where(newton, de, radius * ge / gnorm)
        length = np.hypot(dn, de)
        scale = np.minimum(1.0, radius / np.maximum(length, 1e-300))
        dn, de = dn * scale, de * scale
        # Move along the tangent plane and back onto the sphere.
        north = np.stack([-x * np.cos(lon), -x * np.sin(lon), s], 1)
        east = np.stack([-np.sin(lon), np.cos(lon), np.zeros_like(lon)], 1)
        xyz = np.stack([s * np.cos(lon), s * np.sin(lon), x], 1)
        cand = xyz + dn[:, None] * north + de[:, None] * east
        cand /= np.linalg.norm(cand, axis=1, keepdims=True)
        cand_ll = np.stack([np.rad2deg(np.arcsin(np.clip(cand[:, 2], -1, 1))),
                            np.rad2deg(np.arctan2(cand[:, 1], cand[:, 0]))], 1)
        d_new = field_derivatives(cand_ll, cn, L)
        better = d_new[:, 0] >= f
        p = np.where(better[:, None], cand_ll, p)
        d = np.where(better[:, None], d_new, d)
        radius = np.where(better, radius, radius / 4)
        if float(np.max(length * scale)) < 1e-9:  # every proposed step under 6 mm
            break
    return torch.from_numpy(p)


def _field_at(L: int, c: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
    """``f`` of vector ``c[i]`` at the unit vectors ``xyz[i, k]``: ``(n, k)``."""
    ll = xyz_to_latlon(xyz)
    n, k = ll.shape[:2]
    y = real_sph_harm(ll.reshape(-1, 2), L).reshape(n, k, -1)
    return torch.einsum("nkd,nd->nk", y, c)


def stencil_derivatives(L: int, c: torch.Tensor, p: torch.Tensor, h: float | torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor],
                                   tuple[torch.Tensor, torch.Tensor],
                                   tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``f``, gradient and Hessian of ``f = c[i] . Y`` at unit vectors ``p[i]``.

    Central differences on a 3 x 3 stencil of spacing ``h`` (rad; a float or one per
    row) in an orthonormal tangent frame; device-agnostic and fine at the poles.

    Returns
    -------
    (f, points, (e1, e2), (gx, gy), (hxx, hyy, hxy))
        ``f`` ``(n, 9)`` at the stencil ``points`` ``(n, 9, 3)`` (centre first), the
        frame, and the derivatives per rad (rad²) along it.
    """
    hh = torch.as_tensor(h, dtype=p.dtype, device=p.device)
    hc = hh.reshape(-1, 1, 1) if hh.ndim else hh
    e1, e2 = _tangent_frame(p)
    stencil = _STENCIL.to(p.device)
    off = hc * (stencil[None, :, 0:1] * e1[:, None] + stencil[None, :, 1:2] * e2[:, None])
    pts = torch.nn.functional.normalize(p[:, None] + off, dim=-1)
    f = _field_at(L, c, pts)
    f0 = f[:, 0]
    g = ((f[:, 1] - f[:, 2]) / (2 * hh), (f[:, 3] - f[:, 4]) / (2 * hh))
    hess = ((f[:, 1] - 2 * f0 + f[:, 2]) / hh**2, (f[:, 3] - 2 * f0 + f[:, 4]) / hh**2,
            (f[:, 5] - f[:, 6] - f[:, 7] + f[:, 8]) / (4 * hh**2))
    return f, pts, (e1, e2), g, hess


def _refine_stencil(L: int, coeffs: torch.Tensor, start: torch.Tensor, *, steps: int,
                    h0_rad: float | None) -> torch.Tensor:
    c = coeffs.detach().to(torch.float64)
    p = latlon_to_xyz(start.to(c.device, torch.float64))
    h = h0_rad if h0_rad is not None else 0.25 * math.pi / (L + 1)

    def f_at(xyz: torch.Tensor) -> torch.Tensor:
        return _field_at(L, c, xyz)

    for _ in range(steps):
        f, pts, (e1, e2), (gx, gy), (hxx, hyy, hxy) = stencil_derivatives(L, c, p, h)
        f0 = f[:, 0]
        det = hxx * hyy - hxy**2
        newton_ok = (hxx < 0) & (det > 0)
        safe_det = torch.where(newton_ok, det, torch.ones_like(det))
        dx = torch.where(newton_ok, -(hyy * gx - hxy * gy) / safe_det, torch.zeros_like(gx))
        dy = torch.where(newton_ok, -(hxx * gy - hxy * gx) / safe_det, torch.zeros_like(gy))
        gnorm = torch.sqrt(gx**2 + gy**2).clamp_min(1e-300)
        dx = torch.where(newton_ok, dx, h * gx / gnorm)
        dy = torch.where(newton_ok, dy, h * gy / gnorm)
        length = torch.sqrt(dx**2 + dy**2)
        scale = torch.clamp(2 * h / length.clamp_min(1e-300), max=1.0)
        cand = torch.nn.functional.normalize(
            p + (scale * dx)[:, None] * e1 + (scale * dy)[:, None] * e2, dim=1)
        f_cand = f_at(cand[:, None])[:, 0]
        # The best stencil point is a fallback when the quadratic model is poor.
        best_f, best_i = f.max(dim=1)
        best_pt = torch.gather(pts, 1, best_i[:, None, None].expand(-1, 1, 3))[:, 0]
        choose_cand = f_cand >= best_f
        new = torch.where(choose_cand[:, None], cand, best_pt)
        f_new = torch.where(choose_cand, f_cand, best_f)
        p = torch.where((f_new > f0)[:, None], new, p)
        h = h / 3.0
    return xyz_to_latlon(p)


def decode(shdd: SHDD, coeffs: torch.Tensor, anchors: Any = None, *,
           beta_km: float | None = None, refine: bool = True,
           method: str = "grid") -> torch.Tensor:
    """Decode SHDD vectors to ``(n, 2)`` float64 ``(lat, lon)`` degrees.

    Parameters
    ----------
    shdd
        The :class:`~geodiffloc.shdd.SHDD` space of the vectors.
    coeffs
        ``(n, (L+1)**2)`` vectors.
    anchors
        Anchor set for eq. 14: anything :func:`~geodiffloc.sphere.gallery_anchors`
        accepts (``(m, 2)`` array/tensor, CSV path, GeoDataFrame); default
        :func:`default_anchors`. Per-anchor harmonics are cached per anchor set.
    beta_km
        Neighbourhood radius of eq. 14; default ``2 * shdd.width_km``.
    refine
        Follow with :func:`refine_modes` (continuous, not limited by anchor spacing).
    method
        ``"grid"`` (default: the full field's best grid cells, then eq. 14 near
        them), ``"coarse_to_fine"`` (low-pass lattice first; heavy-noise vectors go to
        ``"grid"``) or ``"dense"`` (every anchor; the reference).

    Raises
    ------
    ValueError
        Unknown method, non-positive ``beta_km``, or invalid anchors.
    """
    searches = {"coarse_to_fine": _search_coarse_to_fine, "grid": _search_grid,
                "dense": _search_dense}
    if method not in searches:
        raise ValueError(f"method must be 'coarse_to_fine', 'grid' or 'dense'; got "
                         f"{method!r}.")
    beta_km = 2.0 * shdd.width_km if beta_km is None else float(beta_km)
    if not beta_km > 0:
        raise ValueError(f"beta_km must be positive; got {beta_km}.")
    anchor_t = default_anchors(shdd.L) if anchors is None else gallery_anchors(anchors)
    index = _index_for(anchor_t, shdd.L)
    search = searches[method]
    # Blocks of vectors bound the memory of the gathered candidate harmonics
    # (vectors x candidates x (L+1)^2) at any L.
    block = max(1, _BLOCK_FLOATS // (shdd.dim * 256))
    out = []
    with torch.no_grad():
        for b0 in range(0, coeffs.shape[0], block):
            c = coeffs[b0 : b0 + block]
            start = search(shdd, c, index, beta_km / EARTH_RADIUS_KM)
            out.append(refine_modes(shdd, c, start.to(c.device)).cpu() if refine else start)
    return torch.cat(out)
