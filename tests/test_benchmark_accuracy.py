"""The accuracy benchmark's scoring (hierarchical accuracies) and per-split records."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from geodiffloc.data import EntityHierarchy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def acc():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the script's own imports (_record)
    spec = importlib.util.spec_from_file_location("benchmark_accuracy",
                                                  ROOT / "benchmarks" / "accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)
    sys.path.remove(str(ROOT / "benchmarks"))


def _hierarchy() -> EntityHierarchy:
    """Gazetteer-shaped ids: A > A/x > A/x/p > two cities; A/y > a city; B > a city."""
    recs = [
        {"entity_id": "A", "lat": 10.0, "lon": 10.0, "level": 0},
        {"entity_id": "B", "lat": -30.0, "lon": 100.0, "level": 0},
        {"entity_id": "A/x", "parent": "A", "lat": 10.0, "lon": 10.0, "level": 1},
        {"entity_id": "A/y", "parent": "A", "lat": 10.0, "lon": 20.0, "level": 1},
        {"entity_id": "A/x/p", "parent": "A/x", "lat": 10.0, "lon": 10.0, "level": 2},
        # cities are level 3 wherever they hang (the gazetteer skips missing admin levels)
        {"entity_id": "c1", "parent": "A/x/p", "lat": 10.0, "lon": 10.0, "level": 3},
        {"entity_id": "c2", "parent": "A/x/p", "lat": 11.0, "lon": 10.0, "level": 3},
        {"entity_id": "c3", "parent": "A/y", "lat": 10.0, "lon": 20.0, "level": 3},
        {"entity_id": "c4", "parent": "B", "lat": -30.0, "lon": 100.0, "level": 3},
    ]
    return EntityHierarchy.from_records(recs, level_names=("country", "admin1", "admin2",
                                                           "city"))


def test_true_entities_and_point_mapping(acc):
    h = _hierarchy()
    idx = {e: i for i, e in enumerate(h.ids)}
    frame = pd.DataFrame({"country_code": ["A", "A", "B", "A"],
                          "admin1": ["x", "y", None, "x"],
                          "admin2": ["p", "", None, "q"]})  # A/x/q is not in the hierarchy
    truth_ll = np.array([[10.9, 10.0], [10.0, 20.1], [-30.0, 100.0], [10.0, 10.1]])
    sc = acc.HierarchyScorer(h, frame, truth_ll)
    t = sc.truth
    assert t[0].tolist() == [idx["A"], idx["A/x"], idx["A/x/p"], idx["c2"]]
    assert t[1].tolist() == [idx["A"], idx["A/y"], acc.NOT_APPLICABLE, idx["c3"]]
    assert t[2, 1:3].tolist() == [acc.NOT_APPLICABLE] * 2 and t[2, 3] == idx["c4"]
    assert t[3, 2] == acc.NOT_IN_HIERARCHY
    # a point near c3 maps to c3 and its ancestors (no admin-2 there: -1)
    ent = sc.point_entities(np.array([[10.0, 19.5]]))
    assert ent[0].tolist() == [idx["A"], idx["A/y"], -1, idx["c3"]]
    # the truth itself, mapped as a prediction: admin-2 right for place 0 only (place 1
    # has none, place 3's is not in the hierarchy: a miss; place 2 has none)
    a = sc.accuracies(sc.point_entities(truth_ll))
    assert a == {"acc_country": 100.0, "acc_admin1": 100.0, "acc_admin2": 50.0,
                 "acc_city": 100.0}
    assert sc.coverage() == {"country": 100.0, "admin1": 100.0, "admin2": 50.0,
                             "city": 100.0}


def test_split_records_merge_into_one_report(acc, tmp_path, monkeypatch):
    h = _hierarchy()
    frame = pd.DataFrame({"country_code": ["A", "B"], "admin1": ["x", ""],
                          "admin2": ["p", ""]})
    yt = np.array([[10.0, 10.0], [-30.0, 100.0]])
    sc = acc.HierarchyScorer(h, frame, yt)
    monkeypatch.setattr(acc, "HERE", tmp_path)
    b = acc.QUICK
    args = argparse.Namespace(quick=True, seed=0, models=["nn", "hierloc"], device="cpu")
    for split, shift in (("random", 0.0), ("region", 5.0)):
        pred = yt + np.array([shift, 0.0])
        rows = [acc.row("HierLoc", "flat", pred, yt, 0.01, scorer=sc, stored=(9, 33))]
        info = {"n_train": 10, "n_test": 2, "encoder": "x", "entities": len(h),
                "level_counts": [2, 2, 1, 4], "coverage": sc.coverage(), "minutes": 0.1}
        acc.write_split_json(acc.split_json_path(split, True, tmp_path / "results"), split,
                             rows, {"fit": 1.0}, info, b, args, (0.0, 0.0, 0.0))
    doc = json.loads((tmp_path / "results" / "accuracy_quick.random.json").read_text())
    assert doc["rows"][0]["acc_country"] == 100.0 and doc["device"] == "cpu"
    out = tmp_path / "merged.md"
    assert acc.main(["--merge", "--quick", "--out", str(out)]) == 0
    text = out.read_text()
    assert "## Split `random`" in text and "## Split `region`" in text
    assert "## Splits side by side" in text and "| HierLoc | flat |" in text
    assert "9 (0.0 MB)" in text  # 9 entities of 33 floats
    with pytest.raises(SystemExit):  # a split that never ran cannot be merged
        acc.main(["--merge", "--out", str(out)])
