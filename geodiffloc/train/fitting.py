"""``fit``: train a model in place on in-memory tensors, through the Lightning modules.

The engine behind :meth:`LocDiff.fit <geodiffloc.LocDiff.fit>` and
:meth:`GeoCLIP.fit <geodiffloc.GeoCLIP.fit>`: the same :class:`LocDiffModule` /
:class:`GeoCLIPModule` (optimiser, warm-up, schedule, loss) as ``geodiffloc train``,
fed from a :class:`GeoDataModule` over the tensors, with nothing written to disk (no
checkpoints, no logs), no validation, and a progress bar on stderr. Made for small
experiments, tests and benchmarks; real data sets go through :func:`~.api.train`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
import torch

__all__ = ["fit"]


class StepLosses(pl.Callback):
    """Keeps every optimiser step's training loss; optionally shows them in a bar on stderr."""

    def __init__(self, total: int, *, progress: bool = False, desc: str = "fit") -> None:
        self.total, self.progress, self.desc = int(total), bool(progress), desc
        self.losses: list[torch.Tensor] = []
        self._bar: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=self.total, desc=self.desc, disable=not self.progress)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(loss.detach())  # no device sync here: read once at the end
        if self._bar is not None:
            self._bar.update(1)
            if self.progress and len(self.losses) % 10 == 0:
                self._bar.set_postfix(loss=f"{float(self.losses[-1]):.3f}")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()

    def values(self) -> list[float]:
        return torch.stack(self.losses).float().cpu().tolist() if self.losses else []


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's start-up banners and small-data hints for a convenience call."""
    names = ("lightning.pytorch", "lightning.fabric")
    levels = [logging.getLogger(n).level for n in names]
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
            yield
    finally:
        for n, lv in zip(names, levels, strict=True):
            logging.getLogger(n).setLevel(lv)


def fit(
    model: Any,
    embeddings: Any,
    latlon: Any,
    *,
    steps: int = 1000,
    batch_size: int = 256,
    optim: dict[str, Any] | None = None,
    loss: dict[str, Any] | None = None,
    anchor_sampler: Any = None,
    clip_grad_norm: float | None = 1.0,
    seed: int = 0,
    progress: bool = True,
    callbacks: list[Any] | None = None,
    module_options: dict[str, Any] | None = None,
) -> list[float]:
    """Train ``model`` (a LocDiff, GeoCLIP, HierLoc or G3) in place for ``steps`` optimiser steps.

    Parameters
    ----------
    model
        A :class:`~geodiffloc.LocDiff`, :class:`~geodiffloc.GeoCLIP` or
        :class:`~geodiffloc.HierLoc`; trained where it is (CPU, or the GPU it sits on)
        and left in eval mode.
    embeddings, latlon
        ``(n, dim)`` or ``(n, views, dim)`` condition embeddings / backbone features and
        ``(n, 2)`` ``(lat, lon)`` degrees.
    steps
        Optimiser steps.
    batch_size
        Mini-batch size (LocDiff: items drawn with replacement, as many as ``steps``
        batches need; GeoCLIP: shuffled epochs, since its StepLR decays per epoch).
    optim
        The ``optim`` section of a training config (LocDiff: ``lr``, ``weight_decay``,
        ``betas``, ``schedule``, ``warmup_steps``, ``min_lr_ratio``; GeoCLIP: ``lr``,
        ``weight_decay``, ``gamma``, ``step_size``; HierLoc: ``lr``, ``entity_lr``,
        ``weight_decay``, ``schedule``, ...); unset keys take the config defaults.
    loss
        LocDiff's ``loss`` section: anchor keys and any option of
        :meth:`LocDiff.training_loss`.
    anchor_sampler
        LocDiff: a ready :class:`~geodiffloc.models.locdiff.AnchorSampler` (replaces the
        anchor keys of ``loss``).
    clip_grad_norm
        Gradient-norm clipping (``None``: off).
    seed
        Seeds batches, views, timesteps, noise and anchors (the global RNG is restored).
    progress
        A progress bar on stderr.
    callbacks
        Extra Lightning callbacks.
    module_options
        G3: ``{"descriptions": DescriptionTable}`` (what :meth:`G3.fit` passes).

    Returns
    -------
    list[float]
        The training loss of every step.

    Raises
    ------
    ValueError
        A model of another kind, bad shapes or coordinates, ``steps < 1``.

    Examples
    --------
    >>> from geodiffloc import LocDiff
    >>> m = LocDiff(L=2, cond_dim=4, widths=(16,))
    >>> losses = fit(m, torch.randn(32, 4), torch.rand(32, 2) * 40, steps=3, batch_size=8,
    ...              loss={"n_anchors": 64}, progress=False)
    >>> len(losses)
    3
    """
    from ..models.g3 import G3
    from ..models.geoclip import GeoCLIP
    from ..models.hierloc import HierLoc
    from ..models.locdiff import LocDiff
    from .datamodule import GeoDataModule
    from .modules import GeoCLIPModule, HierLocModule, LocDiffModule

    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1; got {steps}.")
    if not isinstance(model, LocDiff | GeoCLIP | HierLoc | G3):
        raise ValueError(f"fit trains a LocDiff, a GeoCLIP, a HierLoc or a G3; got "
                         f"{type(model).__name__}.")
    is_locdiff = isinstance(model, LocDiff)
    per_step = is_locdiff or isinstance(model, HierLoc | G3)
    record = model.encoder_record or {"name": "precomputed"}
    dm = GeoDataModule.from_tensors(
        # the name only: a width mismatch is reported by the module, naming the model
        embeddings, latlon, val_fraction=0.0, seed=int(seed), encoder=str(record["name"]),
        batch_size=int(batch_size),
        # LocDiff's and HierLoc's schedules count steps: draw exactly what the steps
        # need, one epoch
        samples_per_epoch=int(steps) * int(batch_size) if per_step else None)
    device = next(model.parameters()).device
    model.train()  # Lightning leaves the mode to us (a loaded model is in eval mode)
    module: pl.LightningModule
    if isinstance(model, LocDiff):
        null_cond = model.net.get_parameter("null_cond")
        null_grad = null_cond.requires_grad
        module = LocDiffModule(model, encoder=dict(dm.encoder), optim=optim, loss=loss, seed=seed)
        if anchor_sampler is not None:
            module.anchor_sampler = anchor_sampler
    elif isinstance(model, HierLoc):
        module = HierLocModule(model, encoder=dict(dm.encoder), optim=optim, seed=seed)
    elif isinstance(model, G3):
        from .g3_module import G3Module

        module = G3Module(model, encoder=dict(dm.encoder), optim=optim, seed=seed,
                          descriptions=(module_options or {}).get("descriptions"))
    else:
        module = GeoCLIPModule(model, encoder=dict(dm.encoder), optim=optim, seed=seed)
    rec = StepLosses(int(steps), progress=progress, desc=f"{type(model).__name__} fit")
    threads = torch.get_num_threads()
    try:
        with _quiet_lightning(), torch.random.fork_rng(devices=[]):
            trainer = pl.Trainer(
                max_steps=int(steps), max_epochs=-1,
                accelerator="gpu" if device.type == "cuda" else "cpu",
                devices=[device.index or 0] if device.type == "cuda" else 1,
                logger=False, enable_checkpointing=False, enable_model_summary=False,
                enable_progress_bar=False, num_sanity_val_steps=0, limit_val_batches=0,
                gradient_clip_val=clip_grad_norm, callbacks=[rec, *(callbacks or [])])
            torch.manual_seed(int(seed))
            trainer.fit(module, datamodule=dm)
    finally:
        # Lightning sets torch's thread count for its run (when OMP_NUM_THREADS is unset);
        # a convenience call must leave the caller's setting as it found it
        torch.set_num_threads(threads)
        if is_locdiff:
            null_cond.requires_grad_(null_grad)
        model.to(device).eval()
    return rec.values()
