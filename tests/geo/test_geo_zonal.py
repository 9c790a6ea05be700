"""Per-polygon probabilities checked against closed forms and geodesic areas."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from geo_helpers import uniform_mass
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from geodiffloc.geo import countries, zonal_probability
from geodiffloc.sphere import EARTH_RADIUS_KM, LatLonGrid

UNIFORM_1DEG = uniform_mass(LatLonGrid.global_(1.0))
SPHERE = Geod(a=EARTH_RADIUS_KM * 1e3, b=EARTH_RADIUS_KM * 1e3)


def box_fraction(w, s, e, n):
    """Exact share of the sphere inside a lon/lat rectangle."""
    return np.deg2rad(e - w) * (np.sin(np.deg2rad(n)) - np.sin(np.deg2rad(s))) / (4 * np.pi)


def sphere_fraction(geom):
    """Share of the sphere inside a polygon by pyproj's geodesic area (densified edges)."""
    area, _ = SPHERE.geometry_area_perimeter(
        shapely.geometry.polygon.orient(shapely.segmentize(geom, 0.05), 1.0))
    return abs(area) / (4 * np.pi * (EARTH_RADIUS_KM * 1e3) ** 2)


def gdf(*geoms, crs="EPSG:4326", **cols):
    return gpd.GeoDataFrame(cols, geometry=list(geoms), crs=crs)


@settings(max_examples=30, deadline=None)
@given(w=st.floats(-179.0, 170.0), dw=st.floats(0.3, 9.0),
       s=st.floats(-89.0, 80.0), ds=st.floats(0.3, 9.0))
def test_uniform_field_box_matches_closed_form(w, dw, s, ds):
    e, n = min(w + dw, 180.0), min(s + ds, 90.0)
    got = zonal_probability(UNIFORM_1DEG, gdf(shapely.box(w, s, e, n)))
    want = box_fraction(w, s, e, n)
    # Coverage fractions are exact in lon/lat; a cut cell's spherical share differs from
    # its lon/lat share only through cos(lat) varying inside the cell (edges along
    # parallels), at most by 1 - cos(far edge) / cos(near edge) of the cell.
    n_cut = 2 * (e - w) + 4
    lat_far = min(90.0, np.ceil(max(abs(s), abs(n))))
    drift = 1.0 - np.cos(np.deg2rad(lat_far)) / np.cos(np.deg2rad(lat_far - 1.0))
    lat_min = 0.0 if s < 0 < n else min(abs(s), abs(n))
    cell = box_fraction(0, lat_min, 1, lat_min + 1)
    assert abs(got["prob"].iloc[0] - want) <= n_cut * cell * drift + 1e-12


def test_lat_band_off_grid_edges(make_uniform):
    field = make_uniform(LatLonGrid.global_(0.5))
    band = shapely.box(-180, 12.3, 180, 47.8)
    got = zonal_probability(field, gdf(band))["prob"].iloc[0]
    assert got == pytest.approx(box_fraction(-180, 12.3, 180, 47.8), rel=1e-4)


def test_polygon_with_hole_and_multipolygon(make_uniform):
    field = make_uniform(LatLonGrid.global_(1.0))
    outer = shapely.segmentize(shapely.Polygon([(-30, -20), (40, -25), (35, 30), (-25, 35)]), 0.2)
    hole = shapely.segmentize(shapely.Polygon([(0, 0), (10, 2), (5, 12)]), 0.2)
    holed = shapely.Polygon(outer.exterior, [hole.exterior])
    other = shapely.segmentize(shapely.box(100.2, 10.7, 120.9, 20.1), 0.2)
    multi = shapely.MultiPolygon([holed, other])
    out = zonal_probability(field, gdf(outer, holed, hole, multi))
    p = out["prob"].to_numpy()
    assert p[1] == pytest.approx(p[0] - p[2], rel=1e-3)
    assert p[1] == pytest.approx(sphere_fraction(outer) - sphere_fraction(hole), rel=5e-3)
    assert p[3] == pytest.approx(p[1] + box_fraction(100.2, 10.7, 120.9, 20.1), rel=2e-3)


def test_any_crs_is_reprojected_and_input_kept(make_uniform):
    field = make_uniform(LatLonGrid.global_(0.5))
    france_ish = shapely.segmentize(shapely.box(-2.0, 43.0, 6.0, 50.0), 0.05)
    laea = gpd.GeoSeries([france_ish], crs="EPSG:4326").to_crs("EPSG:3035")
    polys = gpd.GeoDataFrame({"name": ["box"]}, geometry=laea)
    out = zonal_probability(field, polys)
    assert out.crs == polys.crs and out.geometry.equals(polys.geometry)  # a copy, untouched
    assert "prob" not in polys.columns
    assert out["prob"].iloc[0] == pytest.approx(box_fraction(-2, 43, 6, 50), rel=5e-3)


def test_antimeridian_polygon_from_a_pacific_crs(make_uniform):
    field = make_uniform(LatLonGrid.global_(0.5))
    # a box from 175E to 175W, given in a Pacific-centred Mercator (EPSG:3832)
    lonlat = shapely.segmentize(shapely.box(175.0, -20.0, 185.0, -10.0), 0.1)
    pacific = gpd.GeoSeries([lonlat], crs="+proj=longlat +lon_wrap=180").to_crs("EPSG:3832")
    got = zonal_probability(field, gpd.GeoDataFrame(geometry=pacific))["prob"].iloc[0]
    want = box_fraction(175, -20, 185, -10)
    assert got == pytest.approx(want, rel=5e-3)
    # the same box written with longitudes past 180
    past = zonal_probability(field, gdf(shapely.box(175.0, -20.0, 185.0, -10.0)))["prob"]
    assert past.iloc[0] == pytest.approx(want, rel=1e-3)


def test_polar_cap_from_polar_stereographic(make_uniform):
    field = make_uniform(LatLonGrid.global_(1.0))
    # a circle of 1000 km around the south pole in Antarctic polar stereographic
    cap = gpd.GeoSeries([shapely.Point(0, 0).buffer(1_000_000, 256)], crs="EPSG:3031")
    got = zonal_probability(field, gpd.GeoDataFrame(geometry=cap))["prob"].iloc[0]
    # closed form on the sphere: the ring is near lat -81, its exact latitude varies
    # slightly with the projection's scale, so compare with the ring's mean latitude
    ring_lat = np.mean(cap.to_crs("EPSG:4326").geometry.iloc[0].exterior.xy[1])
    want = (1 - np.sin(np.deg2rad(-ring_lat))) / 2
    assert got == pytest.approx(want, rel=0.02)
    assert got < 0.01  # not the rest of the globe


def test_point_field_lands_in_its_country_on_natural_earth(make_vmf):
    world = countries("10m")
    field = make_vmf(LatLonGrid.global_(0.5), [(48.86, 2.35), (40.42, -3.70)], 40.0)
    out = zonal_probability(field, world)
    name = out.set_index("name")
    assert name.loc["France", "prob_0"] > 0.999  # Paris
    assert name.loc["Spain", "prob_1"] > 0.999  # Madrid
    # all the mass is on land here: countries sum to 1, ocean ~ 0
    for col in ("prob_0", "prob_1"):
        assert out[col].sum() == pytest.approx(1.0, abs=1e-3)


def test_fiji_across_the_antimeridian_on_a_regional_grid(make_vmf):
    world = countries("10m")
    fiji = world[world["name"] == "Fiji"].geometry.iloc[0]
    east = [p for p in fiji.geoms if p.bounds[2] < 0]  # Fiji's islands east of 180
    assert east, "Natural Earth splits Fiji at the antimeridian"
    big = max(east, key=lambda p: p.area).representative_point()
    grid = LatLonGrid.from_bbox(0.05, (175.0, -22.0, -175.0, -14.0))
    field = make_vmf(grid, [(big.y, big.x)], 3.0)
    out = zonal_probability(field, world).sort_values("prob", ascending=False)
    assert out["name"].iloc[0] == "Fiji"
    assert out["prob"].iloc[0] > 0.5 and out["prob"].iloc[1] < 1e-6


def test_countries_plus_ocean_partition_the_sphere(make_uniform):
    world = countries("lowres")
    field = make_uniform(LatLonGrid.global_(1.0))
    land = shapely.unary_union(world.geometry.values)
    ocean = shapely.box(-180, -90, 180, 90).difference(land)
    out = zonal_probability(field, world)
    ocean_p = zonal_probability(field, gdf(ocean))["prob"].iloc[0]
    assert out["prob"].sum() + ocean_p == pytest.approx(1.0, abs=1e-3)
    ref = np.array([sphere_fraction(g) for g in world.geometry])
    np.testing.assert_allclose(out["prob"], ref, atol=2e-5)
    assert out["prob"].sum() == pytest.approx(ref.sum(), rel=2e-3)


def test_zonal_errors(make_vmf):
    field = make_vmf(LatLonGrid.global_(10.0), [(0.0, 0.0)], 2000.0)
    polys = gdf(shapely.box(0, 0, 10, 10))
    with pytest.raises(ValueError, match="no CRS"):
        zonal_probability(field, gpd.GeoDataFrame(geometry=[shapely.box(0, 0, 1, 1)]))
    with pytest.raises(ValueError, match="already exist"):
        zonal_probability(field, polys.assign(prob=1.0))
    with pytest.raises(ValueError, match="GeoDataFrame"):
        zonal_probability(field, [shapely.box(0, 0, 1, 1)])
    g = LatLonGrid.global_(10.0)
    with pytest.raises(ValueError, match="probabilit"):
        zonal_probability(g.to_dataarray(np.zeros(g.shape), kind="logit"), polys)
    empty = zonal_probability(field, gdf(shapely.Polygon(), None))
    assert empty["prob"].tolist() == [0.0, 0.0]


def test_shdd_field_works_end_to_end(tmp_path):
    import torch

    from geodiffloc import shdd
    from geodiffloc.geo import credible_regions, read_geotiff, to_geotiff

    model = shdd.SHDD(24)
    coeffs = model.encode(lat=torch.tensor([48.86]), lon=torch.tensor([2.35]))
    field = read_geotiff(to_geotiff(model.field(coeffs, resolution=2.0), tmp_path / "f.tif"))
    z = zonal_probability(field, countries("lowres")).set_index("name")
    assert z["prob_0"].idxmax() == "France"
    r = credible_regions(field, levels=(0.5,))
    assert r.geometry.iloc[0].contains(shapely.Point(2.35, 48.86))


def test_columns_are_named_by_query_and_long_layout_is_tidy(make_vmf):
    g = LatLonGrid.global_(1.0)
    two = make_vmf(g, [(45.0, 10.0), (-30.0, -60.0)], 300.0)
    field = two.rename(sample="query").assign_coords(
        query=np.array(["alpine lake", "pampas"], dtype=object))
    boxes = gpd.GeoDataFrame({"zone": ["north", "south"]},
                             geometry=[shapely.box(-180, 0, 180, 90),
                                       shapely.box(-180, -90, 180, 0)], crs="EPSG:4326")
    wide = zonal_probability(field, boxes)
    assert [c for c in wide.columns if c.startswith("prob")] == ["prob_alpine lake",
                                                                 "prob_pampas"]
    assert wide["prob_alpine lake"].iloc[0] > 0.99 and wide["prob_pampas"].iloc[1] > 0.99
    long = zonal_probability(field, boxes, layout="long")
    assert len(long) == 4 and long.crs == boxes.crs
    assert long["query"].tolist() == ["alpine lake", "alpine lake", "pampas", "pampas"]
    assert long["query_index"].tolist() == [0, 0, 1, 1]
    pivot = long.pivot(index="zone", columns="query", values="prob")
    np.testing.assert_allclose(pivot.loc[["north", "south"], "alpine lake"],
                               wide["prob_alpine lake"])
    # integer sample coordinates keep the old names
    assert "prob_1" in zonal_probability(two, boxes).columns
    dup = field.assign_coords(query=np.array(["same", "same"], dtype=object))
    with pytest.raises(ValueError, match="layout='long'"):
        zonal_probability(dup, boxes)
    with pytest.raises(ValueError, match="layout"):
        zonal_probability(field, boxes, layout="tall")  # type: ignore[arg-type]


def test_islands_smaller_than_a_cell_get_their_area(make_uniform):
    """Exact coverage: a 0.1° island in a 1° cell (sampling got these wrong by ~100%)."""
    field = make_uniform(LatLonGrid.global_(1.0))
    islands = [shapely.box(w, s, w + 0.1, s + 0.1) for w, s in
               ((3.43, 10.21), (-120.07, -40.55), (150.91, 61.33))]
    got = zonal_probability(field, gdf(*islands))["prob"].to_numpy()
    want = np.array([box_fraction(i.bounds[0], i.bounds[1], i.bounds[2], i.bounds[3])
                     for i in islands])
    # exact lon/lat coverage; what is left is cos(lat) varying inside the 1° cell
    rtol = np.tan(np.deg2rad([abs(i.bounds[3]) for i in islands])) * np.deg2rad(1.0)
    assert np.all(np.abs(got - want) <= rtol * want)


def test_supersample_is_deprecated(make_uniform):
    field = make_uniform(LatLonGrid.global_(5.0))
    with pytest.warns(DeprecationWarning, match="supersample"):
        zonal_probability(field, gdf(shapely.box(0, 0, 10, 10)), supersample=8)


def test_coverage_is_remembered_in_memory_and_on_disk(make_vmf, tmp_path, monkeypatch, caplog):
    import geodiffloc.geo.zonal as zonal

    monkeypatch.setenv("GEODIFFLOC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(zonal, "_DISK_MIN_SECONDS", 0.0)
    monkeypatch.setattr(zonal, "_MEMORY", {})
    world = countries("lowres")
    field = make_vmf(LatLonGrid.global_(2.0), [(48.86, 2.35)], 200.0)
    first = zonal_probability(field, world)["prob"].to_numpy()
    (cached,) = (tmp_path / "coverage").glob("*.npz")

    def no_recompute(*args, **kwargs):
        raise AssertionError("the coverage was recomputed")

    computed = zonal._coverage_matrix
    monkeypatch.setattr(zonal, "_coverage_matrix", no_recompute)
    assert np.array_equal(zonal_probability(field, world)["prob"].to_numpy(), first)  # memory
    monkeypatch.setattr(zonal, "_MEMORY", {})
    assert np.array_equal(zonal_probability(field, world)["prob"].to_numpy(), first)  # disk
    # other polygons, or another grid, are another key
    moved = world.set_geometry(world.geometry.translate(1.0, 0.0))
    with pytest.raises(AssertionError, match="recomputed"):
        zonal_probability(field, moved)
    # a damaged file is recomputed (with a warning), not trusted
    cached.write_bytes(b"not an npz")
    monkeypatch.setattr(zonal, "_MEMORY", {})
    monkeypatch.setattr(zonal, "_coverage_matrix", computed)
    with caplog.at_level("WARNING", logger="geodiffloc.geo.zonal"):
        again = zonal_probability(field, world)["prob"].to_numpy()
    assert np.array_equal(again, first)
    assert "unreadable" in caplog.text


def test_coverage_key_is_remembered_for_the_same_geometry_objects(monkeypatch):
    import shapely as shp

    import geodiffloc.geo.zonal as zonal

    monkeypatch.setattr(zonal, "_KEYS", {})
    grid = LatLonGrid.global_(2.0)
    geoms = list(countries("lowres").geometry)
    calls = []
    real = shp.to_wkb
    monkeypatch.setattr(shp, "to_wkb", lambda g, **k: calls.append(1) or real(g, **k))
    key = zonal._coverage_key(geoms, grid)
    assert len(calls) == len(geoms)
    assert zonal._coverage_key(list(geoms), grid) == key  # the same objects: no WKB again
    assert len(calls) == len(geoms)
    # equal geometries in new objects: hashed again, same key; other ones: another key
    copies = [shp.from_wkb(real(g)) for g in geoms]
    assert zonal._coverage_key(copies, grid) == key and len(calls) == 2 * len(geoms)
    moved = [shp.transform(g, lambda xy: xy + 1.0) for g in geoms]
    assert zonal._coverage_key(moved, grid) != key
    assert zonal._coverage_key(geoms, LatLonGrid.global_(1.0)) != key
