"""Checks of an untrusted HierLoc checkpoint, before anything is built from it."""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from .._validate import check_config_keys, check_finite_weights

__all__ = ["check_hierloc_config"]


def _int(hi: int) -> Any:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= hi


def _pos(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _nonneg(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


_KEYS: dict[str, Any] = {
    "input_dim": _int(1 << 16),
    "embed_dim": _int(1 << 12),
    "hidden_dim": _int(1 << 16),
    "temperature": _pos,
    "max_radius": _pos,
    "sigma_km": lambda v: isinstance(v, list) and 0 < len(v) <= 64 and all(_pos(x) for x in v),
    "geo_weight": lambda v: _nonneg(v) and v <= 1,
    "level_weights": lambda v: isinstance(v, list) and 0 < len(v) <= 64
    and all(_nonneg(x) for x in v),
    "consistency_weight": _nonneg,
    "margin": _nonneg,
    "n_edges": _int(1 << 24),
    "hierarchy": lambda v: isinstance(v, dict) and all(
        isinstance(v.get(k), list) for k in ("level_names", "entity_id", "name")),
}


def check_hierloc_config(cfg: dict[str, Any], tensors: dict[str, torch.Tensor],
                         path: str | os.PathLike) -> None:
    """Config keys and types, hierarchy sizes and every weight's shape, then finiteness.

    Raises
    ------
    ValueError
        Naming the bad key or tensor.
    """
    where = os.fspath(path)
    check_config_keys(cfg, _KEYS, where)
    # optional (checkpoints from before sampled negatives lack them)
    for key, ok in (("n_negatives", lambda v: v is None or _int(1 << 30)(v)),
                    ("n_near", _int(1 << 16)),
                    ("entity_init", lambda v: v in ("geo", "random"))):
        if key in cfg and not ok(cfg[key]):
            raise ValueError(f"{where!r}: the checkpoint's config has an invalid or absurd "
                             f"{key!r} ({str(cfg[key])[:80]}).")
    meta = cfg["hierarchy"]
    n = len(meta["entity_id"])
    if n == 0 or len(meta["name"]) != n:
        raise ValueError(f"{where!r}: the stored hierarchy has {n} ids and "
                         f"{len(meta['name'])} names; the file is damaged.")
    d, h, i = cfg["embed_dim"], cfg["hidden_dim"], cfg["input_dim"]
    expected = {"entities": (n, d + 1), "head.0.weight": (h, i), "head.0.bias": (h,),
                "head.2.weight": (d, h), "head.2.bias": (d,), "manifold.k": ()}
    for k, shape in expected.items():
        if k not in tensors:
            raise ValueError(f"{where!r}: weight {k!r} is missing; the file is damaged.")
        if tuple(tensors[k].shape) != shape:
            raise ValueError(f"{where!r}: weight {k!r} has shape {tuple(tensors[k].shape)}, the "
                             f"config needs {shape}; the file is damaged or its config edited.")
    extra = [k for k in tensors if k not in expected and not k.startswith("hierarchy.")]
    if extra:
        raise ValueError(f"{where!r}: unexpected weights {extra[:3]}; the file is damaged.")
    check_finite_weights({k: v for k, v in tensors.items() if k in expected}, path)
