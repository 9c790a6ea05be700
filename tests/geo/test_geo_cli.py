"""`geodiffloc zonal` and `geodiffloc regions`: outputs and error paths."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from geodiffloc.cli import main as cli_main
from geodiffloc.cli.main import main
from geodiffloc.geo import to_geotiff, write_vector
from geodiffloc.sphere import LatLonGrid


@pytest.fixture(autouse=True)
def only_geo_commands(monkeypatch):
    # test through the real entry point without depending on other command modules
    assert "geodiffloc.cli.geo_cmd" in cli_main.COMMAND_MODULES
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ["geodiffloc.cli.geo_cmd"])


@pytest.fixture
def files(tmp_path, make_vmf):
    field = make_vmf(LatLonGrid.global_(1.0), [(48.86, 2.35), (-33.87, 151.21)], 200.0)
    tif = to_geotiff(field, tmp_path / "field.tif")
    polys = gpd.GeoDataFrame({"name": ["west_eu", "aus"]},
                             geometry=[shapely.box(-10, 40, 15, 60),
                                       shapely.box(110, -45, 160, -10)],
                             crs="EPSG:4326").to_crs("EPSG:3857")
    gpkg = write_vector(polys, tmp_path / "zones.gpkg")
    return tmp_path, tif, gpkg


def test_zonal_command_writes_probabilities(files, capsys):
    tmp, tif, gpkg = files
    out = tmp / "out.gpkg"
    assert main(["zonal", str(tif), str(gpkg), "-o", str(out)]) == 0
    res = gpd.read_file(out)
    assert res["name"].tolist() == ["west_eu", "aus"]
    assert res["prob_0"].iloc[0] > 0.99 and res["prob_1"].iloc[1] > 0.99
    assert res["prob_0"].iloc[1] < 1e-6
    assert "wrote 2 polygons" in capsys.readouterr().out
    # no clobbering without --overwrite; the error names the fix
    before = out.read_bytes()
    assert main(["zonal", str(tif), str(gpkg), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["zonal", str(tif), str(gpkg), "-o", str(out), "--overwrite"]) == 0


def test_regions_command(files):
    tmp, tif, _ = files
    out = tmp / "regions.gpkg"
    assert main(["regions", str(tif), "--levels", "0.5", "0.9", "-o", str(out)]) == 0
    res = gpd.read_file(out)
    assert len(res) == 4 and sorted(set(res["level"])) == [0.5, 0.9]
    paris = res[(res["query"] == "0") & (res["level"] == 0.5)].geometry.iloc[0]
    assert paris.contains(shapely.Point(2.35, 48.86))
    assert main(["regions", str(tif), "--levels", "1.5", "-o", str(tmp / "bad.gpkg")]) == 2


def test_cli_error_paths(files, capsys):
    tmp, tif, gpkg = files
    out = str(tmp / "o.gpkg")
    assert main(["zonal", str(tmp / "missing.tif"), str(gpkg), "-o", out]) == 2
    assert "does not exist" in capsys.readouterr().err
    notes = tmp / "notes.tif"
    notes.write_text("hello")
    assert main(["zonal", str(notes), str(gpkg), "-o", out]) == 2
    assert "not a raster" in capsys.readouterr().err
    merc = tmp / "merc.tif"
    with rasterio.open(merc, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32",
                       crs="EPSG:3857", transform=Affine(1e5, 0, 0, 0, -1e5, 0)) as ds:
        ds.write(np.ones((1, 4, 4), np.float32))
    assert main(["regions", str(merc), "-o", out]) == 2
    assert "gdalwarp -t_srs EPSG:4326" in capsys.readouterr().err
    bad_vec = tmp / "zones_bad.gpkg"
    bad_vec.write_text("not a geopackage")
    assert main(["zonal", str(tif), str(bad_vec), "-o", out]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["zonal", str(tif), str(tmp / "nope.gpkg"), "-o", out]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp / "o.gpkg").exists()


def test_shared_output_options_for_model_commands(tmp_path, make_vmf):
    import argparse

    from geodiffloc.cli.geo_cmd import add_output_arguments, write_outputs
    from geodiffloc.geo import predictions_to_gdf, read_geotiff

    parser = argparse.ArgumentParser()
    add_output_arguments(parser)
    field = make_vmf(LatLonGrid.global_(5.0), [(0.0, 0.0)], 500.0)
    preds = predictions_to_gdf(np.array([[0.0, 0.0]]))
    args = parser.parse_args(["--raster", str(tmp_path / "f.tif"),
                              "--out", str(tmp_path / "p.gpkg")])
    written = write_outputs(args, field=field, predictions=preds)
    assert [p.name for p in written] == ["f.tif", "p.gpkg"]
    assert read_geotiff(written[0]).shape == field.shape
    (tmp_path / "q.gpkg").write_text("existing")
    args = parser.parse_args(["--raster", str(tmp_path / "g.tif"),
                              "--out", str(tmp_path / "q.gpkg")])
    with pytest.raises(FileExistsError):
        write_outputs(args, field=field, predictions=preds)
    assert not (tmp_path / "g.tif").exists()  # checked before writing anything

