"""Predictions as GeoDataFrames, vector export, Natural Earth lookups and geodesic joins."""

from __future__ import annotations

import shutil
import subprocess

import geopandas as gpd
import numpy as np
import pytest
import shapely
import torch

from geodiffloc.geo import (
    continent_of,
    countries,
    country_of,
    join_nearest,
    join_within,
    predictions_to_gdf,
    write_vector,
)
from geodiffloc.geo import naturalearth as ne
from geodiffloc.sphere import geodesic_km


def _ogrinfo(path) -> str:
    exe = shutil.which("ogrinfo")
    if exe is None:
        pytest.skip("ogrinfo (Debian package gdal-bin) is not installed")
    return subprocess.run([exe, "-al", "-so", str(path)], check=True, capture_output=True,
                          text=True).stdout


def test_predictions_to_gdf_one_row_per_input():
    latlon = torch.tensor([[48.86, 2.35], [-33.87, 151.21 + 180.0]], dtype=torch.float64)
    gdf = predictions_to_gdf(latlon, score=np.array([0.9, 0.4]))
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == 2
    np.testing.assert_allclose(gdf.geometry.x, [2.35, 151.21 - 180.0])  # lon normalised
    np.testing.assert_allclose(gdf.geometry.y, [48.86, -33.87])
    assert gdf["score"].tolist() == [0.9, 0.4]


def test_predictions_to_gdf_top_k_rows_with_rank():
    latlon = np.array([[[10.0, 20.0], [11.0, 21.0], [12.0, 22.0]],
                       [[-5.0, 100.0], [-6.0, 101.0], [-7.0, 102.0]]])
    gdf = predictions_to_gdf(latlon, score=np.arange(6.0).reshape(2, 3), model=["a", "b"])
    assert len(gdf) == 6
    assert gdf["query"].tolist() == [0, 0, 0, 1, 1, 1]
    assert gdf["rank"].tolist() == [1, 2, 3, 1, 2, 3]
    assert gdf["model"].tolist() == ["a"] * 3 + ["b"] * 3
    np.testing.assert_allclose(gdf["lat"], latlon[..., 0].ravel())


def test_predictions_to_gdf_errors():
    with pytest.raises(ValueError, match="at most 10"):
        predictions_to_gdf(np.zeros((1, 2)), confidence_score=[1.0])
    with pytest.raises(ValueError, match="shape"):
        predictions_to_gdf(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="outside"):
        predictions_to_gdf(np.array([[95.0, 0.0]]))
    with pytest.raises(ValueError, match="length"):
        predictions_to_gdf(np.zeros((2, 2)), score=[1.0, 2.0, 3.0])


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".parquet", ".shp"])
def test_write_vector_round_trip_and_no_clobber(tmp_path, suffix):
    gdf = predictions_to_gdf(np.array([[48.86, 2.35], [-17.8, 178.0]]), score=[0.5, 0.25],
                             name=["Paris", "Fiji"])
    path = write_vector(gdf, tmp_path / f"pred{suffix}")
    back = gpd.read_parquet(path) if suffix == ".parquet" else gpd.read_file(path)
    assert back.crs.to_epsg() == 4326
    assert back["name"].tolist() == ["Paris", "Fiji"]
    np.testing.assert_allclose(back["score"], [0.5, 0.25])
    np.testing.assert_allclose(back.geometry.x, gdf.geometry.x)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_vector(gdf.iloc[:1], path)
    assert path.read_bytes() == before
    write_vector(gdf.iloc[:1], path, overwrite=True)
    back = gpd.read_parquet(path) if suffix == ".parquet" else gpd.read_file(path)
    assert len(back) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers
    if suffix != ".parquet":
        info = _ogrinfo(path)
        assert "Feature Count: 1" in info and "score" in info


def test_shapefile_sidecars_are_never_clobbered(tmp_path):
    gdf = predictions_to_gdf(np.array([[1.0, 2.0]]), score=[1.0])
    stray = tmp_path / "pred.dbf"
    stray.write_text("someone else's table")
    with pytest.raises(FileExistsError, match=r"pred\.dbf"):
        write_vector(gdf, tmp_path / "pred.shp")
    assert stray.read_text() == "someone else's table"
    assert not (tmp_path / "pred.shp").exists()
    write_vector(gdf, tmp_path / "pred.shp", overwrite=True)
    assert {p.suffix for p in tmp_path.iterdir()} >= {".shp", ".shx", ".dbf", ".prj"}
    with pytest.raises(ValueError, match="10 characters"):
        write_vector(gdf.assign(a_very_long_name=1), tmp_path / "other.shp")


def test_write_vector_errors(tmp_path):
    gdf = predictions_to_gdf(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="suffix"):
        write_vector(gdf, tmp_path / "pred.xyz")
    with pytest.raises(ValueError, match="GeoDataFrame"):
        write_vector(gdf.drop(columns="geometry"), tmp_path / "pred.gpkg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_vector(gdf, tmp_path / "missing" / "pred.gpkg")


def test_countries_offline_and_cached_copies():
    for scale, n in (("10m", 250), ("lowres", 177)):
        world = countries(scale)
        assert world.crs.to_epsg() == 4326 and len(world) == n
        assert {"name", "iso_a3", "continent", "geometry"} <= set(world.columns)
    world = countries()
    assert world.loc[world["name"] == "France", "iso_a3"].item() == "FRA"  # not -99
    world["name"] = "mutated"
    assert "France" in set(countries()["name"])  # callers get copies of the cache
    with pytest.raises(ValueError, match="scale"):
        countries("50m")  # type: ignore[arg-type]


def test_countries_missing_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(ne, "_package_dir", lambda name: None)
    ne._load.cache_clear()
    try:
        with pytest.raises(ModuleNotFoundError, match=r"geodiffloc\[data\]"):
            countries("10m")
    finally:
        ne._load.cache_clear()


def test_country_and_continent_of_points():
    lat = [48.86, -17.75, 43.20, 0.0, -33.87]
    lon = [2.35, 178.0, 5.00, -30.0, 151.21]  # Paris, Fiji, Gulf of Lion, Atlantic, Sydney
    assert country_of(lat, lon).tolist() == ["France", "Fiji", "France", None, "Australia"]
    assert country_of(43.20, 5.00, max_km=1.0).tolist() == [None]  # offshore, too far
    assert continent_of(lat, lon).tolist() == ["Europe", "Oceania", "Europe", None, "Oceania"]
    assert country_of([48.86], [2.35], column="iso_a3").tolist() == ["FRA"]
    # several columns from one join: row by row what the single-column calls give
    both = country_of(lat, lon, column=["name", "iso_a3"])
    assert both.shape == (5, 2)
    assert both[:, 0].tolist() == country_of(lat, lon).tolist()
    assert both[:, 1].tolist() == country_of(lat, lon, column="iso_a3").tolist()
    assert both[3].tolist() == [None, None]
    for bad in ("nope", ["name", "nope"], [], ["geometry"]):
        with pytest.raises(ValueError, match="column"):
            country_of([0.0], [0.0], column=bad)


def test_fiji_east_of_the_antimeridian():
    world = countries()
    fiji = world.loc[world["name"] == "Fiji"].geometry.item()
    east = max((p for p in fiji.geoms if p.bounds[2] < 0), key=lambda p: p.area)
    pt = east.representative_point()
    assert country_of([pt.y], [pt.x]).tolist() == ["Fiji"]


def test_join_within_handles_pacific_crs():
    box = shapely.segmentize(shapely.box(175.0, -20.0, 185.0, -10.0), 0.5)
    zone = gpd.GeoDataFrame({"zone": ["pacific"]}, geometry=[box],
                            crs="+proj=longlat +lon_wrap=180").to_crs("EPSG:3832")
    pts = predictions_to_gdf(np.array([[-15.0, 179.0], [-15.0, -179.0], [-15.0, 0.0]]))
    out = join_within(pts, zone)
    assert out["zone"].tolist()[:2] == ["pacific", "pacific"] and out["zone"].isna().iloc[2]


def test_join_nearest_uses_geodesic_distance_not_degrees():
    # at 80N, 20 degrees of longitude (~390 km) is nearer than 4 degrees of latitude (~445 km)
    targets = gpd.GeoDataFrame({"tag": ["east", "south"]},
                               geometry=gpd.points_from_xy([20.0, 0.0], [80.0, 76.0]),
                               crs="EPSG:4326")
    pts = predictions_to_gdf(np.array([[80.0, 0.0]]))
    out = join_nearest(pts, targets)
    assert out["tag"].tolist() == ["east"]
    assert out["dist_km"].iloc[0] == pytest.approx(geodesic_km(80, 0, 80, 20)[0], rel=1e-3)
    far = join_nearest(pts, targets, max_km=100.0)
    assert far["tag"].isna().all() and np.isnan(far["dist_km"].iloc[0])


def test_join_nearest_polygons_across_the_antimeridian():
    islands = gpd.GeoDataFrame({"id": [1, 2]}, geometry=[shapely.box(-179.9, -1, -179.5, 1),
                                                         shapely.box(170.0, -1, 171.0, 1)],
                               crs="EPSG:4326")
    out = join_nearest(predictions_to_gdf(np.array([[0.0, 179.9]])), islands)
    assert out["id"].tolist() == [1]  # 0.2 deg across 180, not 8.9 deg west
    assert out["dist_km"].iloc[0] == pytest.approx(geodesic_km(0, 179.9, 0, -179.9)[0], rel=1e-2)


def test_geopackage_is_version_1_2_with_null_strings(tmp_path):
    """GDAL < 3.7 (QGIS LTR on Debian 12) warns on GeoPackage 1.4; None stays NULL."""
    import sqlite3

    gdf = predictions_to_gdf(np.array([[48.86, 2.35], [0.0, -30.0]]))
    gdf["country"] = ["France", None]
    path = write_vector(gdf, tmp_path / "pred.gpkg")
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 10200
        assert con.execute("SELECT country FROM pred ORDER BY fid").fetchall() == [
            ("France",), (None,)]
    back = gpd.read_file(path)
    assert back["country"].iloc[0] == "France" and back["country"].isna().iloc[1]
    exe = shutil.which("ogrinfo")
    if exe is not None:  # the system GDAL (3.6 on Debian 12) opens it without a warning
        run = subprocess.run([exe, "-so", "-al", str(path)], capture_output=True, text=True,
                             check=True)
        assert "Warning" not in run.stderr + run.stdout
