"""GeoCLIP.score_candidates: retrieval restricted to given places, against float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import softmax

from geodiffloc.models.geoclip import Gallery, GeoCLIP

TINY = dict(backbone_dim=12, embed_dim=8, n_freqs=8, hidden_dim=16, queue_size=32, seed=0)


@pytest.fixture(scope="module")
def model() -> GeoCLIP:
    return GeoCLIP(cache_dir=False, **TINY).eval()


def _reference(model, x, latlon):
    """Softmax over the candidates, recomputed in float64 NumPy from the raw weights."""
    with torch.no_grad():
        q = F.normalize(model.project(x), dim=-1).double().numpy()
        loc = F.normalize(model.location_encoder(torch.as_tensor(latlon).float()),
                          dim=-1).double().numpy()
        scale = float(model.logit_scale.detach().exp().clamp(max=100.0))
    logits = scale * q @ loc.T
    return softmax(logits, axis=-1), q @ loc.T


def test_shared_candidates_match_a_float64_reference(model):
    x = torch.randn(3, 12, generator=torch.Generator().manual_seed(1))
    cands = np.array([[48.85, 2.35], [-33.9, 151.2], [35.7, 139.7], [0.0, -170.0]])
    p_ref, sim_ref = _reference(model, x, cands)
    probs = model.score_candidates(x, cands)
    assert len(probs) == 3 and all(p.dtype == torch.float64 for p in probs)
    np.testing.assert_allclose(torch.stack(probs).numpy(), p_ref, atol=1e-5)
    np.testing.assert_allclose(torch.stack(probs).sum(1).numpy(), 1.0, atol=1e-12)
    sims = model.score_candidates(x, torch.as_tensor(cands), kind="similarity")
    np.testing.assert_allclose(torch.stack(sims).numpy(), sim_ref, atol=1e-5)
    logits = model.score_candidates(x, Gallery(torch.as_tensor(cands)), kind="logit")
    scale = float(model.logit_scale.detach().exp().clamp(max=100.0))
    np.testing.assert_allclose(torch.stack(logits).numpy(), scale * sim_ref, atol=1e-4)


def test_per_query_sets_gallery_indices_and_coordinates_agree(model):
    g = Gallery.fibonacci(200)
    x = torch.randn(3, 12, generator=torch.Generator().manual_seed(2))
    idx = [np.array([5, 17, 120]), np.array([3]), np.array([], dtype=np.int64)]
    by_index = model.score_candidates(x, idx, gallery=g)
    by_coords = model.score_candidates(x, [g.latlon[i] for i in idx])
    for a, b in zip(by_index, by_coords, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)
    assert by_index[1].tolist() == [1.0] and by_index[2].numel() == 0
    p_ref, _ = _reference(model, x[:1], g.latlon[idx[0]].numpy())
    np.testing.assert_allclose(by_index[0].numpy(), p_ref[0], atol=1e-5)


def test_the_whole_gallery_gives_predicts_probabilities(model):
    g = Gallery.fibonacci(300)
    x = torch.randn(4, 12, generator=torch.Generator().manual_seed(3))
    probs = model.score_candidates(x, [np.arange(len(g))] * 4, gallery=g)
    gdf = model.predict(x, gallery=g)
    best = [int(p.argmax()) for p in probs]
    assert best == gdf["gallery_index"].tolist()
    np.testing.assert_allclose([float(p.max()) for p in probs], gdf["prob"], rtol=1e-5)


def test_views_are_averaged_like_predict(model):
    x = torch.randn(2, 3, 12, generator=torch.Generator().manual_seed(4))  # 3 views
    cands = np.array([[10.0, 10.0], [20.0, -40.0], [-60.0, 100.0]])
    probs = torch.stack(model.score_candidates(x, cands, input_kind="backbone")).numpy()
    ref = np.mean([_reference(model, x[:, v], cands)[0] for v in range(3)], axis=0)
    np.testing.assert_allclose(probs, ref, atol=1e-5)


def test_errors_name_the_problem(model):
    x = torch.randn(2, 12)
    with pytest.raises(ValueError, match="3 candidate sets for 2 queries"):
        model.score_candidates(x, [[[0.0, 0.0]]] * 3)
    with pytest.raises(ValueError, match=r"query 1 must lie in 0\.\.9"):
        model.score_candidates(x, [[0], [10]], gallery=Gallery.fibonacci(10))
    with pytest.raises(ValueError, match="candidates of query 0"):
        model.score_candidates(x, [[[95.0, 0.0]], [[0.0, 0.0]]])
    with pytest.raises(ValueError, match="kind must be"):
        model.score_candidates(x, np.zeros((1, 2)), kind="odds")
    with pytest.raises(ValueError, match="sequence of 2"):
        model.score_candidates(x, "paris")
