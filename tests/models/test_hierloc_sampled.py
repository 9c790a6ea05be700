"""HierLoc's sampled negatives: exact when the sample covers a level, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hierloc_helpers import leaf_samples, synthetic_hierarchy

from geodiffloc import HierLoc
from geodiffloc.data import EntityHierarchy
from geodiffloc.sphere.distance import pairwise_haversine_km


def _loss_and_grads(m: HierLoc, x: torch.Tensor, ll: torch.Tensor, seed: int = 0):
    m.zero_grad()
    loss, _ = m.training_loss(x, ll, generator=torch.Generator().manual_seed(seed))
    loss.backward()
    return loss.detach(), m.entities.grad.clone(), m.head[0].weight.grad.clone()


@pytest.mark.parametrize("how", ["n_negatives covers every level", "near peers cover it"])
def test_sample_covering_every_entity_agrees_with_the_full_softmax(how):
    h = synthetic_hierarchy()  # 3 countries, 9 regions, 36 towns; 45 edges
    x, ll, _ = leaf_samples(h, 2, seed=3)
    kw = dict(input_dim=16, embed_dim=6, hidden_dim=32, seed=1, n_edges=64)
    full = HierLoc(h, **kw)
    # "near": fewer negatives than entities, but every entity is a near peer of the
    # batch's true entities, so the sampling code keeps them all (weights 1)
    extra = ({"n_negatives": 64} if how.startswith("n_neg")
             else {"n_negatives": 2, "n_near": 36})
    sampled = HierLoc(h, **kw, **extra)
    sampled.load_state_dict(full.state_dict())
    lf, ef, hf = _loss_and_grads(full, x, ll)
    ls, es, hs = _loss_and_grads(sampled, x, ll)
    torch.testing.assert_close(ls, lf, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(es, ef, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(hs, hf, rtol=1e-5, atol=1e-7)


def _line_hierarchy(n_leaves: int) -> EntityHierarchy:
    """One root, ``n_leaves`` towns along a line of latitude (2 levels)."""
    recs = [{"entity_id": "R", "lat": 0.0, "lon": 0.0}]
    lon = np.linspace(-170, 170, n_leaves)
    recs += [{"entity_id": f"t{i}", "parent": "R", "lat": 10.0 * np.sin(i), "lon": float(lo)}
             for i, lo in enumerate(lon)]
    return EntityHierarchy.from_records(recs, level_names=("region", "town"))


def test_candidates_hold_the_true_entities_and_their_nearest_peers():
    h = _line_hierarchy(400)
    m = HierLoc(h, input_dim=4, embed_dim=3, hidden_dim=8, n_negatives=50, n_near=4)
    positives = torch.tensor([3, 200, 399])
    cand, lw = m._candidates(1, positives, torch.Generator().manual_seed(0))
    assert lw is not None and len(cand) == 50 and len(torch.unique(cand)) == 50
    assert bool((cand[1:] > cand[:-1]).all())  # sorted positions within the level
    # brute force: the 4 nearest towns (by centroid, great circle) of each true town
    ll = torch.as_tensor(h.latlon[m._level_index[1].numpy()])
    d = pairwise_haversine_km(ll[positives], ll)
    near = torch.topk(-d, 4, dim=1).indices
    must = set(positives.tolist()) | set(near.reshape(-1).tolist())
    got = dict(zip(cand.tolist(), lw.tolist(), strict=True))
    assert must <= set(got)
    assert all(got[c] == 0.0 for c in must)
    # the drawn ones stand for the rest of the level: (400 - |M|) / (50 - |M|) each
    drawn = [w for c, w in got.items() if c not in must]
    assert len(drawn) == 50 - len(must)
    np.testing.assert_allclose(drawn, np.log((400 - len(must)) / len(drawn)), rtol=1e-6)


def test_sampled_estimate_of_the_level_loss_is_close_to_the_full_one():
    # the correction makes the sampled partition function an estimate of the full one:
    # averaged over draws, the sampled loss (untrained, spread-out logits) is near the
    # full loss, and much nearer than without the correction
    h = _line_hierarchy(600)
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
    ll = torch.as_tensor(h.latlon[1:])[torch.randint(600, (32,),
                                                      generator=torch.Generator().manual_seed(1))]
    kw = dict(input_dim=4, embed_dim=3, hidden_dim=8, seed=2, consistency_weight=0.0,
              level_weights=[0.0, 1.0], temperature=1.0)
    full = float(HierLoc(h, **kw).training_loss(x, ll)[0].detach())
    m = HierLoc(h, **kw, n_negatives=100, n_near=2)

    def mean_loss() -> float:
        return float(np.mean([
            float(m.training_loss(x, ll, generator=torch.Generator().manual_seed(s))[0].detach())
            for s in range(20)]))

    corrected = mean_loss()
    sample = m._candidates
    m._candidates = lambda *a: (lambda c, w: (c, None if w is None else 0 * w))(*sample(*a))
    uncorrected = mean_loss()
    assert abs(corrected - full) < 0.1 * full
    assert abs(corrected - full) < 0.5 * abs(uncorrected - full)


def _saved_bytes(m: HierLoc, x: torch.Tensor, ll: torch.Tensor) -> int:
    """Bytes of every tensor autograd keeps for the backward pass of one step."""
    total = 0
    params = {p.data_ptr() for p in m.parameters()}

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if t.data_ptr() not in params:  # the weights themselves are not per-step memory
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss, _ = m.training_loss(x, ll, generator=torch.Generator().manual_seed(0))
    loss.backward()
    return total


def test_memory_per_step_does_not_grow_with_the_number_of_entities():
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    sizes = {}
    for n in (300, 3000):
        h = _line_hierarchy(n)
        ll = torch.as_tensor(h.latlon[1:17])
        kw = dict(input_dim=4, embed_dim=3, hidden_dim=8, n_edges=32, seed=0)
        sizes[n] = (_saved_bytes(HierLoc(h, **kw, n_negatives=64), x, ll),
                    _saved_bytes(HierLoc(h, **kw), x, ll))
    sampled_small, full_small = sizes[300]
    sampled_big, full_big = sizes[3000]
    assert full_big > 5 * full_small  # the measure sees a softmax over all entities grow
    assert sampled_big == sampled_small  # the sampled one does not grow at all


def test_learns_the_synthetic_hierarchy_with_few_negatives():
    pytest.importorskip("lightning")
    h = synthetic_hierarchy()
    x, ll, _ = leaf_samples(h, 20, seed=0)
    m = HierLoc(h, input_dim=16, embed_dim=8, hidden_dim=64, seed=0, n_negatives=8, n_near=2)
    m.fit(x, ll, steps=200, batch_size=64, lr=3e-3, entity_lr=3e-2, progress=False)
    xt, _, truth = leaf_samples(h, 10, seed=99)
    assert (m.predict(xt)["entity_id"].to_numpy() == truth).mean() >= 0.9


def test_bad_n_negatives_is_refused_and_the_setting_round_trips(tmp_path):
    h = synthetic_hierarchy()
    with pytest.raises(ValueError, match="n_negatives"):
        HierLoc(h, input_dim=4, n_negatives=0)
    m = HierLoc(h, input_dim=4, embed_dim=2, hidden_dim=4, n_negatives=7, n_near=3)
    back = HierLoc.load(m.save(tmp_path / "m.safetensors"))
    assert (back.n_negatives, back.n_near) == (7, 3)
