"""Tests for LatLonGrid: geometry, cell areas, the DataArray/GIS contract, round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine

from geodiffloc.sphere import FIELD_KINDS, LatLonGrid

R = 6371.0088


def test_global_grid_geometry():
    g = LatLonGrid.global_(1.0)
    assert g.shape == (180, 360)
    assert g.lat[0] == 89.5 and g.lat[-1] == -89.5 and (np.diff(g.lat) < 0).all()
    assert g.lon[0] == -179.5 and g.lon[-1] == 179.5 and (np.diff(g.lon) > 0).all()
    assert g.transform == Affine(1.0, 0.0, -180.0, 0.0, -1.0, 90.0)
    assert not g.crosses_antimeridian
    ll = g.latlon()
    assert ll.shape == (180 * 360, 2)
    assert ll[0].tolist() == [89.5, -179.5] and ll[1].tolist() == [89.5, -178.5]  # row-major


@pytest.mark.parametrize("res", [5.0, 1.0, 0.25])
def test_cell_areas_sum_to_sphere(res):
    g = LatLonGrid.global_(res)
    total_sr = g.cell_area_sr().sum() * g.shape[1]
    assert total_sr == pytest.approx(4 * math.pi, rel=1e-12)
    assert g.cell_area_km2().sum() * g.shape[1] == pytest.approx(4 * math.pi * R**2, rel=1e-12)
    # Equator rows are the largest, polar rows the smallest (area ~ cos(lat)).
    a = g.cell_area_sr()
    assert a.argmax() in (g.shape[0] // 2 - 1, g.shape[0] // 2) and a[0] == a.min()


def test_bbox_grid():
    g = LatLonGrid.from_bbox(0.5, (-10.0, 40.0, 20.0, 60.0))
    assert g.shape == (40, 60)
    assert g.lat[0] == 59.75 and g.lon[0] == -9.75 and g.lon[-1] == 19.75
    assert g.transform == Affine(0.5, 0.0, -10.0, 0.0, -0.5, 60.0)
    expected = math.radians(30.0) * (math.sin(math.radians(60)) - math.sin(math.radians(40)))
    assert g.cell_area_sr().sum() * g.shape[1] == pytest.approx(expected, rel=1e-12)


def test_bbox_partial_cells_kept_whole():
    g = LatLonGrid.from_bbox(1.0, (0.0, 0.0, 2.5, 1.5))
    assert g.shape == (2, 3)


def test_antimeridian_bbox():
    g = LatLonGrid.from_bbox(1.0, (170.0, -10.0, -170.0, 10.0))
    assert g.crosses_antimeridian
    assert g.shape == (20, 20)
    # Longitudes continue past 180 so the coordinate stays monotonic and affine.
    assert g.lon[0] == 170.5 and g.lon[-1] == 189.5 and (np.diff(g.lon) == 1.0).all()
    assert g.transform == Affine(1.0, 0.0, 170.0, 0.0, -1.0, 10.0)
    lon = g.latlon()[:, 1].numpy()
    assert lon.max() <= 180.0 and lon.min() >= -180.0 and (lon < 0).any()
    expected = math.radians(20.0) * 2 * math.sin(math.radians(10.0))
    assert g.cell_area_sr().sum() * g.shape[1] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: LatLonGrid.global_(0.7), r"whole number.*Try 1, 0.5"),
        (lambda: LatLonGrid(0.0), "resolution must be in"),
        (lambda: LatLonGrid(-1.0), "resolution must be in"),
        (lambda: LatLonGrid(float("nan")), "resolution must be in"),
        (lambda: LatLonGrid.from_bbox(1.0, (0, 10, 5, 10)), "south < north"),
        (lambda: LatLonGrid.from_bbox(1.0, (0, -95, 5, 10)), "south < north"),
        (lambda: LatLonGrid.from_bbox(1.0, (190, 0, 200, 10)), "west must be in"),
        (lambda: LatLonGrid.from_bbox(1.0, (0, 0, 181, 10)), "east must be in"),
    ],
)
def test_grid_errors(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_dataarray_contract():
    g = LatLonGrid.global_(2.0)
    values = np.random.default_rng(0).random(g.shape)
    da = g.to_dataarray(values, kind="mass", attrs={"model": "test", "L": 15, "seed": None,
                                                     "ok": True})
    assert isinstance(da, xr.DataArray) and da.dims == ("lat", "lon")
    np.testing.assert_array_equal(da.values, values)
    assert da["lat"].attrs["standard_name"] == "latitude"
    assert da["lat"].attrs["units"] == "degrees_north" and da["lat"].attrs["axis"] == "Y"
    assert da["lon"].attrs["standard_name"] == "longitude"
    assert da["lon"].attrs["units"] == "degrees_east" and da["lon"].attrs["axis"] == "X"
    assert da.rio.crs.to_epsg() == 4326
    assert da.rio.x_dim == "lon" and da.rio.y_dim == "lat"
    assert da.rio.transform() == Affine(2.0, 0.0, -180.0, 0.0, -2.0, 90.0)
    assert da.rio.transform(recalc=True).almost_equals(Affine(2.0, 0.0, -180.0, 0.0, -2.0, 90.0))
    assert da.attrs["units"] == "1" and da.attrs["long_name"] == FIELD_KINDS["mass"]["long_name"]
    assert da.attrs["model"] == "test" and da.attrs["L"] == 15
    assert da.attrs["seed"] == "None" and da.attrs["ok"] == 1  # netCDF-safe attributes
    assert da.rio.bounds() == pytest.approx((-180.0, -90.0, 180.0, 90.0))


def test_dataarray_leading_dim_and_kinds():
    g = LatLonGrid.from_bbox(1.0, (0.0, 0.0, 4.0, 3.0))
    da = g.to_dataarray(np.zeros((2, 3, 4)), kind="density", leading_dim="query",
                        leading_coords=["a", "b"])
    assert da.dims == ("query", "lat", "lon") and da["query"].values.tolist() == ["a", "b"]
    assert da.attrs["units"] == "km-2"
    assert da.rio.transform() == Affine(1.0, 0.0, 0.0, 0.0, -1.0, 3.0)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3, 4\)"):
        g.to_dataarray(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3, 4\)"):
        g.to_dataarray(np.zeros((1, 1, 3, 4)))
    with pytest.raises(ValueError, match="kind must be one of"):
        g.to_dataarray(np.zeros((3, 4)), kind="probability")


def test_geotiff_round_trip(tmp_path):
    g = LatLonGrid.from_bbox(0.5, (170.0, -5.0, -175.0, 5.0))
    values = np.arange(np.prod(g.shape), dtype=np.float32).reshape(g.shape)
    path = tmp_path / "f.tif"
    g.to_dataarray(values, kind="logit").rio.to_raster(path)
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 4326
        assert src.transform.almost_equals(g.transform)
        np.testing.assert_array_equal(src.read(1), values)


@pytest.mark.parametrize(
    "grid",
    [LatLonGrid.global_(1.0), LatLonGrid.global_(0.25),
     LatLonGrid.from_bbox(0.5, (-10.0, 40.0, 20.0, 60.0)),
     LatLonGrid.from_bbox(1.0, (170.0, -10.0, -170.0, 10.0)),
     LatLonGrid.from_bbox(0.1, (-75.3, -12.2, -70.1, -8.0))],
    ids=["global1", "global025", "bbox", "antimeridian", "fine"],
)
def test_from_dataarray_round_trip(grid):
    da = grid.to_dataarray(np.zeros(grid.shape))
    back = LatLonGrid.from_dataarray(da)
    assert back.shape == grid.shape
    assert back.resolution == pytest.approx(grid.resolution, rel=1e-9)
    for edge in ("west", "south", "east", "north"):
        assert getattr(back, edge) == pytest.approx(getattr(grid, edge), abs=1e-6)
    np.testing.assert_allclose(back.lat, grid.lat, atol=1e-9)
    np.testing.assert_allclose(back.lon, grid.lon, atol=1e-9)


def test_from_dataarray_errors():
    g = LatLonGrid.global_(1.0)
    da = g.to_dataarray(np.zeros(g.shape))
    with pytest.raises(ValueError, match="at least 2 x 2"):
        LatLonGrid.from_dataarray(da.isel(lat=[0], lon=[0]))
    with pytest.raises(ValueError, match="not a regular EPSG:4326 grid"):
        LatLonGrid.from_dataarray(da.isel(lon=[0, 1, 3]))
    with pytest.raises(ValueError, match="not a regular EPSG:4326 grid"):
        LatLonGrid.from_dataarray(da.isel(lat=slice(None, None, -1)))  # lat ascending


def test_a_sliver_bbox_still_covers_one_cell():
    # found by the reliability fuzzing: a box 5e-51 degrees tall gave a (0, n) grid
    from geodiffloc.sphere import LatLonGrid

    g = LatLonGrid.from_bbox(10.0, (0.0, -4.6e-51, 1.0, 0.0))
    assert g.shape == (1, 1)
    assert g.lat[0] == pytest.approx(-5.0) and g.lon[0] == pytest.approx(5.0)


def test_fields_hold_no_reference_cycle_and_keep_their_crs():
    """A dropped field is freed at once (refcount), not when the cyclic GC gets round to it.

    xarray caches accessors on the array and rioxarray's points back at it; fields built
    in a loop (one per query) used to pile up until the GC ran: 100 queries at 0.5
    degrees peaked at 4.3 GB. The cached accessor is dropped; a new one still finds the
    CRS, transform and spatial dims.
    """
    import gc
    import weakref

    import numpy as np

    from geodiffloc.sphere import LatLonGrid

    g = LatLonGrid.global_(10.0)
    gc.collect()
    gc.disable()
    try:
        da = g.to_dataarray(np.full(g.shape, 1 / 648), kind="mass")
        ref = weakref.ref(da)
        del da
        assert ref() is None
    finally:
        gc.enable()
    da = g.to_dataarray(np.full(g.shape, 1 / 648), kind="mass")
    assert (da.rio.x_dim, da.rio.y_dim) == ("lon", "lat")
    assert da.rio.crs.to_epsg() == 4326
    assert tuple(da.rio.transform())[:6] == tuple(g.transform)[:6]
