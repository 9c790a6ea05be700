"""Argument and checkpoint checks at the public entries of the models.

Kept out of the model files so that they stay about the models: each public method
calls one function here. Checkpoints are untrusted input: their JSON config is checked
key by key, the network is first built on PyTorch's ``meta`` device (no memory) to
compare every tensor's shape with the file, and the weights must be finite, all before
anything is allocated or used.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["check_finite_weights", "check_positive_int", "check_sampling_args",
           "check_state_dict", "parse_checkpoint_config", "real_embeddings"]


def real_embeddings(x: torch.Tensor | np.ndarray, what: str = "embeddings") -> torch.Tensor:
    """``x`` as a float32 tensor, refusing complex, string and object arrays.

    ``torch.as_tensor(...).float()`` would silently drop an imaginary part or fail deep
    inside numpy on strings; embeddings are real numbers.

    Examples
    --------
    >>> real_embeddings(np.ones((1, 3))).dtype
    torch.float32
    >>> real_embeddings(np.ones((1, 3), dtype=complex))
    Traceback (most recent call last):
    ...
    ValueError: embeddings must be real numbers; got dtype complex128. Pass the encoder's \
float features (take .real or convert them first).
    """
    dtype = x.dtype if isinstance(x, torch.Tensor) else np.asarray(x).dtype
    if isinstance(dtype, torch.dtype):
        ok = not (dtype.is_complex or dtype == torch.bool)
        name = str(dtype).removeprefix("torch.")
    else:
        ok = dtype.kind in "fiu"
        name = str(dtype)
    if not ok:
        raise ValueError(f"{what} must be real numbers; got dtype {name}. Pass the encoder's "
                         "float features (take .real or convert them first).")
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float32)
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int >= 1; refuses floats with a fraction, bools and strings."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        if isinstance(value, float | np.floating) and float(value).is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if int(value) < 1:
        raise ValueError(f"{name} must be >= 1; got {value}.")
    return int(value)


def _check_real(value: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number; got {value!r}.")
    v = float(value)
    if not math.isfinite(v) or (positive and v <= 0):
        raise ValueError(f"{name} must be a finite{' positive' if positive else ''} number; "
                         f"got {value!r}.")
    return v


def check_sampling_args(*, steps: Any = None, guidance_scale: Any = 1.0, n_views: Any = 1,
                        samples_per_view: Any = 1, confidence_km: Any = None) -> None:
    """Arguments of ``sample`` / ``predict`` / ``probability_map`` (LocDiff).

    Examples
    --------
    >>> check_sampling_args(steps=20, confidence_km=25.0)
    >>> check_sampling_args(steps=1.5)
    Traceback (most recent call last):
    ...
    ValueError: steps must be a positive integer; got 1.5.
    """
    if steps is not None:
        check_positive_int(steps, "steps")
    _check_real(guidance_scale, "guidance_scale")
    check_positive_int(n_views, "n_views")
    check_positive_int(samples_per_view, "samples_per_view")
    if confidence_km is not None:
        _check_real(confidence_km, "confidence_km", positive=True)


#: Keys of a LocDiff checkpoint config and the check each value must pass.
_LOCDIFF_KEYS: dict[str, Callable[[Any], bool]] = {
    "L": lambda v: isinstance(v, int) and 0 <= v <= 1023,
    "cond_dim": lambda v: isinstance(v, int) and 1 <= v <= 1 << 20,
    "widths": lambda v: isinstance(v, list) and 0 < len(v) <= 64
    and all(isinstance(w, int) and 1 <= w <= 1 << 16 for w in v),
    "time_dim": lambda v: isinstance(v, int) and 1 <= v <= 1 << 16,
    "w0": lambda v: isinstance(v, int | float) and math.isfinite(v),
    "diffusion": lambda v: isinstance(v, dict),
    "encoder": lambda v: isinstance(v, dict) and isinstance(v.get("name"), str),
}


def _small_int(hi: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= hi


def _finite_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


#: The same for a GeoCLIP checkpoint (sizes bounded so a crafted file cannot ask for
#: more than a few GB before its weights are compared).
_GEOCLIP_KEYS: dict[str, Callable[[Any], bool]] = {
    "backbone_dim": _small_int(1 << 14),
    "embed_dim": _small_int(1 << 13),
    "sigmas": lambda v: isinstance(v, list) and 0 < len(v) <= 16
    and all(_finite_number(x) and x > 0 for x in v),
    "n_freqs": _small_int(1 << 13),
    "hidden_dim": _small_int(1 << 13),
    "queue_size": _small_int(1 << 22),
    "batch_noise_m": _finite_number,
    "queue_noise_m": _finite_number,
}


def parse_checkpoint_config(raw: str | None, path: str | os.PathLike, fmt: str | None,
                            family: str = "LocDiff") -> dict[str, Any]:
    """The JSON config stored in a checkpoint's metadata, checked key by key.

    Parameters
    ----------
    raw
        The metadata's JSON text.
    path
        The checkpoint (for messages).
    fmt
        The ``format`` the config must record (``None``: not checked here).
    family
        ``"LocDiff"`` or ``"GeoCLIP"``: which keys are required.

    Raises
    ------
    ValueError
        Bad JSON, a missing key, or a value of the wrong type or an absurd size (named).
    """
    where = os.fspath(path)
    try:
        cfg = json.loads(raw or "{}")
    except json.JSONDecodeError as err:
        raise ValueError(f"{where!r}: the checkpoint's config is not valid JSON ({err}); the "
                         f"file is damaged or was not written by {family}.save.") from None
    if not isinstance(cfg, dict) or (fmt is not None and cfg.get("format") != fmt):
        got = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise ValueError(f"{where!r} is not a {family} checkpoint (format {got!r}).")
    check_config_keys(cfg, _LOCDIFF_KEYS if family == "LocDiff" else _GEOCLIP_KEYS, where)
    return cfg


def check_config_keys(cfg: dict[str, Any], keys: dict[str, Any], where: str) -> None:
    """Every key of ``keys`` is in ``cfg`` and passes its check (``keys[key](value)``).

    Raises
    ------
    ValueError
        Naming the missing key, or the invalid one and (the start of) its value.
    """
    for key, ok in keys.items():
        if key not in cfg:
            raise ValueError(f"{where!r}: the checkpoint's config lacks {key!r}; the file is "
                             "damaged or from an incompatible version.")
        if not ok(cfg[key]):
            raise ValueError(f"{where!r}: the checkpoint's config has an invalid or absurd "
                             f"{key!r} ({str(cfg[key])[:80]}).")


def check_state_dict(build: Callable[[], torch.nn.Module], tensors: dict[str, torch.Tensor],
                     path: str | os.PathLike) -> None:
    """Compare a checkpoint's tensors with the network its config describes, allocation-free.

    ``build`` constructs the network; it runs on the ``meta`` device, so a config that
    describes a 400 GB network costs nothing before it is refused.
    """
    where = os.fspath(path)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise ValueError(f"{where!r}: the weights do not match the config (missing "
                         f"{missing[:3]}, unexpected {extra[:3]}); the file is damaged.")
    for k, shape in expected.items():
        if got[k] != shape:
            raise ValueError(f"{where!r}: weight {k!r} has shape {got[k]}, the config needs "
                             f"{shape}; the file is damaged or its config was edited.")
    check_finite_weights(tensors, path)


def check_finite_weights(tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Refuse a checkpoint holding NaN/inf weights, naming the first such tensor."""
    where = os.fspath(path)
    for k, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{where!r}: weight {k!r} holds NaN or inf; the model diverged "
                             "in training or the file is damaged. Retrain it.")
