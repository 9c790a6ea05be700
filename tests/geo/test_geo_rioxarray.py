"""``da.geoloc`` on what rioxarray returns: ``(band, y, x)``, other CRSs, nodata/scale."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely

from geodiffloc.geo import read_geotiff, to_geotiff, to_mass, zonal_probability
from geodiffloc.sphere import LatLonGrid

rioxarray = pytest.importorskip("rioxarray")

CENTRES = [(48.2, 2.3), (-30.3, 150.2)]  # off cell edges: no ties in float32


@pytest.fixture
def query_field(make_vmf):
    da = make_vmf(LatLonGrid.global_(1.0), CENTRES, 600.0)
    return da.rename(sample="query").assign_coords(
        query=np.array(["paris", "sydney"], dtype=object))


@pytest.mark.parametrize("mask_and_scale", [False, True])
def test_open_rasterio_output_works_with_the_accessor(tmp_path, query_field, mask_and_scale):
    path = to_geotiff(query_field, tmp_path / "f.tif")
    raw = rioxarray.open_rasterio(path, mask_and_scale=mask_and_scale)
    assert raw.dims == ("band", "y", "x")
    top = raw.geoloc.top(1)
    assert top["label"].tolist() == ["paris", "sydney"]
    want = query_field.geoloc.top(1)
    np.testing.assert_allclose(top[["lat", "lon"]], want[["lat", "lon"]])
    mass = raw.geoloc.to_mass()
    assert mass.dims == ("query", "lat", "lon")
    np.testing.assert_allclose(mass.values, query_field.values, rtol=1e-5, atol=1e-12)
    assert "_FillValue" not in mass.attrs and "query" not in mass.attrs
    boxes = gpd.GeoDataFrame(geometry=[shapely.box(-180, 0, 180, 90)], crs="EPSG:4326")
    np.testing.assert_allclose(
        raw.geoloc.zonal(boxes)[["prob_paris", "prob_sydney"]].to_numpy(),
        zonal_probability(read_geotiff(path), boxes)[["prob_paris", "prob_sydney"]]
        .to_numpy(), rtol=1e-9)


def test_single_band_and_numeric_nodata(tmp_path, make_vmf):
    g = LatLonGrid.global_(2.0)
    da = make_vmf(g, [(10.0, 20.0)], 500.0)
    vals = da.values.copy()
    vals[0, :] = np.nan  # the northern row is nodata
    da = da.copy(data=vals)
    path = to_geotiff(da, tmp_path / "n.tif", nodata=-9999.0)
    raw = rioxarray.open_rasterio(path)  # nodata stays -9999 in the values here
    assert float(raw.min()) == -9999.0
    mass = to_mass(raw)
    assert mass.dims == ("lat", "lon")
    assert np.isnan(mass.values[0]).all() and np.isfinite(mass.values[1:]).all()
    np.testing.assert_allclose(mass.values[1:], vals[1:], rtol=1e-5, atol=1e-12)


def test_other_crs_is_reprojected_with_a_warning(tmp_path, query_field):
    path = to_geotiff(query_field, tmp_path / "f.tif")
    equal_area = rioxarray.open_rasterio(path).rio.reproject("EPSG:6933", resolution=50_000)
    with pytest.warns(UserWarning, match="EPSG:6933"):
        mass = equal_area.geoloc.to_mass()
    # densities warped twice (to 6933 and back) still integrate to 1
    np.testing.assert_allclose(mass.sum(("lat", "lon")).values, 1.0, rtol=0.01)
    with pytest.warns(UserWarning, match="EPSG:6933"):
        top = equal_area.geoloc.top(1)
    for (lat, lon), (_, row) in zip(CENTRES, top.iterrows()):
        assert abs(row["lat"] - lat) < 1.5 and abs(row["lon"] - lon) < 1.5


def test_xy_names_without_band_and_a_file_without_field_kind(query_field):
    plain = query_field.isel(query=0).rename(lat="y", lon="x")
    np.testing.assert_allclose(plain.geoloc.to_mass().values, query_field.values[0])
    flipped = query_field.isel(query=0).transpose("lon", "lat")
    np.testing.assert_allclose(flipped.geoloc.to_mass().values, query_field.values[0])
    bare = plain.copy()
    bare.attrs = {}
    with pytest.raises(ValueError, match="field_kind"):
        bare.geoloc.top(1)


def test_one_query_keeps_its_label_through_open_rasterio_and_read_geotiff(tmp_path,
                                                                           query_field):
    one = query_field.isel(query=[1])  # a (1, lat, lon) field: one labelled query
    path = to_geotiff(one, tmp_path / "one.tif")
    for back in (to_mass(read_geotiff(path)), to_mass(rioxarray.open_rasterio(path))):
        assert back.dims == ("query", "lat", "lon")
        assert back["query"].values.tolist() == ["sydney"]
        np.testing.assert_allclose(back.values, one.values, rtol=1e-5, atol=1e-12)
