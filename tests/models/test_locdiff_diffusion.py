"""LocDiff building blocks: C-Siren / CS-UNet shapes, schedule, samplers (no SHDD needed)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geodiffloc.models.locdiff.csiren import CSiren, CSUNet, default_widths, sinusoidal_embedding
from geodiffloc.models.locdiff.diffusion import (
    AnchorSampler,
    DiffusionConfig,
    make_scheduler,
    sample_latents,
)
from geodiffloc.sphere import haversine_km


def test_sinusoidal_embedding_closed_form():
    t = torch.tensor([0.0, 3.0])
    e = sinusoidal_embedding(t, 4, max_period=100.0)
    freqs = torch.tensor([1.0, 100.0 ** (-0.5)])
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], 1)
    torch.testing.assert_close(e, expected)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_embedding(t, 5)


def test_csiren_output_is_a_sine_and_time_modulation_starts_at_zero():
    block = CSiren(6, 5, cond_dim=3, time_dim=4, w0=2.0)
    x, c = torch.randn(7, 6), torch.randn(7, 3)
    y1 = block(x, c, torch.randn(7, 4))
    y2 = block(x, c, torch.randn(7, 4))
    assert y1.shape == (7, 5) and y1.abs().max() <= 1.0
    # zero-initialised scale/shift: at init the block ignores the timestep
    torch.testing.assert_close(y1, y2)
    expected = torch.sin(2.0 * block.ff(block.proj_x(x) + block.proj_cond(c)))
    torch.testing.assert_close(y1, expected)


def test_siren_init_gives_unit_scale_preactivations():
    block = CSiren(4, 2048, cond_dim=2, time_dim=4, w0=30.0)
    bound = math.sqrt(6 / 2048) / 30.0
    wmax = float(block.ff.weight.detach().abs().max())
    assert 0.9 * bound < wmax <= bound


@pytest.mark.parametrize("L", [3, 23])
def test_csunet_shapes_dtypes_and_grad(L):
    d = (L + 1) ** 2
    net = CSUNet(L, cond_dim=7, widths=(32, 16, 8))
    x = torch.randn(5, d, requires_grad=True)
    out = net(x, torch.randint(0, 200, (5,)), torch.randn(5, 7))
    assert out.shape == (5, d) and out.dtype == torch.float32
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # skip structure: decoder blocks read [previous, skip]
    assert [b.proj_x.in_features for b in net.up] == [16, 8 + 16, 16 + 32]


def test_csunet_drop_cond_uses_null_condition_and_validates():
    net = CSUNet(2, cond_dim=4, widths=(16, 8))
    x, t = torch.randn(3, 9), torch.tensor([1, 2, 3])
    c1, c2 = torch.randn(3, 4), torch.randn(3, 4)
    drop = torch.ones(3, dtype=torch.bool)
    torch.testing.assert_close(net(x, t, c1, drop_cond=drop), net(x, t, c2, drop_cond=drop))
    assert not torch.allclose(net(x, t, c1), net(x, t, c2))
    with pytest.raises(ValueError, match="cond must have shape"):
        net(x, t, torch.randn(3, 5))
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.randn(3, 10), t, c1)


def _randomised_net(L=2, cond_dim=4, widths=(16, 8)):
    net = CSUNet(L, cond_dim=cond_dim, widths=widths).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the time modulation starts at zero; give it a value
        for block in [*net.down, net.mid, *net.up]:
            for p in block.proj_time.parameters():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        net.null_cond.copy_(torch.randn(net.null_cond.shape, generator=g))
    return net


def test_csunet_bind_equals_forward():
    net = _randomised_net()
    g = torch.Generator().manual_seed(1)
    # three inputs, their samples in consecutive rows (as LocDiff.sample lays them out),
    # one condition repeated non-consecutively
    base = torch.randn(3, 4, generator=g)
    cond = torch.cat([base.repeat_interleave(2, dim=0), base[:1]])
    x = torch.randn(7, 9, generator=g)
    drop = torch.tensor([False, True, False, False, True, False, False])
    bound, bound_drop = net.bind(cond), net.bind(cond, drop)
    for t in (torch.full((7,), 5), torch.tensor(5), torch.arange(7) * 3):
        torch.testing.assert_close(bound(x, t), net(x, t, cond), rtol=0, atol=1e-6)
        torch.testing.assert_close(bound_drop(x, t), net(x, t, cond, drop_cond=drop),
                                   rtol=0, atol=1e-6)
    # the shared-t shortcut really uses each row's t when they differ
    assert not torch.allclose(bound(x, torch.arange(7)), bound(x, torch.zeros(7, dtype=torch.long)))
    with pytest.raises(ValueError, match="x must have shape"):
        bound(torch.randn(6, 9), torch.tensor(5))
    with pytest.raises(ValueError, match="t must be"):
        bound(x, torch.arange(6))
    with pytest.raises(ValueError, match="cond must have shape"):
        net.bind(torch.randn(3, 5))


def test_sample_latents_same_with_and_without_bind():
    net = _randomised_net()

    class Plain:  # the same network without ``bind``: the per-step forward path
        def __call__(self, *a, **k):
            return net(*a, **k)

    cond = torch.randn(2, 4).repeat_interleave(3, dim=0)
    cfg = DiffusionConfig(num_train_timesteps=50)
    for w in (1.0, 2.0):
        a, b = (sample_latents(n, cond, cfg, sampler="dpm++", steps=8, dim=9,
                               guidance_scale=w, generator=torch.Generator().manual_seed(0))
                for n in (net, Plain()))
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_default_widths():
    assert default_widths(23) == (512, 256, 128)
    assert default_widths(47) == (2048, 1024, 512)
    assert default_widths(1) == (64, 64, 64)


def test_cosine_schedule_reaches_noise_and_config_validates():
    abar = DiffusionConfig().alphas_cumprod()
    assert abar.shape == (200,) and abar[0] > 0.999 and abar[-1] < 1e-6
    assert torch.all(abar[1:] < abar[:-1])
    with pytest.raises(ValueError, match="beta_schedule"):
        DiffusionConfig(beta_schedule="nope")
    with pytest.raises(ValueError, match="scale"):
        DiffusionConfig(scale=-1.0)
    for s in ("ddpm", "ddim", "dpm++"):
        sch = make_scheduler(DiffusionConfig(), s)
        assert sch.config.prediction_type == "sample" and not sch.config.thresholding
    with pytest.raises(ValueError, match="sampler"):
        make_scheduler(DiffusionConfig(), "euler")


class _GaussianPosteriorMean(torch.nn.Module):
    """Exact E[x0 | x_t] for data x0 ~ N(mu, s^2 I): an analytic x0-predicting 'network'."""

    def __init__(self, abar, mu, s):
        super().__init__()
        self.abar, self.mu, self.s2 = abar.float(), mu, s * s

    def forward(self, x, t, cond, drop_cond=None):
        a = self.abar[t][:, None]
        gain = a.sqrt() * self.s2 / (a * self.s2 + 1 - a)
        return self.mu + gain * (x - a.sqrt() * self.mu)


@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", 200), ("ddim", 200), ("dpm++", 50),
                                                ("dpm++", 20)])
def test_samplers_reproduce_gaussian_data_distribution(sampler, steps):
    cfg = DiffusionConfig()
    mu = torch.tensor([2.0, -1.0, 0.5])
    s = 0.3
    net = _GaussianPosteriorMean(cfg.alphas_cumprod(), mu, s)
    g = torch.Generator().manual_seed(0)
    x = sample_latents(net, torch.zeros(4000, 1), cfg, sampler=sampler, steps=steps,
                       generator=g, dim=3)
    # sampling from N(mu, s^2): mean within 5 standard errors, std within 10 %
    se = s / math.sqrt(4000)
    assert torch.all((x.mean(0) - mu).abs() < 5 * se), x.mean(0)
    assert torch.all((x.std(0) / s - 1).abs() < 0.1), x.std(0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_samplers_are_deterministic_with_a_seed(sampler):
    net = CSUNet(2, cond_dim=3, widths=(16, 8)).eval()
    cond = torch.randn(4, 3)
    cfg = DiffusionConfig(num_train_timesteps=50)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return sample_latents(net, cond, cfg, sampler=sampler, steps=10, generator=g, dim=9)

    a, b, c = run(1), run(1), run(2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_sample_latents_validates_steps_and_guidance_runs():
    net = CSUNet(1, cond_dim=2, widths=(8,))
    cfg = DiffusionConfig(num_train_timesteps=10)
    with pytest.raises(ValueError, match="steps"):
        sample_latents(net, torch.zeros(1, 2), cfg, steps=11, dim=4)
    out = sample_latents(net, torch.zeros(2, 2), cfg, sampler="ddim", steps=5, dim=4,
                         guidance_scale=2.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 4) and torch.isfinite(out).all()


def test_anchor_sampler_uniform_and_mixed():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[48.85, 2.35], [-33.9, 151.2]], dtype=torch.float64)
    uni = AnchorSampler(n_anchors=500)(centers, width_km=100.0, generator=g)
    assert uni.shape == (500, 2)
    # uniform by area: mean of sin(lat) ~ 0 (sd 1/sqrt(3*500))
    assert abs(float(torch.sin(torch.deg2rad(uni[:, 0])).mean())) < 4 / math.sqrt(1500)
    mix = AnchorSampler("mixed", n_anchors=50, n_local=40, local_radius_km=300.0)(
        centers, width_km=100.0, generator=g)
    assert mix.shape == (2, 90, 2)
    local = mix[:, 50:]
    d = haversine_km(centers[:, None, 0], centers[:, None, 1], local[..., 0], local[..., 1])
    assert float(d.max()) <= 300.0 + 1e-6
    # default radius is 3 widths
    mix2 = AnchorSampler("mixed", n_anchors=5, n_local=30)(centers, width_km=10.0, generator=g)
    d2 = haversine_km(centers[:, None, 0], centers[:, None, 1], mix2[:, 5:, 0], mix2[:, 5:, 1])
    assert float(d2.max()) <= 30.0 + 1e-6 and float(d2.max()) > 15.0
    with pytest.raises(ValueError, match="mode"):
        AnchorSampler("grid")


@settings(max_examples=25, deadline=None)
@given(lat=st.floats(-90, 90), lon=st.floats(-180, 180), radius=st.floats(1.0, 3000.0))
def test_local_anchors_stay_in_their_cap_anywhere(lat, lon, radius):
    centre = torch.tensor([[lat, lon]], dtype=torch.float64)
    anchors = AnchorSampler("mixed", n_anchors=1, n_local=50, local_radius_km=radius)(
        centre, width_km=1.0, generator=torch.Generator().manual_seed(0))
    local = anchors[0, 1:]
    assert torch.all(local[:, 0].abs() <= 90) and torch.all(local[:, 1].abs() <= 180)
    d = haversine_km(centre[:, 0], centre[:, 1], local[:, 0], local[:, 1])
    assert float(d.max()) <= radius * (1 + 1e-9) + 1e-6
