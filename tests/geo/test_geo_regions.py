"""Highest-density credible regions: containment, nesting, antimeridian, poles, areas."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from geodiffloc.geo import credible_regions
from geodiffloc.sphere import EARTH_RADIUS_KM, LatLonGrid


def vmf_cap_area_km2(level, width_km):
    """Area of the vMF credible cap holding `level`, in closed form on the sphere."""
    kappa = (EARTH_RADIUS_KM / width_km) ** 2
    one_minus_cos = -np.log1p(-level * (1 - np.exp(-2 * kappa))) / kappa
    return 2 * np.pi * EARTH_RADIUS_KM**2 * one_minus_cos


def test_one_point_field_regions_contain_the_point_and_nest(make_vmf):
    paris = (48.86, 2.35)
    field = make_vmf(LatLonGrid.global_(0.5), [paris], 300.0)
    regions = credible_regions(field, levels=(0.5, 0.9, 0.95))
    assert regions.crs.to_epsg() == 4326
    assert regions["level"].tolist() == [0.5, 0.9, 0.95]
    pt = shapely.Point(paris[1], paris[0])
    assert all(g.contains(pt) for g in regions.geometry)
    a = regions["area_km2"].to_numpy()
    assert a[0] < a[1] < a[2]
    assert regions.geometry.iloc[1].contains(regions.geometry.iloc[0])
    assert (regions["mass"] >= regions["level"] - 1e-9).all()
    # the HPD region of a vMF bump is a cap whose area has a closed form
    for mass, area in zip(regions["mass"], a):
        assert area == pytest.approx(vmf_cap_area_km2(mass, 300.0), rel=0.05)


def test_area_is_geodesic_not_degrees(make_vmf):
    grid = LatLonGrid.global_(1.0)
    field = make_vmf(grid, [(70.0, 40.0), (0.0, 40.0)], 400.0)
    r = credible_regions(field, levels=(0.9,))
    # same probability shape: the geodesic areas match although at 70N the region spans
    # ~3x more degrees of longitude
    assert r["area_km2"].iloc[0] == pytest.approx(r["area_km2"].iloc[1], rel=0.08)
    deg_w = [g.bounds[2] - g.bounds[0] for g in r.geometry]
    assert deg_w[0] > 2 * deg_w[1]
    # and the area matches the cells' own spherical areas (sphere vs WGS84: < 1 %)
    for q in range(2):
        m = field.values[q]
        dens = m / grid.cell_area_km2()[:, None]
        order = np.argsort(-dens, axis=None)
        k = np.searchsorted(np.cumsum(m.ravel()[order]), 0.9) + 1
        cells_km2 = np.broadcast_to(grid.cell_area_km2()[:, None], m.shape).ravel()[order[:k]]
        assert r["n_cells"].iloc[q] == k
        assert r["area_km2"].iloc[q] == pytest.approx(cells_km2.sum(), rel=0.01)


def test_region_across_the_antimeridian_is_split_not_spread(make_vmf):
    field = make_vmf(LatLonGrid.global_(1.0), [(-10.0, 180.0)], 300.0)
    geom = credible_regions(field, levels=(0.9,)).geometry.iloc[0]
    parts = list(geom.geoms)
    assert len(parts) == 2
    for p in parts:
        assert p.bounds[2] - p.bounds[0] < 10  # each part is small, none wraps the globe
    assert geom.contains(shapely.Point(179.5, -10.0)) and geom.contains(shapely.Point(-179.5, -10))
    assert not geom.contains(shapely.Point(0.0, -10.0))


def test_regional_grid_past_180_is_folded_back(make_vmf):
    grid = LatLonGrid.from_bbox(0.25, (170.0, -20.0, -170.0, 0.0))
    field = make_vmf(grid, [(-10.0, 179.0)], 150.0)
    geom = credible_regions(field, levels=(0.95,)).geometry.iloc[0]
    assert geom.bounds[0] >= -180.0 and geom.bounds[2] <= 180.0
    assert geom.contains(shapely.Point(179.0, -10.0))
    assert geom.contains(shapely.Point(-179.9, -10.0))


def test_polar_region_is_a_cap_closed_at_the_pole(make_vmf):
    field = make_vmf(LatLonGrid.global_(1.0), [(90.0, 0.0)], 500.0)
    r = credible_regions(field, levels=(0.5, 0.9))
    for mass, geom, area in zip(r["mass"], r.geometry, r["area_km2"]):
        assert geom.contains(shapely.Point(123.0, 89.9))
        assert geom.bounds[3] == 90.0 and geom.bounds[0] == -180.0 and geom.bounds[2] == 180.0
        # the region is whole rows of cells (a cap): its area is the cap holding its mass
        assert area == pytest.approx(vmf_cap_area_km2(mass, 500.0), rel=0.03)


def test_credible_region_errors():
    g = LatLonGrid.global_(10.0)
    field = g.to_dataarray(np.full(g.shape, 1 / 648), kind="mass")
    with pytest.raises(ValueError, match="levels"):
        credible_regions(field, levels=(0.5, 1.5))
    with pytest.raises(ValueError, match="probabilit"):
        credible_regions(g.to_dataarray(np.ones(g.shape), kind="similarity"))
    with pytest.raises(ValueError, match="negative"):
        credible_regions(g.to_dataarray(-np.ones(g.shape), kind="mass"))
    with pytest.raises(ValueError, match="no probability mass"):
        credible_regions(g.to_dataarray(np.zeros(g.shape), kind="mass"))


def test_field_on_0_360_longitudes_gives_the_same_regions(make_vmf):
    """Climate/GRIB rasters run 0..360: the regions (across 180) are those of -180..180."""
    field = make_vmf(LatLonGrid.global_(2.0), [(-10.0, 179.0)], 400.0)
    shifted = field.assign_coords(lon=field.lon.values % 360).sortby("lon")
    assert shifted.lon.values[0] == 1.0 and shifted.lon.values[-1] == 359.0
    a = credible_regions(field, levels=(0.5, 0.9))
    b = credible_regions(shifted, levels=(0.5, 0.9))
    np.testing.assert_allclose(b["mass"], a["mass"], rtol=1e-12)
    np.testing.assert_allclose(b["area_km2"], a["area_km2"], rtol=1e-9)
    assert b["n_cells"].tolist() == a["n_cells"].tolist()
    for ga, gb in zip(a.geometry, b.geometry):
        assert ga.symmetric_difference(gb).area < 1e-9
        assert gb.contains(shapely.Point(179.0, -10.0)) and gb.bounds[2] <= 180.0


def test_regional_raster_across_the_antimeridian_via_rioxarray(make_vmf, tmp_path):
    """A GeoTIFF past +180 read by rioxarray: regions fold back and keep their mass."""
    import rioxarray

    from geodiffloc.geo import to_geotiff

    grid = LatLonGrid.from_bbox(1.0, (160.0, -30.0, -160.0, 10.0))
    field = make_vmf(grid, [(-10.0, 179.5)], 300.0)
    to_geotiff(field, tmp_path / "am.tif", kind="mass")
    raster = rioxarray.open_rasterio(tmp_path / "am.tif")
    assert float(raster.x.max()) > 180.0  # the file really runs past the antimeridian
    direct = credible_regions(field, levels=(0.9,))
    read = raster.geoloc.credible_regions((0.9,))
    assert read["n_cells"].iloc[0] == direct["n_cells"].iloc[0]
    assert read["mass"].iloc[0] == pytest.approx(direct["mass"].iloc[0], rel=1e-5)
    geom = read.geometry.iloc[0]
    assert geom.bounds[0] >= -180.0 and geom.bounds[2] <= 180.0
    assert geom.contains(shapely.Point(179.5, -10.0)) and geom.contains(shapely.Point(-179.5, -10))
