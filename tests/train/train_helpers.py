"""Helpers of the training tests (a uniquely named module, importable from the tests)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch


def make_synthetic(n: int = 160, dim: int = 16, seed: int = 0, views: int = 1):
    """Embeddings that are a smooth function of the location (so they can be learned).

    Returns ``(embeddings (n, [views,] dim) float32, latlon (n, 2) float64)``; extra views
    add small noise, like augmented image views.
    """
    from geodiffloc.sphere import latlon_to_xyz, uniform_random

    g = torch.Generator().manual_seed(seed)
    ll = uniform_random(n, generator=g).to(torch.float64)
    xyz = torch.as_tensor(latlon_to_xyz(ll), dtype=torch.float32)
    w = torch.randn(3, dim // 2, generator=g)
    emb = torch.cat([torch.sin(2 * xyz @ w), torch.cos(2 * xyz @ w)], 1)
    if views > 1:
        noise = 0.05 * torch.randn(n, views - 1, dim, generator=g)
        emb = torch.cat([emb[:, None], emb[:, None] + noise], 1)
    return emb, ll


def tiny_config(family: str, out_dir, **over):
    """A config for a training run of a few seconds on one CPU thread."""
    model = ({"L": 3, "widths": [32, 16], "time_dim": 16} if family == "locdiff" else
             # a small real hierarchy (2 countries), sampled negatives on its city level
             {"hierarchy": {"source": "gazetteer", "min_population": 500_000,
                            "countries": ["FR", "DE"], "country_polygons": None},
              "embed_dim": 4, "hidden_dim": 16, "n_negatives": 8, "n_edges": 8}
             if family == "hierloc" else
             {"embed_dim": 16, "n_freqs": 16, "hidden_dim": 32, "queue_size": 64})
    cfg = {
        "family": family,
        "seed": 0,
        "out_dir": str(out_dir),
        "data": {"batch_size": 32, "val_batch_size": 256},
        "model": model,
        "optim": {"lr": 3e-3},
        "trainer": {"max_steps": 8, "max_epochs": None, "accelerator": "cpu",
                    "num_sanity_val_steps": 0, "log_every_n_steps": 1,
                    "enable_progress_bar": False, "logger": "none"},
    }
    if family == "locdiff":
        cfg["loss"] = {"n_anchors": 128}
        cfg["validation"] = {"steps": 4}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = {**cfg[k], **v}
        else:
            cfg[k] = v
    return cfg


def fixed_loss(module, emb, ll) -> float:
    """The model's own training loss on fixed data with fixed noise (no gradient)."""
    gen = torch.Generator().manual_seed(123)
    model = module.model
    with torch.no_grad():
        if module.__class__.__name__ == "LocDiffModule":
            loss, _ = model.training_loss(emb, ll, anchor_sampler=module.anchor_sampler,
                                          generator=gen)
        else:
            loss = model.training_step(emb, ll, update_queue=False, generator=gen)
    return float(loss)


class Recorder(pl.Callback):
    """Notes the global step of every training batch and the fixed loss at start and end."""

    def __init__(self, emb=None, ll=None):
        self.emb, self.ll = emb, ll
        self.steps: list[int] = []
        self.losses: dict[str, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps.append(int(trainer.global_step))

    def on_train_start(self, trainer, pl_module):
        if self.emb is not None:
            self.losses["start"] = fixed_loss(pl_module, self.emb, self.ll)

    def on_train_end(self, trainer, pl_module):
        if self.emb is not None:
            self.losses["end"] = fixed_loss(pl_module, self.emb, self.ll)
