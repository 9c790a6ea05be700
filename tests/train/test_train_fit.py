"""One training path: in-memory fit runs the Lightning modules; stock schedules; loss options."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from train_helpers import make_synthetic

from geodiffloc import GeoCLIP, LocDiff
from geodiffloc.train import (
    GeoDataModule,
    LocDiffModule,
    fit,
    load_config,
    loss_options,
    warmup_cosine,
)


def _closed_form(step: int, total: int, warmup: int, min_ratio: float, cosine: bool) -> float:
    """Linear warm-up then half a cosine, written out (the schedule's definition)."""
    if step < warmup:
        return (step + 1) / warmup
    if not cosine:
        return 1.0
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))


@pytest.mark.parametrize("total,warmup,min_ratio,cosine", [
    (50, 0, 0.0, True), (50, 10, 0.0, True), (40, 7, 0.1, True), (30, 5, 0.0, False),
    (10, 9, 0.3, True),
])
def test_stock_schedule_equals_warmup_then_cosine(total, warmup, min_ratio, cosine):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    sched = warmup_cosine(opt, total, warmup, min_ratio, cosine=cosine)
    got = []
    for _ in range(total):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    want = [0.5 * _closed_form(s, total, warmup, min_ratio, cosine) for s in range(total)]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


def test_constant_rate_needs_no_scheduler():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert warmup_cosine(opt, 100, 0, cosine=False) is None


class Seen:
    """Records the optimiser and scheduler a Trainer ran with."""

    def __init__(self):
        import lightning.pytorch as pl

        rec = self

        class CB(pl.Callback):
            def on_train_start(self, trainer, module):
                rec.opt = trainer.optimizers[0]
                rec.sched = trainer.lr_scheduler_configs[0].scheduler

        self.callback, self.opt, self.sched = CB(), None, None


def test_locdiff_fit_trains_through_the_lightning_module(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    emb, ll = make_synthetic(64, dim=8)
    model = LocDiff(L=3, cond_dim=8, widths=(16,), time_dim=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = Seen()
    rng = torch.get_rng_state()
    import geodiffloc.train.fitting as fitting

    losses = fitting.fit(model, emb, ll, steps=6, batch_size=16, optim={"warmup_steps": 2},
                         loss={"n_anchors": 64}, progress=True, callbacks=[seen.callback])
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    # the same optimiser and schedule as `geodiffloc train`
    assert type(seen.opt).__name__ == "AdamW"
    assert type(seen.sched).__name__ == "SequentialLR"
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is untouched
    assert os.listdir(tmp_path) == []  # no logs, no checkpoints
    out = capsys.readouterr()
    assert out.out == "" and "LocDiff fit" in out.err  # progress on stderr only


def test_fit_is_reproducible_and_the_method_is_a_thin_wrapper():
    emb, ll = make_synthetic(48, dim=8)

    def run(how):
        torch.manual_seed(0)
        m = LocDiff(L=3, cond_dim=8, widths=(16,), time_dim=8)
        if how == "method":
            return m.fit(emb, ll, steps=5, batch_size=16, lr=2e-3, progress=False,
                         loss={"n_anchors": 64})
        return fit(m, emb, ll, steps=5, batch_size=16, optim={"lr": 2e-3, "warmup_steps": 0},
                   loss={"n_anchors": 64, "p_uncond": 0.0},
                   progress=False)

    a, b = run("method"), run("function")
    assert a == b and a == run("method")


def test_null_condition_gradient_flag_is_restored():
    emb, ll = make_synthetic(32, dim=8)
    m = LocDiff(L=2, cond_dim=8, widths=(8,), time_dim=8)
    flag = m.net.null_cond.requires_grad
    m.fit(emb, ll, steps=2, batch_size=8, progress=False, loss={"n_anchors": 32})
    assert m.net.null_cond.requires_grad == flag


def test_geoclip_fit_uses_the_papers_optimiser_and_updates_the_queue():
    emb, ll = make_synthetic(40, dim=12)
    m = GeoCLIP(backbone_dim=12, embed_dim=8, n_freqs=8, hidden_dim=16, queue_size=16,
                seed=0, cache_dir=False)
    q0 = m.queue.latlon.clone()
    seen = Seen()
    losses = fit(m, emb, ll, steps=7, batch_size=16, optim={"lr": 1e-3},
                 progress=False, callbacks=[seen.callback])
    assert len(losses) == 7 and all(math.isfinite(v) for v in losses)
    assert type(seen.opt).__name__ == "Adam" and type(seen.sched).__name__ == "StepLR"
    assert not torch.equal(q0, m.queue.latlon)
    assert len(m.fit(emb, ll, steps=3, batch_size=8, progress=False)) == 3


def test_fit_refuses_bad_arguments():
    with pytest.raises(ValueError, match="steps must be >= 1"):
        fit(LocDiff(L=2, cond_dim=4, widths=(8,)), torch.zeros(4, 4), torch.zeros(4, 2),
            steps=0)
    with pytest.raises(ValueError, match="a LocDiff, a GeoCLIP, a HierLoc or a G3"):
        fit(torch.nn.Linear(2, 2), torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="takes 4-d inputs but the data are 6-d"):
        fit(LocDiff(L=2, cond_dim=4, widths=(8,)), torch.zeros(4, 6), torch.zeros(4, 2),
            steps=1, progress=False)


def test_new_loss_options_flow_from_the_config_to_the_loss(monkeypatch):
    """A keyword the loss starts accepting is configurable without touching geodiffloc.train."""
    seen = {}
    orig = LocDiff.training_loss

    def training_loss(self, cond, latlon, *, anchor_sampler=None, targets=None,
                      generator=None, new_weight: float = 0.0, **opts):
        seen.setdefault("new_weight", []).append(new_weight)
        return orig(self, cond, latlon, anchor_sampler=anchor_sampler, targets=targets,
                    generator=generator, **opts)

    monkeypatch.setattr(LocDiff, "training_loss", training_loss)
    assert "new_weight" in loss_options()
    cfg = load_config({"family": "locdiff", "data": {"source": "gazetteer"},
                       "loss": {"new_weight": 0.25, "n_anchors": 32}})
    assert cfg["loss"]["new_weight"] == 0.25
    emb, ll = make_synthetic(16, dim=8)
    dm = GeoDataModule.from_tensors(emb, ll, val_fraction=0.0, batch_size=8)
    module = LocDiffModule({"L": 2, "widths": [8]}, encoder=dm.encoder, loss=cfg["loss"])
    module._gen = torch.Generator().manual_seed(0)
    module.log = lambda *a, **k: None  # outside a Trainer
    module.training_step(next(iter(dm.train_dataloader())), 0)
    assert seen["new_weight"] == [0.25]
    with pytest.raises(ValueError, match=r"unknown key\(s\) in loss: 'new_wieght' \(did you "
                                         r"mean 'new_weight'\?\)"):
        load_config({"family": "locdiff", "data": {"source": "gazetteer"},
                     "loss": {"new_wieght": 1.0}})


def test_fit_leaves_the_thread_count_as_it_found_it(monkeypatch):
    # Lightning sets torch's thread count for its run when OMP_NUM_THREADS is unset
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    emb, ll = make_synthetic(32, dim=8)
    m = LocDiff(L=2, cond_dim=8, widths=(8,), time_dim=8)
    before = torch.get_num_threads()
    m.fit(emb, ll, steps=2, batch_size=8, progress=False, loss={"n_anchors": 32})
    assert torch.get_num_threads() == before
