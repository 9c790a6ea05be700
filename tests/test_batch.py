"""locate_batch end to end with tiny models: streamed parts, resume, kill-safety, Zarr, Dask."""

from __future__ import annotations

import importlib
import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pipeline_helpers import FileBytesImageEncoder, HashWordEncoder

from geodiffloc import GeoCLIP, LocDiff
from geodiffloc.cli.main import main
from geodiffloc.pipeline import locate, locate_batch, resolve_runner
from geodiffloc.pipeline.batch import BATCH_FILES
from geodiffloc.pipeline.models import Runner

pytest.importorskip("zarr")
pytest.importorskip("distributed")

LINES = ["Lyon, France", "", "a harbour in Bergen, Norway", "Kyoto temple", "Lyon, France",
         *[f"a village number {i}" for i in range(8)]]
N_OK = len(LINES) - 2  # one empty line, one repeat
# few fast samples, coarse grid, coarse countries, no Dask unless a test asks
FAST = {"n_samples": 2, "steps": 3, "resolution": 10.0, "chunk_size": 3, "progress": False,
        "countries_scale": "lowres", "scheduler": "serial"}


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GEODIFFLOC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


@pytest.fixture(scope="module")
def tiny():
    """An untrained tiny LocDiff on a hash-of-words text encoder (no training, no files)."""
    torch.manual_seed(0)
    enc = HashWordEncoder()
    return LocDiff(L=4, cond_dim=enc.dim, widths=(16,), encoder=enc).eval(), enc


@pytest.fixture
def source(tmp_path):
    p = tmp_path / "descriptions.txt"
    p.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return p


def _count_calls(monkeypatch):
    calls = []
    real = Runner.predict

    def counting(self, items, **kw):
        calls.append(len(items))
        return real(self, items, **kw)

    monkeypatch.setattr(Runner, "predict", counting)
    return calls


def test_writes_parts_gpkg_skipped_and_run_file(tiny, source, tmp_path):
    model, enc = tiny
    out = tmp_path / "out"
    res = locate_batch(source, out, model=model, encoder=enc, **FAST)
    assert (res.n_new, res.n_done, res.n_resumed, res.n_skipped) == (N_OK, N_OK, 0, 2)
    parts = sorted((out / "predictions.parquet").iterdir())
    assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(4)]  # 11 / 3
    first = gpd.read_parquet(parts[0])
    assert first.crs.to_epsg() == 4326
    np.testing.assert_allclose(first.geometry.x, first["lon"])
    np.testing.assert_allclose(first.geometry.y, first["lat"])
    gdf = res.predictions()
    assert len(gdf) == N_OK and gdf["key"].is_unique
    assert list(gdf["query"][:3]) == ["Lyon, France", "a harbour in Bergen, Norway",
                                      "Kyoto temple"]
    assert gdf["lat"].between(-90, 90).all() and gdf["confidence"].between(0, 1).all()
    assert (gdf["field_index"] == -1).all()  # no fields asked for
    gpkg = gpd.read_file(out / "predictions.gpkg")
    assert len(gpkg) == N_OK and gpkg.crs.to_epsg() == 4326
    skipped = pd.read_csv(out / "skipped.csv", keep_default_na=False)
    assert skipped.to_dict("records") == [
        {"row": 2, "input": "", "reason": "empty line"},
        {"row": 5, "input": "Lyon, France", "reason": "duplicate of row 1"}]
    table = pd.read_csv(out / "countries.csv", keep_default_na=False)
    assert table["n_predicted"].sum() == N_OK
    run = json.loads((out / "run.json").read_text())
    assert run["complete"] and run["n_done"] == N_OK
    assert run["model_fingerprint"] == resolve_runner(model, encoder=enc).fingerprint
    assert not (out / "fields.zarr").exists() and not (out / "accuracy.json").exists()
    pytest.importorskip("matplotlib")
    assert (out / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_rows_with_bad_truth_are_geolocated_and_reported(tiny, tmp_path, monkeypatch):
    import logging

    from geodiffloc.pipeline import batch as batch_mod

    model, enc = tiny
    src = tmp_path / "t.csv"
    pd.DataFrame({"text": ["Lyon, France", "Kyoto temple", "Bergen"],
                  "lat": [45.76, 135.0, 60.39], "lon": [4.84, 35.0, 5.32]}).to_csv(src, index=False)
    # listen on our logger itself: what earlier tests or libraries (Dask, Lightning) did to
    # the root logger must not decide this test
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = seen.append  # type: ignore[method-assign]
    monkeypatch.setattr(batch_mod.log, "disabled", False)
    monkeypatch.setattr(batch_mod.log, "level", logging.WARNING)
    batch_mod.log.addHandler(handler)
    try:
        res = locate_batch(src, tmp_path / "out", model=model, encoder=enc, **FAST)
    finally:
        batch_mod.log.removeHandler(handler)
    assert (res.n_new, res.n_skipped, res.n_bad_truth) == (3, 0, 1)
    assert res.accuracy["n"] == 2  # the swapped lat/lon row is not scored ...
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv", keep_default_na=False)
    assert skipped["row"].tolist() == [1] and "lat=135" in skipped["reason"].iloc[0]
    assert any("not scored" in r.getMessage() for r in seen)  # ... said so, not dropped
    assert json.loads((tmp_path / "out" / "run.json").read_text())["n_bad_truth"] == 1


def test_second_run_skips_done_inputs_and_finishes_new_ones(tiny, source, tmp_path,
                                                           monkeypatch):
    model, enc = tiny
    out = tmp_path / "out"
    calls = _count_calls(monkeypatch)
    locate_batch(source, out, model=model, encoder=enc, **FAST)
    assert sum(calls) == N_OK
    calls.clear()
    again = locate_batch(source, out, model=model, encoder=enc, **FAST)
    assert calls == [] and (again.n_new, again.n_resumed, again.n_done) == (0, N_OK, N_OK)
    with source.open("a") as fh:
        fh.write("Oslo, Norway\nQuito\n")
    more = locate_batch(source, out, model=model, encoder=enc, **FAST)
    assert sum(calls) == 2 and (more.n_new, more.n_done) == (2, N_OK + 2)
    gdf = more.predictions()
    assert gdf["key"].is_unique and {"Oslo, Norway", "Quito"} <= set(gdf["query"])
    assert len(gpd.read_file(out / "predictions.gpkg")) == N_OK + 2


def test_another_model_is_refused_and_overwrite_starts_afresh(tiny, source, tmp_path):
    model, enc = tiny
    out = tmp_path / "out"
    locate_batch(source, out, model=model, encoder=enc, **FAST)
    torch.manual_seed(1)
    other = LocDiff(L=4, cond_dim=enc.dim, widths=(16,), encoder=enc).eval()
    before = sorted(p.name for p in (out / "predictions.parquet").iterdir())
    with pytest.raises(FileExistsError, match=r"another model.*overwrite"):
        locate_batch(source, out, model=other, encoder=enc, **FAST)
    with pytest.raises(FileExistsError, match=r"other settings.*resolution"):
        locate_batch(source, out, model=model, encoder=enc, **{**FAST, "resolution": 5.0})
    assert sorted(p.name for p in (out / "predictions.parquet").iterdir()) == before
    res = locate_batch(source, out, model=other, encoder=enc, overwrite=True, **FAST)
    assert (res.n_new, res.n_resumed) == (N_OK, 0)


def test_a_second_concurrent_run_on_the_same_folder_is_refused(tiny, source, tmp_path):
    from filelock import FileLock

    model, enc = tiny
    out = tmp_path / "out"
    out.mkdir()
    with FileLock(str(out / ".geodiffloc-batch.lock")):  # another run holds the folder
        with pytest.raises(FileExistsError, match="another geodiffloc run is writing"):
            locate_batch(source, out, model=model, encoder=enc, **FAST)
    assert not (out / "predictions.parquet").exists()
    assert locate_batch(source, out, model=model, encoder=enc, **FAST).n_done == N_OK


def test_folder_of_other_files_is_not_clobbered(tiny, source, tmp_path):
    model, enc = tiny
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.gpkg").write_text("someone else's file")
    with pytest.raises(FileExistsError, match="not a batch run"):
        locate_batch(source, out, model=model, encoder=enc, **FAST)
    assert (out / "predictions.gpkg").read_text() == "someone else's file"


def test_zarr_cube_opens_with_xarray_crs_cf_and_keys(tiny, source, tmp_path):
    import xarray as xr

    model, enc = tiny
    out = tmp_path / "out"
    res = locate_batch(source, out, model=model, encoder=enc, fields=True, cogs=True, **FAST)
    ds = xr.open_zarr(out / "fields.zarr", consolidated=False)
    da = ds["probability"]
    assert da.dims == ("query", "lat", "lon") and da.shape == (N_OK, 18, 36)
    assert da.chunks[0] == (1,) * N_OK  # one query per chunk: rows stream in and out
    assert da.rio.crs.to_epsg() == 4326
    assert ds["lat"].attrs["standard_name"] == "latitude"
    assert ds["lon"].attrs["units"] == "degrees_east"
    assert da.attrs["units"] == "1" and da.attrs["model"] == "LocDiff"
    np.testing.assert_allclose(da.sum(("lat", "lon")).values, 1.0, rtol=1e-4)
    assert da.rio.transform().a == pytest.approx(10.0)
    gdf = res.predictions()
    keys = ds["key"].values
    assert sorted(gdf["field_index"]) == list(range(N_OK))
    assert all(keys[i] == k for i, k in zip(gdf["field_index"], gdf["key"]))
    c = pd.read_parquet(out / "countries.parquet")
    assert set(c["key"]) <= set(gdf["key"]) and c["probability"].between(0, 1).all()
    assert "expected" in pd.read_csv(out / "countries.csv").columns
    # one COG per input, named by its key, density per km2 that integrates to the cube's row
    import rasterio

    from geodiffloc.sphere import LatLonGrid

    assert sorted(p.stem for p in (out / "cogs").glob("*.tif")) == sorted(gdf["key"])
    row = gdf.iloc[2]
    with rasterio.open(out / "cogs" / f"{row['key']}.tif") as cog:
        assert cog.count == 1 and cog.crs.to_epsg() == 4326 and cog.units[0] == "km-2"
        dens = cog.read(1).astype(np.float64)
    area = LatLonGrid.global_(10.0).cell_area_km2()[:, None]
    np.testing.assert_allclose(dens * area, da.values[int(row["field_index"])], rtol=1e-4,
                               atol=1e-8)
    with pytest.raises(ValueError, match="add fields=True"):
        locate_batch(source, tmp_path / "o2", model=model, encoder=enc, cogs=True, **FAST)


def test_killed_run_leaves_complete_parts_and_resume_completes(tiny, source, tmp_path,
                                                               monkeypatch):
    """A failure after the cube got its rows but before the part: resume repairs both."""
    import xarray as xr

    model, enc = tiny
    out = tmp_path / "out"
    real = gpd.GeoDataFrame.to_parquet
    n = {"calls": 0}

    def flaky(self, path, *a, **k):
        n["calls"] += 1
        if n["calls"] == 3:
            path.write_bytes(b"PAR1 half a file")  # a half-written temporary ...
            raise RuntimeError("killed while writing part 3")  # ... then the crash
        return real(self, path, *a, **k)

    monkeypatch.setattr(gpd.GeoDataFrame, "to_parquet", flaky)
    with pytest.raises(RuntimeError, match="killed"):
        locate_batch(source, out, model=model, encoder=enc, fields=True, **FAST)
    monkeypatch.setattr(gpd.GeoDataFrame, "to_parquet", real)
    parts = sorted((out / "predictions.parquet").glob("part-*.parquet"))
    assert len(parts) == 2
    for p in parts:  # every part that exists is whole
        assert len(gpd.read_parquet(p)) == 3
    assert not list((out / "predictions.parquet").glob(".*"))  # the temporary was removed
    # the cube holds a third chunk's rows that no part points at
    assert xr.open_zarr(out / "fields.zarr", consolidated=False).sizes["query"] == 9
    calls = _count_calls(monkeypatch)
    res = locate_batch(source, out, model=model, encoder=enc, fields=True, **FAST)
    assert sum(calls) == N_OK - 6 and res.n_resumed == 6
    gdf = res.predictions()
    assert len(gdf) == N_OK and gdf["key"].is_unique
    ds = xr.open_zarr(out / "fields.zarr", consolidated=False)
    assert ds.sizes["query"] == N_OK
    assert sorted(gdf["field_index"]) == list(range(N_OK))
    assert all(ds["key"].values[i] == k for i, k in zip(gdf["field_index"], gdf["key"]))


def test_dask_cluster_gives_the_serial_predictions(tiny, source, tmp_path, capsys):
    from distributed import Client, LocalCluster

    model, enc = tiny
    serial = locate_batch(source, tmp_path / "serial", model=model, encoder=enc, fields=True,
                          **FAST).predictions()
    with LocalCluster(n_workers=2, processes=False, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        res = locate_batch(source, tmp_path / "dask", model=model, encoder=enc, fields=True,
                           **{**FAST, "scheduler": client})
        assert len(client.scheduler_info()["workers"]) == 2
    assert "Dask: 2 worker(s)" in capsys.readouterr().err
    dask = res.predictions()
    a = serial.set_index("key").sort_index()
    b = dask.set_index("key").sort_index()
    assert list(a.index) == list(b.index)
    np.testing.assert_allclose(a[["lat", "lon", "confidence"]], b[["lat", "lon", "confidence"]],
                               atol=1e-9)
    # and the same fields, row for row by key
    import xarray as xr

    fa = xr.open_zarr(tmp_path / "serial" / "fields.zarr", consolidated=False)
    fb = res.fields()
    ia = a["field_index"].to_numpy()
    ib = b["field_index"].to_numpy()
    np.testing.assert_allclose(fa["probability"].values[ia], fb.values[ib], rtol=1e-5,
                               atol=1e-9)


def test_geoclip_checkpoint_on_a_photo_folder_reports_accuracy(tmp_path):
    enc = FileBytesImageEncoder(dim=8)
    gc = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=4, seed=0,
                 cache_dir=False, gallery="fibonacci:200")
    ckpt = gc.save(tmp_path / "geoclip.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(4):
        exif = Image.Exif()
        exif[0x8825] = {1: "N", 2: (10.0 * i, 0.0, 0.0), 3: "E", 4: (5.0, 0.0, 0.0)}
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(photos / f"p{i}.jpg", exif=exif)
    (photos / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    res = locate_batch(photos, tmp_path / "out", model=str(ckpt), encoder=enc, fields=True,
                       **FAST)
    assert (res.n_new, res.n_skipped) == (4, 1)
    gdf = res.predictions()
    assert gdf["error_km"].notna().all() and (gdf["error_km"] >= 0).all()
    assert res.accuracy is not None and res.accuracy["n"] == 4
    acc = json.loads((tmp_path / "out" / "accuracy.json").read_text())
    assert acc["median_km"] == pytest.approx(float(np.median(gdf["error_km"])))
    assert res.fields().shape == (4, 18, 36)


def test_geoclip_without_a_backbone_asks_for_one(tmp_path):
    gc = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=4, seed=0,
                 cache_dir=False, gallery="fibonacci:50")
    with pytest.raises(ValueError, match=r"no encoder for raw inputs.*backbone"):
        locate_batch(["a.jpg"], tmp_path / "out", model=gc, **FAST)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_unknown_and_incomplete_model_names(tiny):
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*geoclip-official"):
        resolve_runner("nope")
    with pytest.raises(ValueError, match="geoclip:PATH"):
        resolve_runner("geoclip")
    with pytest.raises(ValueError, match="locdiff-h:PATH"):
        resolve_runner("locdiff-h")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_runner("locdiff:/no/such/file.safetensors")
    with pytest.raises(ValueError, match="unknown model"):
        locate(["Lyon"], model="nope", progress=False)


def test_geoclip_official_without_a_backbone_says_how_to_provide_it(monkeypatch):
    pytest.importorskip("geoclip")
    import geodiffloc.encoders.openclip as oc

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(oc, "OpenCLIPImageEncoder", offline)
    with pytest.raises(ValueError) as err:
        resolve_runner("geoclip-official")
    msg = str(err.value)
    assert "ViT-L-14" in msg and "--backbone" in msg and "couldn't connect" in msg
    assert "\n" not in msg


def test_cli_batch_run_on_a_text_file_and_resume(tiny, source, tmp_path, monkeypatch, capsys):
    model, enc = tiny
    monkeypatch.setattr(importlib.import_module("geodiffloc.pipeline.default_model"),
                        "default_model", lambda *, retrain=False, progress=True: (model, enc))
    out = tmp_path / "cli"
    argv = ["locate", str(source), "-o", str(out), "--resolution", "10", "--samples", "2",
            "--steps", "3", "--chunk-size", "4", "--scheduler", "serial", "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert f"geolocated {N_OK} input(s)" in text and "2 skipped" in text
    assert str(out / BATCH_FILES["predictions"]) in text
    assert main(argv) == 0
    assert f"geolocated 0 input(s) in this run; {N_OK}" in capsys.readouterr().out
    assert main([*argv[:-1], "--chunk-size", "0"]) == 2
    assert main(["locate", "Lyon", "--fields", "-o", str(tmp_path / "x")]) == 2
    assert "only apply to batch runs" in capsys.readouterr().err


@pytest.mark.slow  # ~90 s on a loaded 2-core machine: worker processes import torch
def test_worker_processes_load_a_checkpoint_once_each(tmp_path):
    """processes=True: the model travels as its recipe; each worker loads it once."""
    from distributed import Client, LocalCluster

    from geodiffloc.encoders import encoder_from_name

    enc = encoder_from_name("efficientnet:lite0/random", device="cpu")  # offline, no weights
    torch.manual_seed(0)
    ckpt = LocDiff(L=3, cond_dim=enc.dim, widths=(8,), encoder=enc).save(
        tmp_path / "img.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        Image.new("RGB", (24, 24), (30 * i, 90, 200 - 20 * i)).save(photos / f"{i}.png")
    kw = {**FAST, "views": 1, "chunk_size": 2}
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        res = locate_batch(photos, tmp_path / "out", model=str(ckpt), **{**kw,
                                                                          "scheduler": client})
        loaded = client.run(lambda: len(importlib.import_module(
            "geodiffloc.pipeline.models")._LOADED))
    assert res.n_done == 6 and res.predictions()["key"].is_unique
    assert sorted(loaded.values()) == [1, 1]  # one model per worker process, not per task
    serial = locate_batch(photos, tmp_path / "serial", model=str(ckpt), **kw).predictions()
    a = res.predictions().set_index("key").sort_index()
    b = serial.set_index("key").sort_index()
    # same samples; the image encoder's float sums differ slightly across processes, and
    # the decoded mode moves with them (0.01 deg ~ 1 km)
    np.testing.assert_allclose(a[["lat", "lon"]], b[["lat", "lon"]], atol=1e-2)


def test_a_runner_from_a_path_pickles_as_its_recipe_and_loads_once(tiny, tmp_path,
                                                                   monkeypatch):
    """What a Dask worker process receives: a recipe, loaded on first use, then reused."""
    import pickle

    from geodiffloc.pipeline import models

    model, _ = tiny
    path = model.save(tmp_path / "m.safetensors")
    loads = []
    real = LocDiff.load

    def counting(p, **kw):
        loads.append(str(p))
        return real(p, **kw)

    monkeypatch.setattr(LocDiff, "load", staticmethod(counting))
    monkeypatch.setattr(models, "_encoder_for", lambda m: HashWordEncoder())
    monkeypatch.setattr(models, "_LOADED", {})
    runner = resolve_runner(str(path))
    blob = pickle.dumps(runner)
    assert len(blob) < 2_000  # the recipe, not the weights
    a, b = pickle.loads(blob), pickle.loads(blob)
    assert a is b and a is not runner  # loaded once in this "worker", then reused
    assert loads == [str(path), str(path)]  # the driver's load and the worker's one
    assert a.fingerprint == runner.fingerprint
    objects = resolve_runner(model, encoder=HashWordEncoder())
    assert len(pickle.dumps(objects)) > len(blob)  # objects travel as objects


def test_own_local_cluster_workers_keep_glibc_malloc_defaults(monkeypatch):
    # Dask's nanny default MALLOC_TRIM_THRESHOLD_ freezes glibc's mmap threshold, which
    # made each worker fault every large buffer in afresh (~60 % slower per query)
    import os

    from geodiffloc.pipeline.batch import _client

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    def probe():
        import dask

        return (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS"),
                dask.config.get("distributed.worker.profile.enabled"),
                dask.config.get("distributed.admin.system-monitor.gil.enabled"))

    with _client(None, 1, dashboard=True) as client:  # what locate_batch starts
        env = client.run(probe)
    [(trim, omp, profiler, gil)] = env.values()
    assert trim is None
    assert omp == "1"  # the rest of Dask's worker environment is kept
    # the dashboard's profiler and GIL monitor would only take CPU from the chunks
    assert profiler is False and gil is False
    import dask

    assert dask.config.get("distributed.worker.profile.enabled") is True  # caller's kept


def test_locdiff_h_fingerprint_names_the_rerank_rule():
    """A resumed batch run must not mix answers of the two LocDiff-H rules."""
    from geodiffloc import LocDiff, LocDiffH
    from geodiffloc.models.geoclip import GeoCLIP

    ld = LocDiff(L=3, cond_dim=4, widths=(8,))
    gc = GeoCLIP(backbone_dim=4, embed_dim=4, n_freqs=4, hidden_dim=8, seed=0, cache_dir=False,
                 gallery="fibonacci:200")
    prints = {resolve_runner(LocDiffH(ld, gc, **kw), encoder=HashWordEncoder()).fingerprint
              for kw in ({}, {"rerank": "radius"}, {"bandwidth_km": 50.0})}
    assert len(prints) == 3
    same = resolve_runner(LocDiffH(ld, gc), encoder=HashWordEncoder()).fingerprint
    assert same in prints
