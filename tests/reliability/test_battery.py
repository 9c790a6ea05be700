"""Every bad input of the battery ends in a clear error: no traceback, hang or silence."""

from __future__ import annotations

import pytest
from rel_battery import run_battery


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return run_battery(tmp_path_factory.mktemp("battery"))


def test_the_battery_is_broad(records):
    kinds = {r["kind"] for r in records}
    assert kinds == {"api", "cli", "untrusted"}
    assert len(records) >= 90


@pytest.mark.parametrize("kind", ["api", "cli"])
def test_every_case_is_a_clear_error(records, kind):
    bad = [f"{r['case']}: {r['outcome']} ({r['detail']})" for r in records
           if r["kind"] == kind and r["outcome"] != "clear"]
    assert bad == []


def test_untrusted_files_never_run_code(records):
    (rec,) = [r for r in records if r["kind"] == "untrusted"]
    assert rec["outcome"] == "clear", rec["detail"]


def test_messages_say_what_and_where(records):
    by_case = {r["case"]: r["detail"] for r in records}
    assert "NaN" in by_case["decode(NaN vector)"]
    assert "GiB" in by_case["LatLonGrid.global_(0.001).latlon()"]
    assert "'L'" in by_case["LocDiff.load(missing_key_model)"]
    assert "holds NaN" in by_case["LocDiff.load(nan_model)"]
    assert "UTF-8" in by_case["non-UTF-8 query"]
    assert "weights_only=False" not in by_case["--resume malicious pickle"]


def test_geoseries_zones_work_like_a_frame():
    """A GeoSeries is a documented zone input (it used to fail deep inside pandas)."""
    import geopandas as gpd
    import numpy as np
    from shapely.geometry import box

    from geodiffloc import SHDD
    from geodiffloc.geo import zonal_probability

    s = SHDD(4)
    field = s.field(s.encode(lat=[5.0], lon=[5.0])[0], resolution=5.0)
    frame = gpd.GeoDataFrame(geometry=[box(0, 0, 10, 10), box(-60, -30, -40, 0)],
                             crs="EPSG:4326")
    a = zonal_probability(field, frame)["prob"].to_numpy()
    b = zonal_probability(field, frame.geometry)["prob"].to_numpy()
    np.testing.assert_allclose(a, b)
    assert a[0] > a[1]
