"""SHDD encode / evaluate / log-density / KL / field, checked against independent references.

Normalisation is verified with our own quadratures (a global Gauss-Legendre x uniform
longitude grid, or a polar grid centred on the peak plus a coarse remainder), never
with the library's adaptive quadrature; fields are compared with dense evaluations of
``real_sph_harm`` (itself checked against scipy in ``test_harmonics.py``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from quadrature_helpers import polar_quadrature, unit
from scipy.special import eval_legendre

from geodiffloc import SHDD
from geodiffloc.harmonics import degree_order, real_sph_harm
from geodiffloc.sphere import LatLonGrid, fibonacci_lattice, haversine_km

R = 6371.0088
F64 = torch.float64


# -- independent helpers (more in quadrature_helpers) --------------------------------------
def destination(lat, lon, bearing_deg, dist_km):
    """Point ``dist_km`` from (lat, lon) along ``bearing`` on the sphere (closed form)."""
    p1, l1, b, d = np.deg2rad(lat), np.deg2rad(lon), np.deg2rad(bearing_deg), dist_km / R
    p2 = np.arcsin(np.sin(p1) * np.cos(d) + np.cos(p1) * np.sin(d) * np.cos(b))
    l2 = l1 + np.arctan2(np.sin(b) * np.sin(d) * np.cos(p1), np.cos(d) - np.sin(p1) * np.sin(p2))
    return np.degrees(p2), (np.degrees(l2) + 180.0) % 360.0 - 180.0


def global_quadrature(n_lat, n_lon):
    x, w = np.polynomial.legendre.leggauss(n_lat)
    lat = np.degrees(np.arcsin(x))
    lon = -180.0 + (np.arange(n_lon) + 0.5) * 360.0 / n_lon
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    pts = torch.from_numpy(np.stack([la.ravel(), lo.ravel()], 1))
    return pts, np.repeat(w, n_lon) * (2 * math.pi / n_lon)


def kernel(L, cos_g, weights=None):
    """Field of an encoded point by the addition theorem: sum_l w_l (2l+1)/4pi P_l."""
    w = np.ones(L + 1) if weights is None else weights
    return sum(w[l] * (2 * l + 1) / (4 * math.pi) * eval_legendre(l, cos_g)
               for l in range(L + 1))


def dense_field(coeffs, latlon):
    return coeffs.double() @ real_sph_harm(latlon.double(), int(math.isqrt(coeffs.shape[1]) - 1)).T


# -- construction, encode, evaluate -------------------------------------------------------
def test_constructor_and_scales():
    s = SHDD(47)
    assert s.L == 47 and s.dim == 48**2
    assert s.peak == pytest.approx(48**2 / (4 * math.pi))
    assert 15 < s.width_km < 25 and 2 < SHDD(127).width_km < 4  # the issue's ~20 km / ~3 km
    assert "L=47" in repr(s)
    for bad in (-1, 2.5, "3", 5000):
        with pytest.raises(ValueError, match="L must be an integer"):
            SHDD(bad)
    with pytest.raises(ValueError, match="taper must be"):
        SHDD(5, taper="boxcar")
    with pytest.raises(ValueError, match="L\\+1 = 6"):
        SHDD(5, taper=[1.0, 1.0])
    with pytest.raises(ValueError, match="non-negative"):
        SHDD(2, taper=[1.0, -1.0, 1.0])


@pytest.mark.parametrize("L", [15, 47])
def test_width_km_matches_the_field(L):
    """width_km is the std-dev of the density's peak: check it against the curvature of
    the addition-theorem kernel and against the second moment of exp(f) over the lobe."""
    s = SHDD(L)
    h = 1e-4
    k = lambda g: kernel(L, np.cos(g))  # noqa: E731
    curvature = -(k(h) - 2 * k(0.0) + k(-h)) / h**2
    assert s.width_rad == pytest.approx(1 / math.sqrt(curvature), rel=1e-4)
    g = np.linspace(0, 5 * s.width_rad, 4001)
    dens = np.exp(k(g) - k(0.0)) * np.sin(g)
    second_moment = np.trapezoid(dens * g**2, g) / np.trapezoid(dens, g)  # = 2 sigma^2
    assert math.sqrt(second_moment / 2) == pytest.approx(s.width_rad, rel=0.1)
    assert s.width_km == pytest.approx(s.width_rad * R)


def test_encode_shape_dtype_and_inputs():
    s = SHDD(10)
    e = s.encode(lat=[10.0, -20.0, 90.0], lon=[30.0, 190.0, 0.0])
    assert e.shape == (3, 121) and e.dtype == torch.float32
    assert SHDD(10, dtype=F64).encode(lat=[1.0], lon=[2.0]).dtype == F64
    t = torch.tensor([[10.0, 30.0]], dtype=F64)
    assert s.encode(latlon=t).dtype == F64
    ref = real_sph_harm(torch.tensor([[10.0, 30.0], [-20.0, -170.0]], dtype=F64), 10)
    np.testing.assert_allclose(e[:2].double().numpy(), ref.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match=r"lat\[0\] = 91"):
        s.encode(lat=[91.0], lon=[0.0])
    with pytest.raises(ValueError, match="not both"):
        s.encode(lat=[1.0], lon=[1.0], latlon=t)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        s.encode(latlon=torch.zeros(3))


@given(lat=st.floats(-90, 90), lon=st.floats(-180, 0), L=st.integers(0, 24))
@settings(max_examples=40, deadline=None)
def test_encode_invariant_to_lon_plus_360(lat, lon, L):
    s = SHDD(L, dtype=F64)
    a = s.encode(lat=[lat], lon=[lon])
    b = s.encode(lat=[lat], lon=[lon + 360.0])
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-9)


def test_encode_addition_theorem_and_peak():
    L = 30
    s = SHDD(L, dtype=F64)
    rng = np.random.default_rng(4)
    p = np.stack([np.degrees(np.arcsin(rng.uniform(-1, 1, 50))), rng.uniform(-180, 180, 50)], 1)
    q = np.stack([np.degrees(np.arcsin(rng.uniform(-1, 1, 50))), rng.uniform(-180, 180, 50)], 1)
    q[0] = p[0]
    dot = (s.encode(lat=p[:, 0], lon=p[:, 1]) * s.encode(lat=q[:, 0], lon=q[:, 1])).sum(1)
    cos_g = np.clip((unit(p[:, 0], p[:, 1]) * unit(q[:, 0], q[:, 1])).sum(1), -1, 1)
    np.testing.assert_allclose(dot.numpy(), kernel(L, cos_g), atol=1e-9)
    assert float(dot[0]) == pytest.approx((L + 1) ** 2 / (4 * math.pi))


def test_encode_is_differentiable():
    s = SHDD(6)
    ll = torch.tensor([[12.0, 34.0]], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: s.encode(latlon=x), (ll,))


def test_evaluate_shared_vs_per_sample():
    s = SHDD(12)
    e = s.encode(lat=[10.0, -40.0], lon=[20.0, 150.0]).double()
    pts = fibonacci_lattice(50)
    shared = s.evaluate(e, pts)
    per = s.evaluate(e, pts[None].expand(2, -1, -1).contiguous())
    assert shared.shape == (2, 50)
    np.testing.assert_allclose(per.numpy(), shared.numpy(), atol=1e-12)
    np.testing.assert_allclose(shared.numpy(), dense_field(e, pts).numpy(), atol=1e-12)
    # The field peaks at the encoded point with value (L+1)^2 / 4pi.
    at_p = s.evaluate(e, torch.tensor([[10.0, 20.0]], dtype=F64))
    assert float(at_p[0, 0]) == pytest.approx(s.peak, rel=1e-6)  # float32 encoding
    with pytest.raises(ValueError, match=r"\(n, k, 2\) with n = 2"):
        s.evaluate(e, torch.zeros(3, 5, 2, dtype=F64))
    with pytest.raises(ValueError, match=r"shape \(n, 169\).*another L"):
        s.evaluate(torch.zeros(2, 100), pts)


# -- log-density --------------------------------------------------------------------------
def _log_z_from_log_density(s, coeffs, ld, latlon):
    """The ``log Z`` that ``log_density`` used: field minus log-density at a point."""
    assert ld.dtype == F64 and torch.isfinite(ld).all()
    return s.evaluate(coeffs.double(), latlon.double())[:, 0] - ld[:, 0]


def _integral(s, coeffs, pts, wts, log_z=None, chunk_values=20_000_000):
    """sum_i w_i q(x_i) for q = exp(log_density).

    ``log_density`` is called once (its log-partition is the costly part); the field at
    the remaining nodes is evaluated in chunks and shifted by the same ``log Z``.
    """
    if log_z is None:
        log_z = _log_z_from_log_density(s, coeffs, s.log_density(coeffs, latlon=pts[:1]),
                                        pts[:1])
    step = max(1, chunk_values // s.dim)
    total = np.zeros(coeffs.shape[0])
    for a in range(0, pts.shape[0], step):
        f = s.evaluate(coeffs.double(), pts[a : a + step].double())
        total += ((f - log_z[:, None]).exp().numpy() * wts[a : a + step]).sum(axis=1)
    return total


def test_log_density_integrates_to_one_L15_global_grid():
    s = SHDD(15)
    g = torch.Generator().manual_seed(0)
    e = s.encode(lat=[0.0, 90.0, -33.0], lon=[0.0, 0.0, 180.0])
    noisy = e[:1] + 0.3 * torch.randn(1, s.dim, generator=g)
    coeffs = torch.cat([e, noisy, 0.2 * e[:1], torch.zeros(1, s.dim)])
    pts, wts = global_quadrature(500, 1000)  # spacing ~ width / 5
    np.testing.assert_allclose(_integral(s, coeffs, pts, wts), 1.0, atol=1e-3)


def _local_grid(s, center):
    sig = s.width_rad
    segments = [(0.0, 8 * sig, 48), (8 * sig, 0.4, 64), (0.4, math.pi, 64)]
    return polar_quadrature(center, segments, n_psi=min(2 * s.L + 4, 128))


def test_log_density_integrates_to_one_local_grid_L47():
    s = SHDD(47)
    g = torch.Generator().manual_seed(47)
    for center in [(48.85, 2.35), (89.999, 0.0), (-12.0, 179.99)]:
        e = s.encode(lat=[center[0]], lon=[center[1]])
        noisy = e + 0.05 * torch.randn(1, s.dim, generator=g)
        pts, wts = _local_grid(s, center)
        np.testing.assert_allclose(_integral(s, torch.cat([e, noisy]), pts, wts), 1.0,
                                   atol=1e-3)


@pytest.fixture(scope="module")
def shdd127():
    """L = 127, float32 encoding of a point next to the antimeridian, and its
    log-density at the point, the equator and near the south pole (one log Z call)."""
    s = SHDD(127)
    center = (-12.0, 179.99)
    e = s.encode(lat=[center[0]], lon=[center[1]])
    pts = torch.tensor([center, (0.0, 0.0), (-89.0, 100.0)], dtype=F64)
    return s, center, e, pts, s.log_density(e, latlon=pts)


def test_log_density_integrates_to_one_local_grid_L127(shdd127):
    s, center, e, pts, ld = shdd127
    log_z = _log_z_from_log_density(s, e, ld, pts[:1])
    quad_pts, wts = _local_grid(s, center)
    np.testing.assert_allclose(_integral(s, e, quad_pts, wts, log_z=log_z), 1.0, atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("L, centers", [(127, [(48.85, 2.35), (89.999, 0.0)])])
def test_log_density_integrates_to_one_local_grid_slow(L, centers):
    s = SHDD(L)
    g = torch.Generator().manual_seed(L)
    for center in centers:
        e = s.encode(lat=[center[0]], lon=[center[1]])
        noisy = e + 0.01 * torch.randn(1, s.dim, generator=g)
        pts, wts = _local_grid(s, center)
        np.testing.assert_allclose(_integral(s, torch.cat([e, noisy]), pts, wts), 1.0,
                                   atol=1e-3)


def test_log_density_broad_vector_L47():
    s = SHDD(47)
    e = 0.05 * s.encode(lat=[20.0], lon=[-60.0])
    pts, wts = global_quadrature(120, 240)
    np.testing.assert_allclose(_integral(s, e, pts, wts), 1.0, atol=1e-3)


def _check_float32_log_density(s, e, center, ld):
    assert e.dtype == torch.float32
    assert torch.isfinite(ld).all()
    # At the encoded point: log q = peak - log Z, and log Z ~ peak + log(2 pi sigma^2).
    expected = -math.log(2 * math.pi * s.width_rad**2)
    assert float(ld[0, 0]) == pytest.approx(expected, abs=0.05 * abs(expected))
    assert float(ld[0, 0]) > float(ld[0, 1:].max()) + 10.0
    assert float(s.evaluate(e, torch.tensor([center])).max()) == pytest.approx(
        s.peak, rel=1e-4)


@pytest.mark.parametrize("L", [15, 47])
def test_log_density_float32_finite(L):
    s = SHDD(L)
    center = (10.0, 20.0)
    e = s.encode(lat=[center[0]], lon=[center[1]])
    ld = s.log_density(e, lat=[center[0], 0.0, -89.0], lon=[center[1], 0.0, 100.0])
    _check_float32_log_density(s, e, center, ld)


def test_log_density_float32_finite_L127(shdd127):
    s, center, e, _, ld = shdd127
    _check_float32_log_density(s, e, center, ld)


# -- KL ------------------------------------------------------------------------------------
def test_kl_zero_for_perfect_prediction():
    for dtype in (torch.float32, F64):
        s = SHDD(23, dtype=dtype)
        lat, lon = [10.0, -80.0, 45.0], [20.0, 179.9, -100.0]
        kl = s.kl(s.encode(lat=lat, lon=lon), lat=lat, lon=lon)
        assert kl.shape == (3,) and (kl.abs() <= 1e-5).all()


def test_kl_grows_with_distance():
    """Monotone inside the main lobe; beyond it the KL saturates (observed, documented)."""
    s = SHDD(23, dtype=F64)
    anchors = fibonacci_lattice(20_000)
    truth = np.array([[10.0, 20.0], [-40.0, 170.0], [60.0, -100.0]])
    kls = []
    for d in (0.0, 50.0, 200.0, 1000.0, 5000.0):
        la, lo = destination(truth[:, 0], truth[:, 1], 45.0, d)
        pred = s.encode(lat=la, lon=lo)
        kls.append(s.kl(pred, lat=truth[:, 0], lon=truth[:, 1], anchors=anchors).numpy())
    kls = np.array(kls)
    assert np.allclose(kls[0], 0.0, atol=1e-9)
    assert (np.diff(kls[:4], axis=0) > 0).all()
    # Far apart the two peaks are disjoint: KL ~ peak height, within a few % of its
    # value at 1000 km (it is not strictly monotone out there; sidelobes wiggle).
    assert (np.abs(kls[4] / kls[3] - 1) < 0.1).all()


@given(seed=st.integers(0, 10_000), scale=st.floats(0.0, 3.0), noise=st.floats(0.0, 1.0))
@settings(max_examples=30, deadline=None)
def test_kl_non_negative(seed, scale, noise):
    s = SHDD(8, dtype=F64)
    g = torch.Generator().manual_seed(seed)
    truth = torch.rand(4, 2, generator=g, dtype=F64) * torch.tensor([180.0, 360.0]) - \
        torch.tensor([90.0, 180.0])
    other = torch.rand(4, 2, generator=g, dtype=F64) * torch.tensor([180.0, 360.0]) - \
        torch.tensor([90.0, 180.0])
    pred = scale * s.encode(latlon=other) + noise * torch.randn(4, s.dim, generator=g, dtype=F64)
    kl = s.kl(pred, latlon=truth, n_anchors=256, generator=g)
    assert torch.isfinite(kl).all() and (kl >= -1e-12).all()


def test_kl_differentiable_and_descends():
    s = SHDD(10, dtype=F64)
    truth = torch.tensor([[30.0, 40.0], [-10.0, -170.0]], dtype=F64)
    la, lo = destination(truth[:, 0].numpy(), truth[:, 1].numpy(), 90.0, 400.0)
    pred = s.encode(lat=la, lon=lo).clone().requires_grad_()
    anchors = fibonacci_lattice(4000)
    start = s.kl(pred, latlon=truth, anchors=anchors)
    start.sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    opt = torch.optim.SGD([pred], lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        s.kl(pred, latlon=truth, anchors=anchors).sum().backward()
        opt.step()
    end = s.kl(pred.detach(), latlon=truth, anchors=anchors)
    assert (end < 0.5 * start.detach()).all()


def test_kl_per_sample_anchors_and_generator():
    s = SHDD(12, dtype=F64)
    truth = torch.tensor([[30.0, 40.0], [-10.0, -170.0], [80.0, 0.0]], dtype=F64)
    pred = s.encode(latlon=truth + 3.0)
    g = torch.Generator().manual_seed(1)
    per = torch.rand(3, 300, 2, generator=g, dtype=F64) * torch.tensor([180.0, 360.0]) - \
        torch.tensor([90.0, 180.0])
    kl = s.kl(pred, latlon=truth, anchors=per)
    one_by_one = torch.cat([s.kl(pred[i:i + 1], latlon=truth[i:i + 1], anchors=per[i])
                            for i in range(3)])
    np.testing.assert_allclose(kl.numpy(), one_by_one.numpy(), rtol=1e-10)
    a = s.kl(pred, latlon=truth, generator=torch.Generator().manual_seed(5))
    b = s.kl(pred, latlon=truth, generator=torch.Generator().manual_seed(5))
    c = s.kl(pred, latlon=truth, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_kl_errors():
    s = SHDD(5)
    pred = torch.zeros(3, s.dim)
    with pytest.raises(ValueError, match="3 predicted vectors but 2 true locations"):
        s.kl(pred, lat=[0.0, 1.0], lon=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"\(n, k, 2\) with n = 3"):
        s.kl(pred, lat=[0.0] * 3, lon=[0.0] * 3, anchors=torch.zeros(2, 10, 2))
    with pytest.raises(ValueError, match=r"shape \(n, 36\)"):
        s.kl(torch.zeros(3, 49), lat=[0.0] * 3, lon=[0.0] * 3)
    with pytest.raises(ValueError, match=r"lat\[0\] = -95"):
        s.kl(pred, lat=[-95.0, 0.0, 0.0], lon=[0.0] * 3)


# -- fields --------------------------------------------------------------------------------
def test_field_contract_and_mass():
    s = SHDD(23)
    e = s.encode(lat=[48.85, -33.9], lon=[2.35, 151.2])
    da = s.field(e, resolution=1.0, attrs={"seed": 3})
    assert da.dims == ("sample", "lat", "lon") and da.shape == (2, 180, 360)
    assert da.rio.crs.to_epsg() == 4326
    assert tuple(da.rio.transform()) == tuple(LatLonGrid.global_(1.0).transform)
    assert da["lat"].attrs["standard_name"] == "latitude" and da.attrs["units"] == "1"
    assert da.attrs["L"] == 23 and da.attrs["model"] == "SHDD" and da.attrs["seed"] == 3
    assert da.dtype == np.float32  # float32 vectors -> float32 maps
    np.testing.assert_allclose(da.sum(("lat", "lon")).values, 1.0, atol=1e-5)
    assert (da.values >= 0).all()
    for i, (la, lo) in enumerate([(48.85, 2.35), (-33.9, 151.2)]):
        cell = da[i].where(da[i] == da[i].max(), drop=True)
        assert abs(float(cell.lat[0]) - la) <= 0.5 and abs(float(cell.lon[0]) - lo) <= 0.5
        # Most of the mass lies within 3 widths of the point.
        grid = LatLonGrid.global_(1.0).latlon()
        d = haversine_km(grid[:, 0], grid[:, 1], torch.tensor(la, dtype=F64),
                         torch.tensor(lo, dtype=F64)).reshape(180, 360)
        assert float(da[i].values[(d < 3 * s.width_km + 120).numpy()].sum()) > 0.95
    single = s.field(e[0], resolution=2.0)
    assert single.dims == ("lat", "lon")


@pytest.mark.parametrize(
    "resolution, bbox",
    [(10.0, None), (30.0, None), (45.0, None),  # 12 and 8 longitudes: matmul fallback
     (2.0, (-20.0, 30.0, 40.0, 70.0)), (1.0, (160.0, -30.0, -150.0, 10.0))],
    ids=["fft", "few-lon", "fewer-lon", "bbox", "antimeridian-bbox"],
)
def test_field_matches_dense_evaluation(resolution, bbox):
    L = 8
    s = SHDD(L, dtype=F64)
    g = torch.Generator().manual_seed(2)
    e = s.encode(lat=[20.0, -5.0], lon=[10.0, 175.0]) * 0.5 + 0.2 * torch.randn(
        2, s.dim, generator=g, dtype=F64)
    grid = LatLonGrid.global_(resolution) if bbox is None else LatLonGrid.from_bbox(
        resolution, bbox)
    f = dense_field(e, grid.latlon()).reshape(2, *grid.shape)
    log_area = torch.log(torch.as_tensor(grid.cell_area_sr()))[:, None]
    if bbox is None:
        ref = torch.softmax((f + log_area).flatten(1), 1).reshape(f.shape)
    else:  # normalise with our own global quadrature
        pts, wts = global_quadrature(60, 120)
        log_z = torch.logsumexp(dense_field(e, pts) + torch.log(torch.as_tensor(wts)), 1)
        ref = torch.exp(f + log_area - log_z[:, None, None])
    da = s.field(e, resolution=resolution, bbox=bbox)
    assert da.shape == (2, *grid.shape)
    np.testing.assert_allclose(da.values, ref.numpy(), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(da.lon.values, grid.lon)
    if bbox is not None:
        assert da.rio.transform() == grid.transform
        assert (da.sum(("lat", "lon")).values < 1.0).all()


def test_field_density_kinds():
    s = SHDD(10)
    e = s.encode(lat=[45.0], lon=[-120.0])
    grid = LatLonGrid.global_(0.5)
    dens = s.field(e, resolution=0.5, kind="density")
    assert dens.attrs["units"] == "km-2"
    total = float((dens[0].values * grid.cell_area_km2()[:, None]).sum())
    assert total == pytest.approx(1.0, abs=1e-3)
    logd = s.field(e, resolution=0.5, kind="log_density")
    np.testing.assert_allclose(np.exp(logd.values), dens.values, rtol=1e-6)
    with pytest.raises(ValueError, match="kind must be"):
        s.field(e, kind="similarity")
    with pytest.raises(ValueError, match="whole number"):
        s.field(e, resolution=0.7)


@pytest.mark.slow  # one log Z at L = 127 (~8 s)
def test_field_float32_high_L_regional():
    s = SHDD(127)
    e = s.encode(lat=[-12.0], lon=[179.95])
    assert e.dtype == torch.float32
    da = s.field(e, resolution=0.02, bbox=(179.0, -13.0, -179.0, -11.0))
    assert np.isfinite(da.values).all()
    # The box holds essentially all the mass (width ~3 km): masses sum to ~1.
    assert float(da.sum()) == pytest.approx(1.0, abs=1e-3)
    cell = da[0].where(da[0] == da[0].max(), drop=True)
    assert abs(float(cell.lat[0]) + 12.0) <= 0.01 and abs(float(cell.lon[0]) - 179.95) <= 0.01


@pytest.mark.parametrize("L, resolution", [(47, 0.25), (127, 0.5)])
def test_field_float32_matches_float64(L, resolution):
    """float32 synthesis (the default for float32 vectors) against the float64 path."""
    s = SHDD(L)
    g = torch.Generator().manual_seed(L)
    e64 = (s.encode(lat=[35.0, -80.0, 89.9], lon=[139.0, 20.0, 0.0]).double()
           + 0.3 * torch.randn(3, s.dim, generator=g, dtype=F64))
    m32 = s.field(e64.float(), resolution=resolution)
    m64 = s.field(e64.float().double(), resolution=resolution)
    assert m32.dtype == np.float32 and m64.dtype == np.float64
    peak = m64.max(("lat", "lon")).values[:, None, None]
    rel = np.abs(m32.values - m64.values) / peak
    assert rel.max() <= 1e-4 * (L / 47) ** 2  # f ~ (L+1)^2 in size: error grows like it
    np.testing.assert_allclose(m32.sum(("lat", "lon")).values, 1.0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_global_masses_are_the_field_and_its_log_partition(dtype):
    """The masses equal ``field``'s; ``log Z`` matches the adaptive log-partition."""
    s = SHDD(15, dtype=dtype)
    g = torch.Generator().manual_seed(4)
    e = (s.encode(lat=[35.0, -80.0, 89.9], lon=[139.0, 20.0, 0.0])
         + 0.3 * torch.randn(3, s.dim, generator=g, dtype=F64).to(dtype))
    masses, log_z = s.global_masses(e, resolution=0.5)
    assert masses.shape == (3, 360, 720) and masses.dtype == dtype and log_z.dtype == F64
    np.testing.assert_allclose(masses.numpy(), s.field(e, resolution=0.5).values, rtol=1e-6,
                               atol=1e-12)
    # the midpoint rule: ~1e-5 away from the poles, ~1e-2 for a peak a cell from a pole
    # (polar cells are coarse; see grid_log_partition); float32 adds ~1e-5
    err = (log_z - s.log_partition(e.double())).abs()
    assert float(err[:2].max()) < 5e-5 and float(err[2]) < 1e-2
    exact64 = s.global_masses(e.double(), resolution=0.5)[1]
    torch.testing.assert_close(log_z, exact64, rtol=0, atol=5e-5)
    one, one_z = s.global_masses(e[0], resolution=2.0)  # a single vector: n = 1
    assert one.shape == (1, 90, 180) and one_z.shape == (1,)
    with pytest.raises(ValueError, match="whole number"):
        s.global_masses(e, resolution=0.7)


def test_field_refuses_what_cannot_fit(monkeypatch):
    """A request bigger than memory is refused before anything is allocated."""
    s = SHDD(15)
    e = s.encode(lat=[0.0], lon=[0.0])
    with pytest.raises(ValueError, match=r"(?s)needs about .* bbox=.*coarser resolution"):
        s.field(e.expand(512, -1), resolution=0.01)  # 512 x 18000 x 36000: ~2.6 TB
    monkeypatch.setenv("GEODIFFLOC_MAX_BYTES", str(10_000_000))
    with pytest.raises(ValueError, match=r"2 vector\(s\) on a 0.25 degree grid"):
        s.field(e.expand(2, -1), resolution=0.25)  # 2 x 720 x 1440 x 4 B x 2 > 8 MB
    assert s.field(e[0], resolution=2.0).shape == (90, 180)  # small requests still pass


# -- taper ---------------------------------------------------------------------------------
@pytest.mark.parametrize("taper", ["hann", "gaussian", np.linspace(1.0, 0.2, 24)])
def test_taper_consistent(taper):
    plain, tapered = SHDD(23, dtype=F64), SHDD(23, taper=taper, dtype=F64)
    assert tapered.width_km > 1.1 * plain.width_km
    w = tapered.degree_weights
    l, _ = degree_order(23)
    p = torch.tensor([[12.0, -45.0]], dtype=F64)
    np.testing.assert_allclose(tapered.encode(latlon=p).numpy(),
                               (real_sph_harm(p, 23) * torch.as_tensor(w[l])).numpy(),
                               atol=1e-12)
    # width_km follows the tapered kernel's curvature.
    h = 1e-4
    k = lambda g: kernel(23, np.cos(g), w)  # noqa: E731
    assert tapered.width_rad == pytest.approx(
        1 / math.sqrt(-(k(h) - 2 * k(0.0) + k(-h)) / h**2), rel=1e-4)
    # KL of a perfect tapered prediction is zero; decode still round-trips.
    pts = torch.tensor([[12.0, -45.0], [-70.0, 179.5], [0.0, 0.0]], dtype=F64)
    e = tapered.encode(latlon=pts)
    assert (tapered.kl(e, latlon=pts).abs() < 1e-9).all()
    back = tapered.decode(e)
    err = haversine_km(pts[:, 0], pts[:, 1], back[:, 0], back[:, 1])
    assert (err < 1.0).all()
