"""The SHDD mode-seeking decoder (eq. 14), its coarse-to-fine search and the refinement."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geodiffloc import SHDD
from geodiffloc.shdd import refine_modes
from geodiffloc.sphere import cap_random, fibonacci_lattice, uniform_random

R = 6371.0088
F64 = torch.float64


def gc_km(a, b):
    """Great-circle km between ``(n, 2)`` lat/lon arrays (numpy, atan2 form)."""
    a, b = np.deg2rad(np.asarray(a, np.float64)), np.deg2rad(np.asarray(b, np.float64))
    dl = b[:, 1] - a[:, 1]
    num = np.hypot(np.cos(b[:, 0]) * np.sin(dl), np.cos(a[:, 0]) * np.sin(b[:, 0])
                   - np.sin(a[:, 0]) * np.cos(b[:, 0]) * np.cos(dl))
    den = np.sin(a[:, 0]) * np.sin(b[:, 0]) + np.cos(a[:, 0]) * np.cos(b[:, 0]) * np.cos(dl)
    return R * np.arctan2(num, den)


def destination(lat, lon, bearing_deg, dist_km):
    p1, l1, b, d = np.deg2rad(lat), np.deg2rad(lon), np.deg2rad(bearing_deg), dist_km / R
    p2 = np.arcsin(np.sin(p1) * np.cos(d) + np.cos(p1) * np.sin(d) * np.cos(b))
    l2 = l1 + np.arctan2(np.sin(b) * np.sin(d) * np.cos(p1), np.cos(d) - np.sin(p1) * np.sin(p2))
    return np.degrees(p2), (np.degrees(l2) + 180.0) % 360.0 - 180.0


def round_trip_errors(L, n, seed):
    s = SHDD(L)
    pts = uniform_random(n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    back = s.decode(s.encode(latlon=pts).float())
    assert back.shape == (n, 2) and back.dtype == F64
    return gc_km(pts.numpy(), back.numpy())


# -- round trips -------------------------------------------------------------------------
@pytest.mark.parametrize("L, n", [(15, 2000), (47, 400), (127, 60)])
def test_round_trip_fast(L, n):
    err = round_trip_errors(L, n, seed=L)
    assert np.median(err) <= 1.0 and np.percentile(err, 99) <= 5.0


@pytest.mark.slow
@pytest.mark.parametrize("L", [15, 47, 127])
def test_round_trip_10k(L):
    err = round_trip_errors(L, 10_000, seed=100 + L)
    assert np.median(err) <= 1.0 and np.percentile(err, 99) <= 5.0


@given(lat=st.floats(-90, 90), lon=st.floats(-180, 180))
@settings(max_examples=25, deadline=None)
def test_round_trip_property(lat, lon):
    s = SHDD(23)
    back = s.decode(s.encode(lat=[lat], lon=[lon]))
    assert gc_km([[lat, lon]], back.numpy())[0] < 1.0


def test_antimeridian_and_poles():
    pts = np.array([[90.0, 0.0], [-90.0, 0.0], [0.0, 180.0], [0.0, -180.0], [10.0, 179.999],
                    [-10.0, -179.999], [89.99, 45.0], [-89.95, -135.0], [65.0, 180.0]])
    s = SHDD(47)
    e = s.encode(lat=pts[:, 0], lon=pts[:, 1])
    for method in ("coarse_to_fine", "grid", "dense"):
        back = s.decode(e, method=method).numpy()
        assert (np.abs(back[:, 0]) <= 90).all() and (np.abs(back[:, 1]) <= 180).all()
        assert gc_km(pts, back).max() < 0.05, method


def test_decode_picks_the_higher_mode():
    s = SHDD(31)
    e = 1.0 * s.encode(lat=[35.0], lon=[139.0]) + 0.6 * s.encode(lat=[-23.0], lon=[-46.0])
    for method in ("coarse_to_fine", "grid", "dense"):
        assert gc_km([[35.0, 139.0]], s.decode(e, method=method).numpy())[0] < 1.0


def test_decode_accepts_one_vector_and_float64():
    s = SHDD(15, dtype=F64)
    e = s.encode(lat=[-5.0], lon=[33.0])[0]
    out = s.decode(e)
    assert out.shape == (1, 2) and out.dtype == F64
    assert gc_km([[-5.0, 33.0]], out.numpy())[0] < 0.01


# -- search: coarse-to-fine vs dense -------------------------------------------------------
@pytest.mark.parametrize("L", [23, 47])
@pytest.mark.parametrize("sigma", [0.25, 0.5, 1.0])
def test_coarse_to_fine_matches_dense(L, sigma):
    """Same anchor as the dense search for >= 95 % of noisy vectors (encode + N(0, sigma^2)
    per coefficient; an SHDD coefficient's own RMS is 1/sqrt(4 pi) = 0.28, so sigma = 1 is
    3.5x the signal per coefficient). For scale: the peak is (L+1)^2/4pi and the noise
    field's std-dev is sigma (L+1)/sqrt(4pi). Much heavier white noise has no mode to
    find: at L = 23, sigma = 2 the noise maximum over the anchors (~4 x 13.5) exceeds the
    peak (46), so the dense "mode" is a noise spike anywhere on the globe."""
    s = SHDD(L)
    g = torch.Generator().manual_seed(L + int(10 * sigma))
    pts = uniform_random(64, generator=g, dtype=F64)
    noisy = s.encode(latlon=pts).float()
    noisy = noisy + sigma * torch.randn(noisy.shape, generator=g)
    dense = s.decode(noisy, refine=False, method="dense")
    for method in ("coarse_to_fine", "grid"):
        fast = s.decode(noisy, refine=False, method=method)
        same = gc_km(fast.numpy(), dense.numpy()) < 1.0
        assert same.mean() >= 0.95, f"{method}: agreement {same.mean():.0%}"


def test_coarse_to_fine_finds_clear_modes_L47(monkeypatch):
    """At L = 47 the peak (183) towers over white noise of sigma = 2 (noise field std-dev
    27): the dense search lands near the encoded point, so the mode is unambiguous, and
    the coarse-to-fine search must find it too (it picked another region for ~45 % of
    such vectors when written: its low-pass first stage loses SNR, (Lc+1) vs (L+1))."""
    s = SHDD(47)
    g = torch.Generator().manual_seed(5)
    pts = uniform_random(64, generator=g, dtype=F64)
    noisy = s.encode(latlon=pts).float()
    noisy = noisy + 2.0 * torch.randn(noisy.shape, generator=g)
    dense = s.decode(noisy, refine=False, method="dense")
    assert (gc_km(pts.numpy(), dense.numpy()) < 300.0).mean() >= 0.9  # the mode is clear
    for method in ("coarse_to_fine", "grid"):
        fast = s.decode(noisy, refine=False, method=method)
        same = gc_km(fast.numpy(), dense.numpy()) < 1.0
        assert same.mean() >= 0.95, f"{method}: agreement {same.mean():.0%}"
    # heavy noise takes the grid search inside coarse_to_fine (not the dense one)
    from geodiffloc.shdd import decoding

    calls = []
    real = decoding._search_dense
    monkeypatch.setattr(decoding, "_search_dense",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    s.decode(noisy, refine=False)
    assert not calls


def test_grid_search_falls_back_to_dense_where_no_anchor_is_near_a_peak():
    """An anchor set with a 1500 km hole around the field's peak: no anchor lies near any
    grid peak, and the dense search's answer (the best anchor there is) is returned."""
    s = SHDD(47)
    e = s.encode(lat=[10.0, 10.0], lon=[20.0, 20.0])
    lattice = fibonacci_lattice(20000)
    anchors = lattice[gc_km(lattice.numpy(), np.array([[10.0, 20.0]])) > 1500.0]
    grid = s.decode(e, anchors, refine=False, method="grid")
    dense = s.decode(e, anchors, refine=False, method="dense")
    np.testing.assert_allclose(grid.numpy(), dense.numpy())
    assert torch.cdist(grid, anchors).min(dim=1).values.max() < 1e-6  # an anchor of the set


# -- eq. 14 and beta ------------------------------------------------------------------------
def _crowd_setup():
    """One anchor on the true point, a crowd of 400 anchors 600 km away, a sparse lattice."""
    p = (20.0, 30.0)
    c_lat, c_lon = destination(p[0], p[1], 90.0, 600.0)
    g = torch.Generator().manual_seed(0)
    crowd = cap_random(torch.tensor([[c_lat, c_lon]], dtype=F64), 400, 150.0, generator=g)[0]
    anchors = torch.cat([torch.tensor([p], dtype=F64), crowd, fibonacci_lattice(500)])
    return p, anchors


def test_beta_small_picks_the_mode_large_beta_favours_crowds():
    """Eq. 14 sums exp(f) over the anchors within beta: with beta larger than the gaps, a
    crowd of anchors on the field's tail outvotes the one anchor on the peak (L = 15,
    width ~177 km, crowd 600 km away). Observed: beta = 1 km -> the true anchor; beta =
    400 km and the default 2 * width (354 km) -> a crowd anchor ~450-750 km away; the
    continuous refinement (refine=True) then climbs back to the true point."""
    p, anchors = _crowd_setup()
    s = SHDD(15)
    e = s.encode(lat=[p[0]], lon=[p[1]])
    small = s.decode(e, anchors, beta_km=1.0, refine=False)
    assert gc_km([p], small.numpy())[0] < 1e-6
    for beta in (400.0, None):
        for method in ("coarse_to_fine", "grid", "dense"):
            crowded = s.decode(e, anchors, beta_km=beta, refine=False, method=method)
            assert 400.0 < gc_km([p], crowded.numpy())[0] < 800.0, (beta, method)
    refined = s.decode(e, anchors, beta_km=400.0, refine=True)
    assert gc_km([p], refined.numpy())[0] < 0.01


def test_default_beta_avoids_neighbour_of_the_mode_at_high_L():
    """At L = 127 (width ~2.8 km) a fixed beta of a degree puts the mode's anchor and its
    neighbour 40 km away in each other's neighbourhoods: their eq. 14 scores tie (the
    neighbour's own field is ~e^-1300 of the peak), and argmax returns the first listed,
    i.e. the neighbour. The width-tied default beta separates them."""
    s = SHDD(127)
    p = (10.0, 10.0)
    neighbour = destination(p[0], p[1], 0.0, 40.0)
    anchors = torch.tensor([neighbour, p], dtype=F64)
    e = s.encode(lat=[p[0]], lon=[p[1]])
    for method in ("coarse_to_fine", "grid", "dense"):
        assert gc_km([p], s.decode(e, anchors, refine=False, method=method).numpy())[0] < 1e-6
        wide = s.decode(e, anchors, beta_km=111.0, refine=False, method=method)
        assert gc_km([neighbour], wide.numpy())[0] < 1e-6


# -- galleries --------------------------------------------------------------------------------
def test_gallery_anchors_respected(tmp_path):
    s = SHDD(23)
    g = torch.Generator().manual_seed(3)
    gallery = uniform_random(300, generator=g, dtype=F64)
    truth = gallery[:5] + 0.3  # a few km off some gallery points
    e = s.encode(latlon=truth)
    df = pd.DataFrame({"LAT": gallery[:, 0].numpy(), "LON": gallery[:, 1].numpy()})
    csv = tmp_path / "g.csv"
    df.to_csv(csv, index=False)
    gdf = gpd.GeoDataFrame(geometry=gpd.points_from_xy(df.LON, df.LAT), crs="EPSG:4326")
    for source in (gallery, gallery.numpy(), df, csv, gdf):
        for method in ("coarse_to_fine", "grid", "dense"):
            out = s.decode(e, source, refine=False, method=method, beta_km=1.0)
            d = torch.cdist(out, gallery)
            assert (d.min(1).values < 1e-9).all()  # every result is a gallery anchor
            np.testing.assert_allclose(out.numpy(), gallery[:5].numpy(), atol=1e-9)


# -- refinement ---------------------------------------------------------------------------------
@pytest.mark.parametrize("L, offset_km", [(47, 30.0), (127, 8.0), (15, 80.0)])
def test_refine_modes_reaches_metres(L, offset_km):
    s = SHDD(L, dtype=F64)
    truth = np.array([[40.0, -3.7], [-60.0, 179.99], [89.9, 0.0], [0.0, 0.0]])
    e = s.encode(lat=truth[:, 0], lon=truth[:, 1])
    la, lo = destination(truth[:, 0], truth[:, 1], np.array([10.0, 100.0, 200.0, 300.0]),
                         offset_km)
    start = torch.from_numpy(np.stack([la, lo], 1))
    out = refine_modes(s, e, start)
    assert out.shape == (4, 2)
    assert gc_km(truth, out.numpy()).max() < 0.01  # 10 metres


# -- bad inputs ----------------------------------------------------------------------------------
def test_decode_errors():
    s = SHDD(5)
    e = s.encode(lat=[0.0], lon=[0.0])
    with pytest.raises(ValueError, match=r"shape \(n, 36\)"):
        s.decode(torch.zeros(2, 37))
    for beta in (0.0, -5.0, float("nan")):
        with pytest.raises(ValueError, match="beta_km must be positive"):
            s.decode(e, beta_km=beta)
    with pytest.raises(ValueError, match="method must be"):
        s.decode(e, method="greedy")
    with pytest.raises(ValueError, match="empty"):
        s.decode(e, np.zeros((0, 2)))
    with pytest.raises(ValueError, match=r"lat\[0\] = 120"):
        s.decode(e, [[120.0, 0.0]])
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        s.decode(e, np.zeros((4, 3)))
    assert math.isfinite(s.width_km)


def test_analytic_field_derivatives_match_finite_differences():
    """The fused kernel's gradient / Hessian of f against central differences of f."""
    from geodiffloc import _sh_numba
    from geodiffloc.harmonics import real_sph_harm

    if not _sh_numba.available():
        pytest.skip("numba not installed")
    L = 31
    g = torch.Generator().manual_seed(4)
    c = torch.randn(5, (L + 1) ** 2, generator=g, dtype=torch.float64)
    ll = torch.tensor([[10.0, 20.0], [-50.0, 170.0], [80.0, -100.0], [0.0, 0.0], [87.0, 33.0]],
                      dtype=torch.float64)
    got = _sh_numba.field_derivatives(ll.numpy(), c.numpy(), L)

    def f(dlat: float, dlon: float) -> np.ndarray:
        shifted = ll + torch.tensor([dlat, dlon], dtype=torch.float64)
        return (real_sph_harm(shifted, L) * c).sum(1).numpy()

    h = 1e-4
    hr = math.radians(h)
    f0 = f(0, 0)
    ref = np.stack([
        f0,
        (f(h, 0) - f(-h, 0)) / (2 * hr),
        (f(0, h) - f(0, -h)) / (2 * hr),
        (f(h, 0) - 2 * f0 + f(-h, 0)) / hr**2,
        (f(h, h) - f(h, -h) - f(-h, h) + f(-h, -h)) / (4 * hr**2),
        (f(0, h) - 2 * f0 + f(0, -h)) / hr**2,
    ], 1)
    scale = np.abs(ref).max(0)
    assert (np.abs(got - ref).max(0) / scale <= [1e-12, 1e-8, 1e-8, 1e-4, 1e-4, 1e-4]).all()


@pytest.mark.parametrize("L", [15, 47, 127])
def test_newton_and_stencil_refinement_agree(L):
    """Analytic Newton (default on CPU) and the stencil reach the same modes, to cm."""
    s = SHDD(L)
    truth = uniform_random(40, generator=torch.Generator().manual_seed(L), dtype=torch.float64)
    truth[0] = torch.tensor([89.5, 10.0])  # polar cap: stencil inside "newton"
    truth[1] = torch.tensor([-87.9, -170.0])  # just outside the cap
    truth[2] = torch.tensor([0.0, 179.99])  # antimeridian
    e = s.encode(latlon=truth).float()
    start = s.decode(e, refine=False)
    a = refine_modes(s, e, start, method="newton")
    b = refine_modes(s, e, start, method="stencil")
    assert gc_km(a, b).max() < 0.01
    assert gc_km(a, truth).max() < 0.01
    with pytest.raises(ValueError, match="method must be"):
        refine_modes(s, e, start, method="bfgs")
