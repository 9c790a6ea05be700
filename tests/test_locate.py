"""The locate pipeline end to end with a tiny LocDiff trained here (files, values, errors)."""

from __future__ import annotations

import importlib
import os

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from pipeline_helpers import FileBytesImageEncoder, HashWordEncoder, tiny_default_config

from geodiffloc import LocDiff
from geodiffloc.cli.main import main
from geodiffloc.geo import countries
from geodiffloc.pipeline import (
    EXAMPLE_QUERIES,
    LocateResult,
    locate,
    train_default_model,
)
from geodiffloc.pipeline.locate import NO_COUNTRY, OUTPUT_FILES
from geodiffloc.sphere import LatLonGrid

QUERIES = ["Lyon, France", "a harbour in Bergen, Norway", "Kyoto temple"]
# few fast samples; the coarse Natural Earth polygons (the 10m ones only in `run`)
FAST = {"n_samples": 4, "sampler": "dpm++", "steps": 4, "progress": False,
        "countries_scale": "lowres"}


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GEODIFFLOC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny place-description LocDiff trained by the default-model code (seconds)."""
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    enc = HashWordEncoder()
    model, _ = train_default_model(tiny_default_config(), encoder=enc, path=path,
                                   progress=False, embedding_cache=False)
    return model, enc, path


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    model, enc, _ = tiny
    out = tmp_path_factory.mktemp("locate") / "out"  # does not exist yet: locate creates it
    res = locate(QUERIES, model=model, encoder=enc, out_dir=out, resolution=2.0,
                 **{**FAST, "countries_scale": "10m"})
    return res, out


def test_writes_the_four_files(run):
    res, out = run
    assert isinstance(res, LocateResult)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES.values())
    assert {k: p.name for k, p in res.paths.items()} == OUTPUT_FILES


def test_geotiff_has_one_band_per_query(run):
    res, out = run
    with rasterio.open(out / "probability.tif") as ds:
        assert ds.count == len(QUERIES)
        assert ds.crs.to_epsg() == 4326
        assert (ds.width, ds.height) == (180, 90)  # 2-degree cells
        assert ds.transform.a == pytest.approx(2.0) and ds.transform.c == pytest.approx(-180.0)
        area = LatLonGrid.global_(2.0).cell_area_km2()[:, None]
        for b, q in enumerate(QUERIES, start=1):
            assert q in ds.descriptions[b - 1]
            band = ds.read(b).astype(np.float64)  # density per km2: survives gdalwarp
            assert band.min() >= 0.0
            assert (band * area).sum() == pytest.approx(1.0, abs=1e-4)
            np.testing.assert_allclose(band * area, res.field.values[b - 1], rtol=1e-5,
                                       atol=1e-9)
        info = ds.tags()
        assert ds.units[0] == "km-2"
    assert info["field_kind"] == "density"
    # a Cloud-Optimized GeoTIFF is tiled and has the COG layout marker
    with rasterio.open(out / "probability.tif") as ds:
        assert ds.profile.get("tiled") or ds.block_shapes[0] != (1, ds.width)


def test_geopackage_has_one_point_per_query(run):
    _, out = run
    gdf = gpd.read_file(out / "predictions.gpkg")
    assert len(gdf) == len(QUERIES)
    assert gdf.crs.to_epsg() == 4326
    assert list(gdf["query"]) == QUERIES
    np.testing.assert_allclose(gdf.geometry.x, gdf["lon"])
    np.testing.assert_allclose(gdf.geometry.y, gdf["lat"])
    assert gdf["lat"].between(-90, 90).all() and gdf["lon"].between(-180, 180).all()
    assert gdf["confidence"].between(0, 1).all()
    # at sea the country is NULL (None), never an empty string posing as a name
    assert not (gdf["country"] == "").any() and not (gdf["iso_a3"] == "").any()


def test_prediction_sits_on_a_high_probability_cell(run):
    """Point and raster come from the same samples: the point is near the field's peak."""
    res, _ = run
    grid = LatLonGrid.from_dataarray(res.field)
    area = grid.cell_area_km2()[:, None]
    for i in range(len(QUERIES)):
        dens = res.field.values[i] / area
        lat, lon = res.predictions[["lat", "lon"]].to_numpy()[i]
        r = int(np.clip((90 - lat) // 2, 0, 89))
        c = int(np.clip((lon + 180) // 2, 0, 179))
        assert dens[r, c] >= 0.5 * dens.max(), (i, dens[r, c], dens.max())


def test_prediction_country_contains_the_point(run):
    res, _ = run
    world = countries("10m")
    for _, row in res.predictions.iterrows():
        pt = shapely.Point(row["lon"], row["lat"])
        if pd.notna(row["country"]):
            poly = world.loc[world["name"] == row["country"], "geometry"].union_all()
            # inside, or a coastal point snapped to the nearest country (< 50 km ~ 0.5 deg)
            assert poly.distance(pt) < 0.6, row["country"]
        else:
            assert not world.geometry.contains(pt).any()


def test_country_table_sums_and_order(run):
    _, out = run
    table = pd.read_csv(out / "countries.csv", keep_default_na=False)
    assert list(table.columns) == ["query", "rank", "country", "iso_a3", "probability"]
    assert list(dict.fromkeys(table["query"])) == QUERIES
    for q, part in table.groupby("query", sort=False):
        p = part["probability"].to_numpy()
        assert (p >= 0).all()
        assert np.all(np.diff(p) <= 1e-12), q  # sorted, most probable first
        assert list(part["rank"]) == list(range(1, len(part) + 1))
        land = part.loc[part["country"] != NO_COUNTRY, "probability"].sum()
        assert land <= 1.0 + 1e-4
        assert (part["country"] == NO_COUNTRY).sum() == 1
        assert 0.99 <= p.sum() <= 1.0 + 1e-4  # countries + the no-country rest


def test_country_probability_matches_cell_centre_count(run):
    """Independent check of the zonal sums: mass of cells whose centre is in the country."""
    res, _ = run
    world = countries("10m")
    grid = LatLonGrid.from_dataarray(res.field)
    lat2, lon2 = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    top = res.top_countries(1)
    for i, row in top.iterrows():
        poly = world.loc[world["iso_a3"] == row["iso_a3"], "geometry"].union_all()
        inside = shapely.contains_xy(poly, lon2, lat2)
        centre_mass = float(res.field.values[i][inside].sum())
        # cell-centre sampling is crude at 2-degree cells: allow the border cells' share
        assert abs(centre_mass - row["probability"]) <= 0.25 * row["probability"] + 0.01


def test_map_png_is_written(run):
    _, out = run
    data = (out / "map.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    img = mpimg.imread(out / "map.png")
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400


def test_no_clobber_is_checked_before_any_work(run, tiny):
    _, out = run
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # a non-model would fail at once if it were used: the refusal must come first
    with pytest.raises(FileExistsError, match="overwrite"):
        locate(["Lyon"], model=object(), encoder=tiny[1], out_dir=out, **FAST)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_one_existing_target_blocks_all_and_overwrite_replaces(tiny, tmp_path):
    model, enc, _ = tiny
    (tmp_path / "map.png").write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"map\.png"):
        locate(["Lyon"], model=model, encoder=enc, out_dir=tmp_path, resolution=5.0, **FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.png"]
    res = locate(["Lyon"], model=model, encoder=enc, out_dir=tmp_path, resolution=5.0,
                 overwrite=True, **FAST)
    assert (tmp_path / "map.png").read_bytes()[:4] == b"\x89PNG"
    assert len(res.paths) == len(OUTPUT_FILES)


def test_reproducible_and_loads_a_checkpoint_path(tiny):
    """Same seed, same result -- also when the model comes from its checkpoint file."""
    model, enc, path = tiny
    a = locate(QUERIES[:2], model=model, encoder=enc, resolution=5.0, seed=3, **FAST)
    b = locate(QUERIES[:2], model=path, encoder=enc, resolution=5.0, seed=3, **FAST)
    assert a.paths == {} and b.paths == {}  # no out_dir: nothing written
    np.testing.assert_allclose(a.field.values, b.field.values, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(a.predictions[["lat", "lon"]], b.predictions[["lat", "lon"]],
                               atol=1e-6)


@pytest.mark.parametrize(
    ("inputs", "match"),
    [([], "no inputs"), (["Lyon", "   "], "input 1 is an empty string"),
     (["Lyon", 3], "input 1 is a int"), ("", "input 0 is an empty string")],
)
def test_bad_inputs(tiny, inputs, match):
    model, enc, _ = tiny
    with pytest.raises(ValueError, match=match):
        locate(inputs, model=model, encoder=enc, **FAST)


def test_bad_options(tiny):
    model, enc, _ = tiny
    with pytest.raises(ValueError, match="resolution"):
        locate(["Lyon"], model=model, encoder=enc, resolution=0.7, **FAST)
    with pytest.raises(ValueError, match="n_samples"):
        locate(["Lyon"], model=model, encoder=enc, **{**FAST, "n_samples": 0})
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        locate(["Lyon"], model="no/such/model.safetensors", encoder=enc, **FAST)
    other = HashWordEncoder(name="test:other-words")
    with pytest.raises(ValueError, match="test:hash-words"):
        locate(["Lyon"], model=model, encoder=other, **FAST)


def test_text_model_refuses_an_image_file(tiny, tmp_path):
    model, enc, _ = tiny
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff fake jpeg")
    with pytest.raises(ValueError, match="image encoder"):
        locate([str(photo)], model=model, encoder=enc, **FAST)


def test_precomputed_model_needs_an_encoder():
    model = LocDiff(L=2, cond_dim=4, widths=(16,))
    with pytest.raises(ValueError, match="encoder="):
        locate(["Lyon"], model=model, **FAST)


def test_image_inputs_with_an_image_model(tmp_path):
    enc = FileBytesImageEncoder()
    model = LocDiff(L=3, cond_dim=enc.dim, widths=(16,), encoder=enc).eval()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        locate([str(tmp_path / "missing.jpg")], model=model, encoder=enc, **FAST)
    assert enc.calls == []  # refused before encoding anything
    photos = []
    for i in range(2):
        p = tmp_path / f"img{i}.jpg"
        p.write_bytes(bytes([i]) * 100)
        photos.append(p)
    res = locate(photos, model=model, encoder=enc, out_dir=tmp_path / "out", resolution=5.0,
                 views=3, **FAST)
    assert list(res.predictions["query"]) == [str(p) for p in photos]
    assert res.field.shape == (2, 36, 72)
    # image inputs are encoded as augmented views, one call per view
    assert [c["augment"] for c in enc.calls] == [True] * 3
    with rasterio.open(res.paths["raster"]) as ds:
        assert ds.count == 2


def test_cli_locate_with_the_example_queries(tiny, tmp_path, monkeypatch, capsys):
    """``geodiffloc locate -o DIR``: no inputs -> the built-in examples, default model."""
    model, enc, _ = tiny
    calls = []

    def fake_default(*, retrain=False, progress=True):
        calls.append(retrain)
        return model, enc

    monkeypatch.setattr(importlib.import_module("geodiffloc.pipeline.default_model"),
                        "default_model", fake_default)
    out = tmp_path / "cli"
    rc = main(["locate", "-o", str(out), "--resolution", "5", "--samples", "4",
               "--sampler", "dpm++", "--steps", "4", "--no-progress", "--retrain-default"])
    assert rc == 0 and calls == [True]
    text = capsys.readouterr().out
    for q in EXAMPLE_QUERIES:
        assert q in text
    for name in OUTPUT_FILES.values():
        assert (out / name).is_file() and str(out / name) in text
    assert len(gpd.read_file(out / "predictions.gpkg")) == len(EXAMPLE_QUERIES)
    # a second run refuses to clobber and says so (exit code 2, no traceback)
    rc = main(["locate", "Lyon", "-o", str(out), "--no-progress"])
    assert rc == 2
    assert "overwrite" in capsys.readouterr().err
    assert os.path.getsize(out / "countries.csv") > 0


def test_samples_each_query_once_and_field_matches_its_samples(tiny, monkeypatch):
    """locate draws one set of samples per query; predictions and field both use it."""
    model, enc, _ = tiny
    calls = []
    real = type(model).sample

    def counting(self, cond, *a, **k):
        calls.append(int(cond.shape[0]))
        return real(self, cond, *a, **k)

    monkeypatch.setattr(type(model), "sample", counting)
    seen = {}
    real_both = type(model).predictions_and_field

    def keep(self, coeffs, samples, **k):
        seen["coeffs"] = coeffs.clone()
        return real_both(self, coeffs, samples, **k)

    monkeypatch.setattr(type(model), "predictions_and_field", keep)
    # names=False: the model's field alone (the names' posterior is tested elsewhere)
    res = locate(QUERIES, model=model, encoder=enc, resolution=5.0, names=False, **FAST)
    # 3 queries x 4 samples: every latent denoised exactly once.
    assert sum(calls) == len(QUERIES) * FAST["n_samples"]
    # The field is the mixture of exactly those samples' densities.
    direct = model.shdd.field(seen["coeffs"][1], resolution=5.0).values.mean(0)
    np.testing.assert_allclose(res.field.values[1], direct / direct.sum(), rtol=1e-5,
                               atol=1e-9)


def test_top_countries_are_ranked_from_one_without_the_no_country_row():
    table = pd.DataFrame({
        "query": ["a", "a", "a", "b", "b", "b"],
        "rank": [1, 2, 3, 1, 2, 3],
        "country": [NO_COUNTRY, "Norway", "Sweden", "Japan", NO_COUNTRY, "China"],
        "iso_a3": ["", "NOR", "SWE", "JPN", "", "CHN"],
        "probability": [0.5, 0.3, 0.2, 0.6, 0.3, 0.1],
    })
    res = LocateResult(predictions=None, field=None, countries=table)
    top = res.top_countries(2)
    assert top["country"].tolist() == ["Norway", "Sweden", "Japan", "China"]
    assert top["rank"].tolist() == [1, 2, 1, 2]
    assert table["rank"].tolist() == [1, 2, 3, 1, 2, 3]  # the full table keeps its ranks
