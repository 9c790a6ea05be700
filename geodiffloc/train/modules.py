"""Lightning modules for LocDiff and GeoCLIP.

The modules are thin: the maths (SHDD-KL diffusion loss, contrastive loss with the GPS
queue, sampling, retrieval) lives in the model classes; a module picks the optimiser
and schedule, feeds batches to the model's own loss and scores validation with the
standard geolocation metrics:

``val/acc@1km`` ... ``val/acc@2500km``
    Percentage (0-100) of validation items predicted within that many km.
``val/median_km``, ``val/mean_km``, ``val/geoscore``
    Error statistics (WGS84 geodesic), GeoScore 0-5000.
``val/loss``
    The training loss on validation batches (fixed noise, no queue update).

``ModelCheckpoint(monitor="val/median_km", mode="min")`` or ``monitor="val/acc@750km",
mode="max"`` pick the best epoch. Under DDP every rank scores its shard, the
predictions are gathered and each item counts once, so the numbers equal a
single-process run on the same weights.

Optimisation:

* **GeoCLIP** (paper, Sec. 4): Adam, lr 3e-5, weight decay 1e-6, StepLR x0.87 per
  epoch, via :meth:`GeoCLIP.configure_optimizer`.
* **HierLoc**: the abstract gives no optimiser details. Riemannian Adam
  (:class:`geoopt.optim.RiemannianAdam`) over the entity embeddings (points of
  :class:`geoopt.Lorentz`, at ``entity_lr``) and the Euclidean query head (at ``lr``,
  with ``weight_decay``), warm-up and cosine decay per step as for LocDiff.
* **LocDiff**: the paper gives no optimiser details. AdamW with lr 1e-3 (the value the
  LocDiff code's own ``fit`` loop is tuned for; the CS-UNet's SIREN blocks are small
  and like a larger step than transformers), no weight decay by default, optional
  linear warm-up, then cosine decay over the run's total optimiser steps
  (``trainer.estimated_stepping_batches``) down to ``min_lr_ratio * lr``; or a
  constant rate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch

if TYPE_CHECKING:
    from ..data.hierarchy import EntityHierarchy

__all__ = ["GeoCLIPModule", "HierLocModule", "LocDiffModule", "build_hierarchy", "metric_name"]


def metric_name(summary_key: str) -> str:
    """Logged name of a :func:`geodiffloc.metrics.summarize` key.

    Examples
    --------
    >>> metric_name("acc@750km_%"), metric_name("median_km")
    ('val/acc@750km', 'val/median_km')
    """
    return "val/" + summary_key.removesuffix("_%")


def warmup_cosine(opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                  min_lr_ratio: float = 0.0, cosine: bool = True,
                  ) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Linear warm-up to the peak rate, then cosine down to ``min_lr_ratio`` of it.

    Stock torch schedulers: ``LinearLR`` from ``1 / warmup_steps`` for the warm-up
    (step ``s`` runs at ``(s + 1) / warmup_steps`` of the peak), then
    ``CosineAnnealingLR`` over the remaining ``total_steps - warmup_steps`` steps,
    chained with ``SequentialLR``; ``cosine=False`` keeps the peak after the warm-up.
    Step it once per optimiser step.

    Returns
    -------
    LRScheduler or None
        ``None`` when the rate is constant (no warm-up, no cosine).

    Examples
    --------
    >>> p = torch.nn.Parameter(torch.zeros(1))
    >>> opt = torch.optim.SGD([p], lr=1.0)
    >>> sched = warmup_cosine(opt, total_steps=6, warmup_steps=2)
    >>> lrs = []
    >>> for _ in range(6):
    ...     lrs.append(round(opt.param_groups[0]["lr"], 3)); opt.step(); sched.step()
    >>> lrs
    [0.5, 1.0, 1.0, 0.854, 0.5, 0.146]
    """
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    total, warmup = max(1, int(total_steps)), max(0, int(warmup_steps))
    if warmup == 1:
        warmup = 0  # a one-step warm-up starts at the peak: no warm-up at all
    warm = (LinearLR(opt, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup - 1)
            if warmup else None)
    if not cosine:
        return warm
    peak = opt.param_groups[0].get("initial_lr", opt.param_groups[0]["lr"])
    decay = CosineAnnealingLR(opt, T_max=max(1, total - warmup),
                              eta_min=float(min_lr_ratio) * float(peak))
    if warm is None:
        return decay
    return SequentialLR(opt, [warm, decay], milestones=[warmup])


#: config section -> the module attribute that holds it merged over the defaults
_SECTION_ATTRS = {"optim": "optim_cfg", "loss": "loss_cfg", "validation": "val_cfg"}


class _GeoModule(pl.LightningModule):
    """Shared parts: construction, seeded noise generator, validation bookkeeping, metrics.

    A new family's module calls :meth:`_configure` first in its ``__init__`` (see
    :class:`LocDiffModule`), then builds or adopts its model.
    """

    seed: int
    optim_cfg: dict[str, Any]
    loss_cfg: dict[str, Any]
    val_cfg: dict[str, Any]

    def __init__(self) -> None:
        super().__init__()
        self._gen: torch.Generator | None = None
        self._loss_sum: torch.Tensor | None = None
        self._val: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        #: The last validation summary (plain floats), also logged under ``val/...``.
        self.val_summary: dict[str, Any] = {}

    # -- randomness -------------------------------------------------------------------
    def on_train_start(self) -> None:
        # A CPU generator for the loss noise (timesteps, Gaussian noise, anchors, GPS noise)
        # that differs per rank (DDP ranks must not draw the same noise for different
        # data) and is re-derived from the step when a run is resumed.
        s = (int(self.seed) * 1_000_003 + int(self.global_rank) * 7919
             + int(self.global_step)) % (2**63 - 1)
        self._gen = torch.Generator().manual_seed(s)

    def _track(self, loss: torch.Tensor) -> None:
        # summed on the device without a sync; checked once per epoch
        d = loss.detach().float()
        self._loss_sum = d if self._loss_sum is None else self._loss_sum + d

    def on_train_epoch_start(self) -> None:
        self._loss_sum = None

    def on_train_epoch_end(self) -> None:
        # fail early and clearly: a NaN loss turns every weight into NaN for good
        if self._loss_sum is not None and not bool(torch.isfinite(self._loss_sum)):
            raise FloatingPointError(
                f"the training loss became NaN or infinite in epoch {self.current_epoch}; "
                "stopping. Lower optim.lr, set trainer.gradient_clip_val, or check the data "
                "for extreme embeddings."
            )

    # -- construction (one shape for every family) --------------------------------------

    def _configure(self, family: str, model: Any, encoder: Mapping[str, Any] | None,
                   seed: int, sections: dict[str, dict[str, Any] | None], *,
                   model_class: type, width: str,
                   arguments: Callable[[Any], dict[str, Any]],
                   hparams_model: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                   ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """The common start of every family's ``__init__``.

        Checks the encoder record; if ``model`` is a ready ``model_class`` object,
        checks that its input width (attribute ``width``) is the encoder's, records the
        encoder on it, and takes its constructor arguments (``arguments(model)``) for
        the hyperparameters; merges ``model`` and each of ``sections`` (``optim``,
        ``loss``, ``validation``) over the family's config defaults into
        ``self.optim_cfg`` / ``loss_cfg`` / ``val_cfg``; sets ``self.seed``; saves the
        hyperparameters (``hparams_model`` may replace unpicklable model entries).

        Returns
        -------
        (given, model, encoder)
            The ready model object or ``None``, the merged model section, and the
            checked encoder record.

        Raises
        ------
        ValueError
            A bad encoder record, or a ready model of another input width.
        """
        from .config import default_config

        d = default_config(family)
        encoder = _check_encoder(encoder)
        given: Any = model if isinstance(model, model_class) else None
        if given is not None:
            _check_same_width(getattr(given, width), encoder, f"the {model_class.__name__}")
            given.encoder_record = dict(encoder)
            model = arguments(given)
        model = {**d["model"], **(model or {})}
        merged = {name: {**d[name], **(cfg or {})} for name, cfg in sections.items()}
        for name, cfg in merged.items():
            setattr(self, _SECTION_ATTRS[name], cfg)
        self.seed = int(seed)
        self.save_hyperparameters({
            "model": hparams_model(model) if hparams_model else model, "encoder": encoder,
            **merged, "seed": self.seed})
        return given, model, encoder

    def _val_generator(self, batch_idx: int) -> torch.Generator:
        # the same noise in every validation epoch, so val/loss is comparable across epochs
        return torch.Generator().manual_seed(int(self.seed) * 7_919 + int(batch_idx))

    # -- validation metrics -----------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = []

    def _collect(self, pred: torch.Tensor, truth: torch.Tensor, idx: torch.Tensor) -> None:
        self._val.append((pred.detach().to(torch.float64).cpu(),
                          truth.detach().to(torch.float64).cpu(), idx.detach().cpu()))

    def _gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate a per-rank tensor over ranks (rows may differ in number)."""
        if self.trainer.world_size <= 1:
            return t
        dev = self.device
        n = torch.tensor([t.shape[0]], device=dev)
        counts = self.all_gather(n)
        assert isinstance(counts, torch.Tensor)  # a tensor in, a tensor out
        sizes = counts.reshape(-1).tolist()
        pad = torch.zeros((max(sizes) - t.shape[0], *t.shape[1:]), dtype=t.dtype)
        allt = self.all_gather(torch.cat([t, pad]).to(dev))
        assert isinstance(allt, torch.Tensor)
        return torch.cat([allt[r, :s].cpu() for r, s in enumerate(sizes)])

    def _log_step(self, loss: torch.Tensor, n: int, extra: dict[str, torch.Tensor],
                  ) -> torch.Tensor:
        """Track and log a training step's loss (per step and epoch) and ``extra`` (per epoch)."""
        self._track(loss)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n,
                 sync_dist=True)
        for k, v in extra.items():
            self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    def _collect_frame(self, gdf: Any, truth: torch.Tensor, idx: torch.Tensor) -> None:
        """:meth:`_collect` the ``lat``/``lon`` columns of a prediction frame."""
        self._collect(torch.from_numpy(np.stack([gdf["lat"].to_numpy(), gdf["lon"].to_numpy()],
                                                1)), truth, idx)

    def _per_step_schedule(self, opt: torch.optim.Optimizer) -> Any:
        """``opt`` with :func:`warmup_cosine` per optimiser step, from ``self.optim_cfg``."""
        o = self.optim_cfg
        total = int(self.trainer.estimated_stepping_batches) if self._trainer else 1
        sched = warmup_cosine(opt, total, int(o["warmup_steps"]), float(o["min_lr_ratio"]),
                              cosine=o["schedule"] == "cosine")
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_validation_epoch_end(self) -> None:
        from ..metrics import summarize

        if not self._val:
            return
        pred = self._gather(torch.cat([v[0] for v in self._val]))
        truth = self._gather(torch.cat([v[1] for v in self._val]))
        idx = self._gather(torch.cat([v[2] for v in self._val]))
        self._val = []
        # a DistributedSampler repeats items to even out the ranks: count each once
        _, first = np.unique(idx.numpy(), return_index=True)
        pred, truth = pred[first], truth[first]
        summary = summarize(pred.numpy(), truth.numpy())
        self.val_summary = {k: v for k, v in summary.items() if k != "method"}
        for k, v in self.val_summary.items():
            if k == "n":
                continue
            # identical on every rank after the gather; sync_dist only averages equal values
            self.log(metric_name(k), float(v), prog_bar=k in ("median_km", "acc@750km_%"),
                     sync_dist=True)


def _check_encoder(encoder: Mapping[str, Any] | None) -> dict[str, Any]:
    if not encoder or "dim" not in encoder:
        raise ValueError(
            "encoder must be {'name': ..., 'dim': ...} of the condition embeddings "
            "(GeoDataModule.encoder gives it)."
        )
    return {"name": str(encoder.get("name", "precomputed")), "dim": int(encoder["dim"])}


#: Loss-section keys that configure the KL anchors; every other key is an option of
#: :meth:`LocDiff.training_loss` and is passed to it unchanged.
ANCHOR_KEYS = ("anchors", "n_anchors", "n_local", "local_radius_km", "bank")


class LocDiffModule(_GeoModule):
    """Trains a :class:`~geodiffloc.LocDiff` with its SHDD-KL diffusion loss.

    Parameters
    ----------
    model
        A :class:`~geodiffloc.LocDiff` to train in place, or its constructor arguments
        (``L``, ``widths``, ``time_dim``, ``w0``, ``taper``, ``diffusion`` as a dict of
        :class:`~geodiffloc.models.locdiff.DiffusionConfig` fields) and ``init``: a
        LocDiff checkpoint to start from (its architecture then wins).
    encoder
        ``{"name", "dim"}`` of the condition encoder; ``dim`` is the condition width.
    optim
        ``lr``, ``weight_decay``, ``betas``, ``schedule`` (``"cosine"``/``"constant"``),
        ``warmup_steps``, ``min_lr_ratio`` (see the module docstring).
    loss
        ``anchors`` (``"uniform"``/``"mixed"``), ``n_anchors``, ``n_local``,
        ``local_radius_km`` (:class:`~geodiffloc.models.locdiff.AnchorSampler`); every
        other key (``p_uncond``, ``aux_weight``, ...) is a keyword option of
        :meth:`LocDiff.training_loss`, passed through unchanged (``p_uncond`` only in
        training).
    validation
        ``sampler`` (fast ``"dpm++"`` by default), ``steps`` (10), ``n_samples`` per
        item (1), ``aggregate`` (``"auto"``: the sample itself for one sample, else
        the mixture mode).
    seed
        Seeds the loss noise and the validation sampling.

    Raises
    ------
    ValueError
        Bad encoder record, or an ``init`` checkpoint for another condition width.

    Examples
    --------
    >>> m = LocDiffModule({"L": 3, "widths": [16]}, encoder={"name": "x", "dim": 4})
    >>> m.model.L, m.model.cond_dim
    (3, 4)
    """

    def __init__(
        self,
        model: Any = None,
        *,
        encoder: Mapping[str, Any] | None = None,
        optim: dict[str, Any] | None = None,
        loss: dict[str, Any] | None = None,
        validation: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        from ..models.locdiff import AnchorSampler, LocDiff

        given, model, encoder = self._configure(
            "locdiff", model, encoder, seed,
            {"optim": optim, "loss": loss, "validation": validation},
            model_class=LocDiff, width="cond_dim", arguments=_locdiff_arguments)
        self.model = given if given is not None else _build_locdiff(model, encoder)
        ls = self.loss_cfg
        self.anchor_sampler = AnchorSampler(ls["anchors"], n_anchors=ls["n_anchors"],
                                            n_local=ls["n_local"],
                                            local_radius_km=ls["local_radius_km"],
                                            bank=ls.get("bank"), seed=int(self.seed))
        #: keyword options of ``LocDiff.training_loss``, in training and in validation
        self.loss_options = {k: v for k, v in ls.items() if k not in ANCHOR_KEYS}
        self.val_loss_options = {k: v for k, v in self.loss_options.items()
                                 if k != "p_uncond"}
        # The learned null condition only gets gradients when conditions are dropped;
        # frozen otherwise so DDP does not wait for a gradient that never comes.
        self.model.net.null_cond.requires_grad_(float(ls.get("p_uncond") or 0) > 0)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, ll = batch[0], batch[1]
        loss, logs = self.model.training_loss(
            x, ll, anchor_sampler=self.anchor_sampler, generator=self._gen,
            **self.loss_options)
        return self._log_step(loss, x.shape[0], {"mse": logs["mse"]})

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, ll, idx = batch
        v = self.val_cfg
        vloss, _ = self.model.training_loss(
            x, ll, anchor_sampler=self.anchor_sampler,
            generator=self._val_generator(batch_idx), **self.val_loss_options)
        self.log("val/loss", vloss, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        n_samples = int(v["n_samples"])
        agg = v["aggregate"]
        if agg == "auto":
            agg = "centroid" if n_samples == 1 else "mixture_mode"
        gdf = self.model.predict(
            x, n_views=n_samples, aggregate=agg, sampler=v["sampler"], steps=v["steps"],
            seed=self.seed * 7_919 + batch_idx, progress=False)
        self._collect_frame(gdf, ll, idx)

    def configure_optimizers(self) -> Any:
        o = self.optim_cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=float(o["lr"]), betas=tuple(o["betas"]),
                                weight_decay=float(o["weight_decay"]))
        return self._per_step_schedule(opt)


def _check_same_width(dim: int, encoder: dict[str, Any], what: str) -> None:
    if int(dim) != int(encoder["dim"]):
        raise ValueError(
            f"{what} takes {dim}-d inputs but the data are {encoder['dim']}-d embeddings from "
            f"{encoder['name']!r}; train on embeddings of the width the model was built for."
        )


def _locdiff_arguments(m: Any) -> dict[str, Any]:
    """Constructor arguments of an existing LocDiff (for the module's hyperparameters)."""
    cfg = m.config()
    return {"L": cfg["L"], "widths": cfg["widths"], "time_dim": cfg["time_dim"],
            "w0": cfg["w0"], "taper": cfg["taper"], "diffusion": cfg["diffusion"]}


def _build_locdiff(model: dict[str, Any], encoder: dict[str, Any]) -> Any:
    from ..models.locdiff import DiffusionConfig, LocDiff

    kw = dict(model)
    init = kw.pop("init", None)
    if init:
        m = LocDiff.load(init)
        if m.cond_dim != encoder["dim"]:
            raise ValueError(
                f"model.init {init!r} takes {m.cond_dim}-d conditions but the data are "
                f"{encoder['dim']}-d embeddings from {encoder['name']!r}."
            )
        m.encoder_record = dict(encoder)
        return m.train()
    diff = kw.pop("diffusion", None)
    if isinstance(diff, dict):
        diff = DiffusionConfig(**diff)
    if kw.get("widths") is not None:
        kw["widths"] = tuple(int(w) for w in kw["widths"])
    return LocDiff(cond_dim=encoder["dim"], encoder=encoder, diffusion=diff, **kw)


class GeoCLIPModule(_GeoModule):
    """Trains a :class:`~geodiffloc.GeoCLIP` head and location encoder contrastively.

    Parameters
    ----------
    model
        A :class:`~geodiffloc.GeoCLIP` to train in place, or its constructor arguments
        (``embed_dim``, ``sigmas``,
        ``n_freqs``, ``hidden_dim``, ``temperature``, ``queue_size``, ``batch_noise_m``,
        ``queue_noise_m``, ``gallery``) and ``init``: ``"official"`` (start from the
        pretrained weights, needs 768-d CLIP ViT-L/14 features) or a GeoCLIP checkpoint.
    encoder
        ``{"name", "dim"}`` of the backbone features (``dim`` = ``backbone_dim``).
    optim
        ``lr`` (3e-5), ``weight_decay`` (1e-6), ``gamma`` (0.87), ``step_size`` (1 epoch).
    validation
        ``gallery``: ``"train"`` (the training locations, given as ``gallery=`` or taken
        from the trainer's :class:`GeoDataModule`) or any gallery spec
        (``"fibonacci:N"``, a CSV, ...); ``max_gallery`` caps a training gallery by a
        seeded random subset.
    seed
        Seeds the initial weights, the GPS queue and the GPS noise.
    gallery
        ``(n, 2)`` training locations for ``validation.gallery == "train"`` (not
        stored in checkpoints).

    Raises
    ------
    ValueError
        Bad encoder record, mismatched ``init`` weights.

    Examples
    --------
    >>> m = GeoCLIPModule({"embed_dim": 8, "n_freqs": 8, "hidden_dim": 16, "queue_size": 32},
    ...                   encoder={"name": "x", "dim": 4})
    >>> m.model.backbone_dim, m.model.embed_dim
    (4, 8)
    """

    def __init__(
        self,
        model: Any = None,
        *,
        encoder: Mapping[str, Any] | None = None,
        optim: dict[str, Any] | None = None,
        validation: dict[str, Any] | None = None,
        seed: int = 0,
        gallery: Any = None,
    ) -> None:
        super().__init__()
        from ..models.geoclip import GeoCLIP

        given, model, encoder = self._configure(
            "geoclip", model, encoder, seed, {"optim": optim, "validation": validation},
            model_class=GeoCLIP, width="backbone_dim",
            arguments=lambda m: {k: v for k, v in m.network_config().items()
                                 if k != "backbone_dim"})
        self.model = given if given is not None else _build_geoclip(model, encoder, self.seed)
        self._train_latlon = gallery
        self._gallery: Any = None

    def _validation_gallery(self) -> Any:
        from ..models.geoclip import Gallery, resolve_gallery

        if self._gallery is not None:
            return self._gallery
        spec = self.val_cfg["gallery"]
        if spec != "train":
            self._gallery = resolve_gallery(spec)
            return self._gallery
        ll = self._train_latlon
        if ll is None and self._trainer is not None:
            ll = getattr(getattr(self.trainer, "datamodule", None), "train_latlon", None)
        if ll is None:
            raise ValueError(
                "validation.gallery='train' needs the training locations: pass gallery= "
                "to GeoCLIPModule or train with a GeoDataModule; or set validation.gallery "
                "to a gallery spec such as 'fibonacci:100000'."
            )
        self._gallery = Gallery(
            training_gallery(ll, int(self.val_cfg["max_gallery"]), self.seed), "train")
        return self._gallery

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, ll = batch[0], batch[1]
        loss = self.model.training_step(x, ll, generator=self._gen)
        return self._log_step(loss, x.shape[0],
                              {"logit_scale": self.model.logit_scale.detach()})

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, ll, idx = batch
        vloss = self.model.training_step(x, ll, update_queue=False,
                                         generator=self._val_generator(batch_idx))
        self.log("val/loss", vloss, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        gdf = self.model.predict(x, gallery=self._validation_gallery(), input_kind="backbone",
                                 batch_size=max(1, x.shape[0]))
        self._collect_frame(gdf, ll, idx)

    def configure_optimizers(self) -> Any:
        o = self.optim_cfg
        opt, sched = self.model.configure_optimizer(
            lr=float(o["lr"]), weight_decay=float(o["weight_decay"]), gamma=float(o["gamma"]),
            step_size=int(o["step_size"]))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


def training_gallery(latlon: Any, max_size: int, seed: int) -> torch.Tensor:
    """Distinct training locations, at most ``max_size`` (a seeded random subset), float64.

    Examples
    --------
    >>> training_gallery(torch.tensor([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0]]), 10, 0).shape
    torch.Size([2, 2])
    """
    ll = np.unique(np.asarray(torch.as_tensor(latlon, dtype=torch.float64)), axis=0)
    if len(ll) > max_size:
        keep = np.random.default_rng(int(seed)).choice(len(ll), size=max_size, replace=False)
        ll = ll[np.sort(keep)]
    return torch.from_numpy(np.ascontiguousarray(ll))


def _build_geoclip(model: dict[str, Any], encoder: dict[str, Any], seed: int) -> Any:
    from ..models.geoclip import GeoCLIP

    kw = dict(model)
    init = kw.pop("init", None)
    gallery = kw.pop("gallery", None)
    if init:
        m = (GeoCLIP.from_official(backbone=None, cache_dir=False) if init == "official"
             else GeoCLIP.load(init, cache_dir=False))
        if m.backbone_dim != encoder["dim"]:
            raise ValueError(
                f"model.init {init!r} expects {m.backbone_dim}-d backbone features but the "
                f"data are {encoder['dim']}-d embeddings from {encoder['name']!r}."
            )
        m.train()
    else:
        if kw.get("sigmas") is not None:
            kw["sigmas"] = tuple(float(s) for s in kw["sigmas"])
        m = GeoCLIP(backbone_dim=encoder["dim"], cache_dir=False, seed=seed, **kw)
    if gallery is not None:
        m.gallery = gallery
    m.encoder_record = dict(encoder)
    return m


def build_hierarchy(spec: dict[str, Any]) -> EntityHierarchy:
    """The :class:`~geodiffloc.data.EntityHierarchy` a ``model.hierarchy`` section describes.

    Lives in the train layer because the gazetteer hierarchy's country polygons come
    from :mod:`geodiffloc.geo` (Natural Earth), which the data layer may not import.

    Raises
    ------
    ValueError
        Bad spec or an invalid hierarchy (:class:`~geodiffloc.data.HierarchyError`).
    FileNotFoundError
        ``source: file`` and no file at ``path``.

    Examples
    --------
    >>> h = build_hierarchy({"source": "gazetteer", "min_population": 1_000_000,
    ...                      "countries": ["FR"], "country_polygons": None})
    >>> h.level_names[0], int(h.level_counts()[0])
    ('country', 1)
    """
    from ..data.hierarchy import EntityHierarchy, gazetteer_hierarchy
    from .schema import HierarchySection

    s = HierarchySection.model_validate(dict(spec or {})).model_dump()
    if s["source"] == "gazetteer":
        polys = None
        if s["country_polygons"]:
            from ..geo.naturalearth import countries

            polys = countries("10m" if s["country_polygons"] == "naturalearth_10m" else "lowres")
        return gazetteer_hierarchy(s["min_population"], countries=s["countries"],
                                   country_polygons=polys)
    import geopandas as gpd

    path = Path(s["path"])
    if not path.exists():
        raise FileNotFoundError(f"model.hierarchy.path {path} does not exist.")
    gdf = (gpd.read_parquet(path) if path.suffix.lower() in (".parquet", ".geoparquet")
           else gpd.read_file(path, layer=s["layer"]))
    return EntityHierarchy.from_geodataframe(
        gdf, id_col=s["id_col"], parent_col=s["parent_col"], name_col=s["name_col"],
        level_col=s["level_col"], level_names=s["level_names"], reproject=s["reproject"])


class HierLocModule(_GeoModule):
    """Trains a :class:`~geodiffloc.HierLoc` with its geo-weighted hyperbolic loss.

    Parameters
    ----------
    model
        A :class:`~geodiffloc.HierLoc` to train in place, or its constructor arguments
        with ``hierarchy`` (a ``model.hierarchy`` config section, see
        :func:`build_hierarchy`, or a ready :class:`~geodiffloc.data.EntityHierarchy`)
        and ``init``: a HierLoc checkpoint to start from (its architecture and
        hierarchy then win).
    encoder
        ``{"name", "dim"}`` of the query embeddings (``dim`` = ``input_dim``).
    optim
        ``lr``, ``entity_lr``, ``weight_decay``, ``schedule``, ``warmup_steps``,
        ``min_lr_ratio`` (see the module docstring).
    validation
        ``method`` (``"flat"``/``"beam"``) and ``beam_width`` of the validation predictions.
    seed
        Seeds the initial weights and the sampled hierarchy edges.

    Raises
    ------
    ValueError
        Bad encoder record, an invalid hierarchy, mismatched ``init`` weights.

    Examples
    --------
    >>> from geodiffloc.data import EntityHierarchy
    >>> h = EntityHierarchy.from_records([{"entity_id": "A", "lat": 0.0, "lon": 0.0}])
    >>> m = HierLocModule({"hierarchy": h, "embed_dim": 4, "hidden_dim": 8},
    ...                   encoder={"name": "x", "dim": 6})
    >>> m.model.input_dim, m.model.n_entities
    (6, 1)
    """

    def __init__(
        self,
        model: Any = None,
        *,
        encoder: Mapping[str, Any] | None = None,
        optim: dict[str, Any] | None = None,
        validation: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        from ..models.hierloc import HierLoc

        given, model, encoder = self._configure(
            "hierloc", model, encoder, seed, {"optim": optim, "validation": validation},
            model_class=HierLoc, width="input_dim", arguments=_hierloc_arguments,
            hparams_model=lambda m: {k: (v if k != "hierarchy" or isinstance(v, dict | str)
                                         else "<given>") for k, v in m.items()})
        self.model = given if given is not None else _build_hierloc(model, encoder, self.seed)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, ll = batch[0], batch[1]
        loss, logs = self.model.training_loss(x, ll, generator=self._gen)
        return self._log_step(loss, x.shape[0],
                              {k: logs[k] for k in ("geo", "parent", "norm", "acc_leaf")})

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, ll, idx = batch
        vloss, _ = self.model.training_loss(x, ll, generator=self._val_generator(batch_idx))
        self.log("val/loss", vloss, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        v = self.val_cfg
        gdf = self.model.predict(x, method=v["method"], beam_width=int(v["beam_width"]))
        self._collect_frame(gdf, ll, idx)

    def configure_optimizers(self) -> Any:
        from geoopt.optim import RiemannianAdam

        o = self.optim_cfg
        lr = float(o["lr"])
        head = [p for p in self.model.head.parameters() if p.requires_grad]
        groups = [{"params": [self.model.entities], "lr": float(o["entity_lr"] or lr),
                   "weight_decay": 0.0},
                  {"params": head, "lr": lr, "weight_decay": float(o["weight_decay"])}]
        opt = RiemannianAdam(groups, lr=lr, stabilize=100)
        return self._per_step_schedule(opt)


def _hierloc_arguments(m: Any) -> dict[str, Any]:
    """Constructor arguments of an existing HierLoc (its hierarchy is not a hyperparameter)."""
    return {**{k: v for k, v in m.config().items()
               if k not in ("format", "input_dim", "encoder", "hierarchy")},
            "hierarchy": "<given>"}


def _build_hierloc(model: dict[str, Any], encoder: dict[str, Any], seed: int) -> Any:
    from ..data.hierarchy import EntityHierarchy
    from ..models.hierloc import HierLoc

    kw = dict(model)
    init = kw.pop("init", None)
    spec = kw.pop("hierarchy", None)
    if init:
        m = HierLoc.load(init)
        if m.input_dim != encoder["dim"]:
            raise ValueError(
                f"model.init {init!r} takes {m.input_dim}-d embeddings but the data are "
                f"{encoder['dim']}-d embeddings from {encoder['name']!r}.")
        m.encoder_record = dict(encoder)
        return m.train()
    hierarchy = spec if isinstance(spec, EntityHierarchy) else build_hierarchy(spec or {})
    m = HierLoc(hierarchy, input_dim=encoder["dim"], seed=seed, **kw)
    m.encoder_record = dict(encoder)
    return m
