"""Real spherical harmonics against independent references.

* scipy's complex harmonics (``scipy.special.sph_harm_y_all``) converted to the real
  form ``m>0: sqrt2 (-1)^m Re Y_l^m``, ``m<0: sqrt2 (-1)^m Im Y_l^|m|``, ``m=0: Re``;
* the addition theorem with ``scipy.special.eval_legendre``;
* orthonormality by an exact Gauss-Legendre x uniform-longitude quadrature.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import eval_legendre, sph_harm_y_all

from geodiffloc.harmonics import degree_order, legendre_table, n_coeffs, real_sph_harm


def scipy_real_sph_harm(lat: np.ndarray, lon: np.ndarray, L: int) -> np.ndarray:
    """``(n, (L+1)^2)`` real orthonormal harmonics from scipy, index ``l*l + l + m``."""
    theta, phi = np.deg2rad(90.0 - lat), np.deg2rad(lon)
    Y = sph_harm_y_all(L, L, theta, phi)  # (L+1, 2L+1, n); negative m wrap around
    l, m = degree_order(L)
    Yc = Y[l, m]  # (d, n)
    am = np.abs(m)[:, None]
    sign = (-1.0) ** am
    pos = math.sqrt(2) * sign * Y[l, np.abs(m)].real
    neg = math.sqrt(2) * sign * Y[l, np.abs(m)].imag
    out = np.where(m[:, None] > 0, pos, np.where(m[:, None] < 0, neg, Yc.real))
    return out.T


def test_pole_conventions_by_hand():
    # Y_10 = sqrt(3/4pi) sin(lat); Y_11 = sqrt(3/4pi) cos(lat) cos(lon); Y_1-1 with sin(lon).
    ll = torch.tensor([[90.0, 0.0], [-90.0, 0.0], [0.0, 0.0], [0.0, 90.0], [30.0, 45.0]],
                      dtype=torch.float64)
    y = real_sph_harm(ll, 1).numpy()
    c = math.sqrt(3 / (4 * math.pi))
    lat, lon = np.deg2rad(ll[:, 0].numpy()), np.deg2rad(ll[:, 1].numpy())
    np.testing.assert_allclose(y[:, 0], 1 / math.sqrt(4 * math.pi), atol=1e-15)
    np.testing.assert_allclose(y[:, 2], c * np.sin(lat), atol=1e-15)
    np.testing.assert_allclose(y[:, 3], c * np.cos(lat) * np.cos(lon), atol=1e-15)
    np.testing.assert_allclose(y[:, 1], c * np.cos(lat) * np.sin(lon), atol=1e-15)


def _test_points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lon = rng.uniform(-180, 180, n)
    special_lat = [90.0, -90.0, 89.9999999, -89.99999, 89.9, -89.5, 0.0, 45.0]
    special_lon = [0.0, 123.0, -180.0, 180.0, 179.999, -0.001, 90.0, -45.0]
    return np.concatenate([lat, special_lat]), np.concatenate([lon, special_lon])


@pytest.mark.parametrize("L, n", [(15, 400), (47, 300), (127, 150)])
def test_float64_vs_scipy(L, n):
    lat, lon = _test_points(n, seed=L)
    ref = scipy_real_sph_harm(lat, lon, L)
    got = real_sph_harm(torch.from_numpy(np.stack([lat, lon], 1)), L)
    assert got.dtype == torch.float64 and got.shape == (lat.size, n_coeffs(L))
    assert np.abs(got.numpy() - ref).max() <= 1e-10


@pytest.mark.parametrize("L, n, tol", [(15, 400, 1e-4), (47, 300, 1e-4), (127, 150, 5e-4)])
def test_float32_vs_scipy(L, n, tol):
    lat, lon = _test_points(n, seed=L + 1)
    ref = scipy_real_sph_harm(lat, lon, L)
    ll64 = torch.from_numpy(np.stack([lat, lon], 1))
    # float32 output from float64-exact inputs...
    out32 = real_sph_harm(ll64, L, dtype=torch.float32)
    assert out32.dtype == torch.float32
    assert np.abs(out32.double().numpy() - ref).max() <= tol
    # ...and from float32 inputs, compared with the reference at the rounded inputs.
    ll32 = ll64.float()
    lat32, lon32 = ll32.double().numpy().T
    got = real_sph_harm(ll32, L)
    assert got.dtype == torch.float32
    assert np.abs(got.double().numpy() - scipy_real_sph_harm(lat32, lon32, L)).max() <= tol


def _pairs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(2, n, 2, generator=g, dtype=torch.float64)
    lat = torch.rad2deg(torch.asin(2 * u[..., 0] - 1))
    lon = 360 * u[..., 1] - 180
    p, q = torch.stack([lat[0], lon[0]], 1), torch.stack([lat[1], lon[1]], 1)
    p[0], q[0] = torch.tensor([90.0, 0.0]), torch.tensor([89.9, 20.0])  # near the pole
    q[1] = p[1]  # coincident
    q[2] = torch.stack([-p[2, 0], p[2, 1] + 180.0 - 360.0 * (p[2, 1] > 0)])  # antipodal
    rad = [np.deg2rad(v.numpy()) for v in (p, q)]
    xp = np.stack([np.cos(r[:, 0]) * np.cos(r[:, 1]) for r in rad])
    yp = np.stack([np.cos(r[:, 0]) * np.sin(r[:, 1]) for r in rad])
    zp = np.stack([np.sin(r[:, 0]) for r in rad])
    cos_g = np.clip(xp[0] * xp[1] + yp[0] * yp[1] + zp[0] * zp[1], -1, 1)
    return p, q, cos_g


@pytest.mark.parametrize("L", [20, 95])
def test_addition_theorem(L):
    p, q, cos_g = _pairs(60, seed=L)
    yp, yq = real_sph_harm(p, L), real_sph_harm(q, L)
    l, _ = degree_order(L)
    prod = (yp * yq).numpy()
    for deg in range(L + 1):
        lhs = prod[:, l == deg].sum(axis=1)
        rhs = (2 * deg + 1) / (4 * math.pi) * eval_legendre(deg, cos_g)
        np.testing.assert_allclose(lhs, rhs, atol=1e-10 * (2 * deg + 1))


def test_orthonormality_by_quadrature():
    L = 10
    x, w = np.polynomial.legendre.leggauss(L + 2)  # exact to degree 2L+3 in sin(lat)
    n_lon = 2 * L + 4
    lat = np.degrees(np.arcsin(x))
    lon = np.arange(n_lon) * 360.0 / n_lon - 180.0
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    wts = np.repeat(w, n_lon) * (2 * math.pi / n_lon)
    y = real_sph_harm(torch.from_numpy(np.stack([la.ravel(), lo.ravel()], 1)), L).numpy()
    gram = y.T @ (wts[:, None] * y)
    np.testing.assert_allclose(gram, np.eye(n_coeffs(L)), atol=1e-12)


def test_high_degree_255_finite_and_addition_theorem():
    L = 255
    p, q, cos_g = _pairs(24, seed=3)
    extra = torch.tensor([[89.99999, 10.0], [-89.9999, -170.0], [90.0, 0.0], [-90.0, 0.0]],
                         dtype=torch.float64)
    p = torch.cat([p, extra])
    yp = real_sph_harm(p, L)
    assert torch.isfinite(yp).all()
    assert torch.isfinite(real_sph_harm(p.float(), L)).all()
    yq = real_sph_harm(q, L)
    top = slice(L * L, (L + 1) ** 2)
    lhs = (yp[:24, top] * yq[:, top]).sum(1).numpy()
    rhs = (2 * L + 1) / (4 * math.pi) * eval_legendre(L, cos_g)
    np.testing.assert_allclose(lhs, rhs, atol=1e-8)
    # At a pole only m = 0 survives: Y_l0 = sqrt((2l+1)/4pi).
    pole = real_sph_harm(extra[2:3], L)[0]
    _, m = degree_order(L)
    np.testing.assert_allclose(pole[m == 0].numpy(), np.sqrt((2 * np.arange(L + 1) + 1)
                                                             / (4 * math.pi)), rtol=1e-12)
    assert pole[m != 0].abs().max() < 1e-12


def test_gradcheck_wrt_latlon():
    ll = torch.tensor([[10.0, 20.0], [-50.0, 170.0], [80.0, -100.0]], dtype=torch.float64,
                      requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: real_sph_harm(x, 4), (ll,))
    # The differentiable path gives the same values as the fast one.
    with torch.no_grad():
        fast = real_sph_harm(ll.detach(), 6)
    np.testing.assert_allclose(real_sph_harm(ll, 6).detach().numpy(), fast.numpy(), atol=1e-14)


def test_gradient_matches_finite_difference_at_high_degree():
    L = 40
    ll = torch.tensor([[33.0, -71.0]], dtype=torch.float64, requires_grad=True)
    w = torch.randn(n_coeffs(L), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (real_sph_harm(ll, L) @ w).sum().backward()
    eps = 1e-6
    fd = []
    for k in range(2):
        d = torch.zeros(1, 2, dtype=torch.float64)
        d[0, k] = eps
        with torch.no_grad():
            fd.append(float((real_sph_harm(ll + d, L) @ w - real_sph_harm(ll - d, L) @ w)
                            / (2 * eps)))
    np.testing.assert_allclose(ll.grad[0].numpy(), fd, rtol=1e-5)


def test_dtypes_and_chunks():
    ll = torch.tensor([[10.0, 20.0], [-30.0, 40.0], [0.0, 0.0]])
    assert real_sph_harm(ll, 3).dtype == torch.float32
    assert real_sph_harm(ll.double(), 3).dtype == torch.float64
    assert real_sph_harm(ll, 3, dtype=torch.float64).dtype == torch.float64
    assert real_sph_harm(torch.tensor([[10, 20]]), 3).dtype == torch.float64
    ref = real_sph_harm(ll.double(), 9)
    for chunk in (1, 2, 1000):
        np.testing.assert_array_equal(real_sph_harm(ll.double(), 9, chunk=chunk).numpy(),
                                      ref.numpy())
    assert real_sph_harm(ll, 0).shape == (3, 1)


def test_no_garbage_from_uninitialised_buffers():
    """Regression: the fast path multiplied never-written (torch.empty) recurrence columns
    by a zero coefficient; 0 * NaN = NaN whenever the allocator hands back dirty memory.

    We dirty the heap with NaN-filled blocks of exactly the buffer size, free them, and
    evaluate with small chunks so the buffers are served from that freed memory.
    """
    ll = torch.tensor([[10.0, 20.0], [-30.0, 40.0], [55.0, -120.0]], dtype=torch.float64)
    for L in (3, 10, 23):
        ref = scipy_real_sph_harm(ll[:, 0].numpy(), ll[:, 1].numpy(), L)
        for chunk in (1, 2, 3):
            for _ in range(5):
                junk = [torch.full((chunk, 2 * L + 1), float("nan"), dtype=torch.float64)
                        for _ in range(64)]
                del junk
                got = real_sph_harm(ll, L, chunk=chunk).numpy()
                assert np.isfinite(got).all(), f"NaN in real_sph_harm(L={L}, chunk={chunk})"
                assert np.abs(got - ref).max() < 1e-10


def test_legendre_table_consistent_with_real_sph_harm():
    L = 12
    lat = torch.tensor([90.0, 63.0, 0.0, -17.5, -89.0], dtype=torch.float64)
    P = legendre_table(lat, L)
    assert P.shape == (5, L + 1, L + 1) and P.dtype == torch.float64
    l, m = np.tril_indices(L + 1)
    assert torch.all(P[:, np.triu_indices(L + 1, 1)[0], np.triu_indices(L + 1, 1)[1]] == 0)
    # At lon = 0: Y_l0 = P_l0 and Y_lm = sqrt2 P_lm for m > 0.
    y = real_sph_harm(torch.stack([lat, torch.zeros_like(lat)], 1), L)
    scale = np.where(m > 0, math.sqrt(2), 1.0)
    np.testing.assert_allclose(y[:, l * l + l + m].numpy(), P[:, l, m].numpy() * scale,
                               atol=1e-13)


def test_errors():
    with pytest.raises(ValueError, match="non-negative integer"):
        real_sph_harm(torch.zeros(2, 2), -1)
    with pytest.raises(ValueError, match="non-negative integer"):
        real_sph_harm(torch.zeros(2, 2), 2.5)
    with pytest.raises(ValueError, match=r"\(n, 2\) tensor.*\(2, 3\)"):
        real_sph_harm(torch.zeros(2, 3), 2)
    with pytest.raises(ValueError, match=r"\(n, 2\) tensor"):
        real_sph_harm(np.zeros((2, 2)), 2)
    with pytest.raises(ValueError, match="non-negative integer"):
        legendre_table(torch.zeros(2), -3)


@given(lat=st.floats(-90, 90), lon=st.floats(-180, 180), L=st.integers(0, 30))
@settings(max_examples=60, deadline=None)
def test_invariant_to_lon_plus_360(lat, lon, L):
    a = real_sph_harm(torch.tensor([[lat, lon]], dtype=torch.float64), L)
    b = real_sph_harm(torch.tensor([[lat, lon + 360.0]], dtype=torch.float64), L)
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-10)


@pytest.mark.parametrize("L", [0, 1, 15, 47, 127, 255])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numba_kernel_matches_torch_path(monkeypatch, L, dtype):
    """The fused CPU kernel and the torch recurrence (GPU / fallback path) agree."""
    import geodiffloc.harmonics as H

    if not H._sh_numba.available():
        pytest.skip("numba not installed: only the torch path exists")
    lat, lon = _test_points(40, seed=L + 7)
    ll = torch.from_numpy(np.stack([lat, lon], 1))
    fast = real_sph_harm(ll, L, dtype=dtype)
    monkeypatch.setattr(H, "_use_numba", lambda out: False)
    ref = real_sph_harm(ll, L, dtype=torch.float64)
    assert torch.isfinite(fast).all()
    tol = 1e-12 * (L + 1) if dtype == torch.float64 else 2e-6 * max(1.0, math.sqrt(L + 1))
    assert (fast.double() - ref).abs().max().item() <= tol


def test_torch_path_vs_scipy(monkeypatch):
    """The pure-torch path (what runs on CUDA or without numba) against scipy."""
    import geodiffloc.harmonics as H

    monkeypatch.setattr(H, "_use_numba", lambda out: False)
    lat, lon = _test_points(200, seed=5)
    got = real_sph_harm(torch.from_numpy(np.stack([lat, lon], 1)), 47)
    assert np.abs(got.numpy() - scipy_real_sph_harm(lat, lon, 47)).max() <= 1e-10


def test_non_contiguous_and_float32_input_rows():
    ll = torch.tensor([[10.0, 5.0, 20.0], [-30.0, 7.0, 40.0]], dtype=torch.float64)[:, ::2]
    assert not ll.is_contiguous()
    ref = scipy_real_sph_harm(ll[:, 0].numpy(), ll[:, 1].numpy(), 9)
    assert np.abs(real_sph_harm(ll, 9).numpy() - ref).max() <= 1e-12


@pytest.mark.parametrize("L", [0, 5, 47, 127])
def test_fused_field_values_match_harmonics_times_coefficients(L):
    """The fused field kernel (no stored harmonics) equals Y @ c from the float64 path."""
    import geodiffloc.harmonics as H

    if not H._sh_numba.available():
        pytest.skip("numba not installed")
    lat, lon = _test_points(50, seed=L + 11)
    ll = torch.from_numpy(np.stack([lat, lon], 1))
    c = torch.randn(n_coeffs(L), generator=torch.Generator().manual_seed(L), dtype=torch.float64)
    ref = (torch.from_numpy(scipy_real_sph_harm(lat, lon, L)) @ c).numpy()
    got = H._sh_numba.field_values(ll.numpy(), c.numpy(), L)
    np.testing.assert_allclose(got, ref, atol=1e-10 * (L + 1))


def test_first_numba_kernel_leaves_torch_threads_alone():
    # numba's OpenMP layer sets the process-wide thread count when it starts; torch
    # reads the same count. A fresh process, so that numba has not started yet.
    import subprocess
    import sys

    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from geodiffloc import _sh_numba\n"
        "from geodiffloc.harmonics import real_sph_harm\n"
        "assert _sh_numba.available()\n"
        "real_sph_harm(torch.zeros(64, 2, dtype=torch.float64), 7)\n"
        "print(torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "NUMBA_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
