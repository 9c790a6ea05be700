"""End-to-end and error-path tests of ``geodiffloc evaluate``."""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from geodiffloc.cli import main as cli_main

KM_PER_DEG_SPHERE = 6371.0088 * math.pi / 180
REGISTERED = list(cli_main.COMMAND_MODULES)  # before any test patches it
TRUTH = pd.DataFrame({
    "id": ["a", "b", "c", "d"],
    "LAT": [48.8566, -33.8688, 0.0, 35.6762],
    "LON": [2.3522, 151.2093, -30.0, 139.6503],
})
# predictions offset due south along the meridian, so haversine errors are exactly
# 0, 0.1, 2 and 30 degrees of arc
OFFSETS_DEG = {"a": 0.0, "b": 0.1, "c": 2.0, "d": 30.0}


@pytest.fixture(autouse=True)
def only_evaluate(monkeypatch):
    """Build the CLI with this command alone, independent of other commands' progress."""
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ["geodiffloc.cli.evaluate_cmd"])


def _run(*argv):
    return cli_main.main([str(a) for a in ("evaluate", *argv)])


def _pred_frame(order=("d", "c", "b", "a")):
    t = TRUTH.set_index("id")
    ids = list(order)
    lat = [t.loc[i, "LAT"] - OFFSETS_DEG[i] for i in ids]
    lon = [t.loc[i, "LON"] for i in ids]
    return pd.DataFrame({"id": ids, "lat": lat, "lon": lon})


@pytest.fixture
def files(tmp_path):
    truth = tmp_path / "truth.csv"
    TRUTH.to_csv(truth, index=False)
    pred = _pred_frame()  # shuffled order: the join must be on ids, not position
    gdf = gpd.GeoDataFrame({"id": pred["id"]},
                           geometry=gpd.points_from_xy(pred["lon"], pred["lat"]), crs=4326)
    gpkg = tmp_path / "pred.gpkg"
    gdf.to_file(gpkg, engine="pyogrio")
    parquet = tmp_path / "pred.parquet"
    gdf.to_parquet(parquet)
    csv = tmp_path / "pred.csv"
    pred.to_csv(csv, index=False)
    return {"truth": truth, "gpkg": gpkg, "parquet": parquet, "csv": csv, "dir": tmp_path}


def test_end_to_end_csv_markdown_png(files, capsys):
    out_csv, out_md, png = (files["dir"] / n for n in ("m.csv", "m.md", "errors.png"))
    rc = _run(files["gpkg"], files["truth"], "--method", "haversine", "--thresholds",
              "1", "25", "250", "-o", out_csv, "--plot", png)
    assert rc == 0
    printed = capsys.readouterr().out
    assert "acc@25km_%" in printed and "| all |" in printed
    table = pd.read_csv(out_csv)
    row = table.iloc[0]
    assert row["group"] == "all" and row["n"] == 4 and row["method"] == "haversine"
    # errors 0, 11.1, 222.4, 3335.9 km by hand
    assert row["acc@1km_%"] == 25.0 and row["acc@25km_%"] == 50.0
    assert row["acc@250km_%"] == 75.0
    assert row["median_km"] == pytest.approx(1.05 * KM_PER_DEG_SPHERE, rel=1e-6)
    assert row["mean_km"] == pytest.approx(32.1 / 4 * KM_PER_DEG_SPHERE, rel=1e-6)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[0] > 100

    rc = _run(files["parquet"], files["truth"], "--method", "haversine", "-o", out_md)
    assert rc == 0
    md = out_md.read_text().splitlines()
    assert md[0].startswith("| group | n | method | acc@1km_% |")
    assert md[2].startswith("| all | 4 | haversine | 25.00 |")


def test_csv_predictions_and_breakdown_by_continent(files):
    out = files["dir"] / "by.csv"
    assert _run(files["csv"], files["truth"], "--by", "continent", "-o", out) == 0
    table = pd.read_csv(out).set_index("group")
    assert table.loc["all", "n"] == 4
    assert {"Europe", "Oceania", "Asia", "ocean/unknown"} <= set(table.index)
    assert table.loc["Europe", "acc@1km_%"] == 100.0  # Paris is predicted exactly
    assert table.loc["Asia", "acc@2500km_%"] == 0.0  # Tokyo 30 degrees off
    assert table.drop("all")["n"].sum() == 4


def test_geodesic_is_the_default_and_named(files):
    out = files["dir"] / "g.csv"
    assert _run(files["csv"], files["truth"], "-o", out) == 0
    row = pd.read_csv(out).iloc[0]
    assert row["method"] == "geodesic"
    assert list(pd.read_csv(out).columns)[3:8] == [
        "acc@1km_%", "acc@25km_%", "acc@200km_%", "acc@750km_%", "acc@2500km_%"]


def test_existing_output_is_not_clobbered_unless_asked(files, capsys):
    out = files["dir"] / "m.csv"
    out.write_text("keep me")
    assert _run(files["csv"], files["truth"], "-o", out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert _run(files["csv"], files["truth"], "-o", out, "--overwrite") == 0
    assert pd.read_csv(out).iloc[0]["n"] == 4


def test_existing_plot_is_checked_before_any_work(files, capsys):
    png, out = files["dir"] / "p.png", files["dir"] / "m.csv"
    png.write_bytes(b"old")
    assert _run(files["csv"], files["truth"], "-o", out, "--plot", png) == 2
    assert "already exists" in capsys.readouterr().err
    assert not out.exists() and png.read_bytes() == b"old"


def _expect_error(capsys, *argv, match):
    assert _run(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("geodiffloc evaluate: error:"), err
    assert match in err, err
    return err


def test_missing_file(files, capsys):
    _expect_error(capsys, files["dir"] / "nope.csv", files["truth"], match="does not exist")


def test_unreadable_file(files, capsys):
    bad = files["dir"] / "bad.gpkg"
    bad.write_bytes(b"this is not a geopackage")
    _expect_error(capsys, bad, files["truth"], match="could not read")


def test_missing_id_column(files, capsys):
    err = _expect_error(capsys, files["csv"], files["truth"], "--id-column", "image",
                        match="no id column 'image'")
    assert "--id-column" in err


def test_duplicated_ids(files, capsys):
    dup = files["dir"] / "dup.csv"
    pd.concat([_pred_frame(), _pred_frame(("a",))]).to_csv(dup, index=False)
    _expect_error(capsys, dup, files["truth"], match="more than once")


def test_empty_ids(files, capsys):
    pred = _pred_frame()
    pred.loc[1, "id"] = None
    path = files["dir"] / "noid.csv"
    pred.to_csv(path, index=False)
    _expect_error(capsys, path, files["truth"], match="is empty in 1 row")


def test_missing_ids_and_mismatched_counts(files, capsys):
    fewer = files["dir"] / "fewer.csv"
    _pred_frame(("a", "b", "c")).to_csv(fewer, index=False)
    err = _expect_error(capsys, fewer, files["truth"], match="do not hold the same ids")
    assert "3 predictions, 4 truths" in err and "'d'" in err
    extra = files["dir"] / "extra.csv"
    pd.concat([_pred_frame(), pd.DataFrame({"id": ["z"], "lat": [1.0], "lon": [1.0]})]
              ).to_csv(extra, index=False)
    err = _expect_error(capsys, extra, files["truth"], match="not in")
    assert "'z'" in err
    # --intersection evaluates the common ids instead
    out = files["dir"] / "inter.csv"
    assert _run(fewer, files["truth"], "--intersection", "-o", out) == 0
    assert pd.read_csv(out).iloc[0]["n"] == 3
    assert "1 unmatched" in capsys.readouterr().err


def test_no_shared_ids(files, capsys):
    other = files["dir"] / "other.csv"
    pd.DataFrame({"id": ["x"], "lat": [0.0], "lon": [0.0]}).to_csv(other, index=False)
    _expect_error(capsys, other, files["truth"], "--intersection", match="no id is shared")


def test_missing_coordinate_columns(files, capsys):
    path = files["dir"] / "nocoords.csv"
    pd.DataFrame({"id": ["a"], "y": [1.0], "x": [2.0]}).to_csv(path, index=False)
    _expect_error(capsys, path, files["truth"], match="'lat'/'lon'")


def test_non_numeric_and_invalid_coordinates(files, capsys):
    text = files["dir"] / "text.csv"
    pd.DataFrame({"id": ["a"], "lat": ["north"], "lon": [2.0]}).to_csv(text, index=False)
    _expect_error(capsys, text, files["truth"], match="not a number")
    far = files["dir"] / "far.csv"
    pd.DataFrame({"id": ["a"], "lat": [123.0], "lon": [2.0]}).to_csv(far, index=False)
    _expect_error(capsys, far, files["truth"], match="outside [-90, 90]")


def test_polygons_are_refused(files, capsys):
    poly = files["dir"] / "poly.gpkg"
    gpd.GeoDataFrame({"id": ["a"]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4326).to_file(
        poly, engine="pyogrio")
    _expect_error(capsys, poly, files["truth"], match="not a non-empty Point")


def test_projected_geopackage_is_reprojected(files):
    pred = gpd.read_file(files["gpkg"]).to_crs(3857)
    path = files["dir"] / "merc.gpkg"
    pred.to_file(path, engine="pyogrio")
    out = files["dir"] / "merc.csv"
    ref = files["dir"] / "ref.csv"
    assert _run(path, files["truth"], "-o", out) == 0
    assert _run(files["gpkg"], files["truth"], "-o", ref) == 0
    np.testing.assert_allclose(pd.read_csv(out)["mean_km"], pd.read_csv(ref)["mean_km"],
                               rtol=1e-6)


def test_empty_file(files, capsys):
    path = files["dir"] / "empty.csv"
    path.write_text("id,lat,lon\n")
    _expect_error(capsys, path, files["truth"], match="no rows")


def test_bad_options(files, capsys):
    _expect_error(capsys, files["csv"], files["truth"], "-o", files["dir"] / "t.xlsx",
                  match=".csv or .md")
    _expect_error(capsys, files["csv"], files["truth"], "--plot", files["dir"] / "p.txt",
                  match="--plot")
    _expect_error(capsys, files["csv"], files["truth"], "--thresholds", "-5",
                  match="positive")
    _expect_error(capsys, files["csv"], files["truth"], "--by", "planet", match="by must be")


def test_evaluate_is_registered():
    assert "geodiffloc.cli.evaluate_cmd" in REGISTERED
