r"""C-Siren blocks and the CS-UNet denoiser of LocDiff (paper Sec. 4.5, Fig. 2).

A **C-Siren** block maps a latent ``x`` (width ``d_in``) to ``d_out`` given the
condition embedding ``e_I`` and the diffusion timestep ``t``:

.. math::

    h_x &= W_x x, \qquad h_I = W_I e_I, \qquad (\gamma_t, \beta_t) = W_t\,\mathrm{SiLU}(\tau(t)) \\
    h &= (1 + \gamma_t) \odot h_x + \beta_t + h_I \\
    x' &= \sin\big(\omega_0 (W_h h + b_h)\big)

where :math:`\tau(t)` is the shared time embedding (sinusoidal features of ``t`` followed
by a small MLP). **CS-UNet** chains C-Siren blocks in an encoder path that narrows the
width, a bottleneck, and a decoder path that widens it again, each decoder block taking
the concatenation of the previous output and the skip from the encoder block of the same
width; a final linear layer maps to the SHDD dimension ``(L + 1)**2``. The network
predicts the clean (scaled) SHDD vector ``x0``.

Choices the paper leaves open (and why):

* **Frequency factor** ``w0 = 1`` with SIREN's hidden-layer initialisation
  ``W ~ U(-sqrt(6 / fan_in) / w0, sqrt(6 / fan_in) / w0)``. SIREN's ``w0 = 30`` first
  layer exists to make a network of *coordinates* oscillate quickly; here the input is a
  noisy latent vector and fast oscillation in it would make the denoiser needlessly
  rough. With the SIREN init the pre-activations are ~unit variance whatever ``w0`` is,
  so ``w0`` only rescales the effective learning rate of that layer; it stays a
  constructor argument.
* **Time modulation** is zero-initialised (``gamma = beta = 0`` at start, the
  "adaLN-zero" trick), so each block starts as a plain conditional SIREN layer and
  learns how much the timestep should modulate it.
* **The condition** is layer-normalised once at the network input, so encoders with
  very different embedding norms (unit-norm MiniLM, CLIP at ~10) train with the same
  learning rate; the learned ``null_cond`` vector stands in for a dropped condition
  (classifier-free guidance).
* **Skip connections** concatenate (as in a U-Net), not add, so the decoder can use
  fine detail from the encoder without it being mixed into the bottleneck.
* **The output layer** is linear (no sine): ``x0`` in the scaled SHDD space is
  unbounded, and it is never clipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn

__all__ = ["CSUNet", "CSiren", "default_widths", "sinusoidal_embedding"]


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal features of (integer or real) timesteps.

    Parameters
    ----------
    t
        ``(n,)`` timesteps.
    dim
        Feature dimension (even).

    Returns
    -------
    torch.Tensor
        ``(n, dim)`` float32: ``[cos(t f_k), sin(t f_k)]`` with ``f_k`` geometric from 1 to
        ``1 / max_period``.

    Raises
    ------
    ValueError
        If ``dim`` is not a positive even number.

    Examples
    --------
    >>> sinusoidal_embedding(torch.tensor([0, 5]), 8).shape
    torch.Size([2, 8])
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"time embedding dim must be a positive even number; got {dim}.")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    ang = t.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.cos(ang), torch.sin(ang)], dim=1)


def _siren_init_(linear: nn.Linear, w0: float) -> None:
    """SIREN hidden-layer init: pre-activations of ``sin(w0 * (Wx + b))`` ~ unit variance."""
    bound = math.sqrt(6.0 / linear.in_features) / w0
    with torch.no_grad():
        linear.weight.uniform_(-bound, bound)
        linear.bias.uniform_(-1.0 / linear.in_features, 1.0 / linear.in_features)


class CSiren(nn.Module):
    """One Conditional SirenNet block (paper Fig. 2a).

    Parameters
    ----------
    d_in, d_out
        Input and output widths.
    cond_dim
        Condition embedding width ``d_I``.
    time_dim
        Width of the shared time embedding ``d_T``.
    w0
        Frequency factor of the sine activation (see module docstring).

    Examples
    --------
    >>> block = CSiren(8, 4, cond_dim=3, time_dim=6)
    >>> block(torch.randn(2, 8), torch.randn(2, 3), torch.randn(2, 6)).shape
    torch.Size([2, 4])
    """

    def __init__(self, d_in: int, d_out: int, *, cond_dim: int, time_dim: int,
                 w0: float = 1.0) -> None:
        super().__init__()
        if w0 <= 0:
            raise ValueError(f"w0 must be positive; got {w0}.")
        self.w0 = float(w0)
        self.proj_x = nn.Linear(d_in, d_out)
        self.proj_cond = nn.Linear(cond_dim, d_out)
        self.proj_time = nn.Linear(time_dim, 2 * d_out)
        self.ff = nn.Linear(d_out, d_out)
        nn.init.zeros_(self.proj_time.weight)
        nn.init.zeros_(self.proj_time.bias)
        _siren_init_(self.ff, self.w0)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """``(n, d_in), (n, cond_dim), (n, time_dim) -> (n, d_out)``."""
        return self.conditioned(x, self.proj_cond(cond), temb)

    def conditioned(self, x: torch.Tensor, cond_proj: torch.Tensor,
                    temb: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with the condition already projected, ``(n, d_out)``.

        ``temb`` may have one row for all of ``x`` (a sampler's step shares its ``t``).
        """
        scale, shift = self.proj_time(nn.functional.silu(temb)).chunk(2, dim=1)
        h = (1.0 + scale) * self.proj_x(x) + shift
        h = h + cond_proj
        return torch.sin(self.w0 * self.ff(h))


def default_widths(L: int) -> tuple[int, ...]:
    """Default encoder-path widths for SHDD degree ``L``.

    The first width is the largest power of two not above the SHDD dimension
    ``(L + 1)**2`` (so the first block compresses slightly), then halves twice, floored
    at 64: ``L = 23`` (576-d) gives ``(512, 256, 128)``; ``L = 47`` (2304-d) gives
    ``(2048, 1024, 512)``.

    Examples
    --------
    >>> default_widths(23), default_widths(47)
    ((512, 256, 128), (2048, 1024, 512))
    """
    d = (int(L) + 1) ** 2
    top = max(64, 2 ** math.floor(math.log2(d)))
    return tuple(max(64, top // 2**i) for i in range(3))


class CSUNet(nn.Module):
    """Conditional SirenNet-based U-Net (paper Fig. 2b) predicting the clean SHDD vector.

    Parameters
    ----------
    L
        SHDD degree; latent dimension is ``(L + 1)**2``.
    cond_dim
        Condition embedding dimension (512/768 CLIP, 384 MiniLM, ...).
    widths
        Encoder-path widths, widest first (default :func:`default_widths`). The decoder
        mirrors them.
    time_dim
        Time-embedding width (default 128).
    w0
        Sine frequency factor of every block (default 1.0).

    Raises
    ------
    ValueError
        On empty or non-positive widths.

    Examples
    --------
    >>> net = CSUNet(2, cond_dim=5, widths=(16, 8))
    >>> net(torch.randn(3, 9), torch.tensor([0, 10, 199]), torch.randn(3, 5)).shape
    torch.Size([3, 9])
    """

    def __init__(self, L: int, cond_dim: int, *, widths: Sequence[int] | None = None,
                 time_dim: int = 128, w0: float = 1.0) -> None:
        super().__init__()
        widths = tuple(int(w) for w in (widths if widths is not None else default_widths(L)))
        if not widths or min(widths) <= 0:
            raise ValueError(f"widths must be a non-empty sequence of positive ints; got {widths}.")
        if int(cond_dim) <= 0:
            raise ValueError(f"cond_dim must be positive; got {cond_dim}.")
        self.L, self.dim, self.cond_dim = int(L), (int(L) + 1) ** 2, int(cond_dim)
        self.widths, self.time_dim, self.w0 = widths, int(time_dim), float(w0)
        self.time_mlp = nn.Sequential(
            nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        self.cond_norm = nn.LayerNorm(cond_dim)
        self.null_cond = nn.Parameter(torch.zeros(cond_dim))
        def block(n_in: int, n_out: int) -> CSiren:
            return CSiren(n_in, n_out, cond_dim=cond_dim, time_dim=time_dim, w0=w0)

        ins = (self.dim, *widths[:-1])
        self.down = nn.ModuleList(block(i, o) for i, o in zip(ins, widths))
        self.mid = block(widths[-1], widths[-1])
        # decoder block k consumes [previous output, skip of the same width]
        self.up = nn.ModuleList(
            block(prev + skip, skip)
            for prev, skip in zip((widths[-1], *widths[:0:-1]), widths[::-1])
        )
        self.out = nn.Linear(widths[0], self.dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                drop_cond: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the clean scaled SHDD vector.

        Parameters
        ----------
        x
            ``(n, (L+1)**2)`` noisy scaled latents.
        t
            ``(n,)`` (or scalar) timesteps.
        cond
            ``(n, cond_dim)`` condition embeddings.
        drop_cond
            Optional ``(n,)`` bool; rows where true use the learned null condition
            (classifier-free guidance).

        Returns
        -------
        torch.Tensor
            ``(n, (L+1)**2)`` predicted ``x0`` (scaled space).
        """
        n = x.shape[0]
        self._check_x(x, n)
        if cond.shape != (n, self.cond_dim):
            raise ValueError(
                f"cond must have shape ({n}, {self.cond_dim}); got {tuple(cond.shape)}."
            )
        c = self._condition(cond.to(x.dtype), drop_cond)
        return self._run(x, self._time_embedding(t, n, x), [b.proj_cond(c) for b in self._blocks])

    def bind(self, cond: torch.Tensor, drop_cond: torch.Tensor | None = None,
             ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``net(x, t)``: :meth:`forward` with the condition fixed, for a sampler's steps.

        Every block's condition projection is computed once here, for each run of equal
        consecutive rows (the samples of one input share its condition), instead of at
        every step; and the time embedding once per call when all rows share the
        timestep, as a sampler's do. About a third of a step's arithmetic; the result
        equals ``forward(x, t, cond, drop_cond)`` to rounding.

        Examples
        --------
        >>> net = CSUNet(2, cond_dim=5, widths=(16, 8)).eval()
        >>> cond = torch.randn(2, 5).repeat_interleave(3, dim=0)
        >>> x, t = torch.randn(6, 9), torch.full((6,), 7)
        >>> torch.allclose(net.bind(cond)(x, t), net(x, t, cond), atol=1e-6)
        True
        """
        n = cond.shape[0]
        if cond.ndim != 2 or cond.shape[1] != self.cond_dim:
            raise ValueError(
                f"cond must have shape (n, {self.cond_dim}); got {tuple(cond.shape)}."
            )
        c = self._condition(cond.to(self.out.weight.dtype), drop_cond)
        distinct, counts = torch.unique_consecutive(c, dim=0, return_counts=True)
        projs = [b.proj_cond(distinct).repeat_interleave(counts, dim=0) for b in self._blocks]

        def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            self._check_x(x, n)
            return self._run(x, self._time_embedding(t, n, x), projs)

        return net

    @property
    def _blocks(self) -> list[CSiren]:
        """Down blocks, the middle one, up blocks (typed: ModuleList yields Modules)."""
        return cast(list[CSiren], [*self.down, self.mid, *self.up])

    def _check_x(self, x: torch.Tensor, n: int) -> None:
        if x.ndim != 2 or x.shape != (n, self.dim):
            raise ValueError(f"x must have shape ({n}, {self.dim}); got {tuple(x.shape)}.")

    def _condition(self, cond: torch.Tensor, drop_cond: torch.Tensor | None) -> torch.Tensor:
        c = self.cond_norm(cond)
        if drop_cond is not None:
            c = torch.where(drop_cond[:, None], self.null_cond.to(c.dtype).expand_as(c), c)
        return c

    def _time_embedding(self, t: torch.Tensor, n: int, x: torch.Tensor) -> torch.Tensor:
        """``(n, time_dim)``, or ``(1, time_dim)`` when every row has the same ``t``."""
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.reshape(1)
        elif t.shape != (n,):
            raise ValueError(f"t must be a scalar or have shape ({n},); got {tuple(t.shape)}.")
        elif n > 1 and bool((t == t[0]).all()):
            t = t[:1]
        return self.time_mlp(sinusoidal_embedding(t, self.time_dim).to(x.dtype))

    def _run(self, x: torch.Tensor, temb: torch.Tensor, projs: list[torch.Tensor],
             ) -> torch.Tensor:
        blocks, n_down = self._blocks, len(self.down)
        skips = []
        h = x
        for block, p in zip(blocks[:n_down], projs):
            h = block.conditioned(h, p, temb)
            skips.append(h)
        h = blocks[n_down].conditioned(h, projs[n_down], temb)
        for block, p, skip in zip(blocks[n_down + 1:], projs[n_down + 1:], reversed(skips)):
            h = block.conditioned(torch.cat([h, skip], dim=1), p, temb)
        return self.out(h)
