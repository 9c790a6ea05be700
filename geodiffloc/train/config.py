"""Training configuration: schema, defaults, validation with clear errors.

A config is a nested dict (usually a YAML file, see ``configs/`` at the repository
root). :func:`load_config` merges it over the defaults of its model family and checks
every key, so a typo fails at once with the allowed names instead of being ignored
after an hour of training. Sections:

``family``
    ``"locdiff"`` or ``"geoclip"`` (required).
``seed``, ``out_dir``, ``resume``, ``overwrite``
    Global seed (``lightning.seed_everything``), output folder, a Lightning checkpoint
    to resume from, and whether existing outputs may be replaced.
``data``
    ``source`` (required): ``gazetteer`` (the offline text task; its held-out places
    are the validation set), ``feature_store`` (a :class:`~geodiffloc.data.FeatureStore`
    folder at ``path``), ``arrays`` (an ``.npz`` at ``path`` with ``embeddings``,
    ``latlon`` and optionally ``val_embeddings``, ``val_latlon``), ``csv`` (an MP16-style
    CSV at ``path``) or ``folder`` (GPS-tagged photos at ``path``); the last two are
    encoded with ``encoder`` into a feature store first (resumable).
``model``
    Constructor arguments of :class:`~geodiffloc.LocDiff` / :class:`~geodiffloc.GeoCLIP`
    (the condition width is taken from the data), plus ``init``: a checkpoint to start
    from (``"official"`` for GeoCLIP's pretrained weights).
``optim``
    LocDiff: AdamW, ``lr``, ``weight_decay``, ``betas``, ``schedule`` (``cosine`` or
    ``constant``), ``warmup_steps``, ``min_lr_ratio``. GeoCLIP (the paper's): Adam
    ``lr`` 3e-5, ``weight_decay`` 1e-6, StepLR ``gamma`` 0.87 every ``step_size`` epochs.
``loss`` (LocDiff)
    SHDD-KL anchors (``anchors``, ``n_anchors``, ``n_local``, ``local_radius_km``),
    ``p_uncond`` (classifier-free guidance training), ``aux_weight``.
``validation``
    LocDiff: ``sampler``, ``steps``, ``n_samples``, ``aggregate``. GeoCLIP:
    ``gallery`` (``"train"``: the training locations, or any gallery spec) and
    ``max_gallery``.
``trainer``
    Passed to ``lightning.pytorch.Trainer``: ``max_epochs``, ``max_steps``,
    ``accelerator``, ``devices``, ``num_nodes``, ``strategy`` (e.g. ``ddp``),
    ``precision``, ``deterministic``, ... plus ``logger`` (``csv``, ``tensorboard`` or
    ``none``).
``checkpoint``
    ``ModelCheckpoint``: ``monitor`` (e.g. ``val/median_km``), ``mode``,
    ``save_top_k``, ``save_last``, ``every_n_epochs``, ``every_n_train_steps``.
``export``
    ``path`` (relative to ``out_dir``) of the final model written with the model's
    own ``save`` (loads with ``LocDiff.load`` / ``GeoCLIP.load``); ``weights``:
    ``best`` or ``last``; ``evaluate``: validate the exported weights once more.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import math
import os
from pathlib import Path
from typing import Any

__all__ = [
    "FAMILIES",
    "SOURCES",
    "default_config",
    "load_config",
]

FAMILIES = ("locdiff", "geoclip")
SOURCES = ("gazetteer", "feature_store", "arrays", "csv", "folder")
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


class _Required:
    """Marks a key the user must set (one instance, kept through deep copies)."""

    def __repr__(self) -> str:
        return "<required>"

    def __deepcopy__(self, memo: dict[int, Any]) -> _Required:
        return self


REQUIRED: Any = _Required()

#: Keys of a family's model constructor that the training code sets itself.
_MODEL_EXCLUDED = {
    "locdiff": {"encoder", "cond_dim"},
    "geoclip": {"backbone", "backbone_dim", "cache_dir", "seed"},
}

_COMMON: dict[str, Any] = {
    "family": REQUIRED,
    "seed": 0,
    "out_dir": None,  # default: runs/<family>
    "resume": None,
    "overwrite": False,
    "data": {
        "source": REQUIRED,
        "path": None,
        "val_path": None,
        "val_fraction": 0.1,
        "batch_size": 256,
        "val_batch_size": None,
        "num_workers": 0,
        "pin_memory": False,
        "encoder": None,
        "encoder_path": None,
        "store": None,
        "views": 1,
        "encode_batch_size": 64,
        "image_root": None,
        "path_col": None,
        "lat_col": None,
        "lon_col": None,
        "check": "open",
        "recursive": True,
        "gazetteer": {
            "n_train": 20000,
            "n_test": 1000,
            "split": "random",
            "seed": None,  # default: the global seed
            "min_population": 0,
            "weighting": "sqrt",
            "test_frac": 0.2,
            "cache_dir": None,
        },
    },
    "trainer": {
        "max_epochs": 10,
        "max_steps": -1,
        "accelerator": "auto",
        "devices": "auto",
        "num_nodes": 1,
        "strategy": "auto",
        "precision": "32-true",
        "deterministic": False,
        "gradient_clip_val": None,
        "accumulate_grad_batches": 1,
        "log_every_n_steps": 50,
        "val_check_interval": None,
        "check_val_every_n_epoch": 1,
        "limit_train_batches": None,
        "limit_val_batches": None,
        "num_sanity_val_steps": 2,
        "enable_progress_bar": True,
        "logger": "csv",
    },
    "checkpoint": {
        "monitor": "val/median_km",
        "mode": "min",
        "save_top_k": 1,
        "save_last": True,
        "every_n_epochs": 1,
        "every_n_train_steps": None,
    },
    "export": {
        "path": "model.safetensors",
        "weights": "best",
        "evaluate": True,
    },
}

_FAMILY: dict[str, dict[str, Any]] = {
    "locdiff": {
        "optim": {
            "lr": 1e-3,
            "weight_decay": 0.0,
            "betas": [0.9, 0.999],
            "schedule": "cosine",
            "warmup_steps": 0,
            "min_lr_ratio": 0.0,
        },
        "loss": {
            "anchors": "uniform",
            "n_anchors": 2048,
            "n_local": 256,
            "local_radius_km": None,
            "p_uncond": 0.0,
            "aux_weight": 0.0,
        },
        "validation": {
            "sampler": "dpm++",
            "steps": 10,
            "n_samples": 1,
            "aggregate": "auto",
        },
    },
    "geoclip": {
        "optim": {
            "lr": 3e-5,
            "weight_decay": 1e-6,
            "gamma": 0.87,
            "step_size": 1,
        },
        "validation": {
            "gallery": "train",
            "max_gallery": 100_000,
        },
    },
}


def _model_defaults(family: str) -> dict[str, Any]:
    """The family's constructor defaults (so the model, not this file, owns them)."""
    if family == "locdiff":
        from ..models.locdiff import DiffusionConfig, LocDiff

        params = inspect.signature(LocDiff.__init__).parameters
        diff = DiffusionConfig().to_dict()
    else:
        from ..models.geoclip import GeoCLIP

        params = inspect.signature(GeoCLIP.__init__).parameters
        diff = None
    out: dict[str, Any] = {}
    for name, p in params.items():
        if name == "self" or name in _MODEL_EXCLUDED[family]:
            continue
        d = p.default
        out[name] = list(d) if isinstance(d, tuple) else d
    if diff is not None:
        out["diffusion"] = diff
    if family == "geoclip":
        out["gallery"] = None  # default: the training locations (written next to the model)
    out["init"] = None
    return out


def default_config(family: str) -> dict[str, Any]:
    """The full default config of a family (a fresh deep copy).

    Parameters
    ----------
    family
        ``"locdiff"`` or ``"geoclip"``.

    Returns
    -------
    dict
        Every allowed key with its default (``<required>`` where the user must set it).

    Raises
    ------
    ValueError
        Unknown family.

    Examples
    --------
    >>> default_config("geoclip")["optim"]["lr"]
    3e-05
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}; got {family!r}.")
    cfg = copy.deepcopy(_COMMON)
    cfg["family"] = family
    cfg.update(copy.deepcopy(_FAMILY[family]))
    cfg["model"] = _model_defaults(family)
    return cfg


def _merge(defaults: dict[str, Any], given: Any, where: str) -> dict[str, Any]:
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ValueError(f"{where} must be a mapping (key: value); got {type(given).__name__}.")
    unknown = [k for k in given if k not in defaults]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), [str(d) for d in defaults], n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"unknown key(s) in {where}: {', '.join(hints)}. Allowed: "
            f"{', '.join(sorted(map(str, defaults)))}."
        )
    out: dict[str, Any] = {}
    for k, d in defaults.items():
        sub = f"{where}.{k}" if where != "config" else k
        if isinstance(d, dict):
            out[k] = _merge(d, given.get(k), sub)
        else:
            out[k] = given.get(k, d)
    return out


def _missing(cfg: dict[str, Any], where: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        name = f"{where}.{k}" if where else k
        if v is REQUIRED:
            out.append(name)
        elif isinstance(v, dict):
            out.extend(_missing(v, name))
    return out


def _num(cfg: dict[str, Any], key: str, where: str, *, kind: type = float,
         lo: float | None = None, hi: float | None = None, lo_open: bool = False,
         optional: bool = False) -> None:
    """Coerce ``cfg[key]`` to ``kind`` (YAML reads ``3e-5`` as a string) and range-check it."""
    v = cfg[key]
    if v is None and optional:
        return
    name = f"{where}.{key}"
    try:
        if isinstance(v, bool):
            raise TypeError
        num = float(v)
        if kind is int:
            if not num.is_integer():
                raise TypeError
            num = int(num)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be {'an integer' if kind is int else 'a number'}; got {v!r}."
        ) from None
    if not math.isfinite(num) or (lo is not None and (num <= lo if lo_open else num < lo)) or (
            hi is not None and num > hi):
        rng = f"{'>' if lo_open else '>='} {lo}" if lo is not None else ""
        rng += (" and " if rng and hi is not None else "") + (f"<= {hi}" if hi is not None else "")
        raise ValueError(f"{name} must be {rng}; got {v!r}.")
    cfg[key] = num


def _choice(cfg: dict[str, Any], key: str, where: str, allowed: tuple[Any, ...]) -> None:
    if cfg[key] not in allowed:
        raise ValueError(
            f"{where}.{key} must be one of {', '.join(map(repr, allowed))}; got {cfg[key]!r}."
        )


def _bool(cfg: dict[str, Any], key: str, where: str) -> None:
    if not isinstance(cfg[key], bool):
        raise ValueError(f"{where}.{key} must be true or false; got {cfg[key]!r}.")


def _check_data(d: dict[str, Any]) -> None:
    _choice(d, "source", "data", SOURCES)
    src = d["source"]
    if src in ("feature_store", "arrays", "csv", "folder") and not d["path"]:
        what = {"feature_store": "the feature store folder", "arrays": "the .npz file",
                "csv": "the CSV file", "folder": "the photo folder"}[src]
        raise ValueError(f"data.path is required for data.source={src!r}: {what}.")
    if src in ("csv", "folder") and not d["encoder"]:
        raise ValueError(
            f"data.encoder is required for data.source={src!r}: the encoder that embeds the "
            "images, e.g. 'efficientnet:lite0/imagenet' or 'open_clip:ViT-L-14/openai:image'."
        )
    if d["val_path"] and src not in ("feature_store",):
        raise ValueError("data.val_path (a separate validation feature store) needs "
                         "data.source='feature_store'.")
    _num(d, "val_fraction", "data", lo=0.0, hi=0.99)
    _num(d, "batch_size", "data", kind=int, lo=1)
    _num(d, "val_batch_size", "data", kind=int, lo=1, optional=True)
    _num(d, "num_workers", "data", kind=int, lo=0)
    _num(d, "views", "data", kind=int, lo=1)
    _num(d, "encode_batch_size", "data", kind=int, lo=1)
    _bool(d, "pin_memory", "data")
    _bool(d, "recursive", "data")
    g = d["gazetteer"]
    _num(g, "n_train", "data.gazetteer", kind=int, lo=1)
    _num(g, "n_test", "data.gazetteer", kind=int, lo=1)
    _num(g, "min_population", "data.gazetteer", kind=int, lo=0)
    _num(g, "test_frac", "data.gazetteer", lo=0.0, hi=0.99, lo_open=True)
    _num(g, "seed", "data.gazetteer", kind=int, optional=True)
    _choice(g, "split", "data.gazetteer", ("random", "region"))
    _choice(g, "weighting", "data.gazetteer", ("sqrt", "population", "uniform"))


def _check_trainer(t: dict[str, Any]) -> None:
    _num(t, "max_epochs", "trainer", kind=int, lo=-1, optional=True)
    _num(t, "max_steps", "trainer", kind=int, lo=-1)
    if t["max_epochs"] in (None, -1) and t["max_steps"] == -1:
        raise ValueError("set trainer.max_epochs or trainer.max_steps; otherwise training "
                         "never stops.")
    _choice(t, "accelerator", "trainer", ACCELERATORS)
    t["precision"] = str(t["precision"])
    if t["precision"] not in PRECISIONS:
        raise ValueError(
            f"trainer.precision must be one of {', '.join(PRECISIONS)}; got {t['precision']!r} "
            "(half-precision '-true' modes would cast the (lat, lon) targets to 16 bits, "
            "~0.1 degree steps; use a '-mixed' mode instead)."
        )
    if t["deterministic"] not in (True, False, "warn"):
        raise ValueError(f"trainer.deterministic must be true, false or 'warn'; got "
                         f"{t['deterministic']!r}.")
    _num(t, "num_nodes", "trainer", kind=int, lo=1)
    _num(t, "gradient_clip_val", "trainer", lo=0.0, optional=True)
    _num(t, "accumulate_grad_batches", "trainer", kind=int, lo=1)
    _num(t, "log_every_n_steps", "trainer", kind=int, lo=1)
    _num(t, "check_val_every_n_epoch", "trainer", kind=int, lo=1, optional=True)
    _num(t, "num_sanity_val_steps", "trainer", kind=int, lo=-1)
    _bool(t, "enable_progress_bar", "trainer")
    if not isinstance(t["strategy"], str):
        raise ValueError(f"trainer.strategy must be a name such as 'auto', 'ddp', "
                         f"'ddp_spawn'; got {t['strategy']!r}.")
    if t["logger"] in (None, False):
        t["logger"] = "none"
    _choice(t, "logger", "trainer", ("csv", "tensorboard", "none"))


def _check_family(cfg: dict[str, Any]) -> None:
    fam = cfg["family"]
    o = cfg["optim"]
    _num(o, "lr", "optim", lo=0.0, lo_open=True)
    _num(o, "weight_decay", "optim", lo=0.0)
    v = cfg["validation"]
    if fam == "locdiff":
        from ..models.locdiff.diffusion import SAMPLERS

        _choice(o, "schedule", "optim", ("cosine", "constant"))
        _num(o, "warmup_steps", "optim", kind=int, lo=0)
        _num(o, "min_lr_ratio", "optim", lo=0.0, hi=1.0)
        if not (isinstance(o["betas"], list | tuple) and len(o["betas"]) == 2):
            raise ValueError(f"optim.betas must be two numbers; got {o['betas']!r}.")
        o["betas"] = [float(b) for b in o["betas"]]
        ls = cfg["loss"]
        _choice(ls, "anchors", "loss", ("uniform", "mixed"))
        _num(ls, "n_anchors", "loss", kind=int, lo=1)
        _num(ls, "n_local", "loss", kind=int, lo=1)
        _num(ls, "local_radius_km", "loss", lo=0.0, lo_open=True, optional=True)
        _num(ls, "p_uncond", "loss", lo=0.0, hi=1.0)
        _num(ls, "aux_weight", "loss", lo=0.0)
        _choice(v, "sampler", "validation", SAMPLERS)
        _num(v, "steps", "validation", kind=int, lo=1, optional=True)
        _num(v, "n_samples", "validation", kind=int, lo=1)
        _choice(v, "aggregate", "validation", ("auto", "mixture_mode", "centroid"))
        m = cfg["model"]
        _num(m, "L", "model", kind=int, lo=1)
        for k in ("beta_start", "beta_end", "scale"):
            _num(m["diffusion"], k, "model.diffusion", lo=0.0, lo_open=True)
        _num(m["diffusion"], "num_train_timesteps", "model.diffusion", kind=int, lo=2)
        steps, T = v["steps"], m["diffusion"]["num_train_timesteps"]
        if steps is not None and steps > T:
            raise ValueError(f"validation.steps ({steps}) cannot exceed "
                             f"model.diffusion.num_train_timesteps ({T}).")
    else:
        _num(o, "gamma", "optim", lo=0.0, hi=1.0, lo_open=True)
        _num(o, "step_size", "optim", kind=int, lo=1)
        _num(v, "max_gallery", "validation", kind=int, lo=1)
        m = cfg["model"]
        for k in ("embed_dim", "n_freqs", "hidden_dim", "queue_size"):
            _num(m, k, "model", kind=int, lo=0 if k == "queue_size" else 1)
        for k in ("batch_noise_m", "queue_noise_m"):
            _num(m, k, "model", lo=0.0)
        _num(m, "temperature", "model", lo=0.0, lo_open=True)


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
    return base


def load_config(
    config: dict[str, Any] | str | os.PathLike,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read (if a path), merge over the family defaults and validate a training config.

    Parameters
    ----------
    config
        A dict or a YAML/JSON file path.
    overrides
        Nested values that replace the file's (e.g. ``{"trainer": {"max_epochs": 3}}``),
        validated like the rest.

    Returns
    -------
    dict
        The complete config (every key present), numbers coerced to their types.

    Raises
    ------
    ValueError
        Unknown keys (with the allowed ones and a close match), missing required keys,
        values of the wrong type or out of range, an unreadable file.
    FileNotFoundError
        The file does not exist.

    Examples
    --------
    >>> cfg = load_config({"family": "geoclip", "data": {"source": "gazetteer"}})
    >>> cfg["optim"]["gamma"], cfg["trainer"]["accelerator"]
    (0.87, 'auto')
    >>> load_config({"family": "locdiff", "data": {"source": "gazetteer"},
    ...              "optim": {"lrr": 1}})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown key(s) in optim: 'lrr' (did you mean 'lr'?). Allowed: ...
    """
    if isinstance(config, str | os.PathLike):
        path = Path(config)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist.")
        import yaml

        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not valid YAML: {e}") from e
        where = str(path)
    else:
        raw, where = copy.deepcopy(config), "config"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must hold a mapping of sections (family, data, model, ...).")
    if overrides:
        raw = _deep_update(raw, copy.deepcopy(overrides))
    fam = raw.get("family")
    if fam is None:
        raise ValueError(f"{where} has no 'family'; set family: locdiff or family: geoclip.")
    if fam not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}; got {fam!r}.")
    cfg = _merge(default_config(fam), raw, "config")
    missing = _missing(cfg)
    if missing:
        raise ValueError(f"missing required key(s): {', '.join(missing)}.")
    _num(cfg, "seed", "config", kind=int, lo=0)
    _bool(cfg, "overwrite", "config")
    if cfg["out_dir"] is None:
        cfg["out_dir"] = os.path.join("runs", fam)
    _check_data(cfg["data"])
    _check_trainer(cfg["trainer"])
    _check_family(cfg)
    c = cfg["checkpoint"]
    _choice(c, "mode", "checkpoint", ("min", "max"))
    _num(c, "save_top_k", "checkpoint", kind=int, lo=-1)
    _num(c, "every_n_epochs", "checkpoint", kind=int, lo=0, optional=True)
    _num(c, "every_n_train_steps", "checkpoint", kind=int, lo=1, optional=True)
    _bool(c, "save_last", "checkpoint")
    e = cfg["export"]
    _choice(e, "weights", "export", ("best", "last"))
    _bool(e, "evaluate", "export")
    if not e["path"]:
        raise ValueError("export.path must name the exported model file, e.g. model.safetensors.")
    check_inside_out_dir(e["path"], "export.path")
    return cfg


def check_inside_out_dir(path: Any, key: str) -> None:
    """Paths in configs name files inside the run's output folder, never outside it.

    Examples
    --------
    >>> check_inside_out_dir("model.safetensors", "export.path")
    >>> check_inside_out_dir("../x.safetensors", "export.path")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: export.path must be a file name inside out_dir ...
    """
    from pathlib import PurePath

    p = PurePath(str(path))
    if p.is_absolute() or ".." in p.parts or str(path).startswith("~"):
        raise ValueError(f"{key} must be a file name inside out_dir (no absolute paths, no "
                         f"'..'); got {str(path)!r}.")
