"""Tests for the sphere layer: validation, distances, spherical means and anchor sets.

References are independent of the code under test: closed forms (equator/meridian
lengths), a separately written great-circle formula (atan2 form of Vincenty's
spherical formula) and statistical tests of the sampling distributions.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from geodiffloc.sphere import (
    EARTH_RADIUS_KM,
    as_latlon,
    cap_random,
    check_latlon_tensor,
    fibonacci_lattice,
    gallery_anchors,
    geodesic_km,
    haversine_km,
    latlon_to_xyz,
    normalize_lon,
    pairwise_haversine_km,
    regular_grid_anchors,
    spherical_mean,
    uniform_random,
    xyz_to_latlon,
)

R = 6371.0088  # IUGG mean radius (km), written out independently of the library constant
WGS84_A_KM = 6378.137
WGS84_MERIDIAN_QUADRANT_KM = 10001.965729  # equator to pole along a WGS84 meridian


def vincenty_sphere_km(lat1, lon1, lat2, lon2):
    """Great-circle distance by the atan2 (Vincenty) form, numpy, independent reference."""
    p1, p2 = np.deg2rad(lat1), np.deg2rad(lat2)
    dl = np.deg2rad(np.asarray(lon2) - np.asarray(lon1))
    num = np.hypot(np.cos(p2) * np.sin(dl),
                   np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl))
    den = np.sin(p1) * np.sin(p2) + np.cos(p1) * np.cos(p2) * np.cos(dl)
    return R * np.arctan2(num, den)


# -- validation: accepted inputs --------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda la, lo: (np.array(la), np.array(lo)),
        lambda la, lo: (torch.tensor(la), torch.tensor(lo)),
        lambda la, lo: (torch.tensor(la, dtype=torch.float32), torch.tensor(lo)),
        lambda la, lo: (list(la), list(lo)),
        lambda la, lo: (pd.Series(la), pd.Series(lo)),
    ],
    ids=["numpy", "torch", "torch32", "list", "pandas"],
)
def test_as_latlon_accepts_array_likes(make):
    la, lo = [10.5, -45.25, 0.0], [20.0, 170.0, -179.5]
    lat, lon = as_latlon(*make(la, lo))
    assert lat.dtype == np.float64 and lon.dtype == np.float64
    assert lat.shape == (3,) and lon.shape == (3,)
    np.testing.assert_allclose(lat, la, atol=1e-6)
    np.testing.assert_allclose(lon, lo, atol=1e-6)


def test_as_latlon_scalar_is_one_point():
    lat, lon = as_latlon(lat=12.0, lon=34.0)
    assert lat.tolist() == [12.0] and lon.tolist() == [34.0]


def test_as_latlon_shapely_and_geopandas_points():
    pts = [shapely.Point(2.35, 48.85), shapely.Point(151.2, -33.9)]  # (x=lon, y=lat)
    for source in (pts, gpd.GeoSeries(pts, crs="EPSG:4326"),
                   gpd.GeoDataFrame(geometry=pts, crs="EPSG:4326"), pts[0]):
        lat, lon = as_latlon(points=source)
        np.testing.assert_allclose(lat[:1], [48.85])
        np.testing.assert_allclose(lon[:1], [2.35])


def test_as_latlon_other_geographic_crs_is_reprojected():
    # ETRS89 (EPSG:4258) is geographic: accepted and converted; values stay ~equal.
    gdf = gpd.GeoDataFrame(geometry=[shapely.Point(10.0, 50.0)], crs="EPSG:4258")
    lat, lon = as_latlon(points=gdf)
    assert abs(lat[0] - 50.0) < 1e-3 and abs(lon[0] - 10.0) < 1e-3


@pytest.mark.parametrize("lon_in, expected", [(190.0, -170.0), (360.0, 0.0), (180.0, 180.0),
                                               (270.0, -90.0), (-180.0, -180.0)])
def test_longitude_0_360_normalised(lon_in, expected):
    _, lon = as_latlon(lat=[0.0], lon=[lon_in])
    assert lon[0] == pytest.approx(expected)
    assert normalize_lon(np.array([lon_in]))[0] == pytest.approx(expected)


@given(st.floats(-90, 90), st.floats(0.0, 180.0, exclude_min=True))
@settings(max_examples=50, deadline=None)
def test_longitude_plus_360_same_point(lat, lon):
    _, a = as_latlon(lat=[lat], lon=[lon - 180.0])
    _, b = as_latlon(lat=[lat], lon=[lon + 180.0])
    # Same meridian: the two normalised longitudes differ by a multiple of 360 at most.
    d = (a[0] - b[0]) % 360.0
    assert min(d, 360.0 - d) < 1e-9


def test_latitude_limits_kept_not_clamped():
    lat, _ = as_latlon(lat=[90.0, -90.0], lon=[0.0, 0.0])
    assert lat.tolist() == [90.0, -90.0]
    with pytest.raises(ValueError, match=r"lat\[1\] = 90.0000001.*never clamped"):
        as_latlon(lat=[0.0, 90.0000001], lon=[0.0, 0.0])


# -- validation: every bad input raises a ValueError naming the value and a fix ------
@pytest.mark.parametrize(
    "lat, lon, pattern",
    [
        ([0.0, 1.0, float("nan")], [0.0, 0.0, 0.0], r"lat\[2\] = nan.*drop or fill"),
        ([0.0, 1.0], [float("inf"), 0.0], r"lon\[0\] = inf.*drop or fill"),
        ([10.0, -91.5], [0.0, 0.0], r"lat\[1\] = -91.5.*reproject"),
        ([10.0], [400.0], r"lon\[0\] = 400.0.*reproject"),
        ([10.0], [-181.0], r"lon\[0\] = -181.0"),
        # Projected metres passed as degrees: caught by the latitude range check.
        ([5_000_000.0], [600_000.0], r"lat\[0\].*EPSG:4326"),
    ],
)
def test_as_latlon_bad_values(lat, lon, pattern):
    with pytest.raises(ValueError, match=pattern):
        as_latlon(lat=lat, lon=lon)


def test_as_latlon_bad_shapes():
    with pytest.raises(ValueError, match=r"one-dimensional.*lat=a\[:, 0\]"):
        as_latlon(lat=np.zeros((3, 2)), lon=np.zeros(3))
    with pytest.raises(ValueError, match="same length; got 3 and 2"):
        as_latlon(lat=[1.0, 2.0, 3.0], lon=[1.0, 2.0])
    with pytest.raises(ValueError, match="must be numbers"):
        as_latlon(lat=["a"], lon=[1.0])
    with pytest.raises(ValueError, match="both lat= and lon="):
        as_latlon(lat=[1.0])
    with pytest.raises(ValueError, match="not both"):
        as_latlon(lat=[1.0], lon=[1.0], points=[shapely.Point(0, 0)])


def test_as_latlon_projected_geodataframe_reprojected():
    # UTM 32N: the central meridian 9°E, 500 km false easting; reference from pyproj
    from pyproj import Transformer

    gdf = gpd.GeoDataFrame(geometry=[shapely.Point(500_000, 5_500_000)], crs="EPSG:32632")
    ref_lon, ref_lat = Transformer.from_crs(32632, 4326, always_xy=True).transform(
        500_000, 5_500_000)
    for source in (gdf, gdf.geometry):
        lat, lon = as_latlon(points=source)
        np.testing.assert_allclose([lat[0], lon[0]], [ref_lat, ref_lon], atol=1e-9)
        assert lon[0] == pytest.approx(9.0, abs=1e-9)
    with pytest.raises(ValueError, match=r"no CRS.*set_crs"):
        as_latlon(points=gdf.set_crs(None, allow_override=True))


def test_as_latlon_non_point_geometry_refused():
    geoms = [shapely.Point(0, 0), shapely.box(0, 0, 1, 1)]
    with pytest.raises(ValueError, match=r"position 1 .*not a non-empty Point.*centroid"):
        as_latlon(points=gpd.GeoSeries(geoms, crs="EPSG:4326"))
    with pytest.raises(ValueError, match="position 0"):
        as_latlon(points=[shapely.Point()])


def test_check_latlon_tensor():
    t = torch.tensor([[10.0, 350.0], [-20.0, 20.0]], requires_grad=True)
    out = check_latlon_tensor(t)
    assert out.tolist() == [[10.0, -10.0], [-20.0, 20.0]]
    out.sum().backward()  # normalisation keeps autograd
    assert torch.equal(t.grad, torch.ones_like(t))
    assert check_latlon_tensor(torch.tensor([[1, 2]])).dtype == torch.float64
    with pytest.raises(ValueError, match=r"shape \(n, 2\).*\(3, 3\)"):
        check_latlon_tensor(torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        check_latlon_tensor(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"lat\[1\] = 95.0"):
        check_latlon_tensor(torch.tensor([[0.0, 0.0], [95.0, 0.0]]))
    with pytest.raises(ValueError, match=r"lon\[0\] = nan"):
        check_latlon_tensor(torch.tensor([[0.0, float("nan")]]))


# -- distances ------------------------------------------------------------------------
def test_earth_radius_constant():
    assert EARTH_RADIUS_KM == R


def test_haversine_known_distances():
    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    one_deg = R * math.pi / 180
    d = haversine_km(t(0.0, 0.0, 89.0, 0.0), t(0.0, 179.5, 0.0, 0.0),
                     t(0.0, 0.0, 90.0, 180.0), t(1.0, -179.5, 0.0, 0.0))
    np.testing.assert_allclose(d.numpy(), [one_deg, one_deg, one_deg, math.pi * R], rtol=1e-12)


def test_haversine_vs_independent_formula():
    rng = np.random.default_rng(1)
    a = rng.uniform([-90, -180], [90, 180], size=(2000, 2))
    b = rng.uniform([-90, -180], [90, 180], size=(2000, 2))
    b[:10] = a[:10] + 1e-7  # nearly coincident
    b[10:20] = [[-a[i, 0], a[i, 1] + 180.0] for i in range(10, 20)]  # antipodes
    ref = vincenty_sphere_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    got = haversine_km(ta[:, 0], ta[:, 1], tb[:, 0], tb[:, 1]).numpy()
    far = np.zeros(len(a), bool)
    far[10:20] = True
    np.testing.assert_allclose(got[~far], ref[~far], rtol=1e-9, atol=1e-6)
    # the asin form is ill-conditioned at antipodes: float64 leaves ~R * sqrt(eps) ~ 0.2 m
    np.testing.assert_allclose(got[far], ref[far], rtol=0, atol=1e-3)
    pair = pairwise_haversine_km(ta[:50], tb[:40]).numpy()
    ref_pair = vincenty_sphere_km(a[:50, None, 0], a[:50, None, 1], b[None, :40, 0],
                                  b[None, :40, 1])
    np.testing.assert_allclose(pair, ref_pair, atol=1e-4)


def test_haversine_broadcasts():
    d = haversine_km(torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(1, 4), torch.ones(1, 4))
    assert d.shape == (3, 4)


def test_haversine_gradcheck_and_zero_distance():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 5, generator=g, dtype=torch.float64) - 0.5)
    x = x * torch.tensor([[150.0], [340.0], [150.0], [340.0]], dtype=torch.float64)
    args = tuple(v.clone().requires_grad_() for v in x)
    assert torch.autograd.gradcheck(haversine_km, args)
    # At d = 0 the gradient must be finite (no NaN from sqrt(0)).
    p = torch.tensor([12.0, 34.0], dtype=torch.float64, requires_grad=True)
    d = haversine_km(p[0], p[1], p[0].detach(), p[1].detach())
    d.backward()
    assert float(d.detach()) < 1e-9 and torch.isfinite(p.grad).all()


def test_geodesic_known_values():
    d = geodesic_km([0.0, 0.0, 90.0], [0.0, 0.0, 0.0], [0.0, 90.0, -90.0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(d[0], WGS84_A_KM * math.pi / 180, rtol=1e-9)
    np.testing.assert_allclose(d[1], WGS84_MERIDIAN_QUADRANT_KM, rtol=1e-8)
    np.testing.assert_allclose(d[2], 2 * WGS84_MERIDIAN_QUADRANT_KM, rtol=1e-8)
    # Scalars broadcast; the ellipsoid differs from the sphere by < 0.6 %.
    paris_ny = geodesic_km(48.8566, 2.3522, 40.7128, -74.0060)
    sphere = vincenty_sphere_km(48.8566, 2.3522, 40.7128, -74.0060)
    assert paris_ny.shape == (1,) and abs(paris_ny[0] / sphere - 1) < 6e-3


def test_xyz_round_trip():
    ll = torch.tensor([[10.0, 20.0], [-45.0, 179.0], [0.0, -90.0]], dtype=torch.float64)
    xyz = latlon_to_xyz(ll)
    np.testing.assert_allclose(xyz.norm(dim=-1).numpy(), 1.0, atol=1e-15)
    np.testing.assert_allclose(xyz_to_latlon(3.0 * xyz).numpy(), ll.numpy(), atol=1e-12)


def test_spherical_mean_antimeridian_and_poles():
    f64 = dict(dtype=torch.float64)
    c = spherical_mean(torch.tensor([[10.0, 179.0], [10.0, -179.0]], **f64))
    assert abs(abs(float(c[1])) - 180.0) < 1e-9 and abs(float(c[0]) - 10.0) < 0.01
    ring = torch.tensor([[80.0, lo] for lo in (0.0, 90.0, 180.0, -90.0)], **f64)
    assert float(spherical_mean(ring)[0]) == pytest.approx(90.0, abs=1e-9)
    south = torch.tensor([[-89.0, 0.0], [-89.0, 180.0]], **f64)
    assert float(spherical_mean(south)[0]) == pytest.approx(-90.0, abs=1e-9)
    # Weights pull the mean toward the heavier point; batches work.
    w = spherical_mean(torch.tensor([[0.0, 0.0], [0.0, 90.0]], **f64),
                       torch.tensor([3.0, 1.0], **f64))
    assert 0.0 < float(w[1]) < 45.0
    batch = spherical_mean(torch.stack([ring, south.repeat(2, 1)]))
    assert batch.shape == (2, 2)


# -- anchors --------------------------------------------------------------------------
def test_fibonacci_lattice_near_uniform():
    n = 20_000
    pts = fibonacci_lattice(n)
    assert pts.shape == (n, 2) and pts.dtype == torch.float64
    z = np.sin(np.deg2rad(pts[:, 0].numpy()))
    lon = pts[:, 1].numpy()
    assert (np.abs(pts[:, 0].numpy()) < 90).all() and (np.abs(lon) <= 180).all()
    # 10 latitude bands x 8 longitude sectors of equal area each hold n / 80 points.
    counts, _, _ = np.histogram2d(z, lon, bins=[np.linspace(-1, 1, 11), np.linspace(-180, 180, 9)])
    assert np.abs(counts / (n / 80) - 1).max() < 0.03
    # No two points closer than ~half the mean spacing (well spread, not clumped).
    from scipy.spatial import cKDTree

    xyz = latlon_to_xyz(pts).numpy()
    dist, _ = cKDTree(xyz).query(xyz, k=2)
    assert dist[:, 1].min() > 0.5 * math.sqrt(4 * math.pi / n)
    assert fibonacci_lattice(5, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError, match="positive"):
        fibonacci_lattice(0)


def test_uniform_random_uniform_by_area():
    g = torch.Generator().manual_seed(123)
    pts = uniform_random(20_000, generator=g, dtype=torch.float64)
    assert pts.shape == (20_000, 2)
    z = np.sin(np.deg2rad(pts[:, 0].numpy()))
    assert stats.kstest(z, stats.uniform(-1, 2).cdf).pvalue > 1e-3
    assert stats.kstest(pts[:, 1].numpy(), stats.uniform(-180, 360).cdf).pvalue > 1e-3
    # Latitude itself is NOT uniform (that would over-sample the poles).
    assert stats.kstest(pts[:, 0].numpy(), stats.uniform(-90, 180).cdf).pvalue < 1e-6
    again = uniform_random(20_000, generator=torch.Generator().manual_seed(123),
                           dtype=torch.float64)
    assert torch.equal(pts, again)
    assert uniform_random(3).dtype == torch.float32


@pytest.mark.parametrize("center", [(0.0, 0.0), (90.0, 0.0), (-90.0, 45.0), (10.0, 179.9),
                                    (-60.0, -180.0)])
def test_cap_random_within_radius(center):
    g = torch.Generator().manual_seed(7)
    c = torch.tensor([center], dtype=torch.float64)
    radius = 300.0
    pts = cap_random(c, 4000, radius, generator=g)
    assert pts.shape == (1, 4000, 2) and pts.dtype == torch.float64
    p = pts[0]
    d = vincenty_sphere_km(center[0], center[1], p[:, 0].numpy(), p[:, 1].numpy())
    assert d.max() <= radius * (1 + 1e-9)
    # Uniform by area: P(d < r/2) = (1 - cos(a/2)) / (1 - cos a) ~ 1/4.
    a = radius / R
    expected = (1 - math.cos(a / 2)) / (1 - math.cos(a))
    assert abs((d < radius / 2).mean() - expected) < 0.03
    assert np.isfinite(p.numpy()).all() and (np.abs(p[:, 1].numpy()) <= 180).all()


def test_cap_random_batch_dtype():
    c = torch.tensor([[0.0, 0.0], [45.0, 90.0]], dtype=torch.float32)
    pts = cap_random(c, 5, 100.0)
    assert pts.shape == (2, 5, 2) and pts.dtype == torch.float32


def test_regular_grid_anchors_are_cell_centres():
    a = regular_grid_anchors(30.0)
    assert a.shape == (6 * 12, 2)
    assert a[0].tolist() == [75.0, -165.0] and a[-1].tolist() == [-75.0, 165.0]


# -- galleries --------------------------------------------------------------------------
def test_gallery_from_array_tensor_and_lists():
    exp = [[10.0, 20.0], [30.0, -160.0]]
    assert gallery_anchors([[10, 20], [30, 200]]).tolist() == exp
    assert gallery_anchors(np.array([[10, 20], [30, 200]])).tolist() == exp
    got = gallery_anchors(torch.tensor([[10.0, 20.0], [30.0, 200.0]]), dtype=torch.float32)
    assert got.dtype == torch.float32 and got.tolist() == exp


def test_gallery_from_csv_and_dataframe(tmp_path):
    df = pd.DataFrame({"IMG_ID": ["a", "b", "c"], "LAT": [1.0, 2.0, -3.0],
                       "LON": [4.0, 185.0, -6.0]})
    path = tmp_path / "gallery.csv"
    df.to_csv(path, index=False)
    exp = [[1.0, 4.0], [2.0, -175.0], [-3.0, -6.0]]
    assert gallery_anchors(path).tolist() == exp
    assert gallery_anchors(str(path)).tolist() == exp
    assert gallery_anchors(df.rename(columns={"LAT": "lat", "LON": "lon"})).tolist() == exp


def test_gallery_from_geodataframe():
    gdf = gpd.GeoDataFrame({"name": ["x", "y"]},
                           geometry=gpd.points_from_xy([4.0, -6.0], [1.0, -3.0]),
                           crs="EPSG:4326")
    assert gallery_anchors(gdf).tolist() == [[1.0, 4.0], [-3.0, -6.0]]
    assert gallery_anchors(gdf.geometry).tolist() == [[1.0, 4.0], [-3.0, -6.0]]


def test_gallery_errors(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        gallery_anchors(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="empty"):
        gallery_anchors(pd.DataFrame({"LAT": [], "LON": []}))
    with pytest.raises(ValueError, match=r"LAT and LON columns.*\['x', 'y'\]"):
        gallery_anchors(pd.DataFrame({"x": [1.0], "y": [2.0]}))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        gallery_anchors(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="does not exist"):
        gallery_anchors(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=r"lat\[1\] = 100.0"):
        gallery_anchors([[0.0, 0.0], [100.0, 0.0]])
    projected = gpd.GeoDataFrame(geometry=[shapely.Point(1e5, 1e6)], crs="EPSG:3857")
    unprojected = projected.to_crs(4326).geometry
    torch.testing.assert_close(gallery_anchors(projected).double(), torch.tensor(
        [[unprojected.y[0], unprojected.x[0]]], dtype=torch.float64))
    with pytest.raises(ValueError, match="no CRS"):
        gallery_anchors(projected.set_crs(None, allow_override=True))
