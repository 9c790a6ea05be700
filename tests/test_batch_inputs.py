"""Batch inputs: folders, text files, tables; bad rows skipped with a reason; resume keys."""

from __future__ import annotations

import math
import os

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geodiffloc.pipeline.inputs import InputReader, file_key, text_key


def _jpeg(path, color=(10, 20, 30), gps=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if gps is not None:
        (lat, lon) = gps
        exif[0x8825] = {1: "N" if lat >= 0 else "S", 2: (abs(lat), 0.0, 0.0),
                        3: "E" if lon >= 0 else "W", 4: (abs(lon), 0.0, 0.0)}
    Image.new("RGB", (16, 16), color).save(path, exif=exif)
    return path


def test_text_file_skips_empty_lines_and_repeats(tmp_path):
    src = tmp_path / "q.txt"
    src.write_text("Lyon, France\n\n   \nKyoto temple\r\nLyon, France\nBergen\n", encoding="utf-8")
    r = InputReader(src, modality="text")
    items = list(r)
    assert [i.label for i in items] == ["Lyon, France", "Kyoto temple", "Bergen"]
    assert [i.row for i in items] == [1, 4, 6]  # line numbers, 1-based
    assert [(s.row, s.reason) for s in r.skipped] == [
        (2, "empty line"), (3, "empty line"), (5, "duplicate of row 1")]
    assert r.n_seen == 6
    assert all(math.isnan(i.true_lat) for i in items)


def test_csv_table_with_text_column_and_truth(tmp_path):
    src = tmp_path / "t.csv"
    pd.DataFrame({"id": [1, 2, 3, 4], "caption": ["Paris", "", "Oslo", "Rome"],
                  "lat": ["48.85", "0", "bad", "41.9"], "lon": [2.35, 0, 10.7, 12.5]}
                 ).to_csv(src, index=False)
    r = InputReader(src, modality="text")
    items = list(r)
    assert [i.value for i in items] == ["Paris", "Oslo", "Rome"]
    assert [i.row for i in items] == [0, 2, 3]
    assert items[0].true_lat == pytest.approx(48.85) and items[0].true_lon == pytest.approx(2.35)
    assert math.isnan(items[1].true_lat)  # unparseable truth: no accuracy, still an input
    assert [(s.row, s.reason) for s in r.skipped] == [(1, "empty text")]
    # ... and reported, not dropped silently
    assert [s.row for s in r.truth_problems] == [2]
    assert "'bad'" in r.truth_problems[0].reason


def test_bad_truth_coordinates_are_reported_never_clamped(tmp_path):
    src = tmp_path / "t.csv"
    pd.DataFrame({"text": ["a", "b", "c", "d", "e", "f", "g"],
                  "lat": ["91", "-45", "", "10", "inf", "", "45"],
                  "lon": ["5", "200", "", "", "3", "7", "-181"]}).to_csv(src, index=False)
    r = InputReader(src, modality="text")
    items = list(r)
    assert len(items) == 7  # every row is still geolocated
    # lon 200 is 0..360 notation: normalised, not a problem; two blank cells: no truth
    assert items[1].true_lat == -45.0 and items[1].true_lon == -160.0
    assert math.isnan(items[2].true_lat)
    bad = {s.row: s.reason for s in r.truth_problems}
    assert sorted(bad) == [0, 3, 4, 5, 6]
    assert "lat=91" in bad[0] and "outside" in bad[0]
    assert "not a pair of finite numbers" in bad[3] and "not a pair" in bad[4]
    assert "lon=-181" in bad[6]
    for row in bad:  # never clamped to the edge or wrapped: no truth at all
        assert math.isnan(items[row].true_lat) and math.isnan(items[row].true_lon)


def test_geoparquet_with_non_point_truth_is_reported(tmp_path):
    import shapely

    src = tmp_path / "t.parquet"
    gpd.GeoDataFrame({"text": ["Paris", "Oslo", "Rome"]},
                     geometry=[shapely.Point(2.35, 48.85), shapely.box(0, 0, 1, 1), None],
                     crs="EPSG:4326").to_parquet(src)
    r = InputReader(src, modality="text")
    items = list(r)
    assert len(items) == 3 and items[0].true_lat == pytest.approx(48.85)
    assert [(s.row, "Polygon" in s.reason) for s in r.truth_problems] == [(1, True)]


def test_table_without_the_column_says_which_columns_exist(tmp_path):
    src = tmp_path / "t.csv"
    pd.DataFrame({"name": ["a"], "notes": ["b"]}).to_csv(src, index=False)
    with pytest.raises(ValueError, match=r"no text column.*\['name', 'notes'\].*--column"):
        list(InputReader(src, modality="text"))
    assert [i.value for i in InputReader(src, modality="text", column="notes")] == ["b"]


def test_geoparquet_geometry_is_the_ground_truth(tmp_path):
    src = tmp_path / "t.parquet"
    gdf = gpd.GeoDataFrame({"text": ["Paris", "Oslo"]},
                           geometry=gpd.points_from_xy([2.35, 10.75], [48.85, 59.91]),
                           crs="EPSG:4326").to_crs("EPSG:3857")  # truth in another CRS
    gdf.to_parquet(src)
    items = list(InputReader(src, modality="text"))
    assert [i.value for i in items] == ["Paris", "Oslo"]
    np.testing.assert_allclose([i.true_lat for i in items], [48.85, 59.91], atol=1e-6)
    np.testing.assert_allclose([i.true_lon for i in items], [2.35, 10.75], atol=1e-6)


def test_image_folder_recursive_exif_and_unreadable(tmp_path):
    root = tmp_path / "photos"
    _jpeg(root / "b.jpg", gps=(48.85, 2.35))
    _jpeg(root / "sub" / "a.jpg", color=(200, 0, 0))
    (root / "broken.jpg").write_bytes(b"not a jpeg at all")
    (root / "notes.txt").write_text("ignored: not an image")
    r = InputReader(root, modality="image")
    items = list(r)
    assert [i.label for i in items] == ["b.jpg", os.path.join("sub", "a.jpg")]
    assert items[0].true_lat == pytest.approx(48.85) and items[0].true_lon == pytest.approx(2.35)
    assert math.isnan(items[1].true_lat)
    assert all(os.path.isabs(i.value) for i in items)
    assert len(r.skipped) == 1 and r.skipped[0].input == "broken.jpg"
    assert r.skipped[0].reason.startswith("unreadable image")


def test_folder_for_a_text_model_is_refused(tmp_path):
    _jpeg(tmp_path / "p" / "a.jpg")
    with pytest.raises(ValueError, match=r"folder of images.*image model"):
        InputReader(tmp_path / "p", modality="text")


def test_table_of_image_paths_reports_missing_files(tmp_path):
    _jpeg(tmp_path / "img" / "a.jpg")
    src = tmp_path / "list.csv"
    pd.DataFrame({"image": ["img/a.jpg", "img/missing.jpg", ""]}).to_csv(src, index=False)
    r = InputReader(src, modality="image")
    assert [i.label for i in r] == ["img/a.jpg"]
    assert [(s.row, s.reason) for s in r.skipped] == [(1, "missing file"), (2, "empty text")]


def test_missing_source_and_bad_kinds(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        InputReader(tmp_path / "nope.csv", modality="text")
    with pytest.raises(ValueError, match="modality"):
        InputReader(["a"], modality="audio")
    with pytest.raises(ValueError, match="inputs must be"):
        InputReader(3, modality="text")


def test_keys_follow_content(tmp_path):
    assert text_key("Lyon") == text_key("Lyon") != text_key("Lyon ")
    p = _jpeg(tmp_path / "a.jpg")
    k = file_key(p)
    assert file_key(p) == k
    _jpeg(p, color=(1, 2, 3))  # rewritten: new size or mtime, new key
    os.utime(p, ns=(1, 1))
    assert file_key(p) != k
