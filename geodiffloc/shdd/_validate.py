"""Checks at the door of every public SHDD method (kept apart from the numerics).

Coefficients must be a real ``(n, (L+1)**2)`` array of finite values of a sane size:
NaN/inf would come out as a confident fake location (a NaN field has its "mode"
anywhere), and magnitudes far beyond any encoding lose the float32 precision the
fields are computed in. Grids and anchor sets are checked before they are allocated.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._memory import check_allocation

__all__ = ["MAX_ABS_COEFF", "as_coeffs", "check_coeff_values", "check_kl_anchors"]

#: Largest coefficient magnitude accepted. An encoded point has
#: ``|C_lm| <= sqrt((2L+1) / 4 pi)`` (under 5 at L = 127) and trained models sample
#: within a small multiple of that; 1e6 leaves a wide margin while refusing vectors whose
#: fields (sums of ~(L+1)^2 terms) would overflow float32 or drown the mode in rounding.
MAX_ABS_COEFF = 1e6


def as_coeffs(coeffs: Any, dtype: torch.dtype) -> torch.Tensor:
    """``coeffs`` as a real floating tensor (numbers only), or a ValueError saying why not."""
    if isinstance(coeffs, torch.Tensor):
        t = coeffs
    else:
        arr = np.asarray(coeffs)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)
                                       or arr.dtype == bool):
            raise ValueError(
                f"SHDD vectors must be numbers (a tensor or array of shape (n, d)); got "
                f"{type(coeffs).__name__} of dtype {arr.dtype}."
            )
        t = torch.as_tensor(arr)
    if t.is_complex():
        raise ValueError("SHDD vectors must be real; got complex values (take .real first?).")
    return t if t.is_floating_point() else t.to(dtype)


def check_coeff_values(coeffs: torch.Tensor, where: str = "SHDD vectors") -> torch.Tensor:
    """Refuse NaN/inf and absurd magnitudes, naming the first bad vector."""
    with torch.no_grad():
        finite = torch.isfinite(coeffs).all(dim=-1)
        if not bool(finite.all()):
            rows = torch.nonzero(~finite).flatten()[:5].tolist()
            raise ValueError(
                f"{where} hold NaN or inf (vectors {rows}); a model with non-finite weights "
                "or inputs produced them. Check the inputs/checkpoint; nothing non-finite "
                "can be decoded into a place."
            )
        big = coeffs.abs().amax() if coeffs.numel() else torch.zeros(())
        if float(big) > MAX_ABS_COEFF:
            raise ValueError(
                f"{where} hold values up to {float(big):.3g}; encodings stay below ~5 and "
                f"anything above {MAX_ABS_COEFF:g} loses the precision to find a mode. "
                "Are these SHDD vectors (not logits or raw scores)? Rescale them."
            )
    return coeffs


def check_kl_anchors(anchors: Any, n_anchors: int) -> None:
    """Anchors of the SHDD-KL: at least one valid point."""
    if anchors is None:
        if isinstance(n_anchors, bool) or not isinstance(n_anchors, int | np.integer) \
                or n_anchors < 1:
            raise ValueError(f"n_anchors must be a positive integer; got {n_anchors!r}.")
        check_allocation(n_anchors * 2.0 * 8 * 4, f"{n_anchors:,} KL anchors",
                         "use fewer anchors (2048 is plenty)")
        return
    if not isinstance(anchors, torch.Tensor):
        raise ValueError(f"anchors must be a (k, 2) or (n, k, 2) tensor; got "
                         f"{type(anchors).__name__}.")
    if anchors.ndim not in (2, 3) or anchors.shape[-1] != 2 or anchors.shape[-2] == 0:
        raise ValueError(
            f"anchors must be a non-empty (k, 2) or (n, k, 2) tensor of (lat, lon) degrees; "
            f"got shape {tuple(anchors.shape)}."
        )
    from ..sphere import check_latlon_tensor

    check_latlon_tensor(anchors.reshape(-1, 2), "anchors")
