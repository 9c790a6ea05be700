"""The real built-in geolocator, trained on first use as a user gets it, must be right.

This is the one test that trains the real default model (a few minutes on 2 CPU cores;
the checkpoint is cached under ``$GEODIFFLOC_CACHE_DIR``, so the tutorials and a second
run reuse it). It fails for a model that learned nothing: a random point lies in Japan
for ~0.07 % of the sphere and within 200 km of the Eiffel Tower for ~0.03 %. The model
alone (``model.predict``) is tested, and the built-in geolocator as ``locate`` runs it:
the place names read against the gazetteers and weighed by the model (see
benchmarks/results/geolocator_*.md for the whole test sets).
"""

from __future__ import annotations

import pytest

from geodiffloc.geo import country_of
from geodiffloc.pipeline import default_model
from geodiffloc.sphere import haversine_km


@pytest.fixture(scope="module")
def geolocator():
    model, encoder = default_model(progress=False)
    return model, encoder


@pytest.mark.parametrize(("query", "country"), [
    ("Kyoto temple", "Japan"),
    ("a beach in Rio de Janeiro", "Brazil"),
    ("vineyards near Bordeaux", "France"),
])
def test_default_geolocator_names_the_country(geolocator, query, country):
    model, encoder = geolocator
    gdf = model.predict([query], encoder=encoder, n_views=16, seed=0)
    got = country_of(gdf.lat.to_numpy(), gdf.lon.to_numpy())[0]
    assert got == country, (query, got, float(gdf.lat[0]), float(gdf.lon[0]))


def test_default_geolocator_finds_a_landmark_city(geolocator):
    import torch

    model, encoder = geolocator
    gdf = model.predict(["Eiffel Tower, Paris"], encoder=encoder, n_views=16, seed=0)
    lat, lon = (torch.tensor([float(v)], dtype=torch.float64) for v in (gdf.lat[0], gdf.lon[0]))
    d = float(haversine_km(lat, lon, torch.tensor([48.8584], dtype=torch.float64),
                           torch.tensor([2.2945], dtype=torch.float64))[0])
    assert d <= 200.0, (float(lat), float(lon), d)


@pytest.mark.parametrize(("query", "lat", "lon", "km"), [
    ("Eiffel Tower, Paris", 48.8584, 2.2945, 50.0),
    ("München", 48.137, 11.575, 50.0),
    ("rice terraces in Bali", -8.4, 115.2, 150.0),
    ("Paris, Texas", 33.66, -95.56, 50.0),
])
def test_locate_reads_names_and_lands_close(geolocator, query, lat, lon, km):
    import torch

    from geodiffloc.pipeline import locate

    model, encoder = geolocator
    res = locate([query], model=model, encoder=encoder, resolution=2.0, n_samples=16,
                 countries_scale="lowres", progress=False)
    row = res.predictions.iloc[0]
    a, b = (torch.tensor([[float(row["lat"]), float(row["lon"])], [lat, lon]],
                         dtype=torch.float64))
    d = float(haversine_km(a[:1], a[1:], b[:1], b[1:])[0])
    assert d <= km, (query, float(row["lat"]), float(row["lon"]), d, row.get("names"))


def test_locate_names_a_country_named_in_another_language(geolocator):
    from geodiffloc.pipeline import locate

    model, encoder = geolocator
    res = locate(["a fishing harbour in northern Norway", "Frankreich"], model=model,
                 encoder=encoder, resolution=2.0, n_samples=16, countries_scale="lowres",
                 progress=False)
    assert list(res.predictions["country"]) == ["Norway", "France"]
