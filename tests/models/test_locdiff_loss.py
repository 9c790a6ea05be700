"""The multi-scale and forward SHDD-KL options of the LocDiff training loss.

References are independent of :func:`anchor_kl`'s shared-anchor code path: the SHDD
space of the lower degree itself (:meth:`SHDD.kl`, per-sample anchors) and a plain
float64 NumPy evaluation of the discrete KL.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax

from geodiffloc.harmonics import real_sph_harm
from geodiffloc.models.locdiff import AnchorSampler, LocDiff, anchor_kl
from geodiffloc.shdd import SHDD
from geodiffloc.sphere import fibonacci_lattice

TRUTH = torch.tensor([[48.85, 2.35], [-33.9, 151.2], [64.1, -21.9]], dtype=torch.float64)


def _moved(latlon: torch.Tensor, km: float) -> torch.Tensor:
    """Points ``km`` due south of ``latlon`` (along a meridian; all start far from a pole)."""
    out = latlon.clone()
    out[:, 0] -= km / 111.195
    return out


def test_multiscale_kl_is_the_mean_of_lower_degree_kls():
    shdd = SHDD(15)
    g = torch.Generator().manual_seed(0)
    pred = shdd.encode(latlon=TRUTH) + 0.2 * torch.randn(3, 256, generator=g, dtype=torch.float64)
    anchors = fibonacci_lattice(500).to(torch.float64)
    ours = anchor_kl(shdd, pred, TRUTH, anchors, scales=(3, 7))
    refs = [SHDD(d).kl(pred[:, : (d + 1) ** 2], latlon=TRUTH, anchors=anchors) for d in (3, 7, 15)]
    torch.testing.assert_close(ours, torch.stack(refs).mean(0))
    # the full degree is always part of the sum, given or not
    torch.testing.assert_close(anchor_kl(shdd, pred, TRUTH, anchors, scales=(3, 7, 15)), ours)


def test_forward_kl_matches_a_float64_numpy_reference():
    shdd = SHDD(7)
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(3, 64, generator=g, dtype=torch.float64)
    anchors = fibonacci_lattice(300).to(torch.float64)
    y = real_sph_harm(anchors, 7, dtype=torch.float64).numpy()
    log_q = log_softmax(pred.numpy() @ y.T, axis=1)
    log_p = log_softmax(shdd.encode(latlon=TRUTH).numpy() @ y.T, axis=1)
    ref = (np.exp(log_p) * (log_p - log_q)).sum(1)
    ours = anchor_kl(shdd, pred, TRUTH, anchors, direction="forward")
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10)
    assert np.all(ref > 0)


@pytest.mark.parametrize("direction", ["reverse", "forward"])
def test_exact_prediction_has_zero_loss_in_every_option(direction):
    shdd = SHDD(11)
    anchors = fibonacci_lattice(400).to(torch.float64)
    exact = shdd.encode(latlon=TRUTH)
    kl = anchor_kl(shdd, exact, TRUTH, anchors, scales=(2, 5), direction=direction)
    assert float(kl.abs().max()) < 1e-9


def test_multiscale_kl_keeps_pointing_home_where_the_paper_kl_saturates():
    """A sharp prediction 1000 km off must score better than one 5000 km off.

    The single-scale KL at L = 23 cannot tell them apart (both are beyond the main lobe);
    with the coarse degrees in the sum the loss grows with the distance.
    """
    shdd = SHDD(23)
    anchors = fibonacci_lattice(20000).to(torch.float64)
    truth = torch.tensor([[60.0, 10.0]], dtype=torch.float64)
    dists = (1000.0, 2000.0, 3500.0, 5000.0)
    preds = torch.cat([shdd.encode(latlon=_moved(truth, d)) for d in dists])
    truths = truth.expand(len(dists), -1)
    single = anchor_kl(shdd, preds, truths, anchors)
    multi = anchor_kl(shdd, preds, truths, anchors, scales=(1, 3, 7))
    assert float(single.max() - single.min()) < 0.1 * float(single.mean())  # saturated
    assert torch.all(torch.diff(multi) > 0), multi  # strictly worse the farther off


def test_loss_options_are_validated():
    shdd = SHDD(5)
    anchors = fibonacci_lattice(50).to(torch.float64)
    pred = shdd.encode(latlon=TRUTH)
    with pytest.raises(ValueError, match="kl_direction"):
        anchor_kl(shdd, pred, TRUTH, anchors, direction="sideways")
    with pytest.raises(ValueError, match="kl_scales"):
        anchor_kl(shdd, pred, TRUTH, anchors, scales=(0, 3))
    with pytest.raises(ValueError, match="kl_scales"):
        anchor_kl(shdd, pred, TRUTH, anchors, scales=(9,))


def test_training_loss_forwards_the_options():
    model = LocDiff(L=5, cond_dim=3, widths=(16,))
    cond, ll = torch.randn(3, 3), TRUTH.float()
    sampler = AnchorSampler("uniform", n_anchors=64)
    losses = {}
    for key, kw in {"paper": {}, "multi": {"kl_scales": (1, 3)},
                    "forward": {"kl_direction": "forward"}}.items():
        loss, logs = model.training_loss(cond, ll, anchor_sampler=sampler,
                                         generator=torch.Generator().manual_seed(0), **kw)
        assert torch.isfinite(loss) and logs["kl"] == pytest.approx(float(loss.detach()))
        losses[key] = float(loss.detach())
    assert len(set(losses.values())) == 3  # each option changes the loss


def test_anchor_bank_gives_the_kl_of_its_points():
    from geodiffloc.models.locdiff.diffusion import _check_kl_options, _kl_on_harmonics

    shdd = SHDD(7)
    sampler = AnchorSampler("uniform", n_anchors=40, bank=200, seed=3)
    pts = sampler.bank_points()
    assert pts.shape == (200, 2)
    torch.testing.assert_close(sampler.bank_points(), pts)  # fixed by its seed
    y = sampler.bank_harmonics(7, torch.float64, "cpu")
    torch.testing.assert_close(y, real_sph_harm(pts, 7, dtype=torch.float64))
    assert sampler.bank_harmonics(7, torch.float64, "cpu") is y  # computed once
    pick = torch.randperm(200, generator=torch.Generator().manual_seed(0))[:40]
    pred = torch.randn(3, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ours = _kl_on_harmonics(pred, shdd.encode(latlon=TRUTH), y[pick], None,
                            _check_kl_options(7, (2,), "reverse"), "reverse")
    ref = anchor_kl(shdd, pred, TRUTH, pts[pick], scales=(2,))
    torch.testing.assert_close(ours, ref)
    with pytest.raises(ValueError, match="bank"):
        AnchorSampler("uniform", n_anchors=40, bank=10)


def test_training_loss_with_a_bank_is_finite_and_reproducible():
    model = LocDiff(L=5, cond_dim=3, widths=(16,))
    cond, ll = torch.randn(3, 3), TRUTH.float()
    for mode in ("uniform", "mixed"):
        sampler = AnchorSampler(mode, n_anchors=32, n_local=8, bank=128)
        a, _ = model.training_loss(cond, ll, anchor_sampler=sampler, kl_scales=(1, 3),
                                   aux_weight=3.0, generator=torch.Generator().manual_seed(0))
        b, _ = model.training_loss(cond, ll, anchor_sampler=sampler, kl_scales=(1, 3),
                                   aux_weight=3.0, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(a) and float(a.detach()) == float(b.detach())


def test_auto_scales_halve_down_from_L():
    from geodiffloc.models.locdiff.diffusion import auto_kl_scales

    assert auto_kl_scales(23) == (1, 3, 7, 15, 23)
    assert auto_kl_scales(47) == (1, 3, 7, 15, 31, 47)
    assert auto_kl_scales(1) == (1,)
    shdd = SHDD(9)
    anchors = fibonacci_lattice(200).to(torch.float64)
    pred = torch.randn(3, 100, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(anchor_kl(shdd, pred, TRUTH, anchors, scales="auto"),
                               anchor_kl(shdd, pred, TRUTH, anchors, scales=(1, 3, 7)))
    with pytest.raises(ValueError, match="kl_scales"):
        anchor_kl(shdd, pred, TRUTH, anchors, scales="fine")
