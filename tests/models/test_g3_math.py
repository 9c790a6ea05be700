"""G3 building blocks against independent references: loss, index, parser, modes, descriptions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geodiffloc.models.g3 import (
    Query,
    References,
    RetrievalGenerator,
    VectorIndex,
    alignment_loss,
    describe_locations,
    faiss_available,
    info_nce,
    parse_coordinates,
    reverse_geocode,
)


# -- loss ------------------------------------------------------------------------------
def _nce_ref(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    """-mean_i log softmax_j(scale cos(a_i, b_j))[i], by explicit loops in float64."""
    total = 0.0
    for i in range(a.shape[0]):
        ai = a[i] / np.linalg.norm(a[i])
        logits = [scale * float(ai @ (bj / np.linalg.norm(bj))) for bj in b]
        m = max(logits)
        lse = m + math.log(sum(math.exp(v - m) for v in logits))
        total += lse - logits[i]
    return total / a.shape[0]


@pytest.mark.parametrize("weights", [(1.0, 1.0, 0.0), (0.5, 2.0, 1.5), (1.0, 0.0, 0.0)])
def test_alignment_loss_matches_a_float64_reference(weights):
    g = torch.Generator().manual_seed(0)
    b, s, d = 5, 7, 4
    q, t, gps = (torch.randn(b, d, generator=g, dtype=torch.float64) for _ in range(3))
    queue = torch.randn(s, d, generator=g, dtype=torch.float64)
    scales = tuple(torch.tensor(v, dtype=torch.float64) for v in (2.0, 1.5, 3.0))
    loss, parts = alignment_loss(q, t, gps, queue, scales, weights)
    e = [math.exp(float(v)) for v in scales]
    Q, T, G, N = (x.numpy() for x in (q, t, gps, queue))
    locs = np.concatenate([G, N])
    qg = _nce_ref(Q, locs, e[0])
    qt = 0.5 * (_nce_ref(Q, T, e[1]) + _nce_ref(T, Q, e[1]))
    tg = _nce_ref(T, locs, e[2])
    want = weights[0] * qg + weights[1] * qt + weights[2] * tg
    assert float(loss) == pytest.approx(want, rel=1e-10)
    if weights[1]:
        assert float(parts["qt"]) == pytest.approx(qt, rel=1e-10)


def test_logit_scale_is_clamped_at_100_and_shapes_are_checked():
    a = torch.randn(3, 4, dtype=torch.float64)
    big = info_nce(a, a, torch.tensor(10.0, dtype=torch.float64))
    assert float(big) == pytest.approx(_nce_ref(a.numpy(), a.numpy(), 100.0), rel=1e-10)
    with pytest.raises(ValueError, match="same d"):
        info_nce(a, torch.randn(3, 5), torch.tensor(1.0))
    with pytest.raises(ValueError, match="one shape"):
        alignment_loss(a, a[:2], a, None, (torch.tensor(1.0),) * 3)


# -- index -----------------------------------------------------------------------------
def _exact(v: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    vn = v / np.linalg.norm(v, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.argsort(-(qn @ vn.T), axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_flat_index_equals_exact_search(backend):
    if backend == "faiss" and not faiss_available():
        pytest.skip("faiss not installed")
    rng = np.random.default_rng(0)
    v = rng.normal(size=(1000, 16))
    q = rng.normal(size=(25, 16))
    idx = VectorIndex(v, backend=backend)
    sim, ind = idx.search(q, 7, chunk=300)  # chunk boundaries inside the scan
    assert idx.backend == backend
    assert (ind.numpy() == _exact(v, q, 7)).all()
    vn = v / np.linalg.norm(v, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    want = np.take_along_axis(qn @ vn.T, ind.numpy(), axis=1)
    assert np.allclose(sim.numpy(), want, atol=1e-5)
    # k larger than the index is capped
    assert idx.search(q[:1], 5000)[1].shape == (1, 1000)


def test_hnsw_index_finds_nearly_all_true_neighbours():
    if not faiss_available():
        pytest.skip("faiss not installed")
    rng = np.random.default_rng(1)
    v = rng.normal(size=(3000, 12))
    q = rng.normal(size=(50, 12))
    _, ind = VectorIndex(v, kind="hnsw").search(q, 10)
    truth = _exact(v, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ind.numpy(), truth)])
    assert recall > 0.9


def test_index_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(n, d\)"):
        VectorIndex(np.zeros((0, 3)), backend="torch")
    with pytest.raises(ValueError, match="backend"):
        VectorIndex(np.ones((2, 3)), backend="annoy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(m, 3\)"):
        VectorIndex(np.ones((2, 3)), backend="torch").search(np.ones((1, 4)), 1)


# -- free-text coordinates ------------------------------------------------------------
lat_st = st.floats(-90, 90, allow_nan=False).map(lambda v: round(v, 4))
lon_st = st.floats(-180, 180, allow_nan=False).map(lambda v: round(v, 4))
filler = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Zs"),
                                        max_codepoint=0x17F), max_size=30)


def _fmt(lat: float, lon: float, style: int) -> str:
    if style == 0:
        return f'{{"latitude": {lat}, "longitude": {lon}}}'
    if style == 1:
        return f"lat={lat}, lng={lon}"
    if style == 2:
        return (f"{abs(lat)}° {'N' if lat >= 0 else 'S'}, "
                f"{abs(lon)}° {'E' if lon >= 0 else 'W'}")
    return f"({lat}, {lon})"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(lat_st, lon_st, st.integers(0, 3)), min_size=1, max_size=4),
       filler, filler)
def test_parser_recovers_every_written_pair(pairs, pre, post):
    text = pre + " " + " ; ".join(_fmt(a, b, s) for a, b, s in pairs) + " " + post
    got = parse_coordinates(text)
    assert len(got) == len(pairs)
    for (a, b, _), (ga, gb) in zip(pairs, got):
        assert ga == pytest.approx(a, abs=1e-9) and gb == pytest.approx(b, abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parser_never_raises_and_only_returns_valid_pairs(text):
    for lat, lon in parse_coordinates(text):
        assert -90 <= lat <= 90 and -180 <= lon <= 180


def test_parser_drops_out_of_range_pairs():
    assert parse_coordinates('{"latitude": 123.0, "longitude": 10}') == []
    assert parse_coordinates("(45.0, 200.5) and (10, 20)") == [(10.0, 20.0)]
    assert parse_coordinates(None) == []  # type: ignore[arg-type]


# -- retrieval modes -------------------------------------------------------------------
def test_retrieval_generator_finds_the_weighted_cluster_modes():
    rng = np.random.default_rng(0)
    paris = np.array([48.85, 2.35]) + rng.normal(scale=0.2, size=(6, 2))
    nyc = np.array([40.71, -74.0]) + rng.normal(scale=0.2, size=(3, 2))
    ll = np.concatenate([paris, nyc])
    sim = np.array([0.9] * 6 + [0.5] * 3)
    gen = RetrievalGenerator(bandwidth_km=150.0, ref_counts=(9,), temperature=0.1)
    c = gen.generate(Query(0, torch.zeros(2)), References(ll, sim), 2)
    assert len(c) == 2
    # the densest mode is Paris's, the second New York's, each near its cluster mean
    assert abs(c[0].lat - paris[:, 0].mean()) < 0.3 and abs(c[0].lon - paris[:, 1].mean()) < 0.3
    assert abs(c[1].lat - nyc[:, 0].mean()) < 0.3 and abs(c[1].lon - nyc[:, 1].mean()) < 0.3
    assert c[0].score > c[1].score
    # one prompt per reference count
    c2 = RetrievalGenerator(ref_counts=(3, 9)).generate(Query(0, torch.zeros(2)),
                                                        References(ll, sim), 1)
    assert [x.prompt for x in c2] == ["top3", "top9"]


# -- descriptions ----------------------------------------------------------------------
def test_reverse_geocoding_gives_mp16pro_style_descriptions():
    r = reverse_geocode([[35.6895, 139.6917], [-33.8688, 151.2093]])
    assert list(r["country"]) == ["Japan", "Australia"]
    assert list(r["continent"]) == ["Asia", "Oceania"]
    assert (r["distance_km"] < 20).all()
    d = describe_locations([[48.8566, 2.3522]], levels=("city", "country", "continent"))
    assert d == ["Paris, France, Europe"]
    with pytest.raises(ValueError, match="levels"):
        describe_locations([[0.0, 0.0]], levels=("street",))
    with pytest.raises(ValueError):
        describe_locations([[95.0, 0.0]])
