"""HierLoc's hyperbolic arithmetic and losses against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geodiffloc.models.hierloc import (
    distance_to_origin,
    expmap0,
    geo_weighted_contrastive_loss,
    lorentz_distance,
    norm_order_loss,
    parent_choice_loss,
    squash_to_ball,
)

geoopt = pytest.importorskip("geoopt")


def _hav_km(a, b):
    # independent float64 haversine (R = 6371.0088 km)
    la1, lo1, la2, lo2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin(
        (lo2 - lo1) / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(h))


def _point(v):
    # exp map at the origin written from its definition, in plain Python floats
    r = math.sqrt(sum(x * x for x in v))
    if r == 0:
        return [1.0] + [0.0] * len(v)
    return [math.cosh(r)] + [math.sinh(r) * x / r for x in v]


def _dist(x, y):
    inner = -x[0] * y[0] + sum(a * b for a, b in zip(x[1:], y[1:]))
    return math.acosh(max(-inner, 1.0))


def test_expmap_and_distance_match_geoopt_in_float64():
    torch.manual_seed(0)
    v = torch.randn(5, 4, dtype=torch.float64)
    x = expmap0(v)
    man = geoopt.Lorentz()
    ref = man.expmap0(torch.cat([torch.zeros(5, 1, dtype=torch.float64), v], 1))
    assert torch.allclose(x, ref, atol=1e-10)
    assert torch.allclose(man.inner(x, x), -torch.ones(5, dtype=torch.float64), atol=1e-9)
    d = lorentz_distance(x[:3], x[3:])
    d_ref = man.dist(x[:3, None], x[None, 3:])
    assert torch.allclose(d, d_ref, atol=1e-8)
    assert torch.allclose(distance_to_origin(x), v.norm(dim=1), atol=1e-12)


def test_geo_weighted_loss_matches_a_brute_force_loop():
    rng = np.random.default_rng(3)
    n, m, d = 4, 5, 3
    qv, ev = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    qll = np.c_[rng.uniform(-60, 60, n), rng.uniform(-180, 180, n)]
    ell = np.c_[rng.uniform(-60, 60, m), rng.uniform(-180, 180, m)]
    target = [2, -1, 0, 4]
    tau, sigma, alpha = 0.7, 2000.0, 0.4
    # reference: explicit loops over queries and entities, float64 Python floats
    total, count = 0.0, 0
    for i in range(n):
        if target[i] < 0:
            continue
        q = _point(qv[i])
        logits = [-_dist(q, _point(ev[j])) / tau for j in range(m)]
        lse = math.log(sum(math.exp(v) for v in logits))
        g = [math.exp(-_hav_km(qll[i], ell[j]) / sigma) for j in range(m)]
        gs = sum(g)
        loss_i = 0.0
        for j in range(m):
            t = (1 - alpha) * (j == target[i]) + alpha * g[j] / gs
            loss_i -= t * (logits[j] - lse)
        total += loss_i
        count += 1
    ref = total / count
    got = geo_weighted_contrastive_loss(
        expmap0(torch.tensor(qv)), expmap0(torch.tensor(ev)), torch.tensor(target),
        torch.tensor(qll), torch.tensor(ell), temperature=tau, sigma_km=sigma, geo_weight=alpha)
    assert abs(float(got) - ref) < 1e-9


def test_geo_weighting_makes_near_misses_cheaper():
    # the query sits on a wrong entity: cheaper when that entity is near the truth
    e = expmap0(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    q = e[1:2]
    truth = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    near = torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 120.0]], dtype=torch.float64)
    far = torch.tensor([[0.0, 0.0], [0.0, 120.0], [0.0, 1.0]], dtype=torch.float64)
    kw = dict(temperature=0.5, sigma_km=500.0, geo_weight=0.5)
    t = torch.tensor([0])
    assert geo_weighted_contrastive_loss(q, e, t, truth, near, **kw) < \
        geo_weighted_contrastive_loss(q, e, t, truth, far, **kw)


def test_hierarchy_terms_against_their_definitions():
    c = expmap0(torch.tensor([[0.3, 0.0], [2.0, 1.0]], dtype=torch.float64))
    p = expmap0(torch.tensor([[1.0, 0.0], [0.1, 0.1]], dtype=torch.float64))
    got = float(norm_order_loss(c, p, margin=0.2))
    r = [math.sqrt(0.09), math.sqrt(5.0)], [1.0, math.sqrt(0.02)]
    ref = sum(max(0.0, r[1][i] - r[0][i] + 0.2) for i in range(2)) / 2
    assert abs(got - ref) < 1e-12
    logits = -lorentz_distance(c, p) / 0.5
    ref_ce = float(-(logits.log_softmax(1)[[0, 1], [0, 1]]).mean())
    assert abs(float(parent_choice_loss(c, p, torch.tensor([0, 1]), temperature=0.5))
               - ref_ce) < 1e-12


def test_float32_stays_finite_near_the_boundary():
    big = torch.tensor([[1e4, -3e4, 2e4], [0.0, 0.0, 0.0], [1e-30, 0.0, 0.0]],
                       requires_grad=True)
    x = expmap0(big, max_radius=5.0)
    assert torch.isfinite(x).all()
    assert float(distance_to_origin(x).detach().max()) <= 5.0 + 1e-4
    d = lorentz_distance(x, x)  # includes distance 0 (the arcosh clamp)
    assert torch.isfinite(d).all() and float(d.detach().diagonal().max()) < 1e-3
    d.sum().backward()
    assert torch.isfinite(big.grad).all()
    # stored entities with absurd coordinates are squashed before use
    pts = torch.tensor([[1e30, 1e30, -1e30, 0.0], [1.0, 0.0, 0.0, 0.0]], requires_grad=True)
    y = squash_to_ball(pts, 5.0)
    dd = lorentz_distance(y, y)
    dd.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(dd).all()
    assert torch.isfinite(pts.grad).all()
    # and the contrastive loss on such points is finite, with finite gradients
    q = expmap0(torch.randn(3, 3) * 1e3, max_radius=5.0)
    loss = geo_weighted_contrastive_loss(
        q, y, torch.tensor([0, 1, 0]), torch.zeros(3, 2), torch.zeros(2, 2),
        temperature=0.01, sigma_km=10.0, geo_weight=0.5)
    assert torch.isfinite(loss)


def test_gradcheck_of_the_maps_and_distance():
    torch.manual_seed(1)
    v = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: expmap0(t, max_radius=4.0), (v,))
    w = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: lorentz_distance(expmap0(a), expmap0(b)), (v, w))
    s = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: squash_to_ball(t, 3.0), (s,))
