"""A LocDiff trained on a tiny budget must have learned something: it beats chance.

The task: eight cities on different continents; each example's embedding is a noisy
one-hot of its city and its location is scattered ~200 km around the city. A model that
learned the map puts most predictions within 2500 km of the truth; a random guess does
so for ~4 % of them (the area of a 2500 km cap over the sphere's); the same network
untrained does no better than chance. Trained through the public ``LocDiff.fit`` with
its default (multi-scale) loss.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from geodiffloc import LocDiff
from geodiffloc.metrics import summarize
from geodiffloc.sphere import cap_random, uniform_random

CITIES = torch.tensor([[48.9, 2.4], [35.7, 139.7], [-33.9, 151.2], [40.7, -74.0],
                       [-23.5, -46.6], [-1.3, 36.8], [55.8, 37.6], [19.4, -99.1]],
                      dtype=torch.float64)


def _task(n_per_city: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = len(CITIES)
    labels = torch.arange(k).repeat_interleave(n_per_city)
    emb = torch.nn.functional.one_hot(labels, k).float() + 0.3 * torch.randn(
        len(labels), k, generator=g)
    ll = cap_random(CITIES, n_per_city, 200.0, generator=g).reshape(-1, 2)
    return emb, ll.to(torch.float64)


def _acc2500(model: LocDiff, emb: torch.Tensor, truth: torch.Tensor) -> float:
    gdf = model.predict(emb, n_views=4, steps=10, seed=0)
    pred = np.stack([gdf.lat.to_numpy(), gdf.lon.to_numpy()], 1)
    return summarize(pred, truth.numpy(), thresholds=(2500,), method="haversine")[
        "acc@2500km_%"]


def test_tiny_budget_locdiff_beats_chance_by_far():
    torch.manual_seed(0)
    train_x, train_y = _task(24, seed=0)
    test_x, test_y = _task(6, seed=1)
    model = LocDiff(L=7, cond_dim=train_x.shape[1], widths=(64, 32), time_dim=16)
    untrained = _acc2500(model, test_x, test_y)
    losses = model.fit(train_x, train_y, steps=250, batch_size=64, lr=3e-3, warmup_steps=20,
                       seed=0, progress=False, loss={"bank": 2048})
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    trained = _acc2500(model, test_x, test_y)
    cap = 100.0 * (1 - math.cos(2500.0 / 6371.0088)) / 2  # chance, in percent
    rand = uniform_random(len(test_y), generator=torch.Generator().manual_seed(2))
    chance = summarize(rand.numpy(), test_y.numpy(), thresholds=(2500,),
                       method="haversine")["acc@2500km_%"]
    assert cap < 5.0 and chance < 25.0
    assert untrained < 40.0
    assert trained >= 75.0, (trained, untrained, chance)
