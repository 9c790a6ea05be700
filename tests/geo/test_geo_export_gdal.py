"""The exported GeoTIFF survives what GDAL users do to it: warping, overviews, rioxarray.

Integrals are taken with cell areas computed here independently of the library: exact
pixel areas for the equal-area EPSG:6933 grid, the Mercator area factor cos²(lat) for
EPSG:3857, and the spherical-quadrangle formula for lat/lon overviews.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio

from geodiffloc.geo import to_geotiff
from geodiffloc.sphere import EARTH_RADIUS_KM, LatLonGrid

WEB_MERCATOR_A_KM = 6378.137  # sphere radius used by EPSG:3857's formulas
CENTRES = [(48.0, 2.0), (-30.0, 150.0), (10.0, -70.0)]  # inside Web Mercator latitudes


def _true_areas_km2(ds) -> np.ndarray:
    """True area on the Earth sphere of each pixel row of a north-up raster, ``(h, 1)``."""
    t = ds.transform
    rows = np.arange(ds.height)
    if ds.crs.to_epsg() == 6933:  # equal-area: every pixel has its projected area
        return np.full((ds.height, 1), abs(t.a * t.e) / 1e6)
    if ds.crs.to_epsg() == 3857:
        y = t.f + t.e * (rows + 0.5)
        phi = 2.0 * np.arctan(np.exp(y / (WEB_MERCATOR_A_KM * 1e3))) - np.pi / 2
        k = (EARTH_RADIUS_KM / WEB_MERCATOR_A_KM) ** 2
        return (abs(t.a * t.e) / 1e6 * np.cos(phi) ** 2 * k)[:, None]
    assert ds.crs.to_epsg() == 4326
    top = np.deg2rad(np.clip(t.f + t.e * rows, -90, 90))
    bottom = np.deg2rad(np.clip(t.f + t.e * (rows + 1), -90, 90))
    return (np.deg2rad(t.a) * (np.sin(top) - np.sin(bottom)) * EARTH_RADIUS_KM**2)[:, None]


def _integrals(path, **open_kw) -> np.ndarray:
    with rasterio.open(path, **open_kw) as ds:
        dens = ds.read(masked=True).filled(0.0).astype(np.float64)
        return (dens * _true_areas_km2(ds)[None]).sum(axis=(1, 2))


@pytest.fixture
def exported(tmp_path, make_vmf):
    da = make_vmf(LatLonGrid.global_(0.5), CENTRES, 600.0)
    return da, to_geotiff(da, tmp_path / "field.tif")


@pytest.mark.parametrize("crs", ["EPSG:6933", "EPSG:3857"])
@pytest.mark.parametrize("resampling", ["bilinear", "average", "near"])
def test_default_export_survives_gdalwarp(tmp_path, exported, crs, resampling):
    exe = shutil.which("gdalwarp")
    if exe is None:
        pytest.skip("gdalwarp (Debian package gdal-bin) is not installed")
    _, path = exported
    out = tmp_path / "warped.tif"
    extent = []
    if crs == "EPSG:3857":  # the square Web Mercator world; gdalwarp's own guess is 66 px wide
        extent = ["-te", *(["-20037508.34", "-20037508.34", "20037508.34", "20037508.34"])]
    subprocess.run([exe, "-q", "-t_srs", crs, *extent, "-r", resampling, str(path), str(out)],
                   check=True)
    np.testing.assert_allclose(_integrals(out), 1.0, rtol=0.01)


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_default_export_survives_rioxarray_reproject(exported, resampling):
    rioxarray = pytest.importorskip("rioxarray")
    from rasterio.enums import Resampling

    _, path = exported
    src = rioxarray.open_rasterio(path, masked=True)
    warped = src.rio.reproject("EPSG:6933", resampling=Resampling[resampling])
    res_x, res_y = warped.rio.resolution()
    integral = warped.fillna(0.0).sum(dim=("x", "y")).values * abs(res_x * res_y) / 1e6
    np.testing.assert_allclose(integral, 1.0, rtol=0.01)


def test_default_export_states_density_and_keeps_overviews_consistent(exported):
    da, path = exported
    with rasterio.open(path) as ds:
        assert ds.units == ("km-2",) * 3
        assert ds.scales == (1.0,) * 3 and ds.offsets == (0.0,) * 3
        assert ds.tags()["field_kind"] == "density"
        assert all(ds.tags(b)["resampling"] == "average" for b in (1, 2, 3))
        assert ds.overviews(1), "a COG this size should carry overviews"
        n_over = len(ds.overviews(1))
        # full resolution: density x true cell area gives back the cell probabilities
        dens = ds.read().astype(np.float64)
        np.testing.assert_allclose(dens * _true_areas_km2(ds)[None], da.values,
                                   rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(_integrals(path), 1.0, rtol=1e-5)
    for level in range(n_over):
        np.testing.assert_allclose(_integrals(path, overview_level=level), 1.0, rtol=0.01)


def test_mass_export_is_explicit_and_says_how_to_resample(tmp_path, exported):
    da, _ = exported
    path = to_geotiff(da, tmp_path / "mass.tif", kind="mass")
    with rasterio.open(path) as ds:
        assert ds.tags()["field_kind"] == "mass" and ds.units == ("1",) * 3
        assert ds.tags(1)["resampling"] == "sum"
        assert ds.overviews(1) == []  # GDAL cannot sum overviews: averaged ones would lie
        np.testing.assert_allclose(ds.read().sum(axis=(1, 2)), 1.0, rtol=1e-5)
    exe = shutil.which("gdalwarp")
    if exe is None:
        return
    out = tmp_path / "warped.tif"
    subprocess.run([exe, "-q", "-t_srs", "EPSG:3857", "-r", "sum", str(path), str(out)],
                   check=True)
    with rasterio.open(out) as ds:  # the resampling the file asks for keeps the sums
        np.testing.assert_allclose(ds.read(masked=True).filled(0).sum(axis=(1, 2)), 1.0,
                                   rtol=0.01)


def test_score_fields_are_written_as_they_are(tmp_path):
    g = LatLonGrid.global_(10.0)
    sim = g.to_dataarray(np.linspace(-1, 1, g.shape[0] * g.shape[1]).reshape(g.shape),
                         kind="similarity")
    with rasterio.open(to_geotiff(sim, tmp_path / "s.tif")) as ds:
        assert ds.tags()["field_kind"] == "similarity"
        np.testing.assert_allclose(ds.read(1), sim.values, rtol=1e-6)
    with pytest.raises(ValueError, match="scores"):
        to_geotiff(sim, tmp_path / "t.tif", kind="mass")
    with pytest.raises(ValueError, match="kind must be"):
        to_geotiff(sim, tmp_path / "t.tif", kind="counts")  # type: ignore[arg-type]


def test_overwrite_by_default_like_rioxarray_but_refusal_on_request(tmp_path, make_vmf):
    g = LatLonGrid.global_(5.0)
    path = to_geotiff(make_vmf(g, [(0.0, 0.0)], 2000.0), tmp_path / "f.tif")
    other = make_vmf(g, [(40.0, 40.0)], 2000.0)
    to_geotiff(other, path)  # re-running a notebook cell just replaces the file
    with rasterio.open(path) as ds:
        dens = ds.read(1).astype(np.float64)
    r, c = np.unravel_index(np.argmax(dens), dens.shape)
    assert abs(float(g.lat[r]) - 40.0) <= 5 and abs(float(g.lon[c]) - 40.0) <= 5
    with pytest.raises(FileExistsError, match="overwrite"):
        to_geotiff(other, path, overwrite=False)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary files left behind


def test_qml_style_next_to_the_raster(tmp_path, make_vmf):
    da = make_vmf(LatLonGrid.global_(2.0), [(10.0, 10.0)], 800.0)
    path = to_geotiff(da, tmp_path / "f.tif")
    root = ET.parse(path.with_suffix(".qml")).getroot()
    shader = root.find("pipe/rasterrenderer/rastershader/colorrampshader")
    with rasterio.open(path) as ds:
        band_max = float(np.nanmax(ds.read(1)))
    assert root.find("pipe/rasterrenderer").get("type") == "singlebandpseudocolor"
    assert float(shader.get("maximumValue")) == pytest.approx(band_max, rel=1e-6)
    values = [float(i.get("value")) for i in shader.findall("item")]
    assert values == sorted(values) and values[0] == 0.0
    assert shader.findall("item")[0].get("alpha") == "0"  # zero probability is see-through
    assert not to_geotiff(da, tmp_path / "g.tif", qml=False).with_suffix(".qml").exists()
