"""``train(config)``: one call from a config file to an exported, loadable model.

Steps: validate the config (:func:`~geodiffloc.train.config.load_config`), seed
everything, prepare the data (build the gazetteer task, or encode a CSV / photo folder
into a feature store first, resumably), build the Lightning module, fit with
checkpoints of the best and the last epoch (resuming from ``resume`` if given), reload
the best (or last) weights, validate them once more and export the model with its own
``save`` so that ``LocDiff.load`` / ``GeoCLIP.load`` read it.

Outputs in ``out_dir``::

    config.yaml                 the complete, validated config of the run
    checkpoints/best-*.ckpt     Lightning checkpoint(s) of the best epoch(s)
    checkpoints/last.ckpt       the latest state (resume from it)
    logs/                       CSV (or TensorBoard) logs of losses, metrics, lr
    model.safetensors           the exported model (export.path)
    gallery.csv                 GeoCLIP: the training locations, the model's default gallery
    metrics.json                the exported weights' validation metrics

Relative paths in a config are relative to the working directory.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._io import check_safe_checkpoint
from .config import load_config

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from .datamodule import GeoDataModule

__all__ = ["build_datamodule", "build_module", "train"]

log = logging.getLogger("geodiffloc.train")


def _rank() -> int:
    from lightning.pytorch.utilities import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


def build_datamodule(cfg: dict[str, Any]) -> GeoDataModule:
    """The :class:`~geodiffloc.train.GeoDataModule` described by a validated config's ``data``.

    Parameters
    ----------
    cfg
        A config from :func:`~geodiffloc.train.config.load_config`.

    Returns
    -------
    GeoDataModule

    Raises
    ------
    ValueError
        Missing or malformed data files, encoders that cannot be built.
    FileNotFoundError
        A data path that does not exist.

    Examples
    --------
    >>> cfg = load_config({"family": "locdiff", "data": {"source": "feature_store",
    ...                    "path": "features/"}})  # doctest: +SKIP
    >>> build_datamodule(cfg)  # doctest: +SKIP
    GeoDataModule(train=9000, val=1000, dim=1280, encoder='efficientnet:lite0/imagenet', ...)
    """
    from .datamodule import GeoDataModule

    d = cfg["data"]
    kw = {"batch_size": d["batch_size"], "val_batch_size": d["val_batch_size"],
          "num_workers": d["num_workers"], "pin_memory": d["pin_memory"]}
    src, seed = d["source"], int(cfg["seed"])
    progress = bool(cfg["trainer"]["enable_progress_bar"])
    if src == "gazetteer":
        from ..data import text_task

        g = d["gazetteer"]
        enc = _encoder(d) if d["encoder"] else None
        task = text_task(
            g["n_train"], g["n_test"], g["split"], seed=seed if g["seed"] is None else g["seed"],
            encoder=enc, cache_dir=g["cache_dir"], min_population=g["min_population"],
            weighting=g["weighting"], test_frac=g["test_frac"],
            batch_size=d["encode_batch_size"], progress=progress)
        # the task's held-out places are the validation set
        return GeoDataModule.from_tensors(
            task.train.embeddings, task.train.latlon, val_embeddings=task.test.embeddings,
            val_latlon=task.test.latlon, encoder={"name": task.encoder_name, "dim": task.dim},
            **kw)
    path = Path(d["path"])
    if not path.exists():
        raise FileNotFoundError(f"data.path {path} does not exist.")
    if src == "arrays":
        return _from_npz(path, d, seed, kw)
    if src == "feature_store":
        return GeoDataModule.from_store(path, val_store=d["val_path"],
                                        val_fraction=d["val_fraction"], seed=seed, **kw)
    store = _encode_images(cfg, path, progress)
    return GeoDataModule.from_store(store, val_fraction=d["val_fraction"], seed=seed, **kw)


def _encoder(d: dict[str, Any]) -> Any:
    from ..encoders import encoder_from_name

    return encoder_from_name(str(d["encoder"]), path=d["encoder_path"])


def _from_npz(path: Path, d: dict[str, Any], seed: int, kw: dict[str, Any]) -> Any:
    from .datamodule import GeoDataModule

    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"could not read {path} as an .npz of arrays: {e}") from e
    missing = [k for k in ("embeddings", "latlon") if k not in arrays]
    if missing:
        raise ValueError(
            f"{path} lacks array(s) {missing}; it needs 'embeddings' (n, dim) or "
            f"(n, views, dim) and 'latlon' (n, 2), optionally 'val_embeddings', 'val_latlon'. "
            f"Found: {sorted(arrays)}."
        )
    return GeoDataModule.from_tensors(
        arrays["embeddings"], arrays["latlon"], val_embeddings=arrays.get("val_embeddings"),
        val_latlon=arrays.get("val_latlon"), val_fraction=d["val_fraction"], seed=seed,
        encoder=str(d["encoder"] or "precomputed"), **kw)


def _encode_images(cfg: dict[str, Any], path: Path, progress: bool) -> Path:
    """Encode a CSV / photo folder into a feature store (resumes an interrupted run)."""
    from .._io import atomic_path
    from ..data import FeatureStore, GeotaggedDataset

    d = cfg["data"]
    if d["source"] == "csv":
        ds = GeotaggedDataset.from_csv(path, d["image_root"], path_col=d["path_col"],
                                       lat_col=d["lat_col"], lon_col=d["lon_col"],
                                       check=d["check"], progress=progress)
    else:
        ds = GeotaggedDataset.from_folder(path, recursive=d["recursive"], check=d["check"],
                                          progress=progress)
    out = Path(cfg["out_dir"])
    if len(ds.report):
        log.warning("skipped %d of %d rows of %s: %s", len(ds.report),
                    len(ds.report) + len(ds), path, ds.report.counts())
        if _rank() == 0:
            with atomic_path(out / "skipped.csv", overwrite=True) as tmp:
                ds.report.to_frame().to_csv(tmp, index=False)
    if len(ds) == 0:
        raise ValueError(f"no usable images in {path} (see {out / 'skipped.csv'}).")
    store = Path(d["store"]) if d["store"] else out / "features"
    FeatureStore.build(store, ds, encoder=_encoder(d), views=d["views"],
                       batch_size=d["encode_batch_size"], seed=int(cfg["seed"]),
                       progress=progress)
    return store


def build_module(cfg: dict[str, Any], datamodule: GeoDataModule) -> pl.LightningModule:
    """The Lightning module of a validated config for the data of ``datamodule``.

    Returns
    -------
    LocDiffModule, GeoCLIPModule, HierLocModule or G3Module

    Examples
    --------
    >>> from geodiffloc.train import GeoDataModule
    >>> dm = GeoDataModule.from_tensors(torch.randn(8, 4), torch.zeros(8, 2), batch_size=4)
    >>> cfg = load_config({"family": "locdiff", "data": {"source": "gazetteer"},
    ...                    "model": {"L": 2, "widths": [8]}})
    >>> build_module(cfg, dm).model.cond_dim
    4
    """
    from .modules import GeoCLIPModule, HierLocModule, LocDiffModule

    if cfg["family"] == "g3":
        from .g3_module import build_g3_module

        return build_g3_module(cfg, datamodule)
    if cfg["family"] == "hierloc":
        return HierLocModule(cfg["model"], encoder=datamodule.encoder, optim=cfg["optim"],
                             validation=cfg["validation"], seed=cfg["seed"])
    if cfg["family"] == "locdiff":
        return LocDiffModule(cfg["model"], encoder=datamodule.encoder, optim=cfg["optim"],
                             loss=cfg["loss"], validation=cfg["validation"], seed=cfg["seed"])
    return GeoCLIPModule(cfg["model"], encoder=datamodule.encoder, optim=cfg["optim"],
                         validation=cfg["validation"], seed=cfg["seed"],
                         gallery=datamodule.train_latlon)


def _prepare_out_dir(out: Path, cfg: dict[str, Any]) -> None:
    from .checkpoint_io import remove_stale_temporaries

    ckpts = out / "checkpoints"
    removed = remove_stale_temporaries(ckpts)
    if removed:
        log.warning("%s: removed %d half-written checkpoint(s) of a killed run", ckpts,
                    len(removed))
    old = sorted(ckpts.glob("*.ckpt")) if ckpts.is_dir() else []
    if old and not cfg["resume"]:
        if not cfg["overwrite"]:
            raise ValueError(
                f"{ckpts} already holds checkpoints from an earlier run ({old[0].name}, ...). "
                f"Resume it (resume: {ckpts / 'last.ckpt'}; CLI --resume), choose another "
                "out_dir (CLI --out), or set overwrite: true to start afresh."
            )
        for f in old:  # overwrite asked for: stale best/last files would mislead
            f.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _trainer(cfg: dict[str, Any], out: Path, monitor: str | None, callbacks: list[Any]) -> Any:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    c = cfg["checkpoint"]
    ckpt = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="best-{epoch:03d}-{step:06d}", monitor=monitor,
        # without a monitored metric Lightning allows only -1, 0 or 1 ("keep the latest")
        mode=c["mode"], save_top_k=c["save_top_k"] if monitor else min(c["save_top_k"], 1),
        save_last=c["save_last"], every_n_epochs=c["every_n_epochs"],
        every_n_train_steps=c["every_n_train_steps"],
    )
    t = dict(cfg["trainer"])
    kind = t.pop("logger")
    logger: Any = False
    if kind == "csv":
        logger = pl.loggers.CSVLogger(out, name="logs")
    elif kind == "tensorboard":
        logger = pl.loggers.TensorBoardLogger(out, name="logs")
    cbs = [ckpt, *callbacks]
    has_bar = any(isinstance(cb, pl.callbacks.ProgressBar) for cb in cbs)
    if t.get("enable_progress_bar", True) and not has_bar:
        from .progress import StderrProgressBar

        cbs.append(StderrProgressBar())  # results go to stdout, progress to stderr
    if logger is not False:
        cbs.append(LearningRateMonitor(logging_interval="step"))
    if t["deterministic"] and t["accelerator"] in ("auto", "gpu", "cuda"):
        # cuBLAS needs this for deterministic matrix products (set before CUDA starts)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from .checkpoint_io import AtomicCheckpointIO

    try:
        # checkpoints are written temp + fsync + rename: a killed run never leaves a torn
        # last.ckpt in place of the previous good one
        trainer = pl.Trainer(**t, logger=logger, callbacks=cbs, default_root_dir=out,
                             plugins=[AtomicCheckpointIO()])
    except (MisconfigurationException, TypeError, ImportError) as err:
        # accelerator "gpu" on a CPU machine; devices=-1 (all GPUs) on CPU is a TypeError
        # from Lightning's device parser; "tpu" without torch_xla an ImportError. The
        # config's keys are checked, so this is its values not fitting the machine.
        raise ValueError(
            f"the trainer settings do not fit this machine (accelerator={t['accelerator']!r}, "
            f"devices={t.get('devices')!r}): {err} Use accelerator 'auto' or 'cpu' (CLI "
            "--accelerator) or fewer devices (--devices)."
        ) from None
    return trainer, ckpt


def _write_text(path: Path, text: str) -> None:
    from .._io import atomic_path

    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text)


def train(
    config: dict[str, Any] | str | os.PathLike,
    *,
    out_dir: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    max_epochs: int | None = None,
    max_steps: int | None = None,
    overrides: dict[str, Any] | None = None,
    datamodule: Any = None,
    callbacks: list[Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train a LocDiff, GeoCLIP or HierLoc model from a config; export it; return it + metrics.

    Parameters
    ----------
    config
        A YAML file or a dict (see :mod:`geodiffloc.train.config` and ``configs/``).
    out_dir, resume, max_epochs, max_steps
        Override ``out_dir``, ``resume`` (a Lightning ``.ckpt``, e.g.
        ``<out_dir>/checkpoints/last.ckpt``), ``trainer.max_epochs``, ``trainer.max_steps``.
    overrides
        Any other nested config values, e.g. ``{"trainer": {"accelerator": "cpu"}}``.
    datamodule
        A ready :class:`~geodiffloc.train.GeoDataModule` (e.g. from in-memory tensors);
        its own loader settings are used and the config's ``data`` section is ignored.
    callbacks
        Extra Lightning callbacks.

    Returns
    -------
    (model, results)
        The trained :class:`~geodiffloc.LocDiff` / :class:`~geodiffloc.GeoCLIP` (CPU,
        eval mode, holding the exported weights) and a dict: ``metrics`` (validation
        metrics of the exported weights: ``val/acc@{1,25,200,750,2500}km`` in %,
        ``val/median_km``, ``val/mean_km``, ``val/geoscore``, ``val/loss``),
        ``model_path``, ``best_checkpoint``, ``last_checkpoint``, ``best_score``,
        ``global_step``, ``epoch``, ``out_dir``, ``weights`` (best/last).

    Raises
    ------
    ValueError
        Invalid config, data, or an ``out_dir`` holding checkpoints of another run
        (resume it, or set ``overwrite``).
    FileNotFoundError
        Missing config or data files.
    FileExistsError
        The export path exists (set ``overwrite``; a resumed run may replace it).

    Examples
    --------
    >>> model, results = train("configs/locdiff_gazetteer.yaml")  # doctest: +SKIP
    >>> results["metrics"]["val/median_km"]  # doctest: +SKIP
    """
    import lightning.pytorch as pl
    import yaml

    ov: dict[str, Any] = {k: v for k, v in (overrides or {}).items()}
    if datamodule is not None:
        ov.setdefault("data", {})
        ov["data"] = {"source": "arrays", "path": "<datamodule>", **ov["data"]}
    tr = dict(ov.get("trainer") or {})
    if max_epochs is not None:
        tr["max_epochs"] = max_epochs
    if max_steps is not None:
        tr["max_steps"] = max_steps
    if tr:
        ov["trainer"] = tr
    if out_dir is not None:
        ov["out_dir"] = os.fspath(out_dir)
    if resume is not None:
        ov["resume"] = os.fspath(resume)
    cfg = load_config(config, overrides=ov)
    if cfg["resume"] and not Path(cfg["resume"]).is_file():
        raise FileNotFoundError(f"resume checkpoint {cfg['resume']} does not exist.")
    if cfg["resume"]:
        check_safe_checkpoint(cfg["resume"])
    out = Path(cfg["out_dir"])
    threads = torch.get_num_threads()
    det_state = (torch.are_deterministic_algorithms_enabled(),
                 torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        pl.seed_everything(int(cfg["seed"]), workers=True, verbose=False)
        if _rank() == 0:
            _prepare_out_dir(out, cfg)
        dm = datamodule if datamodule is not None else build_datamodule(cfg)
        module = build_module(cfg, dm)
        has_val = dm.val_set is not None
        monitor = cfg["checkpoint"]["monitor"] if has_val else None
        if not has_val and cfg["checkpoint"]["monitor"]:
            log.warning("no validation data: checkpoints keep the latest epoch, not the best.")
        trainer, ckpt = _trainer(cfg, out, monitor, list(callbacks or []))
        if trainer.is_global_zero:
            _write_text(out / "config.yaml",
                        yaml.safe_dump(json.loads(json.dumps(cfg)), sort_keys=False))
        trainer.fit(module, datamodule=dm, ckpt_path=cfg["resume"], weights_only=True)
        return _finish(cfg, out, trainer, ckpt, module, dm, has_val)
    finally:
        torch.use_deterministic_algorithms(det_state[0], warn_only=det_state[1])
        torch.set_num_threads(threads)  # Lightning may have changed it for the run


def _finish(cfg: dict[str, Any], out: Path, trainer: Any, ckpt: Any, module: Any, dm: Any,
            has_val: bool) -> tuple[Any, dict[str, Any]]:
    """Reload the chosen weights, validate them, export the model, write metrics.json."""
    from .modules import metric_name

    exp = cfg["export"]
    best = ckpt.best_model_path or None
    last = ckpt.last_model_path or None
    weights = exp["weights"]
    if weights == "best" and best and os.path.isfile(best):
        state = torch.load(best, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
    else:
        weights = "last"
    if has_val and exp["evaluate"]:
        trainer.validate(module, datamodule=dm, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    # the float64 summary of the last validation (logged values are float32)
    metrics.update({metric_name(k): float(v) for k, v in module.val_summary.items()})
    model = module.model.cpu().eval()
    model_path = out / exp["path"]
    results = {
        "metrics": metrics,
        "model_path": str(model_path),
        "best_checkpoint": best,
        "last_checkpoint": last,
        "best_score": None if ckpt.best_model_score is None else float(ckpt.best_model_score),
        "global_step": int(trainer.global_step),
        "epoch": int(trainer.current_epoch),
        "out_dir": str(out),
        "weights": weights,
    }
    if trainer.is_global_zero:
        overwrite = bool(cfg["overwrite"] or cfg["resume"])
        model_path.parent.mkdir(parents=True, exist_ok=True)
        if cfg["family"] == "geoclip" and not cfg["model"]["gallery"]:
            model.gallery = str(_write_gallery(out / "gallery.csv", dm, cfg))
        if cfg["family"] == "g3" and cfg["model"]["references"] == "train":
            from .g3_module import attach_training_references

            attach_training_references(model, dm, int(cfg["model"]["max_references"]),
                                       int(cfg["seed"]))
        model.save(model_path, overwrite=overwrite)
        _write_text(out / "metrics.json", json.dumps(
            {k: v for k, v in results.items() if k != "out_dir"}, indent=1))
    return model, results


def _write_gallery(path: Path, dm: Any, cfg: dict[str, Any]) -> Path:
    """The training locations as the exported GeoCLIP's default gallery (LAT, LON CSV)."""
    import pandas as pd

    from .modules import training_gallery

    ll = training_gallery(dm.train_latlon, int(cfg["validation"]["max_gallery"]),
                          int(cfg["seed"])).numpy()
    _write_text(path, pd.DataFrame({"LAT": ll[:, 0], "LON": ll[:, 1]}).to_csv(index=False))
    return path.resolve()
