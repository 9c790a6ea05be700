"""GeoTIFF export/read-back, mass/density conversion and resampling onto the grid."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from geodiffloc.geo import read_geotiff, resample_to_grid, to_density, to_geotiff, to_mass
from geodiffloc.sphere import LatLonGrid


def _gdalinfo(path) -> str:
    exe = shutil.which("gdalinfo")
    if exe is None:
        pytest.skip("gdalinfo (Debian package gdal-bin) is not installed")
    return subprocess.run([exe, str(path)], check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("driver", ["COG", "GTiff"])
def test_geotiff_read_back_with_rasterio(tmp_path, make_vmf, driver):
    g = LatLonGrid.global_(2.0)
    da = make_vmf(g, [(48.86, 2.35), (-17.8, 178.0), (0.0, -60.0)], 300.0,
                  attrs={"model": "vmf", "L": 32, "seed": 7})
    path = to_geotiff(da, tmp_path / "f.tif", driver=driver, kind="mass")
    with rasterio.open(path) as ds:
        assert ds.crs.to_epsg() == 4326
        assert ds.transform == Affine(2.0, 0, -180, 0, -2.0, 90)
        assert ds.count == 3 and ds.dtypes == ("float32",) * 3
        assert ds.descriptions == ("sample=0", "sample=1", "sample=2")
        assert np.isnan(ds.nodata)
        assert ds.tags()["model"] == "vmf" and ds.tags()["L"] == "32"
        assert ds.tags()["field_kind"] == "mass"
        assert ds.profile["compress"] == "deflate" and ds.profile["tiled"]
        np.testing.assert_allclose(ds.read(), da.values, rtol=1e-6, atol=1e-12)
        # the brightest pixel of band 1 sits over Paris
        r, c = np.unravel_index(np.argmax(ds.read(1)), ds.shape)
        lon, lat = ds.xy(r, c)
        assert abs(lat - 48.86) <= 2 and abs(lon - 2.35) <= 2


def test_gdalinfo_sees_a_cog_with_band_descriptions(tmp_path, make_vmf):
    da = make_vmf(LatLonGrid.global_(1.0), [(10.0, 20.0), (-5.0, 100.0)], 500.0)
    info = _gdalinfo(to_geotiff(da, tmp_path / "f.tif"))
    assert 'ID["EPSG",4326]' in info
    assert "LAYOUT=COG" in info and "COMPRESSION=DEFLATE" in info
    assert "Description = sample=0" in info and "Description = sample=1" in info
    assert "Pixel Size = (1.000000000000000,-1.000000000000000)" in info
    assert "NoData Value=nan" in info


def test_read_geotiff_restores_the_field(tmp_path, make_vmf):
    g = LatLonGrid.global_(2.0)
    da = make_vmf(g, [(30.0, 30.0), (-30.0, -30.0)], 400.0, attrs={"model": "m", "steps": 50})
    back = read_geotiff(to_geotiff(da, tmp_path / "f.tif", kind="mass"))
    assert back.dims == ("sample", "lat", "lon")
    np.testing.assert_array_equal(back["sample"].values, [0, 1])
    np.testing.assert_allclose(back["lat"], da["lat"])
    np.testing.assert_allclose(back["lon"], da["lon"])
    np.testing.assert_allclose(back.values, da.values.astype(np.float32))
    assert back.attrs["field_kind"] == "mass" and back.attrs["units"] == "1"
    assert back.attrs["model"] == "m" and back.attrs["steps"] == 50
    assert back.rio.crs.to_epsg() == 4326
    two_d = read_geotiff(to_geotiff(da.isel(sample=0), tmp_path / "g.tif"))
    assert two_d.dims == ("lat", "lon")
    # the default density export reads back as densities of the same field
    assert two_d.attrs["field_kind"] == "density" and two_d.attrs["units"] == "km-2"
    np.testing.assert_allclose(to_mass(two_d).values, da.values[0], rtol=1e-5, atol=1e-12)


def test_nan_cells_become_nodata(tmp_path):
    g = LatLonGrid.global_(10.0)
    vals = np.full(g.shape, 1.0 / 648)
    vals[3, 4] = np.nan
    path = to_geotiff(g.to_dataarray(vals, kind="mass"), tmp_path / "n.tif", nodata=-9999.0)
    with rasterio.open(path) as ds:
        assert ds.nodata == -9999.0 and ds.read(1)[3, 4] == -9999.0
    back = read_geotiff(path)
    assert np.isnan(back.values[3, 4]) and np.isfinite(back.values).sum() == vals.size - 1


def test_regional_grid_across_antimeridian_round_trips(tmp_path, make_vmf):
    g = LatLonGrid.from_bbox(0.5, (170.0, -25.0, -170.0, -10.0))
    da = make_vmf(g, [(-17.8, 179.5)], 80.0)
    path = to_geotiff(da, tmp_path / "fiji.tif", kind="mass")
    with rasterio.open(path) as ds:
        assert ds.transform == Affine(0.5, 0, 170.0, 0, -0.5, -10.0)
        assert ds.width == 40 and ds.height == 30
    back = read_geotiff(path)
    assert LatLonGrid.from_dataarray(back) == g
    np.testing.assert_allclose(back.values, da.values.astype(np.float32))


def test_no_clobber_and_overwrite(tmp_path, make_vmf):
    g = LatLonGrid.global_(10.0)
    path = to_geotiff(make_vmf(g, [(0.0, 0.0)], 2000.0), tmp_path / "f.tif")
    before = path.read_bytes()
    other = make_vmf(g, [(45.0, 90.0)], 2000.0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        to_geotiff(other, path, overwrite=False)
    assert path.read_bytes() == before
    to_geotiff(other, path, kind="mass")  # overwrite is the default, as in rio.to_raster
    np.testing.assert_allclose(read_geotiff(path).values, other.values.astype(np.float32))
    # no temp leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.qml", "f.tif"]


def test_read_geotiff_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_geotiff(tmp_path / "missing.tif")
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    with pytest.raises(ValueError, match="not a raster"):
        read_geotiff(text)
    merc = tmp_path / "merc.tif"
    with rasterio.open(merc, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32",
                       crs="EPSG:3857", transform=Affine(1000, 0, 0, 0, -1000, 0)) as ds:
        ds.write(np.ones((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="gdalwarp -t_srs EPSG:4326"):
        read_geotiff(merc)


def test_to_geotiff_rejects_bad_options(tmp_path, make_vmf):
    da = make_vmf(LatLonGrid.global_(10.0), [(0.0, 0.0)], 2000.0)
    with pytest.raises(ValueError, match="driver"):
        to_geotiff(da, tmp_path / "a.tif", driver="PNG")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compress"):
        to_geotiff(da, tmp_path / "a.tif", compress="jpeg2000")
    with pytest.raises(ValueError, match="DataArray"):
        to_geotiff(da.values, tmp_path / "a.tif")


def test_mass_density_conversion_against_cell_areas(make_vmf):
    g = LatLonGrid.global_(5.0)
    mass = make_vmf(g, [(70.0, 10.0), (-10.0, -120.0)], 800.0, attrs={"model": "m"})
    dens = to_density(mass)
    assert dens.attrs["units"] == "km-2" and dens.attrs["field_kind"] == "density"
    assert "density" in dens.attrs["long_name"] and dens.attrs["model"] == "m"
    # independent check: density integrates to 1 over the sphere's area in km²
    area = g.cell_area_km2()[:, None]
    np.testing.assert_allclose((dens.values * area).sum(axis=(1, 2)), 1.0, rtol=1e-12)
    back = to_mass(dens)
    assert back.attrs["units"] == "1" and back.dims == mass.dims
    np.testing.assert_allclose(back.values, mass.values, rtol=1e-12)
    log = g.to_dataarray(np.log(dens.values), kind="log_density")
    np.testing.assert_allclose(to_mass(log).values, mass.values, rtol=1e-9)
    with pytest.raises(ValueError, match="probabilit"):
        to_mass(g.to_dataarray(np.zeros(g.shape), kind="similarity"))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=6 * 12, max_size=6 * 12))
def test_density_mass_round_trip_property(values):
    g = LatLonGrid.global_(30.0)
    da = g.to_dataarray(np.reshape(values, g.shape), kind="density")
    np.testing.assert_allclose(to_density(to_mass(da)).values, da.values, rtol=1e-12)


def test_resample_gauss_legendre_grid_in_radians():
    from scipy.special import roots_legendre

    x, _ = roots_legendre(48)  # Gauss-Legendre rows: x = cos(colatitude), ascending lat
    lat = np.arcsin(x)  # radians
    lon = np.linspace(0, 2 * np.pi, 96, endpoint=False)

    def f(la, lo):  # smooth, not symmetric in longitude so a relabelling would show
        return 2.0 + np.sin(la) + np.cos(lo - np.deg2rad(30.0)) * np.cos(la)

    vals = f(lat[:, None], lon[None, :])
    g = LatLonGrid.global_(2.0)
    da = resample_to_grid(np.stack([vals, 2 * vals]), lat, lon, g, kind="density",
                          angle_units="radians", attrs={"model": "gl"})
    assert da.dims == ("sample", "lat", "lon") and da.attrs["model"] == "gl"
    want = f(np.deg2rad(g.lat)[:, None], np.deg2rad(g.lon)[None, :])
    inner = np.abs(g.lat) < 80  # beyond the outermost rows values are held constant
    np.testing.assert_allclose(da.values[0][inner], want[inner], atol=5e-3)
    np.testing.assert_allclose(da.values[1], 2 * da.values[0])
    # the source was 0..2pi; -150 deg must hold the value of +210 deg
    j = int(np.argmin(np.abs(g.lon + 149.0)))
    assert abs(da.values[0, 45, j] - f(np.deg2rad(g.lat[45]), np.deg2rad(211.0))) < 5e-3


def test_resample_refuses_masses_and_bad_coordinates():
    g = LatLonGrid.global_(10.0)
    lat, lon = np.linspace(-80, 80, 5), np.arange(0, 360, 60.0)
    vals = np.ones((5, 6))
    with pytest.raises(ValueError, match="densities"):
        resample_to_grid(vals, lat, lon, g, kind="mass")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shape"):
        resample_to_grid(np.ones((6, 5)), lat, lon, g)
    with pytest.raises(ValueError, match="monotonic"):
        resample_to_grid(vals, lat[[0, 2, 1, 3, 4]], lon, g)
    with pytest.raises(ValueError, match="colat"):
        resample_to_grid(vals, lat + 100, lon, g)
    with pytest.raises(ValueError, match="distinct"):
        resample_to_grid(vals, lat, np.array([0, 60, 120, 180, 240, 360.0]), g)


def test_text_query_labels_become_bare_band_descriptions(tmp_path):
    import rasterio

    from geodiffloc.geo import read_geotiff, to_geotiff
    from geodiffloc.sphere import LatLonGrid

    g = LatLonGrid.global_(10.0)
    values = np.full((2, *g.shape), 1.0 / (g.shape[0] * g.shape[1]))
    da = g.to_dataarray(values, kind="mass", leading_dim="query",
                        leading_coords=np.array(["Kyoto temple", "a harbour in Norway"]))
    path = to_geotiff(da, tmp_path / "q.tif")
    with rasterio.open(path) as ds:
        assert ds.descriptions == ("Kyoto temple", "a harbour in Norway")
    back = read_geotiff(path)
    assert back["query"].values.tolist() == ["Kyoto temple", "a harbour in Norway"]
