"""One reprojection rule, applied the same way by every function that takes geometries."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from pyproj import Transformer

from geodiffloc.sphere import as_latlon, to_epsg4326

LON = np.array([2.35, -70.6, 151.2])
LAT = np.array([48.85, -33.4, -33.9])


def _points(crs: str | None) -> gpd.GeoDataFrame:
    g = gpd.GeoDataFrame({"img": ["a.jpg", "b.jpg", "c.jpg"]},
                         geometry=gpd.points_from_xy(LON, LAT), crs="EPSG:4326")
    if crs is None:
        return g.set_crs(None, allow_override=True)
    return g.to_crs(crs)


def test_epsg4326_passes_through_unchanged():
    g = _points("EPSG:4326")
    assert to_epsg4326(g) is g


@pytest.mark.parametrize("crs", ["EPSG:3857", "EPSG:32631", "EPSG:4269", "EPSG:2154"])
def test_any_crs_is_reprojected_like_pyproj(crs):
    g = _points(crs)
    out = to_epsg4326(g)
    assert out.crs.to_epsg() == 4326
    # independent reference: pyproj straight from the source CRS
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
        g.geometry.x.to_numpy(), g.geometry.y.to_numpy())
    np.testing.assert_allclose(out.geometry.x, lon, atol=1e-9)
    np.testing.assert_allclose(out.geometry.y, lat, atol=1e-9)
    np.testing.assert_allclose(out.geometry.y, LAT, atol=1e-6)


def test_missing_crs_and_wrong_types_are_refused():
    with pytest.raises(ValueError, match=r"the polygons has no CRS.*set_crs\('EPSG:4326'\)"):
        to_epsg4326(_points(None), what="the polygons")
    with pytest.raises(ValueError, match="GeoDataFrame or GeoSeries"):
        to_epsg4326(np.zeros((2, 2)))


def test_plain_degrees_stay_degrees_and_projected_numbers_fail():
    # no CRS can be attached to numbers or bare shapely points: they are degrees
    lat, lon = as_latlon(points=[shapely.Point(2.35, 48.85)])
    assert (lat[0], lon[0]) == (48.85, 2.35)
    x, y = Transformer.from_crs(4326, 3857, always_xy=True).transform(2.35, 48.85)
    with pytest.raises(ValueError, match="outside"):
        as_latlon(lat=[y], lon=[x])


# -- every call site follows the same rule ----------------------------------------------
def _as_latlon(g):
    lat, lon = as_latlon(points=g)
    return np.stack([lat, lon], 1)


def _dataset(g):
    from geodiffloc.data import GeotaggedDataset

    return GeotaggedDataset.from_geodataframe(g, "img", check="none").latlon.numpy()


def _join_within(g):
    from geodiffloc.geo import join_within

    boxes = gpd.GeoDataFrame({"box": [0, 1, 2]}, geometry=[
        shapely.box(lo - 1, la - 1, lo + 1, la + 1) for lo, la in zip(LON, LAT, strict=True)
    ], crs="EPSG:4326")
    out = join_within(g, boxes)
    return np.stack([out.geometry.y, out.geometry.x, out["box"]], 1).astype(float)


def _join_within_targets(g):
    from geodiffloc.geo import join_within

    pts = _points("EPSG:4326")
    boxes = g.copy()
    boxes["geometry"] = g.geometry.buffer(1.0 if g.crs is None or g.crs.is_geographic
                                          else 1000.0)
    boxes = boxes.rename(columns={"img": "target"})[["target", "geometry"]]
    return join_within(pts, boxes)["target"].to_numpy()


def _zonal(g):
    from geodiffloc.geo import zonal_probability
    from geodiffloc.sphere import LatLonGrid

    grid = LatLonGrid.global_(5.0)
    field = grid.to_dataarray(np.broadcast_to(grid.cell_area_sr()[:, None] / (4 * np.pi),
                                              grid.shape), kind="mass")
    boxes = g.copy()
    boxes["geometry"] = g.geometry.buffer(200_000.0 if g.crs and not g.crs.is_geographic
                                          else 2.0)
    return zonal_probability(field, boxes)["prob"].to_numpy()


def _metrics_table(g):
    from geodiffloc.metrics.report import _coordinates

    return np.stack(_coordinates(g, "points.gpkg"), 1)


SITES = [_as_latlon, _dataset, _join_within, _metrics_table]


@pytest.mark.parametrize("site", SITES, ids=lambda f: f.__name__.strip("_"))
def test_each_site_reprojects_a_projected_crs(site):
    np.testing.assert_allclose(site(_points("EPSG:3857")), site(_points("EPSG:4326")),
                               atol=1e-6)


@pytest.mark.parametrize("site", [*SITES, _join_within_targets, _zonal],
                         ids=lambda f: f.__name__.strip("_"))
def test_each_site_refuses_a_missing_crs(site):
    with pytest.raises(ValueError, match="no CRS"):
        site(_points(None))


def test_zonal_and_join_targets_accept_projected_polygons():
    # polygons drawn in metres (EPSG:3857) cover the same points as before
    assert list(_join_within_targets(_points("EPSG:3857"))) == ["a.jpg", "b.jpg", "c.jpg"]
    assert list(_join_within_targets(_points("EPSG:4326"))) == ["a.jpg", "b.jpg", "c.jpg"]
    prob = _zonal(_points("EPSG:3857"))
    assert prob.shape == (3,) and (prob > 0).all()
