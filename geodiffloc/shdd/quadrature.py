r"""Log-partition :math:`\log Z(e) = \log\int_{S^2} \exp f_e\, d\Omega` in log space.

At degree ``L`` the field of an encoded point peaks at :math:`(L+1)^2/4\pi` (~183 at
L = 47, ~1300 at L = 127), so ``exp`` overflows in float32 and the peak is only a few
km wide: a global grid fine enough to resolve it would have billions of nodes. The
integral is split by a smooth partition of unity instead:

.. math::

    Z = \int \frac{\psi}{N} e^f\, d\Omega + \sum_b \int \frac{\chi_b}{N} e^f\, d\Omega,
    \qquad \psi = \prod_b (1 - \chi_b),\quad N = \psi + \sum_b \chi_b \ge 1,

1. the **bulk** term on one Gauss–Legendre grid of ``3(L+1) x 6(L+1)`` nodes (at least 64 rows),
   synthesised by FFT for all vectors at once (it resolves ``exp f`` wherever ``f``
   varies on the scale of its band limit);
2. one **box** per sharp peak (a mode found by Newton ascent from the grid's local
   maxima whose width :math:`\sigma = 1/\sqrt{\lambda}` of ``exp f``, from the
   Hessian, is under two grid spacings and whose Laplace mass is within ``margin``
   of the total): :math:`\chi_b` is a C-infinity bump, 1 over the peak's core (out to
   where ``f`` has fallen by ``margin`` below the top) and 0 past a transition band of
   four grid spacings. Each box is integrated on its own tensor Gauss–Legendre grid
   (composite: transition panels at the bulk's spacing, a core panel at ~0.7
   :math:`\sigma`; boxes over a pole are polar caps with uniform longitudes), whose
   field is again synthesised row by row (one Legendre table per latitude, then a
   small Fourier sum).

Every term is smooth, so each rule converges spectrally; the cost no longer depends on
how sharp the field is (``O(L^2)`` per latitude row, not per node). Everything is
accumulated as ``max + log(sum(w * exp(f - max)))`` in float64.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from .. import _sh_numba
from ..sphere import latlon_to_xyz
from .decoding import refine_modes, stencil_derivatives
from .synthesis import synthesize

__all__ = ["log_partition"]

_TRANSITION = 4.0  # bulk spacings over which a box hands its mass over to the bulk grid
_SPACING = 0.7  # core node spacing in units of the peak's width sigma
_TRANSITION_NODES = 16  # Gauss-Legendre nodes per transition panel (width 4 spacings)
_POLAR_DEG = 85.0  # boxes reaching beyond this latitude become polar caps
_LOG_TOL = math.log(1e-7)  # a peak the grid integrates to this share of Z needs no box
_MAX_CANDIDATES = 24  # local maxima of the grid refined per vector
_BOX_COST = 40_000  # nodes a box costs, roughly, against a finer bulk grid


def log_partition(coeffs: torch.Tensor, L: int, *, margin: float = 40.0,
                  max_nodes: int = 256) -> torch.Tensor:
    """``log Z`` per vector (``(n,)`` float64) for ``f = sum c_lm Y_lm`` on the unit sphere.

    Parameters
    ----------
    coeffs
        ``(n, (L+1)**2)`` coefficient vectors.
    margin
        Log units below the top of ``f`` (and below the total mass) beyond which a peak
        or a region is treated as negligible (``exp(-40) ~ 4e-18``).
    max_nodes
        Cap on the core nodes of a box per axis (a box whose peak is sharper than this
        allows is integrated at the cap).

    Examples
    --------
    >>> c = torch.zeros(1, 16, dtype=torch.float64)   # f = 0: Z is the sphere's area
    >>> round(float(log_partition(c, 3)[0].exp()), 10) == round(4 * math.pi, 10)
    True
    """
    c = coeffs.detach().to(torch.float64)
    dev = c.device
    rule = _bulk_rule(L, 1)
    if _sh_numba.available() and dev.type == "cpu":
        f = torch.from_numpy(np.stack([_tensor_field(v, L, rule.lat, rule.lon) for v in c]))
    else:
        f = synthesize(c, L, rule.lat, rule.lon)  # (n, n_lat, n_lon)
    bulk_log_z = torch.logsumexp((f + torch.as_tensor(rule.log_w, device=dev)[:, None])
                                 .flatten(1), dim=1)
    flat = f.flatten(1)
    fmax, medians = flat.amax(1), flat.median(1).values
    peaks = _peaks(c, L, f, fmax, medians, rule, margin)
    out = bulk_log_z.cpu().numpy()
    # The per-vector work below is on small arrays: NumPy, on the host, whatever the device.
    for i in range(c.shape[0]):
        sel = peaks.owner == i
        assess = functools.partial(_unresolved, peaks, sel, float(out[i]), float(medians[i]))
        unresolved = assess(rule.spacing)
        if not unresolved.any():
            continue  # the bulk grid resolves everything that matters
        # Many peaks only moderately sharper than the grid are cheaper on a finer global
        # grid than in boxes (~_BOX_COST nodes each), if that resolves them all.
        budget = f[i].numel() + _BOX_COST * int(unresolved.sum())
        r = next((k for k in range(2, 7) if k * k * f[i].numel() <= budget
                  and not assess(rule.spacing / k).any()), 1)
        if r > 1:
            fine = _bulk_rule(L, r)
            out[i] = _logsumexp(_tensor_field(c[i], L, fine.lat, fine.lon)
                                + fine.log_w[:, None])
            continue
        boxes = _boxes(peaks, sel, unresolved, float(fmax[i]), float(medians[i]), rule,
                       margin, L, max_nodes)
        # The bulk nodes inside some box's rectangle keep only their share of weight:
        # Z = Z_bulk - (window as is) + (window shared) + boxes.
        rows, cols = _window(boxes, rule)
        g = (f[i][torch.as_tensor(rows, device=dev)][:, torch.as_tensor(cols, device=dev)]
             .cpu().numpy() + rule.log_w[rows][:, None])
        lat_g, lon_g = rule.lat[rows][:, None], rule.lon[cols][None, :]
        chi = np.stack([b.chi(lat_g, lon_g) for b in boxes])
        plus = [_logsumexp(g + _log_share(None, chi))]
        for j, b in enumerate(boxes):
            lat_n, lon_n, lw = b.nodes()
            fb = _tensor_field(c[i], L, lat_n, lon_n)
            chi_b = np.stack([o.chi(lat_n[:, None], lon_n[None, :]) for o in boxes])
            plus.append(_logsumexp(fb + lw + _log_share(j, chi_b)))
        total = np.logaddexp(out[i], _logsumexp(np.array(plus)))
        out[i] = _log_diff(total, _logsumexp(g))
    return torch.as_tensor(out, device=dev)


def _logsumexp(x: np.ndarray) -> float:
    top = float(np.max(x))
    if not np.isfinite(top):
        return top
    return top + math.log(float(np.sum(np.exp(x - top))))


def _log_diff(a: float, b: float) -> float:
    """``log(exp(a) - exp(b))`` for ``a >= b`` (equal within rounding gives the floor)."""
    return a + max(math.log1p(-math.exp(min(b - a, 0.0))) if b < a else -745.0, -745.0)


def _tensor_field(c: torch.Tensor, L: int, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """``f`` of one vector on the tensor grid ``lat x lon`` (any spacing), float64."""
    if not (_sh_numba.available() and c.device.type == "cpu"):
        return synthesize(c[None], L, lat, lon)[0].cpu().numpy()
    a, b = _sh_numba.fourier_rows(lat, c.numpy(), L)
    n_lon = lon.size
    step = float(lon[1] - lon[0]) if n_lon > 1 else 0.0
    if (n_lon >= 2 * L + 2 and abs(step * n_lon - 360.0) < 1e-9
            and np.allclose(np.diff(lon), step)):
        # Uniform over the circle: an inverse real FFT, phase-shifted to the first node.
        m = np.arange(L + 1)
        spec = (a - 1j * b) * np.exp(1j * m * np.deg2rad(lon[0]))[None, :] * (n_lon / 2.0)
        spec[:, 0] *= 2.0
        return np.fft.irfft(spec, n=n_lon, axis=1)
    ang = np.arange(L + 1)[:, None] * np.deg2rad(lon)[None, :]
    return a @ np.cos(ang) + b @ np.sin(ang)


# -- the bulk grid -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rule:
    lat: np.ndarray  # (n_lat,) Gauss-Legendre rows, degrees
    lon: np.ndarray  # (n_lon,) uniform, degrees
    log_w: np.ndarray  # (n_lat,) log weight of a node in each row (steradians)
    spacing: float  # largest node spacing, radians


@functools.lru_cache(maxsize=16)
def _bulk_rule(L: int, r: int) -> _Rule:
    # Exact for band limit 2 n_lat - 1 >= 6L: exp(f) = sum f^k / k! is integrated
    # exactly through k = 6 wherever f varies on its own scale (bumps lower than ~2).
    n_lat = max(3 * (L + 1), 64) * r
    n_lon = 2 * n_lat
    x, w = np.polynomial.legendre.leggauss(n_lat)
    lat = np.rad2deg(np.arcsin(x))
    lon = -180.0 + (np.arange(n_lon) + 0.5) * 360.0 / n_lon
    log_w = np.log(w * 2 * math.pi / n_lon)
    return _Rule(lat, lon, log_w, math.pi / n_lat)


# -- peaks ---------------------------------------------------------------------------------
@dataclass
class _Peaks:
    owner: np.ndarray  # (m,) vector index
    lat: np.ndarray  # (m,) degrees
    lon: np.ndarray
    f: np.ndarray  # (m,) field value at the peak
    sigma_min: np.ndarray  # (m,) radians: width of exp(f) across its sharpest direction
    sigma_max: np.ndarray  # (m,) ... and across its flattest (capped)


def _peaks(c: torch.Tensor, L: int, f: torch.Tensor, fmax: torch.Tensor, median: torch.Tensor,
           rule: _Rule, margin: float) -> _Peaks:
    """Modes of ``f`` near the top of each vector, refined from the grid's local maxima.

    A peak narrower than the grid can sit far above every node (at L = 127 a delta's
    nearest node may be ~20% lower), so local maxima within ``margin`` plus 30% of the
    field's range below the grid maximum are all refined (the best few per vector).
    """
    padded = torch.cat([f[..., -1:], f, f[..., :1]], dim=-1)[:, None]
    pooled = torch.nn.functional.max_pool2d(padded, 3, stride=1, padding=(1, 0))[:, 0]
    threshold = fmax - margin - 0.3 * (fmax - median)
    vec, rows, cols = torch.nonzero((f >= pooled) & (f >= threshold[:, None, None]),
                                    as_tuple=True)
    # The best _MAX_CANDIDATES per vector: sort by value, then stably by vector.
    order = torch.argsort(f[vec, rows, cols], descending=True)
    order = order[torch.argsort(vec[order], stable=True)]
    v_np = vec[order].cpu().numpy()
    r_np, c_np = rows[order].cpu().numpy(), cols[order].cpu().numpy()
    first = np.searchsorted(v_np, v_np)  # index of each vector's first candidate
    keep = np.arange(v_np.size) - first < _MAX_CANDIDATES
    owner = v_np[keep]
    start = torch.as_tensor(np.stack([rule.lat[r_np[keep]], rule.lon[c_np[keep]]], 1),
                            device=c.device)
    cw = c[torch.as_tensor(owner, device=c.device)]
    peak = refine_modes(L, cw, start)
    scale = 2.0 / ((L + 1) * torch.sqrt((fmax - median).clamp_min(1.0)))
    f_p, hess = _hessian(cw, L, peak, 0.2 * scale[torch.as_tensor(owner, device=c.device)])
    lam = torch.linalg.eigvalsh(-hess)  # ascending: flattest direction first
    cap = 3.0 * rule.spacing
    sigma_min = lam[:, 1].clamp_min(1.0 / cap**2).rsqrt().clamp_max(cap)
    sigma_max = torch.maximum(lam[:, 0].clamp_min(1.0 / cap**2).rsqrt().clamp_max(cap),
                              sigma_min)
    return _Peaks(owner, peak[:, 0].cpu().numpy(), peak[:, 1].cpu().numpy(),
                  f_p.cpu().numpy(), sigma_min.cpu().numpy(), sigma_max.cpu().numpy())


def _hessian(c: torch.Tensor, L: int, p: torch.Tensor, delta: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``f`` and its ``(m, 2, 2)`` Hessian (per rad², in the tangent plane) at ``p`` (deg),
    by central differences of spacing ``delta`` (a fraction of each peak's width)."""
    f, _, _, _, (hxx, hyy, hxy) = stencil_derivatives(L, c, latlon_to_xyz(p), delta)
    hess = torch.stack([torch.stack([hxx, hxy], 1), torch.stack([hxy, hyy], 1)], 1)
    return f[:, 0], hess


# -- boxes ---------------------------------------------------------------------------------
def _bump(t: np.ndarray) -> np.ndarray:
    """C-infinity step: 1 for ``t <= 0``, 0 for ``t >= 1``."""
    t = np.clip(t, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        a = np.where(t < 1, np.exp(-1.0 / np.maximum(1.0 - t, 1e-300)), 0.0)
        b = np.where(t > 0, np.exp(-1.0 / np.maximum(t, 1e-300)), 0.0)
    return a / (a + b)


@functools.lru_cache(maxsize=64)
def _leggauss(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def _gauss(a: float, b: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = _leggauss(n)
    return 0.5 * (b - a) * x + 0.5 * (a + b), 0.5 * (b - a) * w


@dataclass
class _Box:
    """A lat/lon box (radians) with a core and transition bands.

    ``full_lon`` boxes are latitude bands over every longitude (polar caps, or boxes
    whose longitude extent would wrap), integrated with uniform longitudes.
    """

    lat_edge: tuple[float, float]
    lat_core: tuple[float, float]
    lon_c: float
    lon_core: float  # half-width of the core in longitude (ignored for polar caps)
    lon_edge: float
    full_lon: bool
    n_lat: int  # core nodes along latitude
    n_lon: int  # core nodes along longitude (or all longitudes of a polar cap)

    def chi(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        lat = np.deg2rad(lat_deg)
        lo, hi = self.lat_core
        e_lo, e_hi = self.lat_edge
        t_lat = np.maximum((lo - lat) / max(lo - e_lo, 1e-300),
                           (lat - hi) / max(e_hi - hi, 1e-300))
        chi = _bump(t_lat)
        if self.full_lon:
            return np.broadcast_to(chi, np.broadcast_shapes(lat.shape, np.shape(lon_deg)))
        dlon = np.remainder(np.deg2rad(lon_deg) - self.lon_c + math.pi, 2 * math.pi) - math.pi
        t_lon = (np.abs(dlon) - self.lon_core) / (self.lon_edge - self.lon_core)
        return chi * _bump(t_lon)

    def nodes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Latitudes and longitudes (degrees) of the box's tensor rule and its log weights."""
        panels = []
        if self.lat_core[0] > self.lat_edge[0]:
            panels.append(_gauss(self.lat_edge[0], self.lat_core[0], _TRANSITION_NODES))
        panels.append(_gauss(*self.lat_core, self.n_lat))
        if self.lat_edge[1] > self.lat_core[1]:
            panels.append(_gauss(self.lat_core[1], self.lat_edge[1], _TRANSITION_NODES))
        lat = np.concatenate([p[0] for p in panels])
        w_lat = np.concatenate([p[1] for p in panels]) * np.cos(lat)
        if self.full_lon:
            lon = -180.0 + (np.arange(self.n_lon) + 0.5) * 360.0 / self.n_lon
            w_lon = np.full(self.n_lon, 2 * math.pi / self.n_lon)
        else:
            c, a, e = self.lon_c, self.lon_core, self.lon_edge
            parts = [_gauss(c - e, c - a, _TRANSITION_NODES), _gauss(c - a, c + a, self.n_lon),
                     _gauss(c + a, c + e, _TRANSITION_NODES)]
            lon = np.rad2deg(np.concatenate([p[0] for p in parts]))
            w_lon = np.concatenate([p[1] for p in parts])
        keep = w_lat > 0  # a node exactly at a pole has no area
        log_w = np.log(w_lat[keep])[:, None] + np.log(w_lon)[None, :]
        return np.rad2deg(lat[keep]), lon, log_w


def _unresolved(peaks: _Peaks, sel: np.ndarray, bulk_log_z: float, median: float,
                spacing: float) -> np.ndarray:
    """Which selected peaks a bulk grid of this spacing would get wrong by more than
    ``_LOG_TOL`` of ``Z`` (a bump lower than ~2 is band-limited enough for the grid)."""
    f_p, s_min, s_max = peaks.f[sel], peaks.sigma_min[sel], peaks.sigma_max[sel]
    mass = f_p + np.log(2 * math.pi * s_min * s_max)  # Laplace estimate of each peak's mass
    log_z = np.logaddexp(bulk_log_z, np.logaddexp.reduce(mass)) if mass.size else bulk_log_z
    # What is at stake: the peak's mass, or one node's weight times its height when a
    # node sits on a peak narrower than the grid; the grid's relative error on a
    # Gaussian of width sigma is ~2 exp(-2 pi^2 sigma^2 / s^2) (aliasing).
    at_stake = f_p + np.log(np.maximum(2 * math.pi * s_min * s_max, spacing**2))
    log_err = math.log(2.0) - 2 * math.pi**2 * (s_min / spacing) ** 2 + at_stake - log_z
    return (log_err >= _LOG_TOL) & (f_p - median >= 2.0)


def _boxes(peaks: _Peaks, sel: np.ndarray, unresolved: np.ndarray, grid_max: float,
           median: float, rule: _Rule, margin: float, L: int, max_nodes: int) -> list[_Box]:
    """Boxes for the selected peaks that the bulk grid cannot resolve and that matter."""
    if not unresolved.any():
        return []
    f_p, s_min, s_max = peaks.f[sel], peaks.sigma_min[sel], peaks.sigma_max[sel]
    lat_s, lon_s = peaks.lat[sel], peaks.lon[sel]
    height = f_p - median
    top = max(grid_max, float(f_p.max()))
    order = np.argsort(-f_p)
    boxes: list[_Box] = []
    kept: list[np.ndarray] = []
    s, T = rule.spacing, _TRANSITION * rule.spacing
    for k in order:
        if not unresolved[k]:
            continue  # resolved by the grid, or negligible
        lat_p, lon_p = math.radians(lat_s[k]), math.radians(lon_s[k])
        xyz = np.array([math.cos(lat_p) * math.cos(lon_p), math.cos(lat_p) * math.sin(lon_p),
                        math.sin(lat_p)])
        if any(math.acos(min(1.0, float(xyz @ q))) < s_min[k] for q in kept):
            continue  # two starts climbed to the same mode
        kept.append(xyz)
        # The core reaches where f has fallen by `depth`: below the top by `margin`, or
        # to the surrounding level for a low bump (beyond, the grid resolves exp f).
        depth = max(min(f_p[k] - (top - margin), height[k]), 1.0)
        core = 1.5 * s_max[k] * math.sqrt(2.0 * depth)
        n_core = int(min(max_nodes, max(8, math.ceil(math.pi * core / (_SPACING * s_min[k])))))
        reach = abs(lat_p) + core + T
        far = math.cos(min(reach, math.pi / 2))
        if reach >= math.radians(_POLAR_DEG) or (core + T) / far >= 0.8 * math.pi:
            boxes.append(_band(lat_p, core, T, s, float(s_min[k]), L, max_nodes,
                               polar=reach >= math.radians(_POLAR_DEG)))
            continue
        near = math.cos(max(abs(lat_p) - core - T, 0.0))
        n_lon = int(min(max_nodes, math.ceil(n_core * near / far)))
        boxes.append(_Box((lat_p - core - T, lat_p + core + T), (lat_p - core, lat_p + core),
                          lon_p, core / far, (core + T) / far, False, n_core, n_lon))
    return boxes


def _band(lat_p: float, core: float, T: float, s: float, sigma: float, L: int,
          max_nodes: int, *, polar: bool) -> _Box:
    """A box over all longitudes: a cap over the nearer pole, or a latitude band."""
    def count(half_width: float) -> int:
        return int(min(max_nodes, max(8, math.ceil(math.pi * half_width / (_SPACING * sigma)))))

    lo, hi = lat_p - core, lat_p + core
    if polar:  # the core runs to the pole on the peak's side
        lo, hi = (lo, math.pi / 2) if lat_p > 0 else (-math.pi / 2, hi)
    # A core ending within a transition band of a pole runs to the pole.
    hi = math.pi / 2 if hi > math.pi / 2 - T else hi
    lo = -math.pi / 2 if lo < -math.pi / 2 + T else lo
    edge = (lo - T if lo > -math.pi / 2 else lo, hi + T if hi < math.pi / 2 else hi)
    def widest(a: float, b: float) -> float:  # largest cos(latitude) over [a, b]
        return 1.0 if a * b <= 0 else math.cos(min(abs(a), abs(b)))

    n_lon = max(2 * L + 2, math.ceil(2 * math.pi * widest(lo, hi) / (_SPACING * sigma)),
                math.ceil(2 * math.pi * widest(*edge) * 1.5 / s))
    return _Box(edge, (lo, hi), 0.0, 0.0, 0.0, True, count((hi - lo) / 2),
                int(min(n_lon, 8 * max_nodes)))


def _window(boxes: list[_Box], rule: _Rule) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the bulk grid that any box reaches."""
    lat = np.deg2rad(rule.lat)
    rows = np.zeros(lat.size, bool)
    cols = np.zeros(rule.lon.size, bool)
    lon = np.deg2rad(rule.lon)
    for b in boxes:
        rows |= (lat >= b.lat_edge[0]) & (lat <= b.lat_edge[1])
        if b.full_lon:
            cols[:] = True
        else:
            d = np.abs(np.remainder(lon - b.lon_c + math.pi, 2 * math.pi) - math.pi)
            cols |= d <= b.lon_edge
    return np.nonzero(rows)[0], np.nonzero(cols)[0]


def _log_share(j: int | None, chi: np.ndarray) -> np.ndarray:
    """``log`` of the partition-of-unity weight: the bulk's (``j=None``) or box ``j``'s."""
    psi = np.prod(1.0 - chi, axis=0)
    with np.errstate(divide="ignore"):
        return np.log(psi if j is None else chi[j]) - np.log(psi + chi.sum(0))
