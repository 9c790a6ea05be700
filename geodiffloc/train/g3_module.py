"""The Lightning module of G3 and the pieces ``train`` needs for it.

* **G3** (geo-alignment): Adam over the query and text heads, the location encoder
  and the three logit scales, warm-up and cosine decay per step (the summary gives no
  optimiser details; the same schedule as LocDiff and HierLoc). Each batch's
  description embeddings come from a :class:`~geodiffloc.models.g3.DescriptionTable`
  built once before training (reverse geocoding with the offline gazetteer, or a
  user's description CSV, encoded with the text encoder and cached). Validation: GPS
  retrieval over the distinct training locations (the query–GPS similarity that
  verification uses), scored with the standard metrics.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from ..encoders.base import Encoder
    from ..models.g3 import DescriptionTable
import torch

from .modules import _GeoModule, training_gallery, warmup_cosine

__all__ = ["G3Module", "attach_training_references", "build_g3_module", "description_table"]


class G3Module(_GeoModule):
    """Trains a :class:`~geodiffloc.G3` with the geo-alignment loss.

    Parameters
    ----------
    model
        A :class:`~geodiffloc.G3` to train in place, or its constructor arguments
        (``embed_dim``, ``sigmas``, ``n_freqs``, ``hidden_dim``, ``temperature``,
        ``queue_size``, ``batch_noise_m``, ``queue_noise_m``, ``loss_weights``) with
        ``text_dim`` and ``init`` (a G3 checkpoint to start from).
    encoder
        ``{"name", "dim"}`` of the query embeddings.
    descriptions
        The :class:`~geodiffloc.models.g3.DescriptionTable` of the training (and
        validation) locations.
    optim
        ``lr``, ``weight_decay``, ``schedule``, ``warmup_steps``, ``min_lr_ratio``.
    validation
        ``max_gallery``: cap of the training-location gallery.
    seed
        Seeds the initial weights, the GPS queue and the GPS noise.
    gallery
        ``(n, 2)`` training locations for validation (else the trainer's data module's).

    Examples
    --------
    >>> from geodiffloc.models.g3 import DescriptionTable
    >>> t = DescriptionTable(torch.zeros(1, 2), torch.zeros(1, 3))
    >>> m = G3Module({"embed_dim": 4, "n_freqs": 4, "hidden_dim": 8, "queue_size": 8,
    ...               "text_dim": 3}, encoder={"name": "x", "dim": 6}, descriptions=t)
    >>> m.model.input_dim, m.model.text_dim
    (6, 3)
    """

    def __init__(
        self,
        model: Any = None,
        *,
        encoder: Mapping[str, Any] | None = None,
        descriptions: Any = None,
        optim: dict[str, Any] | None = None,
        validation: dict[str, Any] | None = None,
        seed: int = 0,
        gallery: Any = None,
    ) -> None:
        super().__init__()
        from ..models.g3 import G3, DescriptionTable

        if not isinstance(descriptions, DescriptionTable):
            raise ValueError("G3Module needs descriptions=DescriptionTable(latlon, embeddings) "
                             "of the training locations (see geodiffloc.train.description_table).")
        self.descriptions = descriptions
        given, model, encoder = self._configure(
            "g3", model, encoder, seed, {"optim": optim, "validation": validation},
            model_class=G3, width="input_dim", arguments=_g3_arguments)
        self.model = given if given is not None else _build_g3(model, encoder, descriptions.dim,
                                                               self.seed)
        if self.model.text_dim != descriptions.dim:
            raise ValueError(f"the G3 takes {self.model.text_dim}-d descriptions but the "
                             f"description embeddings are {descriptions.dim}-d.")
        self._train_latlon = gallery
        self._gallery: torch.Tensor | None = None
        self._gallery_emb: torch.Tensor | None = None

    def _texts(self, ll: torch.Tensor) -> torch.Tensor:
        return self.descriptions.lookup(ll).to(self.device)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, ll = batch[0], batch[1]
        loss, parts = self.model.training_loss(x, ll, self._texts(ll), generator=self._gen)
        self._track(loss)
        n = x.shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n,
                 sync_dist=True)
        for k in ("qg", "qt", "tg", "acc"):
            self.log(f"train/{k}", parts[k], on_step=False, on_epoch=True, batch_size=n,
                     sync_dist=True)
        return loss

    def _validation_gallery(self) -> torch.Tensor:
        if self._gallery is None:
            ll = self._train_latlon
            if ll is None and self._trainer is not None:
                ll = getattr(getattr(self.trainer, "datamodule", None), "train_latlon", None)
            if ll is None:
                raise ValueError("G3 validation needs the training locations: pass gallery= "
                                 "or train with a GeoDataModule.")
            self._gallery = training_gallery(ll, int(self.val_cfg["max_gallery"]), self.seed)
        return self._gallery

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        g = self._validation_gallery()
        self._gallery_emb = self.model.embed_locations(g)  # weights change between epochs

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, ll, idx = batch
        vloss, _ = self.model.training_loss(x, ll, self._texts(ll), update_queue=False,
                                            generator=self._val_generator(batch_idx))
        self.log("val/loss", vloss, on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        with torch.no_grad():
            xq = x[:, 0] if x.ndim == 3 else x
            q = torch.nn.functional.normalize(self.model.project_queries(xq.float()), dim=1)
            assert self._gallery_emb is not None
            best = (q @ self._gallery_emb.T).argmax(dim=1).cpu()
        self._collect(self._validation_gallery()[best], ll, idx)

    def configure_optimizers(self) -> Any:
        o = self.optim_cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=float(o["lr"]), weight_decay=float(o["weight_decay"]))
        total = int(self.trainer.estimated_stepping_batches) if self._trainer else 1
        sched = warmup_cosine(opt, total, int(o["warmup_steps"]), float(o["min_lr_ratio"]),
                              cosine=o["schedule"] == "cosine")
        if sched is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _build_g3(model: dict[str, Any], encoder: dict[str, Any], text_dim: int, seed: int) -> Any:
    from ..models.g3 import G3

    keys = ("embed_dim", "sigmas", "n_freqs", "hidden_dim", "temperature", "queue_size",
            "batch_noise_m", "queue_noise_m", "loss_weights")
    init = model.get("init")
    if init:
        m = G3.load(init)
        if m.input_dim != encoder["dim"] or m.text_dim != text_dim:
            raise ValueError(f"model.init {init!r} takes {m.input_dim}-d queries and "
                             f"{m.text_dim}-d descriptions; the data give {encoder['dim']} and "
                             f"{text_dim}.")
        m.encoder_record = dict(encoder)
        return m.train()
    kw = {k: model[k] for k in keys if k in model}
    if kw.get("sigmas") is not None:
        kw["sigmas"] = tuple(float(s) for s in kw["sigmas"])
    m = G3(input_dim=encoder["dim"], text_dim=int(text_dim), seed=seed, **kw)
    m.encoder_record = dict(encoder)
    return m


def _text_encoder(cfg: dict[str, Any], data_encoder: dict[str, Any]) -> Any:
    from ..encoders import encoder_from_name

    m = cfg["model"]
    name = m["text_encoder"] or data_encoder.get("name")
    if not name or name == "precomputed":
        raise ValueError("G3 needs a text encoder for the place descriptions: set "
                         "model.text_encoder (e.g. 'sentence-transformers:all-MiniLM-L6-v2' "
                         "or 'open_clip:ViT-L-14/openai:text').")
    enc = encoder_from_name(str(name), path=m["text_encoder_path"])
    if getattr(enc, "modality", "text") != "text":
        raise ValueError(f"the data encoder {name!r} is not a text encoder; set "
                         "model.text_encoder to one for the place descriptions (e.g. CLIP's "
                         "text tower 'open_clip:ViT-L-14/openai:text').")
    return enc


def description_table(latlon: ArrayLike, text_encoder: Encoder, *, source: str = "gazetteer",
                      levels: Sequence[str] | None = None,
                      cache_dir: str | os.PathLike | Literal[False] | None = None,
                      progress: bool = False) -> DescriptionTable:
    """The :class:`~geodiffloc.models.g3.DescriptionTable` of some locations.

    Parameters
    ----------
    latlon
        ``(n, 2)`` locations (repeats are embedded once).
    text_encoder
        Encoder of the descriptions (embeddings cached on disk).
    source
        ``"gazetteer"`` (reverse geocoding) or a CSV path with ``lat``/``lon`` (or
        ``LAT``/``LON``) and ``description`` columns.
    levels
        Description levels for the gazetteer (default all).

    Raises
    ------
    ValueError
        A CSV without the needed columns.
    """
    import pandas as pd

    from ..data.cache import cached_encode
    from ..models.g3 import DescriptionTable
    from ..models.g3.descriptions import DESCRIPTION_LEVELS, describe_locations

    if source == "gazetteer":
        ll = np.unique(np.asarray(torch.as_tensor(latlon, dtype=torch.float64)), axis=0)
        texts = describe_locations(ll, levels or DESCRIPTION_LEVELS)
    else:
        df = pd.read_csv(source)
        cols = {c.lower(): c for c in df.columns}
        if not {"lat", "lon", "description"} <= set(cols):
            raise ValueError(f"{source!r} needs lat, lon and description columns; found "
                             f"{list(df.columns)[:10]}.")
        ll = df[[cols["lat"], cols["lon"]]].to_numpy(np.float64)
        texts = df[cols["description"]].astype(str).tolist()
    emb = cached_encode(text_encoder, texts, cache_dir=cache_dir, progress=progress)
    return DescriptionTable(ll, emb)


def build_g3_module(cfg: dict[str, Any], datamodule: Any) -> G3Module:
    """The :class:`G3Module` of a validated ``g3`` config for the data of ``datamodule``."""
    enc = _text_encoder(cfg, datamodule.encoder)
    lls = [torch.as_tensor(datamodule.train_latlon, dtype=torch.float64)]
    if datamodule.val_latlon is not None:
        lls.append(torch.as_tensor(datamodule.val_latlon, dtype=torch.float64))
    m = cfg["model"]
    table = description_table(torch.cat(lls), enc, source=m["descriptions"],
                              levels=m["description_levels"],
                              progress=bool(cfg["trainer"]["enable_progress_bar"]))
    module = G3Module(cfg["model"], encoder=datamodule.encoder, descriptions=table,
                      optim=cfg["optim"], validation=cfg["validation"], seed=cfg["seed"],
                      gallery=datamodule.train_latlon)
    module.model.set_text_encoder(enc)
    return module


def attach_training_references(model: Any, datamodule: Any, max_size: int, seed: int) -> None:
    """Give an exported G3 the training embeddings as its reference database."""
    from ..models.g3 import ReferenceDatabase

    ds = datamodule.train_set
    n = len(ds)
    keep = np.arange(n)
    if n > max_size:
        keep = np.sort(np.random.default_rng(int(seed)).choice(n, size=max_size, replace=False))
    xs, lls = [], []
    for s in range(0, len(keep), 4096):
        items = [ds[int(i)] for i in keep[s:s + 4096]]
        x = torch.stack([torch.as_tensor(it[0]) for it in items])
        xs.append(x[:, 0] if x.ndim == 3 else x)
        lls.append(torch.stack([torch.as_tensor(it[1], dtype=torch.float64) for it in items]))
    model.set_references(ReferenceDatabase(torch.cat(xs), torch.cat(lls), name="train"))


def _g3_arguments(m: Any) -> dict[str, Any]:
    """Constructor arguments of an existing G3 (for the module's hyperparameters)."""
    return {k: v for k, v in m.config().items() if k not in ("format", "input_dim")}
