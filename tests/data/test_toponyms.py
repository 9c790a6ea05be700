"""The toponym index: place names in free text -> gazetteer entities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from geodiffloc.data import toponyms
from geodiffloc.data.toponyms import ToponymIndex, normalize_name, toponym_index


@pytest.fixture(scope="module")
def index() -> ToponymIndex:
    return toponym_index()


def _entities(index, match):
    return index.entities.iloc[match.entities]


@given(st.text(max_size=40))
def test_normalize_is_idempotent_and_case_blind(text):
    once = normalize_name(text)
    assert normalize_name(once) == once
    assert normalize_name(text.upper()) == normalize_name(text.lower()) or not text.isascii()


def test_normalize_strips_accents_and_punctuation():
    assert normalize_name("Saint-Émilion") == normalize_name("saint emilion")
    assert normalize_name("  Zürich!! ") == "zurich"


def test_finds_a_town_by_name(index):
    matches = index.find("vineyards near Bordeaux")
    bordeaux = [m for m in matches if m.text == "Bordeaux"]
    assert len(bordeaux) == 1 and bordeaux[0].capitalised
    ents = _entities(index, bordeaux[0])
    french = ents[(ents.country_code == "FR") & (ents.kind == "place")]
    # the gazetteer's own Bordeaux (a large French city) is among the readings
    assert len(french) and french.population.max() > 200_000
    lat, lon = french.sort_values("population").iloc[-1][["lat", "lon"]]
    assert abs(lat - 44.84) < 0.2 and abs(lon + 0.58) < 0.2


def test_longest_name_wins_over_the_name_inside_it(index):
    texts = [m.text for m in index.find("a yellow cab in New York")]
    assert "New York" in texts and "York" not in texts


@pytest.mark.parametrize("text, country", [
    ("München", "DE"), ("Москва", "RU"), ("東京", "JP"), ("Firenze", "IT"),
])
def test_other_languages_and_scripts(index, text, country):
    (match,) = index.find(text)
    assert country in set(_entities(index, match).country_code)


def test_text_without_spaces_is_searched_inside(index):
    # "a temple in Kyoto" in Japanese: no spaces between words
    texts = {m.text: m for m in index.find("京都の寺")}
    assert "京都" in texts
    assert "JP" in set(_entities(index, texts["京都"]).country_code)


@pytest.mark.parametrize("name, code", [("Deutschland", "DE"), ("Japon", "JP"),
                                        ("Colombian", "CO")])
def test_countries_by_translation_and_demonym(index, name, code):
    ents = index.entities.iloc[index.lookup(name)]
    assert ((ents.kind == "country") & (ents.country_code == code)).any()


def test_area_entities_cover_their_places(index):
    (bav,) = [e for e in index.lookup("Bavaria") if index.entities.kind[e] == "admin1"]
    rows = index.members(int(bav))
    assert len(rows) > 100
    assert set(index.places.admin1.iloc[rows]) == {"Bavaria"}
    assert set(index.places.country_code.iloc[rows]) == {"DE"}
    # the entity's point is its most populous place (Munich)
    lat = index.entities.lat[bav]
    assert abs(lat - 48.14) < 0.1


def test_generic_words_are_dropped_from_admin1_names_only(index):
    # GeoNames' "Astrakhan Oblast" is also found as "Astrakhan"; "Lake County" is not "lake"
    for name in ("Astrakhan Oblast", "Astrakhan"):
        ents = index.entities.iloc[index.lookup(name)]
        assert ((ents.kind == "admin1") & (ents.country_code == "RU")).any()
    lake = index.entities.iloc[index.lookup("lake")]
    assert not (lake.kind == "admin2").any()


@pytest.mark.parametrize("name, admin1", [("Puglia", "Apulia"), ("Bayern", "Bavaria"),
                                          ("Lombardia", "Lombardy")])
def test_regions_by_their_names_in_other_languages(index, name, admin1):
    # the ISO 3166-2 names and their translations lead to GeoNames' own admin-1 area
    ents = index.entities.iloc[index.lookup(name)]
    assert ((ents.kind == "admin1") & (ents.name == admin1)).any()


def test_japanese_ward_suffix_is_optional_in_japan_only(index):
    ents = index.entities.iloc[index.lookup("Shibuya")]
    assert (ents.country_code == "JP").any()
    # elsewhere a trailing "Ku"/"Si" is part of the name, not a suffix
    from geodiffloc.data.toponyms import _without_ward_suffix

    assert _without_ward_suffix("shibuya ku", "JP") == "shibuya"
    assert _without_ward_suffix("gangnam gu", "KR") == "gangnam"
    assert _without_ward_suffix("lai si", "CN") == ""
    assert _without_ward_suffix("ku", "JP") == ""


def test_georgian_names_count_as_capitalised(index):
    (match,) = index.find("თბილისი")
    assert match.capitalised
    assert "GE" in set(_entities(index, match).country_code)


def test_nothing_found_in_a_text_without_names(index):
    assert index.find("") == []
    assert index.find("   ,,, !!") == []


def test_rejects_non_text(index):
    with pytest.raises(TypeError, match="must be a str"):
        index.find(None)


def _tiny_index() -> ToponymIndex:
    places = pd.DataFrame({"name": ["Aville", "Beetown"], "admin1": ["North", "South"],
                           "admin2": ["", ""], "country": ["Aland", "Aland"],
                           "country_code": ["AA", "AA"], "lat": [1.0, 2.0],
                           "lon": [3.0, 4.0], "population": [5000, 20000]})
    entities = pd.DataFrame({"kind": ["country", "place", "place"],
                             "name": ["Aland", "Aville", "Beetown"],
                             "country_code": ["AA"] * 3, "admin1": ["", "North", "South"],
                             "alias": [False, False, True], "lat": [2.0, 1.0, 2.0],
                             "lon": [4.0, 3.0, 4.0], "population": [25000.0, 5000.0, 2e4]})
    return ToponymIndex(places, entities, np.array([0, 2, 3, 4]), np.array([0, 1, 0, 1]),
                        {"aland": 0, "aville": 1, "beetown": 2, "bee town": 3},
                        np.array([0, 1, 2, 3, 4]), np.array([0, 1, 2, 2]))


def test_cache_file_round_trip(tmp_path, monkeypatch):
    tiny = _tiny_index()
    path = tmp_path / "index.npz"
    toponyms._save(tiny, path)
    monkeypatch.setattr(toponyms, "load_gazetteer", lambda: tiny.places)
    back = toponyms._load(path)
    assert back.names == tiny.names
    pd.testing.assert_frame_equal(back.entities, tiny.entities, check_dtype=False)
    for a in ("member_ptr", "member_idx", "name_ptr", "name_idx"):
        np.testing.assert_array_equal(getattr(back, a), getattr(tiny, a))
    assert [m.text for m in back.find("from Bee Town to Aville")] == ["Bee Town", "Aville"]


def test_unreadable_cache_is_rebuilt(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(toponyms, "_cache_file", lambda: tmp_path / "index.npz")
    (tmp_path / "index.npz").write_bytes(b"not an npz file")
    tiny = _tiny_index()
    monkeypatch.setattr(toponyms, "build_index", lambda: tiny)
    toponyms.toponym_index.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="geodiffloc.data.toponyms"):
            assert toponyms.toponym_index() is tiny
        assert "unreadable" in caplog.text
        # and the rebuilt index was written back in a readable form
        monkeypatch.setattr(toponyms, "load_gazetteer", lambda: tiny.places)
        assert toponyms._load(tmp_path / "index.npz").names == tiny.names
    finally:
        toponyms.toponym_index.cache_clear()
