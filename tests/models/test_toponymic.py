"""Place names weighed by a model: the posterior of geodiffloc.models.toponymic."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import torch

from geodiffloc.data.toponyms import toponym_index
from geodiffloc.models.toponymic import ToponymGeolocator, ToponymWeights, resolve
from geodiffloc.shdd import SHDD
from geodiffloc.sphere import haversine_km as _haversine


def haversine_km(lat1, lon1, lat2, lon2) -> float:
    t = torch.tensor
    return float(_haversine(t(float(lat1)), t(float(lon1)), t(float(lat2)), t(float(lon2))))


class PeakedModel:
    """A stand-in LocDiff: only its SHDD is used, and its samples are real SHDD vectors."""

    def __init__(self, L: int = 15) -> None:
        self.shdd = SHDD(L)

    def samples_at(self, *latlon: tuple[float, float]) -> torch.Tensor:
        pts = torch.tensor(latlon, dtype=torch.float64)
        return self.shdd.encode(latlon=pts).double()

    def uniform(self, k: int = 4) -> torch.Tensor:
        return torch.zeros(k, self.shdd.dim, dtype=torch.float64)


@pytest.fixture(scope="module")
def geo() -> ToponymGeolocator:
    return ToponymGeolocator(PeakedModel(), encoder=None, index=toponym_index())


def _answer(geo, text, coeffs, point=(0.0, -150.0), confidence=0.9):
    field = geo.model_field(coeffs, resolution=1.0)
    return geo.combine(text, field, np.asarray(point, dtype=np.float64), confidence)


def test_largest_reading_of_an_ambiguous_name_with_an_indifferent_model(geo):
    a = _answer(geo, "Paris", geo.model.uniform())
    assert a["source"] == "names" and a["country_code"] == "FR"
    assert haversine_km(a["lat"], a["lon"], 48.857, 2.352) < 20


def test_a_named_ancestor_picks_the_reading(geo):
    a = _answer(geo, "Paris, Texas", geo.model.uniform())
    assert a["country_code"] == "US" and a["place"] == "Paris"
    assert haversine_km(a["lat"], a["lon"], 33.66, -95.56) < 20


@pytest.mark.parametrize("peak, code", [((41.72, 44.79), "GE"), ((33.75, -84.39), "US")])
def test_the_model_arbitrates_between_readings(geo, peak, code):
    # Georgia the country or the US state: the model's samples decide
    a = _answer(geo, "Georgia", geo.model.samples_at(peak, peak))
    assert a["source"] == "names" and a["country_code"] == code


def test_a_text_without_names_is_the_models(geo):
    a = _answer(geo, "a fjord with steep green cliffs", geo.model.samples_at((61.0, 7.0)),
                point=(61.0, 7.0), confidence=0.7)
    assert a["source"] == "model"
    assert (a["lat"], a["lon"]) == (61.0, 7.0)
    assert a["confidence"] <= 0.7


def test_a_stray_small_town_name_loses_to_a_confident_model(geo):
    # "Tower" is a town in Ireland; the model is sure of Paris
    a = _answer(geo, "the Eiffel Tower", geo.model.samples_at((48.858, 2.294)),
                point=(48.858, 2.294))
    assert a["source"] == "model"


def test_a_great_citys_foreign_name_beats_a_village_bearing_it(geo):
    # "Londres" is London's French name and a village of 2600 in Argentina; "Dili" is
    # Timor-Leste's capital, and only an old name of Delhi (70x larger, not 100x)
    assert _answer(geo, "Londres", geo.model.uniform())["country_code"] == "GB"
    assert _answer(geo, "Dili", geo.model.uniform())["country_code"] == "TL"
    # the same for countries: "Male" is a name of Malta, and the Maldives' capital
    assert _answer(geo, "Malé", geo.model.uniform())["country_code"] == "MV"
    assert _answer(geo, "Deutschland", geo.model.uniform())["country_code"] == "DE"


def test_model_power_tempers_an_overconfident_model(geo):
    # the model is sure of Hobart, Indiana; the gazetteer's Hobart, Tasmania is 9x larger
    samples = geo.model.samples_at(*[(41.53, -87.26)] * 4)
    sharp = ToponymGeolocator(geo.model, None, index=geo.index,
                              weights=ToponymWeights(model_power=1.0))
    tempered = ToponymGeolocator(geo.model, None, index=geo.index,
                                 weights=ToponymWeights(model_power=0.1))
    assert _answer(sharp, "Hobart", samples)["country_code"] == "US"
    assert _answer(tempered, "Hobart", samples)["country_code"] == "AU"
    # with model_power 0 the model does not arbitrate at all
    blind = ToponymGeolocator(geo.model, None, index=geo.index,
                              weights=ToponymWeights(model_power=0.0))
    assert _answer(blind, "Hobart", samples)["country_code"] == "AU"


def test_a_feature_word_heading_an_unknown_name_is_no_name(geo):
    # "Delta" is Nigeria's Delta State (4 million people), but in "the Okavango Delta"
    # it is the head of a name the gazetteers lack; alone it is still a (weak) reading
    a = _answer(geo, "wildlife in the Okavango Delta", geo.model.uniform())
    assert a["source"] == "model" and "Delta" not in a["names"].split(", ")
    assert "Delta" in [m.text for m in resolve("a boat trip on the Delta").matches]


def test_lower_case_common_words_do_not_outvote_a_capitalised_name(geo):
    # "rice" is a county in Minnesota; "Bali" the Indonesian province
    a = _answer(geo, "rice terraces in Bali", geo.model.uniform())
    assert a["country_code"] == "ID"


def test_the_specific_reading_inside_the_chosen_country(geo):
    # France carries most mass, but the answer is Bordeaux, not France's largest city
    a = _answer(geo, "Bordeaux, France", geo.model.uniform())
    assert a["country_code"] == "FR"
    assert haversine_km(a["lat"], a["lon"], 44.84, -0.58) < 20


def test_confidence_is_the_chosen_countrys_posterior_mass(geo):
    w = geo.weights
    res = resolve("Georgia", geo.index, w)
    # with an indifferent model every density is 1: the posterior is the priors alone
    codes = geo.index.entities.country_code.to_numpy()[res.entities]
    per_country = {}
    for c, p in zip(codes, res.prior):
        per_country[c] = max(per_country.get(c, 0.0), p)
    total = res.prior.sum() + w.background
    a = _answer(geo, "Georgia", geo.model.uniform())
    assert a["confidence"] == pytest.approx(per_country[a["country_code"]] / total, rel=1e-9)
    assert a["confidence"] == pytest.approx(max(per_country.values()) / total, rel=1e-9)


def test_model_density_from_its_field_matches_the_exact_mixture(geo):
    coeffs = geo.model.samples_at((10.0, 20.0), (-30.0, 100.0))
    # cell centres of a 0.5-degree grid, near and far from the samples
    pts = np.array([[10.25, 20.25], [-30.25, 100.25], [60.25, -40.25], [11.75, 21.25]])
    field = geo.model_field(coeffs, resolution=0.5)
    got = geo.density_from_field(field, pts)
    exact = torch.exp(geo.model.shdd.log_density(coeffs, latlon=torch.as_tensor(pts)))
    want = (exact.mean(0) * 4 * np.pi).numpy()
    # a cell's mean density vs the density at its centre: equal to a few per cent
    np.testing.assert_allclose(got, want, rtol=0.05, atol=1e-3)
    assert want[0] > 50 * want[2]   # and the contrast is the model's, not the grid's


def test_refine_replaces_points_and_spreads_the_field(geo):
    texts = ["Bordeaux, France", "a fjord with steep green cliffs"]
    coeffs = torch.stack([geo.model.uniform(2), geo.model.samples_at((61.0, 7.0), (61.0, 7.0))])
    preds = gpd.GeoDataFrame({"lat": [0.0, 61.0], "lon": [0.0, 7.0], "confidence": [0.5, 0.8]},
                             geometry=gpd.points_from_xy([0.0, 7.0], [0.0, 61.0]),
                             crs="EPSG:4326")
    field = geo.model.shdd.field(coeffs[:, 0].float(), resolution=2.0).rename(
        {"sample": "query"})
    out, fld = geo.refine(texts, coeffs, preds, field)
    assert list(out["source"]) == ["names", "model"]
    assert out.geometry.x.iloc[0] == pytest.approx(out["lon"].iloc[0])
    np.testing.assert_allclose(fld.sum(("lat", "lon")).values, 1.0, rtol=1e-5)
    # the names' query: the field's heaviest cell is near Bordeaux
    q0 = fld.isel(query=0)
    top = q0.where(q0 == q0.max(), drop=True)
    assert haversine_km(float(top.lat[0]), float(top.lon[0]), 44.84, -0.58) < 500
    # the model's query: its own field, barely changed
    assert float(np.abs(fld.isel(query=1) - field.isel(query=1)).sum()) < 0.05


def test_refine_checks_lengths(geo):
    preds = gpd.GeoDataFrame({"lat": [0.0], "lon": [0.0], "confidence": [0.5]},
                             geometry=gpd.points_from_xy([0.0], [0.0]), crs="EPSG:4326")
    with pytest.raises(ValueError, match="must agree"):
        geo.refine(["a", "b"], geo.model.uniform(2)[None], preds)


@pytest.mark.parametrize("bad", [{"alpha": -1.0}, {"epsilon": 0.0}, {"background": np.nan},
                                 {"model_power": -0.5}, {"alias_dominance": np.inf}])
def test_weights_are_validated(bad):
    with pytest.raises(ValueError, match="ToponymWeights"):
        ToponymWeights(**bad)
