"""Hypothesis fuzzing of the command line: a run that works, or one clear line and exit 2.

Each example is an in-process ``geodiffloc`` command (``judge_cli``) put together from
drawn option values, good and bad: numbers that are not numbers, out of range, huge,
NaN; files that are missing, folders, damaged, of the wrong kind; tables with bad rows.
A run that exits 0 must have written what it promises. Models are tiny, rasters coarse.
"""

from __future__ import annotations

import os

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from rel_battery import _files, judge_cli

_DEEP = int(os.environ.get("REL_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_DEEP or 15, deadline=None, derandomize=not _DEEP,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])

NUMBERS = st.sampled_from(["0", "-1", "nan", "inf", "1e400", "abc", "", "1.5", "3", "1e12"])


@pytest.fixture(scope="module")
def f(tmp_path_factory):
    work = tmp_path_factory.mktemp("cli-fuzz")
    files = _files(work)
    # vector files of every sort
    box = shapely.box(0, 40, 10, 50)
    for name, geoms in {
        "points": [shapely.Point(1, 45)],
        "antimeridian": [shapely.box(175, -20, 185, -10)],
        "bowtie": [shapely.Polygon([(0, 40), (5, 45), (5, 40), (0, 45)])],
        "empty_rows": [],
    }.items():
        files[name] = work / f"{name}.gpkg"
        gpd.GeoDataFrame({"i": list(range(len(geoms)))}, geometry=geoms,
                         crs="EPSG:4326").to_file(files[name])
    files["no_crs"] = work / "no_crs.geojson"
    files["no_crs"].write_text(gpd.GeoDataFrame(geometry=[box]).to_json())
    # prediction / truth tables for evaluate, with bad rows
    pd.DataFrame({"id": ["a", "b"], "lat": [45.0, 10.0], "lon": [5.0, 20.0]}).to_csv(
        work / "pred.csv", index=False)
    files["pred"] = work / "pred.csv"
    for name, lat in {"truth_ok": ["45.0", "10.0"], "truth_lat100": ["100", "10"],
                      "truth_text": ["north", "10"], "truth_blank": ["", "10"]}.items():
        files[name] = work / f"{name}.csv"
        pd.DataFrame({"id": ["a", "b"], "lat": lat, "lon": ["5", "20"]}).to_csv(
            files[name], index=False)
    files["bad_table"] = work / "queries.csv"
    pd.DataFrame({"text": ["Kyoto temple", "", "Lyon"], "lat": ["35", "x", "400"],
                  "lon": ["135", "1", "5"]}).to_csv(files["bad_table"], index=False)
    return files


def _file(f, names):
    return st.sampled_from(names).map(lambda n: str(f[n]) if n in f else n)


def _ok_or_clear(outcome: str, detail: str) -> None:
    event(outcome)  # --hypothesis-show-statistics: how many runs worked, how many refused
    assert outcome in ("clear", "silent"), detail


@FUZZ
@given(data=st.data())
def test_zonal_command(f, tmp_path_factory, data):
    out = tmp_path_factory.mktemp("z") / data.draw(st.sampled_from(
        ["z.csv", "z.gpkg", "z.parquet", "z.shp", "z.xyz", "sub/z.gpkg"]))
    field = data.draw(_file(f, ["field"] * 5 + ["truncated", "a_file", "model",
                                                "/nonexistent.tif"]))
    polys = data.draw(_file(f, ["polys", "polys", "antimeridian", "antimeridian", "bowtie",
                                "empty_rows", "points", "no_crs", "a_file", "field",
                                "/nonexistent.gpkg"]))
    argv = ["zonal", field, polys, "-o", str(out)]
    if data.draw(st.sampled_from([False, False, True])):
        argv += ["--column", data.draw(st.sampled_from(["p", "", "geometry", "i", "x" * 300]))]
    if data.draw(st.sampled_from([False, False, False, True])):
        argv += ["--layer", data.draw(st.sampled_from(["nope", "0", ""]))]
    outcome, detail = judge_cli(argv)
    _ok_or_clear(outcome, f"{argv}: {detail}")
    if outcome == "silent":
        res = gpd.read_file(out) if out.suffix != ".parquet" else gpd.read_parquet(out)
        prob = [c for c in res.columns if c not in ("i", "name", "geometry")]
        assert prob and np.isfinite(res[prob].to_numpy(dtype=float)).all()


@FUZZ
@given(data=st.data())
def test_regions_command(f, tmp_path_factory, data):
    out = tmp_path_factory.mktemp("r") / data.draw(st.sampled_from(["r.gpkg", "r.geojson",
                                                                      "r.txt"]))
    field = data.draw(_file(f, ["field", "field", "truncated", "a_file", "polys"]))
    levels = data.draw(st.lists(NUMBERS | st.sampled_from(["0.5", "0.9", "1"]), min_size=0,
                                max_size=3))
    argv = ["regions", field, "-o", str(out)] + (["--levels", *levels] if levels else [])
    outcome, detail = judge_cli(argv)
    _ok_or_clear(outcome, f"{argv}: {detail}")
    if outcome == "silent":
        res = gpd.read_file(out)
        assert len(res) >= 1 and res.crs.to_epsg() == 4326 and res.is_valid.all()


@FUZZ
@given(data=st.data())
def test_evaluate_command(f, tmp_path_factory, data):
    work = tmp_path_factory.mktemp("e")
    truth = data.draw(_file(f, ["truth_ok", "truth_lat100", "truth_text", "truth_blank",
                                "polys", "a_file", "field", "/nonexistent.csv"]))
    argv = ["evaluate", str(f["pred"]), truth]
    if data.draw(st.booleans()):
        argv += ["--thresholds", *data.draw(st.lists(NUMBERS, min_size=1, max_size=3))]
    if data.draw(st.booleans()):
        argv += ["--id-column", data.draw(st.sampled_from(["id", "nope", ""]))]
    if data.draw(st.booleans()):
        argv += ["-o", str(work / data.draw(st.sampled_from(["t.csv", "t.md", "t.docx"])))]
    outcome, detail = judge_cli(argv)
    _ok_or_clear(outcome, f"{argv}: {detail}")
    if outcome == "silent":  # only good truth may be scored
        assert truth == str(f["truth_ok"])


@pytest.fixture
def hash_words(monkeypatch):
    """The tiny checkpoints record the test encoder ``test:hash-words``: rebuild it by name."""
    import rel_helpers

    import geodiffloc.encoders as encoders

    by_name = encoders.encoder_from_name
    monkeypatch.setattr(encoders, "encoder_from_name", lambda name, **kw: (
        rel_helpers.HashWords() if name == rel_helpers.ENCODER_NAME else by_name(name, **kw)))


@settings(FUZZ, max_examples=_DEEP or 10)
@given(data=st.data())
def test_locate_command(f, hash_words, tmp_path_factory, data):
    out = tmp_path_factory.mktemp("l") / "out"
    inputs = data.draw(st.sampled_from([["Kyoto temple"], ["  "], [str(f["bad_table"])],
                                        ["a", "b"], ["x" * 3000]]))
    argv = ["locate", *inputs, "-o", str(out), "--model", str(f["model"]), "--no-progress",
            "--no-names", "--sampler", "ddim", "--scheduler", "serial"]
    for opt, default in (("--resolution", "45"), ("--samples", "2"), ("--steps", "2"),
                         ("--seed", "0")):
        bad = data.draw(st.sampled_from([False, False, False, True]))
        argv += [opt, data.draw(NUMBERS) if bad else default]
    if data.draw(st.booleans()):
        argv += ["--chunk-size", data.draw(NUMBERS)]
    outcome, detail = judge_cli(argv)
    _ok_or_clear(outcome, f"{argv}: {detail}")
    if outcome == "silent":
        assert out.is_dir() and any(out.iterdir())
        assert not [p for p in out.rglob(".*") if p.name.startswith((".staging", ".train"))]


@settings(FUZZ, max_examples=_DEEP or 6)
@given(data=st.data())
def test_train_command(f, tmp_path_factory, data):
    out = tmp_path_factory.mktemp("t") / "run"
    argv = ["train", data.draw(st.sampled_from(["locdiff", "geoclip", "hierloc"])), "-c",
            data.draw(_file(f, ["tiny_yaml", "bad_yaml", "absurd_yaml", "a_file", "field"])),
            "-o", str(out), "--no-progress", "--max-steps", "2"]
    for opt in ("--max-epochs", "--devices", "--seed"):
        if data.draw(st.booleans()):
            argv += [opt, data.draw(NUMBERS)]
    if data.draw(st.booleans()):
        argv += ["--accelerator", data.draw(st.sampled_from(["cpu", "gpu", "tpu", "bogus"]))]
    outcome, detail = judge_cli(argv)
    _ok_or_clear(outcome, f"{argv}: {detail}")
    if outcome == "silent":
        assert (out / "model.safetensors").is_file()


def test_train_on_a_missing_gpu_is_one_clear_line(f, tmp_path):
    """Lightning's MisconfigurationException (no GPU backend) used to end as a 'bug' (exit 1)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    outcome, detail = judge_cli(["train", "locdiff", "-c", str(f["tiny_yaml"]), "-o",
                                 str(tmp_path / "run"), "--no-progress", "--accelerator", "gpu"])
    assert outcome == "clear", detail
    assert "accelerator='gpu'" in detail and "--accelerator" in detail
