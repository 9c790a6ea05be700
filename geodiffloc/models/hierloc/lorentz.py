r"""Float32-safe arithmetic on the Lorentz model of hyperbolic space (curvature -1).

Points are ``(..., d + 1)`` vectors ``x = (x_0, \mathbf{x})`` with
``-x_0^2 + |\mathbf{x}|^2 = -1`` and ``x_0 > 0``; the origin is ``(1, 0, ..., 0)``.
:mod:`geoopt` (``geoopt.Lorentz``) owns the manifold for the trainable entity
embeddings and the Riemannian optimiser; the few formulas here are written out
because the model needs two guarantees that the generic ones do not give in float32:

* **Bounded radius.** A point at hyperbolic radius ``r`` has ``x_0 = cosh r``; the
  Minkowski product of two such points is a difference of numbers of size
  ``cosh^2 r``, which float32 resolves only to ``~6e-8 cosh^2 r``. Every point the
  model uses is therefore rebuilt from its spatial part with its radius squashed
  smoothly below ``max_radius`` (:func:`squash_to_ball`), so products stay small and
  finite whatever the weights hold (a diverged run, a crafted checkpoint).
* **Accurate distances.** :func:`lorentz_distance` rebuilds the time coordinates from
  the spatial parts and takes the product in float64 (cheap next to everything else),
  so a point is at distance ~0 from itself even at radius 5 in float32.
* **No NaN at distance 0.** ``arcosh`` has an infinite slope at 1; its argument is
  clamped to ``1 + eps``, so identical points get distance ``~sqrt(2 eps)`` and a zero
  gradient instead of NaN.

Examples
--------
>>> o = expmap0(torch.zeros(1, 3))
>>> o.tolist()
[[1.0, 0.0, 0.0, 0.0]]
>>> x = expmap0(torch.tensor([[2.0, 0.0, 0.0]]))
>>> round(float(lorentz_distance(o, x)), 4)
2.0
"""

from __future__ import annotations

import torch

__all__ = ["distance_to_origin", "expmap0", "lorentz_distance", "minkowski_inner",
           "squash_to_ball"]


def _eps(dtype: torch.dtype) -> float:
    return 1e-6 if dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-12


def minkowski_inner(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """All Minkowski products ``<x_i, y_j> = -x_i0 y_j0 + x_i . y_j``: ``(n, m)``.

    Examples
    --------
    >>> o = torch.tensor([[1.0, 0.0]])
    >>> minkowski_inner(o, o).tolist()
    [[-1.0]]
    """
    return x[..., 1:] @ y[..., 1:].transpose(-1, -2) - x[..., :1] @ y[..., :1].transpose(-1, -2)


def _arcosh(z: torch.Tensor) -> torch.Tensor:
    z = z.clamp_min(1.0 + _eps(z.dtype))
    # (z - 1)(z + 1) rather than z^2 - 1: no cancellation just above 1
    return torch.log(z + torch.sqrt((z - 1.0) * (z + 1.0)))


def lorentz_distance(x: torch.Tensor, y: torch.Tensor, *, pairwise: bool = True) -> torch.Tensor:
    r"""Hyperbolic distance ``arcosh(-<x, y>)``, accurate for float32 points.

    The time coordinates are *recomputed* from the spatial parts in float64,
    ``x_0 = sqrt(1 + |x_spatial|^2)``, and the product is taken in float64: a float32
    point at radius 5 carries an error of ``~6e-8 cosh^2 5 ~ 3e-4`` in its own
    constraint, which would put it ``~0.06`` away from itself. The result has the
    inputs' dtype. Gradients flow through the spatial parts (the function agrees with
    the distance on the hyperboloid, so Riemannian gradients are right). The argument
    of ``arcosh`` is clamped at ``1 + 1e-12``.

    Parameters
    ----------
    x, y
        Points on the hyperboloid, ``(n, d + 1)`` and ``(m, d + 1)``.
    pairwise
        ``True``: all ``(n, m)`` distances; ``False``: row by row (``n == m``), ``(n,)``.

    Examples
    --------
    >>> a = expmap0(torch.tensor([[1.0, 0.0]]))
    >>> b = expmap0(torch.tensor([[-1.0, 0.0]]))
    >>> round(float(lorentz_distance(a, b)), 4)
    2.0
    """
    sx, sy = x[..., 1:].double(), y[..., 1:].double()
    tx = torch.sqrt(1.0 + (sx * sx).sum(-1))
    ty = torch.sqrt(1.0 + (sy * sy).sum(-1))
    if pairwise:
        neg_inner = tx[..., :, None] * ty[..., None, :] - sx @ sy.transpose(-1, -2)
    else:
        neg_inner = tx * ty - (sx * sy).sum(-1)
    return _arcosh(neg_inner).to(x.dtype)


def distance_to_origin(x: torch.Tensor) -> torch.Tensor:
    """Radius ``asinh(|x_spatial|)`` of points ``(..., d + 1)`` (exact, no cancellation)."""
    return torch.asinh(torch.linalg.vector_norm(x[..., 1:], dim=-1))


def _safe_norm(v: torch.Tensor) -> torch.Tensor:
    # a norm that neither overflows (scaled by the largest entry) nor has a NaN gradient
    # at 0 (the square root's argument is floored; the result is masked to 0 there)
    scale = v.detach().abs().amax(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    u = v / scale
    sq = (u * u).sum(-1, keepdim=True)
    return scale * torch.sqrt(sq.clamp_min(torch.finfo(v.dtype).tiny)) * (sq > 0)


def expmap0(v: torch.Tensor, max_radius: float | None = None) -> torch.Tensor:
    r"""Exponential map at the origin: tangent ``(..., d)`` -> point ``(..., d + 1)``.

    ``exp_0(v) = (cosh |v|, sinh |v| v / |v|)``; with ``max_radius`` the radius ``|v|``
    is first squashed to ``R tanh(|v| / R)`` (smooth, monotone, ~identity below R/2).

    Examples
    --------
    >>> x = expmap0(torch.tensor([[1e4, 0.0]]), max_radius=5.0)
    >>> bool(torch.isfinite(x).all()), round(float(distance_to_origin(x)), 4)
    (True, 5.0)
    """
    r = _safe_norm(v)
    r_new = r if max_radius is None else float(max_radius) * torch.tanh(r / float(max_radius))
    # sinh(r_new) / r * v, with sinh(r_new)/r -> 1 (or the squash's slope) as r -> 0
    small = r < 1e-4
    ratio = torch.where(small, torch.ones_like(r),
                        torch.sinh(r_new) / torch.where(small, torch.ones_like(r), r))
    return torch.cat([torch.cosh(r_new), ratio * v], dim=-1)


def squash_to_ball(x: torch.Tensor, max_radius: float) -> torch.Tensor:
    """Rebuild points ``(..., d + 1)`` from their spatial part with radius below ``max_radius``.

    The time coordinate of ``x`` is ignored (it is determined by the spatial part on
    the hyperboloid); the radius ``asinh(|x_spatial|)`` is squashed as in :func:`expmap0`.
    Differentiable; finite for any finite input.

    Examples
    --------
    >>> far = torch.tensor([[0.0, 1e30, 0.0]])
    >>> y = squash_to_ball(far, 4.0)
    >>> round(float(distance_to_origin(y)), 4), round(float(-minkowski_inner(y, y)), 2)
    (4.0, 1.0)
    """
    s = x[..., 1:]
    n = _safe_norm(s)
    r = torch.asinh(n)
    direction = s / n.clamp_min(torch.finfo(s.dtype).tiny)
    return expmap0(direction * r, max_radius=max_radius)
