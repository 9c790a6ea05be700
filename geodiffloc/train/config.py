"""Training configuration: read, merge over the defaults, validate with clear errors.

A config is a nested dict (usually a YAML file, see ``configs/`` at the repository
root). The schema is a set of pydantic models (:mod:`geodiffloc.train.schema`);
:func:`load_config` validates a config against its family's model and reports every
problem as a ``ValueError`` that names the key and the allowed values, so a typo fails
at once instead of being ignored after an hour of training. Sections:

``family``
    ``"locdiff"``, ``"geoclip"``, ``"hierloc"`` or ``"g3"`` (required).
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
    / :class:`~geodiffloc.HierLoc` (the condition width is taken from the data), plus
    ``init``: a checkpoint to start from (``"official"`` for GeoCLIP's pretrained
    weights). HierLoc's ``hierarchy`` subsection says where its entities come from
    (``source: gazetteer`` or ``source: file``).
``optim``
    HierLoc: Riemannian Adam (geoopt), ``lr`` (head), ``entity_lr`` (entities; default
    ``lr``), ``weight_decay``, ``schedule``, ``warmup_steps``, ``min_lr_ratio``.
    LocDiff: AdamW, ``lr``, ``weight_decay``, ``betas``, ``schedule`` (``cosine`` or
    ``constant``), ``warmup_steps``, ``min_lr_ratio``. GeoCLIP (the paper's): Adam
    ``lr`` 3e-5, ``weight_decay`` 1e-6, StepLR ``gamma`` 0.87 every ``step_size`` epochs.
``loss`` (LocDiff)
    SHDD-KL anchors (``anchors``, ``n_anchors``, ``n_local``, ``local_radius_km``),
    ``p_uncond`` (classifier-free guidance training), ``aux_weight``, and any other
    keyword option of :meth:`LocDiff.training_loss <geodiffloc.LocDiff.training_loss>`
    (passed to it unchanged; the allowed names are read from its signature).
``validation``
    LocDiff: ``sampler``, ``steps``, ``n_samples``, ``aggregate``. HierLoc: ``method``
    (``flat`` or ``beam``), ``beam_width``. GeoCLIP:
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
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .schema import CONFIGS, FAMILIES, SOURCES

__all__ = [
    "FAMILIES",
    "SOURCES",
    "default_config",
    "load_config",
]


class _Required:
    """Marks a key the user must set (one instance, kept through deep copies)."""

    def __repr__(self) -> str:
        return "<required>"

    def __deepcopy__(self, memo: dict[int, Any]) -> _Required:
        return self


REQUIRED: Any = _Required()


def default_config(family: str) -> dict[str, Any]:
    """The full default config of a family (a fresh dict).

    Parameters
    ----------
    family
        ``"locdiff"``, ``"geoclip"``, ``"hierloc"`` or ``"g3"``.

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
    cfg = CONFIGS[family].model_validate({"data": {"source": "gazetteer"}}).model_dump()
    cfg["data"]["source"] = REQUIRED
    return cfg


def unknown_keys_message(where: str, keys: Sequence[str], allowed: Sequence[str]) -> str:
    """``unknown key(s) in <where>: 'k' (did you mean 'x'?). Allowed: ...``."""
    hints = []
    for k in keys:
        close = difflib.get_close_matches(str(k), [str(a) for a in allowed], n=1)
        hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (f"unknown key(s) in {where}: {', '.join(hints)}. Allowed: "
            f"{', '.join(sorted(map(str, allowed)))}.")


def _section_fields(cls: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    """Field names of the section at ``loc`` inside ``cls``."""
    for name in loc:
        ann = cls.model_fields[str(name)].annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        cls = ann
    return list(cls.model_fields)


_RANGES = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}


def _explain(err: ValidationError, cls: type[BaseModel]) -> str:
    """pydantic's errors as sentences naming the key, the allowed values and the value."""
    unknown: dict[tuple[Any, ...], list[str]] = {}
    missing: list[str] = []
    out: list[str] = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not isinstance(x, int))
        key = ".".join(map(str, loc))
        kind, got, ctx = e["type"], e.get("input"), e.get("ctx") or {}
        if kind == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(str(loc[-1]))
        elif kind == "missing":
            missing.append(key)
        elif kind == "literal_error":
            out.append(f"{key} must be one of {ctx.get('expected')}; got {got!r}.")
        elif kind in _RANGES:
            op, name = _RANGES[kind]
            out.append(f"{key} must be {op} {ctx.get(name)}; got {got!r}.")
        elif kind.startswith("int_"):
            out.append(f"{key} must be an integer; got {got!r}.")
        elif kind.startswith("float_"):
            out.append(f"{key} must be a number; got {got!r}.")
        elif kind.startswith("bool_"):
            out.append(f"{key} must be true or false; got {got!r}.")
        elif kind in ("model_type", "dict_type", "model_attributes_type"):
            out.append(f"{key or 'config'} must be a mapping (key: value); got "
                       f"{type(got).__name__}.")
        elif kind == "value_error":
            out.append(str(ctx.get("error", e["msg"])))
        else:
            out.append(f"{key}: {e['msg']}; got {got!r}.")
    for where, keys in unknown.items():
        name = ".".join(map(str, where)) or "config"
        allowed = _section_fields(cls, where)
        if not where:
            allowed = ["family", *(a for a in allowed if a != "family")]
        out.insert(0, unknown_keys_message(name, keys, allowed))
    if missing:
        out.insert(0, f"missing required key(s): {', '.join(missing)}.")
    return " ".join(out)


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = v
    return base


def _read(config: dict[str, Any] | str | os.PathLike) -> tuple[Any, str]:
    if not isinstance(config, str | os.PathLike):
        return copy.deepcopy(config), "config"
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist.")
    import yaml

    try:
        return yaml.safe_load(path.read_text()), str(path)
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from e


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
        values of the wrong type or out of range (with the allowed values), an
        unreadable file.
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
    raw, where = _read(config)
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must hold a mapping of sections (family, data, model, ...).")
    if overrides:
        raw = _deep_update(raw, copy.deepcopy(overrides))
    fam = raw.get("family")
    if fam is None:
        raise ValueError(f"{where} has no 'family'; set family: locdiff, geoclip, hierloc or g3.")
    if fam not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}; got {fam!r}.")
    cls = CONFIGS[fam]
    try:
        cfg = cls.model_validate(raw)
    except ValidationError as e:
        msg = _explain(e, cls)
        raise ValueError(msg if where == "config" else f"{where}: {msg}") from None
    out = cfg.model_dump()
    check_inside_out_dir(out["export"]["path"], "export.path")
    return out


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
