"""Training-free baselines for ``geolocator.py``: callables ``texts -> (lat, lon, confidence)``.

``country_names`` -- nearest Natural Earth country name in the bundled MiniLM space
(cosine), answering that country's representative point. No training, no gazetteer:
a floor that says how much the text encoder alone knows about which country a
description names. Its ``confidence`` is a softmax over the cosine similarities at
temperature :data:`TEMPERATURE` (a fixed choice, not fitted), so its reliability table
shows how an uncalibrated score looks.

``names_only`` -- the built-in geolocator's place-name reading with an indifferent
model (uniform density; :mod:`geodiffloc.models.toponymic`): what the gazetteers alone
answer. A text with no name it knows gets a fixed point in the Pacific (wrong) and
confidence 0. The gap to the full geolocator is what the LocDiff model adds.

Run: ``python benchmarks/geolocator.py --predictor
benchmarks/geolocator_baselines.py:country_names --name geolocator_country_names``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

TEMPERATURE = 0.05


@functools.lru_cache(maxsize=1)
def _countries() -> tuple[list[str], np.ndarray, Any]:
    """One row per Natural Earth code: long name, representative (lat, lon), encoder."""
    import shapely

    from geodiffloc.encoders.text import SentenceTransformerEncoder
    from geodiffloc.geo import countries

    world = countries("10m")
    world = world[world["iso_a3"].fillna("").str.len() == 3]
    names, points = [], []
    for _, g in world.groupby("iso_a3", sort=True):
        # the polygon with the most people names the code (France, not Clipperton I.)
        main = g.sort_values("pop_est", ascending=False).iloc[0]
        pt = shapely.union_all(g.geometry.to_numpy()).representative_point()
        names.append(str(main["name_long"]))
        points.append((pt.y, pt.x))
    return names, np.asarray(points, dtype=np.float64), SentenceTransformerEncoder()


def country_names(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest country name by cosine similarity of MiniLM embeddings.

    Returns
    -------
    (lat, lon, confidence)
        The chosen country's representative point (inside its polygons) and the
        softmax probability of that country.
    """
    names, points, encoder = _countries()
    ref = encoder.encode(names).numpy().astype(np.float64)
    q = encoder.encode(list(texts)).numpy().astype(np.float64)
    sim = q @ ref.T  # both L2-normalised
    best = sim.argmax(axis=1)
    z = (sim - sim.max(axis=1, keepdims=True)) / TEMPERATURE
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return points[best, 0], points[best, 1], p[np.arange(len(best)), best]


#: Where ``names_only`` answers a text without a known name (open Pacific: always wrong).
NO_ANSWER = (0.0, -150.0)


def names_only(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gazetteer names alone, weighed by a uniform density (see the module docstring)."""
    import torch

    from geodiffloc.models.toponymic import ToponymGeolocator
    from geodiffloc.shdd import SHDD

    shdd = SHDD(1)
    uniform = shdd.field(torch.zeros(shdd.dim, dtype=torch.float64), resolution=1.0)
    geo = ToponymGeolocator(model=None, encoder=None)
    out = [geo.combine(t, uniform, np.array(NO_ANSWER), 0.0) for t in texts]
    return (np.array([a["lat"] for a in out]), np.array([a["lon"] for a in out]),
            np.array([a["confidence"] for a in out]))
