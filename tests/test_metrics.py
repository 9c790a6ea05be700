"""Tests for geodiffloc.metrics against hand-computed cases and independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import quad

from geodiffloc import metrics
from geodiffloc.metrics import (
    UNMATCHED_GROUP,
    accuracy_at,
    breakdown,
    density_coverage,
    errors_km,
    geoscore,
    summarize,
)

R_MEAN = 6371.0088  # IUGG mean Earth radius, km
WGS84_A = 6378.137  # equatorial radius, km
WGS84_F = 1 / 298.257223563
WGS84_E2 = WGS84_F * (2 - WGS84_F)
KM_PER_DEG_SPHERE = R_MEAN * math.pi / 180  # 111.195 km
KM_PER_DEG_EQUATOR = WGS84_A * math.pi / 180  # 111.319 km


def _sphere_km(lat1, lon1, lat2, lon2):
    """Great-circle distance by the atan2 (Vincenty sphere) formula: independent of ours."""
    p1, p2, dl = np.radians(lat1), np.radians(lat2), np.radians(np.subtract(lon2, lon1))
    num = np.hypot(np.cos(p2) * np.sin(dl),
                   np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl))
    den = np.sin(p1) * np.sin(p2) + np.cos(p1) * np.cos(p2) * np.cos(dl)
    return R_MEAN * np.arctan2(num, den)


def _meridian_arc_km(lat1_deg, lat2_deg):
    """WGS84 meridian arc length by quadrature of the meridional radius of curvature."""
    def m(phi):
        return WGS84_A * (1 - WGS84_E2) / (1 - WGS84_E2 * math.sin(phi) ** 2) ** 1.5

    return quad(m, math.radians(lat1_deg), math.radians(lat2_deg), epsabs=1e-12)[0]


# --- errors -----------------------------------------------------------------------------


def test_one_degree_on_equator_both_methods():
    assert errors_km(0, 0, 0, 1, method="haversine")[0] == pytest.approx(111.195, abs=1e-3)
    assert errors_km(0, 0, 0, 1, method="haversine")[0] == pytest.approx(KM_PER_DEG_SPHERE)
    assert errors_km(0, 0, 0, 1)[0] == pytest.approx(111.319, abs=1e-3)
    # along the equator the WGS84 geodesic is an arc of the equatorial circle
    assert errors_km(0, 0, 0, 1, method="geodesic")[0] == pytest.approx(KM_PER_DEG_EQUATOR)


@pytest.mark.parametrize("method,expected", [("haversine", KM_PER_DEG_SPHERE),
                                             ("geodesic", KM_PER_DEG_EQUATOR)])
def test_antimeridian_pair_is_one_degree_apart(method, expected):
    d = errors_km([0, 0], [179.5, 359.5], [0, 0], [-179.5, -179.5], method=method)
    assert d[0] == pytest.approx(expected, rel=1e-9)
    # lon 359.5 means -0.5, which is 179 degrees (not 1) from -179.5
    assert d[1] == pytest.approx(179 * expected, rel=1e-3)


@pytest.mark.parametrize("method", ["haversine", "geodesic"])
def test_same_pole_different_longitude_is_zero(method):
    d = errors_km([90, -90], [0, 45], [90, -90], [120, -170], method=method)
    np.testing.assert_allclose(d, 0.0, atol=1e-6)


def test_pair_across_the_pole():
    # (89.9, 0) -> (89.9, 180) runs over the pole: 0.2 degrees of meridian
    hav = errors_km(89.9, 0, 89.9, 180, method="haversine")[0]
    assert hav == pytest.approx(0.2 * KM_PER_DEG_SPHERE, rel=1e-9)  # 22.239 km
    geo = errors_km(89.9, 0, 89.9, 180, method="geodesic")[0]
    assert geo == pytest.approx(2 * _meridian_arc_km(89.9, 90.0), rel=1e-7)  # 22.339 km
    assert geo == pytest.approx(22.339, abs=1e-3)


coords = st.tuples(st.floats(-90, 90), st.floats(-180, 360))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(coords, coords), min_size=1, max_size=20))
def test_haversine_matches_independent_formula_and_geodesic_is_close(pairs):
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    hav = errors_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1], method="haversine")
    ref = _sphere_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    # atol 1 m: haversine's asin loses ~1e-4 km next to antipodes (the atan2 form does not)
    np.testing.assert_allclose(hav, ref, rtol=1e-7, atol=1e-3)
    geo = errors_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    np.testing.assert_allclose(geo, errors_km(b[:, 0], b[:, 1], a[:, 0], a[:, 1]), atol=1e-6)
    # ellipsoid vs mean sphere: the radius of curvature lies in [a(1-e^2), a^2/b]
    far = ref > 1.0
    ratio = geo[far] / ref[far]
    assert np.all(ratio >= WGS84_A * (1 - WGS84_E2) / R_MEAN - 1e-6)
    assert np.all(ratio <= WGS84_A / (1 - WGS84_F) / R_MEAN + 1e-6)
    assert np.all(hav >= 0) and np.all(geo >= 0)


def test_errors_reject_bad_input():
    with pytest.raises(ValueError, match="method"):
        errors_km(0, 0, 0, 1, method="euclid")
    with pytest.raises(ValueError, match="outside"):
        errors_km(91, 0, 0, 0)
    with pytest.raises(ValueError, match="same length"):
        errors_km([0, 1], [0, 1], [0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="finite"):
        errors_km(np.nan, 0, 0, 0)


# --- accuracy and GeoScore ------------------------------------------------------------


def test_accuracy_thresholds_are_inclusive():
    errs = [0.0, 1.0, 1.0 + 1e-9, 25.0, 199.9, 200.0, 2500.0, 2500.1]
    acc = accuracy_at(errs)
    assert list(acc) == [1.0, 25.0, 200.0, 750.0, 2500.0]
    # counted by hand: d <= 1: 2, <= 25: 4, <= 200: 6, <= 750: 6, <= 2500: 7 of 8
    assert acc == {1.0: 2 / 8, 25.0: 4 / 8, 200.0: 6 / 8, 750.0: 6 / 8, 2500.0: 7 / 8}


def test_accuracy_custom_thresholds_sorted_and_validated():
    assert list(accuracy_at([5.0], thresholds=[10, 2, 10])) == [2.0, 10.0]
    for bad in ([], [0], [-1], [np.inf]):
        with pytest.raises(ValueError, match="threshold"):
            accuracy_at([1.0], thresholds=bad)
    with pytest.raises(ValueError, match="non-negative"):
        accuracy_at([-1.0])
    with pytest.raises(ValueError, match="empty"):
        accuracy_at([])


def test_geoscore_closed_form():
    s = geoscore([0.0, 1492.7, 1492.7 * math.log(2), 2 * 1492.7])
    np.testing.assert_allclose(s, [5000, 5000 / math.e, 2500, 5000 / math.e**2], rtol=1e-12)
    far = geoscore(np.linspace(0, 20037, 50))
    assert np.all(np.diff(far) < 0) and far[-1] > 0


# --- summarize ------------------------------------------------------------------------


def _equator_preds(n_deg=(0, 1, 2, 3)):
    truth = np.zeros((len(n_deg), 2))
    pred = np.column_stack([np.zeros(len(n_deg)), np.asarray(n_deg, float)])
    return pred, truth


def test_summarize_hand_computed():
    pred, truth = _equator_preds()
    s = summarize(pred, truth, thresholds=(1, 150, 250), method="haversine")
    assert list(s) == ["n", "method", "acc@1km_%", "acc@150km_%", "acc@250km_%",
                       "median_km", "mean_km", "geoscore"]
    assert s["n"] == 4 and s["method"] == "haversine"
    # errors are 0, 1, 2, 3 degrees of 111.195 km
    assert s["acc@1km_%"] == 25.0 and s["acc@150km_%"] == 50.0 and s["acc@250km_%"] == 75.0
    assert s["median_km"] == pytest.approx(1.5 * KM_PER_DEG_SPHERE)
    assert s["mean_km"] == pytest.approx(1.5 * KM_PER_DEG_SPHERE)
    expected = np.mean([5000 * math.exp(-k * KM_PER_DEG_SPHERE / 1492.7) for k in range(4)])
    assert s["geoscore"] == pytest.approx(expected)
    assert summarize(pred, truth)["method"] == "geodesic"


def test_summarize_accepts_tensors_geodataframes_and_dataframes():
    import geopandas as gpd
    import pandas as pd

    pred, truth = _equator_preds()
    ref = summarize(pred, truth)
    gdf = gpd.GeoDataFrame(geometry=gpd.points_from_xy(pred[:, 1], pred[:, 0]), crs=4326)
    df = pd.DataFrame({"LAT": truth[:, 0], "LON": truth[:, 1]})
    assert summarize(torch.tensor(pred), df) == ref
    assert summarize(gdf, truth) == ref
    # a GeoDataFrame in another geographic CRS / a projected one
    assert summarize(gdf.to_crs(4269), truth)["median_km"] == pytest.approx(ref["median_km"],
                                                                           abs=1e-3)
    assert summarize(gdf.to_crs(3857), truth)["median_km"] == pytest.approx(ref["median_km"],
                                                                            abs=1e-3)
    with pytest.raises(ValueError, match="no CRS"):
        summarize(gdf.set_crs(None, allow_override=True), truth)


def test_summarize_rejects_bad_input():
    pred, truth = _equator_preds()
    with pytest.raises(ValueError, match="same length"):
        summarize(pred[:3], truth)
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        summarize(pred.T, truth.T)
    with pytest.raises(ValueError, match="empty"):
        summarize(np.zeros((0, 2)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="lat"):
        import pandas as pd

        summarize(pd.DataFrame({"x": [0.0], "y": [0.0]}), truth[:1])
    with pytest.raises(ValueError, match="truth: lat"):
        summarize(pred[:1], [[95.0, 0.0]])


# --- breakdown ------------------------------------------------------------------------

PLACES = np.array([
    [48.8566, 2.3522],  # Paris
    [52.52, 13.405],  # Berlin
    [-33.8688, 151.2093],  # Sydney
    [0.0, -30.0],  # mid-Atlantic
    [35.6762, 139.6503],  # Tokyo
])


def test_breakdown_groups_by_continent_and_country():
    pred = PLACES + np.array([0.0, 1.0])  # one degree east of each
    by_cont = breakdown(pred, PLACES, by="continent")
    assert by_cont.index.name == "continent"
    assert by_cont["n"].to_dict() == {"Europe": 2, "Asia": 1, "Oceania": 1,
                                      UNMATCHED_GROUP: 1}
    # each group equals summarize over its own rows
    europe = summarize(pred[:2], PLACES[:2])
    assert by_cont.loc["Europe"].to_dict() == europe
    by_country = breakdown(pred, PLACES, by="country")
    assert set(by_country.index) == {"France", "Germany", "Australia", "Japan",
                                     UNMATCHED_GROUP}
    assert by_country.loc["France", "n"] == 1


def test_breakdown_rejects_unknown_group_column():
    with pytest.raises(ValueError, match="by"):
        breakdown(PLACES, PLACES, by="planet")


# --- density / coverage ---------------------------------------------------------------


def _dense_reference(real, fake, k):
    """Naeem et al. density/coverage by brute force with the atan2 distance (closed balls)."""
    rr = _sphere_km(real[:, None, 0], real[:, None, 1], real[None, :, 0], real[None, :, 1])
    radii = np.sort(rr, axis=1)[:, k]  # column 0 is the point itself
    rf = _sphere_km(real[:, None, 0], real[:, None, 1], fake[None, :, 0], fake[None, :, 1])
    inside = rf <= radii[:, None] * (1 + 1e-9)
    return inside.sum() / (k * len(fake)), inside.any(axis=1).mean()


EQUATOR = np.array([[0.0, lon] for lon in range(-180, 180, 10)])  # 36 points, 10 deg apart


def test_density_coverage_identical_sets():
    out = density_coverage(EQUATOR, EQUATOR, k=2)
    assert out["coverage"] == 1.0
    # k=2 radius is 10 deg, so each real ball holds the point and its two neighbours
    # (ties at exactly 10 deg count: closed balls): density = 36 * 3 / (2 * 36)
    assert out["density"] == pytest.approx(1.5)
    assert out["median_radius_km"] == pytest.approx(10 * KM_PER_DEG_SPHERE, rel=1e-9)


def test_density_coverage_shifted_and_clustered_fakes():
    # fakes 3 deg east of each real: 3 and 7 deg from two reals, >= 13 from the rest
    out = density_coverage(EQUATOR, EQUATOR + np.array([0.0, 3.0]), k=2)
    assert out["coverage"] == 1.0 and out["density"] == pytest.approx(36 * 2 / (2 * 36))
    # five fakes at lon 1: inside the balls of the reals at lon 0 and 10 only
    out = density_coverage(EQUATOR, np.tile([0.0, 1.0], (5, 1)), k=2)
    assert out["coverage"] == pytest.approx(2 / 36)
    assert out["density"] == pytest.approx(5 * 2 / (2 * 5))
    assert (out["n_real"], out["n_fake"], out["k"]) == (36, 5, 2)


def test_density_coverage_far_fakes_are_zero():
    out = density_coverage(EQUATOR, [[60.0, 5.0], [-70.0, 100.0]], k=3)
    assert out["coverage"] == 0.0 and out["density"] == 0.0


def test_density_coverage_across_antimeridian():
    real = np.array([[0.0, 179.0], [0.0, -179.0], [0.0, 177.0], [0.0, -177.0]])
    # k=1 radii are 2 deg; a fake at lon 180 is 1 deg from the first two reals only
    out = density_coverage(real, [[0.0, 180.0]], k=1)
    assert out["coverage"] == 0.5 and out["density"] == pytest.approx(2.0)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.floats(-180, 180))
def test_density_coverage_matches_brute_force_and_is_rotation_invariant(seed, k, shift):
    rng = np.random.default_rng(seed)

    def sample(n):
        lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
        return np.column_stack([lat, rng.uniform(-180, 180, n)])

    real, fake = sample(40), sample(25)
    out = density_coverage(real, fake, k=k)
    density, coverage = _dense_reference(real, fake, k)
    assert out["density"] == pytest.approx(density) and out["coverage"] == pytest.approx(coverage)
    def turn(x):  # rotate about the polar axis, longitudes kept in [-180, 180)
        return np.column_stack([x[:, 0], (x[:, 1] + shift + 180.0) % 360.0 - 180.0])

    rot = density_coverage(turn(real), turn(fake), k=k)
    assert rot["density"] == pytest.approx(density) and rot["coverage"] == pytest.approx(coverage)


def test_density_coverage_accepts_geodataframes_and_validates():
    import geopandas as gpd

    gdf = gpd.GeoDataFrame(geometry=gpd.points_from_xy(EQUATOR[:, 1], EQUATOR[:, 0]), crs=4326)
    assert density_coverage(gdf, torch.tensor(EQUATOR), k=2)["coverage"] == 1.0
    for k in (0, 36, 2.5, True):
        with pytest.raises(ValueError, match="k must be"):
            density_coverage(EQUATOR, EQUATOR, k=k)
    with pytest.raises(ValueError, match="empty"):
        density_coverage(EQUATOR, np.zeros((0, 2)), k=2)


def test_public_names_are_exported():
    for name in metrics.__all__:
        assert getattr(metrics, name) is not None
