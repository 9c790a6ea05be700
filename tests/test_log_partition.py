"""log Z against independent references: 1-D quadrature of axisymmetric fields (numpy's
Legendre series, no harmonics of ours), two-centre polar quadrature for mixtures, and a
brute-force fine global grid for noise fields; plus exact invariances (hypothesis)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from quadrature_helpers import polar_quadrature, unit

from geodiffloc.shdd import quadrature
from geodiffloc.shdd.core import SHDD
from geodiffloc.shdd.quadrature import log_partition
from geodiffloc.shdd.synthesis import synthesize

F64 = torch.float64


def axisymmetric_log_z(L: int, scale: float) -> float:
    """``log 2pi int_0^pi exp(scale * K(t)) sin t dt`` for the delta kernel
    ``K = sum (2l+1)/4pi P_l(cos t)``, on panels of width pi/(8L) with 48 GL nodes."""
    coef = scale * (2 * np.arange(L + 1) + 1) / (4 * math.pi)
    x, w = np.polynomial.legendre.leggauss(48)
    edges = np.linspace(0.0, math.pi, 8 * L + 1)
    a, b = edges[:-1, None], edges[1:, None]
    t = (0.5 * (b - a) * x + 0.5 * (a + b)).ravel()
    wt = (0.5 * (b - a) * w).ravel()
    f = np.polynomial.legendre.legval(np.cos(t), coef)
    top = f.max()
    return float(top + math.log(2 * math.pi * np.sum(wt * np.exp(f - top) * np.sin(t))))


def encode(s: SHDD, *points: tuple[float, float]) -> torch.Tensor:
    return s.encode(latlon=torch.tensor(points, dtype=F64))


CENTRES = [(37.0, 12.0), (89.99, 0.0), (-90.0, 0.0), (-12.0, 179.99), (84.0, -60.0)]


@pytest.mark.parametrize("L", [15, 47, 127])
@pytest.mark.parametrize("scale", [1.0, 0.2, 0.02])
def test_axisymmetric_fields_against_1d_quadrature(L, scale):
    """Deltas (scale 1: ~1300 high and 2 km wide at L = 127), broad and flat fields,
    at the poles, next to the antimeridian and at mid latitudes."""
    s = SHDD(L, dtype=F64)
    ref = axisymmetric_log_z(L, scale)
    ours = log_partition(scale * encode(s, *CENTRES), L)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-5, rtol=0)


def _field_at(s, c, pts):
    return torch.cat([s.evaluate(c, pts[a : a + 20_000])[0]
                      for a in range(0, len(pts), 20_000)]).numpy()


def mixture_reference(s, c, p1, p2):
    """Each half of the sphere (split by the bisecting plane) on a polar grid around its
    own peak; for close peaks, one grid around their midpoint."""
    u1, u2 = unit(*p1), unit(*p2)
    sig = s.width_rad
    if math.acos(min(1.0, float(u1 @ u2))) < 0.2:
        m = (u1 + u2) / np.linalg.norm(u1 + u2)
        mid = (math.degrees(math.asin(m[2])), math.degrees(math.atan2(m[1], m[0])))
        pts, w = polar_quadrature(mid, [(0, 0.1, 128), (0.1, 0.5, 96), (0.5, math.pi, 96)],
                                  512)
        f = _field_at(s, c, pts)
        return float(np.log(np.sum(w * np.exp(f - f.max()))) + f.max())
    normal = (u1 - u2) / np.linalg.norm(u1 - u2)
    parts = []
    for centre, sign in ((p1, 1.0), (p2, -1.0)):
        segs = [(0, 8 * sig, 48), (8 * sig, 0.5, 96), (0.5, math.pi, 96)]
        pts, w = polar_quadrature(centre, segs, 256)
        keep = sign * (unit(pts[:, 0].numpy(), pts[:, 1].numpy()) @ normal) >= 0
        f = _field_at(s, c, pts[torch.from_numpy(keep)])
        parts.append(np.log(np.sum(w[keep] * np.exp(f - f.max()))) + f.max())
    return float(np.logaddexp(*parts))


@pytest.mark.parametrize("p1, p2", [((10.0, 20.0), (-30.0, 100.0)),   # far apart
                                    ((45.0, 5.0), (45.5, 6.0)),        # overlapping lobes
                                    ((89.5, 0.0), (-60.0, 179.9))])    # pole + antimeridian
def test_two_peak_mixtures_against_polar_quadrature(p1, p2):
    s = SHDD(23, dtype=F64)
    c = 0.5 * (encode(s, p1) + encode(s, p2))
    assert float(log_partition(c, 23)[0]) == pytest.approx(mixture_reference(s, c, p1, p2),
                                                           abs=1e-6)


@pytest.mark.parametrize("amp", [0.1, 0.3, 1.0, 3.0])
def test_noise_fields_against_a_fine_global_grid(amp):
    """Random coefficients (many bumps, 4 to ~150 high at L = 23) against a global
    Gauss-Legendre grid ~7x finer than the one log_partition starts from."""
    L, n_ref = 23, 480
    c = amp * torch.randn(2, (L + 1) ** 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    x, w = np.polynomial.legendre.leggauss(n_ref)
    lat = np.degrees(np.arcsin(x))
    lon = -180 + (np.arange(2 * n_ref) + 0.5) * 180 / n_ref
    log_w = torch.log(torch.as_tensor(w * math.pi / n_ref))[:, None]
    ref = torch.logsumexp((synthesize(c, L, lat, lon) + log_w).flatten(1), dim=1)
    np.testing.assert_allclose(log_partition(c, L).numpy(), ref.numpy(), atol=1e-6, rtol=0)


def _rotate_lon(c: torch.Tensor, L: int, alpha: float) -> torch.Tensor:
    """Coefficients of ``f(lat, lon - alpha)``: each (cos m, sin m) pair turns by m alpha."""
    out = c.clone()
    for l in range(L + 1):
        for m in range(1, l + 1):
            a, b = c[..., l * l + l + m], c[..., l * l + l - m]
            out[..., l * l + l + m] = a * math.cos(m * alpha) - b * math.sin(m * alpha)
            out[..., l * l + l - m] = a * math.sin(m * alpha) + b * math.cos(m * alpha)
    return out


@settings(max_examples=15, deadline=None)
@given(lat=st.floats(-90, 90), lon=st.floats(-180, 180), alpha=st.floats(0, 2 * math.pi),
       shift=st.floats(-50, 50), scale=st.sampled_from([1.0, 0.3, 0.05]),
       noise=st.sampled_from([0.0, 0.05]))
def test_invariances(lat, lon, alpha, shift, scale, noise):
    """A constant added to f adds it to log Z; turning the field about the axis keeps it."""
    L = 15
    s = SHDD(L, dtype=F64)
    g = torch.Generator().manual_seed(7)
    c = scale * encode(s, (lat, lon)) + noise * torch.randn(1, s.dim, generator=g, dtype=F64)
    base = float(log_partition(c, L)[0])
    lifted = c.clone()
    lifted[0, 0] += shift * math.sqrt(4 * math.pi)  # Y_00 = 1 / sqrt(4 pi)
    assert float(log_partition(lifted, L)[0]) == pytest.approx(base + shift, abs=1e-6)
    assert float(log_partition(_rotate_lon(c, L, alpha), L)[0]) == pytest.approx(base, abs=1e-6)


def test_torch_path_matches_numba_path(monkeypatch):
    """What runs on GPUs (torch synthesis, stencil ascent) gives the same log Z."""
    s = SHDD(47, dtype=F64)
    g = torch.Generator().manual_seed(3)
    c = torch.cat([encode(s, (48.85, 2.35), (-89.9, 10.0)),
                   0.2 * encode(s, (0.0, 179.9)) + 0.05 * torch.randn(1, s.dim, generator=g,
                                                                      dtype=F64)])
    fast = log_partition(c, 47)
    monkeypatch.setattr(quadrature._sh_numba, "available", lambda: False)
    slow = log_partition(c, 47)
    np.testing.assert_allclose(slow.numpy(), fast.numpy(), atol=1e-6, rtol=0)
