"""The accuracy benchmark's baselines (benchmarks/baselines.py) on toy data."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]


def _load_baselines():
    spec = importlib.util.spec_from_file_location(
        "benchmark_baselines", ROOT / "benchmarks" / "baselines.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


B = _load_baselines()


def _unit_xyz(lat, lon):
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1)


def _uniform_sphere(n, seed):
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1, 1, n)
    lon = rng.uniform(-180, 180, n)
    return np.stack([np.degrees(np.arcsin(z)), lon], 1)


# -- nearest neighbour ----------------------------------------------------------------
def test_nn_returns_exact_neighbour_locations():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 8)).astype(np.float32)
    ll = _uniform_sphere(50, 1)
    # queries = scaled, slightly perturbed copies of training rows: cosine ignores scale
    pick = rng.permutation(50)[:20]
    queries = 3.0 * train[pick] + 1e-3 * rng.normal(size=(20, 8)).astype(np.float32)
    pred, idx = B.nearest_neighbour(train, ll, queries)
    np.testing.assert_array_equal(idx, pick)
    np.testing.assert_array_equal(pred, ll[pick])  # exact copies, not interpolations


def test_nn_matches_brute_force_cosine():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(30, 5))
    q = rng.normal(size=(40, 5))
    ll = _uniform_sphere(30, 2)
    _, idx = B.nearest_neighbour(train, ll, q, batch_size=7)  # several blocks
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
        train / np.linalg.norm(train, axis=1, keepdims=True)).T
    np.testing.assert_array_equal(idx, cos.argmax(axis=1))


def test_nn_rejects_bad_input():
    with pytest.raises(ValueError, match="one location per training"):
        B.nearest_neighbour(np.ones((3, 2)), [[0.0, 0.0]] * 2, np.ones((1, 2)))
    with pytest.raises(ValueError, match="same encoder"):
        B.nearest_neighbour(np.ones((2, 2)), [[0.0, 0.0]] * 2, np.ones((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        B.nearest_neighbour(np.ones((2, 2)), [[0.0, 0.0]] * 2, [[np.nan, 1.0]])
    with pytest.raises(ValueError):
        B.nearest_neighbour(np.ones((2, 2)), [[95.0, 0.0], [0.0, 0.0]], np.ones((1, 2)))


# -- equal-area cells -----------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 400), seed=st.integers(0, 10_000))
def test_cells_partition_the_sphere(n, seed):
    """Every point gets exactly one cell: the one of its nearest centre (brute force)."""
    cells = B.EqualAreaCells(n)
    pts = _uniform_sphere(200, seed)
    got = cells.assign(pts)
    assert got.shape == (200,) and got.dtype == np.int64
    assert ((got >= 0) & (got < n)).all()
    c = _unit_xyz(cells.centres[:, 0].numpy(), cells.centres[:, 1].numpy())
    p = _unit_xyz(pts[:, 0], pts[:, 1])
    ang = np.arccos(np.clip(p @ c.T, -1, 1))
    # the assigned centre is (one of) the nearest
    np.testing.assert_allclose(ang[np.arange(200), got], ang.min(axis=1), atol=1e-9)


def test_cells_centres_belong_to_their_own_cell():
    cells = B.EqualAreaCells(300)
    np.testing.assert_array_equal(cells.assign(cells.centres), np.arange(300))


def test_cells_are_near_equal_area():
    """Monte Carlo cell areas: each ~4 pi / n (Fibonacci Voronoi cells are near-uniform)."""
    n, m = 50, 400_000
    counts = np.bincount(B.EqualAreaCells(n).assign(_uniform_sphere(m, 3)), minlength=n)
    expected = m / n
    # binomial sd ~ sqrt(8000) ~ 89, i.e. 1.1 %; cells differ by a few % at most
    assert counts.min() > 0.9 * expected and counts.max() < 1.1 * expected


def test_cells_handle_antimeridian():
    cells = B.EqualAreaCells(1000)
    a = cells.assign([[10.0, 179.9999], [10.0, -179.9999]])
    assert a[0] == a[1]


# -- cell classifier -------------------------------------------------------------------
def _separable_toy(seed, n_per=40):
    """Three clusters of embeddings, each tied to places inside one cell."""
    rng = np.random.default_rng(seed)
    cells = B.EqualAreaCells(64)
    chosen = [5, 30, 57]
    means = 4.0 * np.eye(3, 6)
    emb, ll, label = [], [], []
    for k, c in enumerate(chosen):
        emb.append(means[k] + 0.3 * rng.normal(size=(n_per, 6)))
        centre = cells.centres[c].numpy()
        # small jitter (< 1 degree) keeps the places well inside the ~28-degree-wide cell
        ll.append(centre + rng.uniform(-0.5, 0.5, size=(n_per, 2)))
        label += [c] * n_per
    return (np.concatenate(emb).astype(np.float32), np.concatenate(ll), np.array(label),
            means, chosen, cells)


@pytest.mark.parametrize("hidden", [0, 32])
def test_classifier_predicts_the_right_cell_on_separable_data(hidden):
    emb, ll, label, means, chosen, cells = _separable_toy(0)
    assert (cells.assign(ll) == label).all()  # toy places do lie in their cells
    clf = B.CellClassifier(64, hidden=hidden, epochs=60, batch_size=32, lr=1e-2, seed=0)
    clf.fit(emb, ll)
    rng = np.random.default_rng(1)
    q = np.concatenate([m + 0.3 * rng.normal(size=(10, 6)) for m in means]).astype(np.float32)
    want = np.repeat(chosen, 10)
    p = clf.predict_proba(q)
    assert torch.allclose(p.sum(1), torch.ones(len(q), dtype=torch.float64))
    np.testing.assert_array_equal(p.argmax(1).numpy(), want)
    centre = clf.predict(q, "centre")
    np.testing.assert_array_equal(cells.assign(centre), want)
    np.testing.assert_allclose(centre, cells.centres[want].numpy())
    # cell_mean: the spherical mean of the cell's training places (independently computed)
    cm = clf.predict(q, "cell_mean")
    for k, c in enumerate(chosen):
        xyz = _unit_xyz(ll[label == c, 0], ll[label == c, 1]).mean(0)
        lat = np.degrees(np.arcsin(xyz[2] / np.linalg.norm(xyz)))
        lon = np.degrees(np.arctan2(xyz[1], xyz[0]))
        np.testing.assert_allclose(cm[10 * k:10 * (k + 1)], [[lat, lon]] * 10, atol=1e-9)
    # confident predictions: the weighted mean lands in the same cell
    np.testing.assert_array_equal(cells.assign(clf.predict(q, "weighted_mean")), want)


def test_classifier_is_reproducible_with_seed():
    emb, ll, *_ = _separable_toy(2, n_per=10)
    a = B.CellClassifier(64, hidden=8, epochs=3, seed=7).fit(emb, ll).predict_proba(emb)
    b = B.CellClassifier(64, hidden=8, epochs=3, seed=7).fit(emb, ll).predict_proba(emb)
    assert torch.equal(a, b)


def test_classifier_errors():
    with pytest.raises(ValueError, match="not fitted"):
        B.CellClassifier(10).predict_proba(np.ones((1, 3)))
    with pytest.raises(ValueError, match="n_cells"):
        B.CellClassifier(1)
    emb, ll, *_ = _separable_toy(0, n_per=5)
    clf = B.CellClassifier(64, hidden=0, epochs=1).fit(emb, ll)
    with pytest.raises(ValueError, match="how must be"):
        clf.predict(emb, "median")
    with pytest.raises(ValueError, match="fitted on 6-d"):
        clf.predict(np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="rows"):
        B.CellClassifier(64).fit(emb, ll[:-1])
