r"""Diffusion in SHDD space: scaling, noise schedule, the training loss and the samplers.

**Scaling.** A real orthonormal harmonic has mean square ``1 / (4 pi)`` over the
sphere, so the SHDD vector of a uniformly distributed location has per-dimension RMS
``1 / sqrt(4 pi)`` (less at high degree when the encoder tapers). The diffusion runs
on ``x = scale * coeffs`` with ``scale = sqrt(4 pi)`` by default, which makes the
untapered latents unit-variance, matching the unit-variance Gaussian noise of DDPM.
Every degree is scaled alike, so the relative weight of coarse and fine scales in the
SHDD field is untouched. Samples are **never clipped**: SHDD vectors are unbounded and
``clip_sample``/``thresholding`` are off in every scheduler.

**Schedule.** ``T = 200`` training steps (paper) with the cosine schedule
(``squaredcos_cap_v2``, Nichol & Dhariwal 2021) by default. The common linear schedule
``1e-4 .. 0.02`` was tuned for ``T = 1000``; at ``T = 200`` it leaves
``sqrt(alpha_bar_T) ~ 0.37`` of the signal at the last step, so sampling would start
from the wrong distribution. The cosine schedule reaches ``alpha_bar_T ~ 6e-8`` for
any ``T``. The schedule is configurable (:class:`DiffusionConfig`).

**Samplers** work on ``(batch, d)`` latents with the network predicting ``x0``:
``"ddpm"`` (ancestral, the paper's, ``T`` steps) and ``"ddim"`` (deterministic,
``eta = 0``, trailing spacing) are diffusers' schedulers; ``"dpm++"`` (DPM-Solver++
multistep, 2nd order, deterministic; the default of ``locate``) is :mod:`.solver`, the
same steps without diffusers' import cost. Seeded with a
``torch.Generator`` they are reproducible.

**Loss.** SHDD-KL (paper eq. 13) between the predicted ``x0`` (unscaled) and the true
location, on anchors from an :class:`AnchorSampler` drawn afresh for every batch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from ...sphere import cap_random, uniform_random
from .solver import betas, dpm_solver_pp_2m_plan, dpm_solver_pp_2m_step

__all__ = [
    "KL_DIRECTIONS",
    "RECOMMENDED_BANK",
    "RECOMMENDED_LOSS",
    "SAMPLERS",
    "AnchorSampler",
    "DiffusionConfig",
    "anchor_kl",
    "auto_kl_scales",
    "diffusion_loss",
    "make_scheduler",
    "sample_latents",
]

SAMPLERS = ("ddpm", "ddim", "dpm++")
Sampler = Literal["ddpm", "ddim", "dpm++"]

#: Default latent scale: makes the SHDD vector of a uniform location unit-variance.
SHDD_SCALE = math.sqrt(4.0 * math.pi)


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and latent scaling (stored in checkpoints).

    Parameters
    ----------
    num_train_timesteps
        ``T`` (default 200, as in the paper).
    beta_schedule
        A diffusers beta schedule: ``"squaredcos_cap_v2"`` (default), ``"linear"``,
        ``"scaled_linear"`` or ``"sigmoid"``.
    beta_start, beta_end
        Used by the linear-type schedules only.
    scale
        Latent = ``scale * SHDD coefficients`` (default ``sqrt(4 pi)``).

    Examples
    --------
    >>> DiffusionConfig().num_train_timesteps
    200
    """

    num_train_timesteps: int = 200
    beta_schedule: str = "squaredcos_cap_v2"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    scale: float = SHDD_SCALE

    def __post_init__(self) -> None:
        if int(self.num_train_timesteps) < 2:
            raise ValueError(
                f"num_train_timesteps must be >= 2; got {self.num_train_timesteps}."
            )
        allowed = ("squaredcos_cap_v2", "linear", "scaled_linear", "sigmoid")
        if self.beta_schedule not in allowed:
            raise ValueError(f"beta_schedule must be one of {allowed}; got {self.beta_schedule!r}.")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a positive number; got {self.scale}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints."""
        return asdict(self)

    def alphas_cumprod(self) -> torch.Tensor:
        """``alpha_bar_t`` for ``t = 0 .. T-1`` (float64; diffusers' float32 values)."""
        return _alphas_cumprod(self).clone()


@functools.lru_cache(maxsize=16)
def _alphas_cumprod(config: DiffusionConfig) -> torch.Tensor:
    # float32 products, as diffusers' schedulers make them (checkpoints were trained so)
    b = betas(config.beta_schedule, config.num_train_timesteps, config.beta_start,
              config.beta_end)
    return torch.cumprod(1.0 - b, dim=0).to(torch.float64)


def make_scheduler(config: DiffusionConfig, sampler: Sampler = "ddpm") -> Any:
    """A fresh diffusers scheduler for ``sampler`` with clipping and thresholding off.

    Parameters
    ----------
    config
        Schedule.
    sampler
        ``"ddpm"``, ``"ddim"`` or ``"dpm++"``.

    Returns
    -------
    diffusers.SchedulerMixin
        Configured with ``prediction_type="sample"``.

    Raises
    ------
    ValueError
        Unknown sampler.

    Examples
    --------
    >>> make_scheduler(DiffusionConfig(), "ddim").config.clip_sample
    False
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    kw = {
        "num_train_timesteps": int(config.num_train_timesteps),
        "beta_schedule": config.beta_schedule,
        "beta_start": float(config.beta_start),
        "beta_end": float(config.beta_end),
        "prediction_type": "sample",
        "thresholding": False,
    }
    if sampler == "ddpm":
        return DDPMScheduler(**kw, clip_sample=False)
    if sampler == "ddim":
        # "trailing" spacing starts at t = T-1 for any step count (the default "leading"
        # spacing would start from a partly denoised level at few steps).
        return DDIMScheduler(**kw, clip_sample=False, timestep_spacing="trailing",
                             set_alpha_to_one=True)
    if sampler == "dpm++":
        return DPMSolverMultistepScheduler(**kw, algorithm_type="dpmsolver++", solver_order=2,
                                           timestep_spacing="trailing")
    raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}.")


class AnchorSampler:
    """Anchors for the discrete SHDD-KL (paper eq. 13), drawn afresh per batch.

    Parameters
    ----------
    mode
        ``"uniform"``: ``n_anchors`` points uniform on the sphere shared by the batch
        (the paper's 2048). ``"mixed"``: those plus ``n_local`` points uniform in a cap of
        ``local_radius_km`` around each true location, giving per-sample ``(n, k, 2)``
        anchors. Why: at ``L = 47`` the target density is ~20-100 km wide while 2048
        uniform anchors are ~500 km apart, so the uniform discrete KL sees only the one
        anchor nearest the peak and cannot tell a sharp correct peak from a blurred one.
        Both distributions of the KL are normalised over the same anchors, so the loss is
        still minimised exactly when the prediction matches the target on them.
    n_anchors
        Number of global uniform anchors (default 2048).
    n_local
        Local anchors per sample (``"mixed"`` only; default 256).
    local_radius_km
        Cap radius; ``None`` means ``3 * shdd.width_km`` so the cap covers the target's
        peak with anchors ~3x finer than its width.
    bank
        ``None`` (default, the paper): fresh uniform global anchors every batch, whose
        harmonics are evaluated every step. An integer: the global anchors are a random
        subset of a fixed bank of that many uniform points whose harmonics are computed
        once (:meth:`bank_harmonics`), which removes most of the non-network arithmetic
        of a training step; with a bank several times ``n_anchors`` the subsets still
        differ from batch to batch, which is what the paper's fresh draws are for.
    seed
        Seed of the bank's points.

    Raises
    ------
    ValueError
        Unknown mode or non-positive counts.

    Examples
    --------
    >>> s = AnchorSampler("mixed", n_anchors=10, n_local=4, local_radius_km=100.0)
    >>> s(torch.zeros(3, 2), width_km=50.0).shape
    torch.Size([3, 14, 2])
    """

    def __init__(self, mode: Literal["uniform", "mixed"] = "uniform", *, n_anchors: int = 2048,
                 n_local: int = 256, local_radius_km: float | None = None,
                 bank: int | None = None, seed: int = 0) -> None:
        if mode not in ("uniform", "mixed"):
            raise ValueError(f"mode must be 'uniform' or 'mixed'; got {mode!r}.")
        if int(n_anchors) < 1 or (mode == "mixed" and int(n_local) < 1):
            raise ValueError(
                f"need n_anchors >= 1 (and n_local >= 1 for 'mixed'); got {n_anchors}, {n_local}."
            )
        if local_radius_km is not None and not local_radius_km > 0:
            raise ValueError(f"local_radius_km must be positive; got {local_radius_km}.")
        if bank is not None and int(bank) < int(n_anchors):
            raise ValueError(f"bank must be >= n_anchors = {n_anchors}; got {bank}.")
        self.mode, self.n_anchors, self.n_local = mode, int(n_anchors), int(n_local)
        self.local_radius_km = local_radius_km
        self.bank, self.seed = (None if bank is None else int(bank)), int(seed)
        self._bank_cache: dict[tuple[int, torch.dtype, str], torch.Tensor] = {}

    def __repr__(self) -> str:
        return (f"AnchorSampler({self.mode!r}, n_anchors={self.n_anchors}, n_local={self.n_local}"
                f", local_radius_km={self.local_radius_km}, bank={self.bank})")

    def bank_points(self) -> torch.Tensor:
        """The ``(bank, 2)`` float64 points of the fixed bank (``bank`` must be set)."""
        if self.bank is None:
            raise ValueError("this sampler has no bank; create it with bank=<number of points>.")
        g = torch.Generator().manual_seed(self.seed)
        return uniform_random(self.bank, generator=g, dtype=torch.float64)

    def bank_harmonics(self, L: int, dtype: torch.dtype, device: Any) -> torch.Tensor:
        """``(bank, (L+1)**2)`` harmonics of the bank's points, computed once per L/dtype/device."""
        from ...harmonics import real_sph_harm

        key = (int(L), dtype, str(device))
        if key not in self._bank_cache:
            self._bank_cache[key] = real_sph_harm(self.bank_points().to(device), int(L),
                                                  dtype=dtype)
        return self._bank_cache[key]

    def draw(self, latlon: torch.Tensor, *, width_km: float,
             generator: torch.Generator | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Global anchors ``(k, 2)`` and local anchors ``(n, n_local, 2)`` (``None`` if uniform).

        Kept apart so the KL can evaluate the shared global anchors once per batch
        (see :func:`anchor_kl`) instead of once per sample.
        """
        glob = uniform_random(self.n_anchors, generator=generator, dtype=latlon.dtype,
                              device=latlon.device)
        if self.mode == "uniform":
            return glob, None
        radius = self.local_radius_km if self.local_radius_km is not None else 3.0 * width_km
        local = cap_random(latlon, self.n_local, float(radius), generator=generator)
        return glob, local.to(latlon.dtype)

    def __call__(self, latlon: torch.Tensor, *, width_km: float,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Anchors for a batch whose true locations are ``latlon`` ``(n, 2)``.

        Returns
        -------
        torch.Tensor
            ``(k, 2)`` (uniform) or ``(n, k, 2)`` (mixed: global then local), in the
            dtype/device of ``latlon``; the form :meth:`SHDD.kl` takes.
        """
        glob, local = self.draw(latlon, width_km=width_km, generator=generator)
        if local is None:
            return glob
        return torch.cat([glob.expand(latlon.shape[0], -1, -1), local], dim=1)


#: KL directions :func:`anchor_kl` accepts.
KL_DIRECTIONS = ("reverse", "forward")

#: The loss LocDiff trains with by default (``geodiffloc train``, :meth:`LocDiff.fit`):
#: multi-scale reverse KL plus the auxiliary x0 MSE, chosen on
#: ``benchmarks/locdiff_loss_study.py`` (the paper's loss: ``kl_scales=None``,
#: ``aux_weight=0``).
RECOMMENDED_LOSS: dict[str, Any] = {"kl_scales": "auto", "aux_weight": 3.0}
#: Size of the default anchor bank of training (see :class:`AnchorSampler`).
RECOMMENDED_BANK = 16384


def auto_kl_scales(L: int) -> tuple[int, ...]:
    """The degrees of ``kl_scales="auto"``: ``1, 3, 7, 15, 31, ...`` below ``L``, then ``L``.

    Each degree halves the width of the one before; at ``L = 23`` this is
    ``(1, 3, 7, 15, 23)``, the scales chosen on ``benchmarks/locdiff_loss_study.py``.

    Examples
    --------
    >>> auto_kl_scales(23), auto_kl_scales(2)
    ((1, 3, 7, 15, 23), (1, 2))
    """
    return (*(d for d in (1, 3, 7, 15, 31, 63, 127) if d < int(L)), int(L))


def _check_kl_options(L: int, scales: Any, direction: str) -> tuple[int, ...]:
    if direction not in KL_DIRECTIONS:
        raise ValueError(f"kl_direction must be one of {KL_DIRECTIONS}; got {direction!r}.")
    if scales is None:
        return (int(L),)
    if isinstance(scales, str):
        if scales != "auto":
            raise ValueError(f"kl_scales must be None, 'auto' or degrees; got {scales!r}.")
        return auto_kl_scales(L)
    out = tuple(sorted({int(s) for s in scales}))
    if not out or out[0] < 1 or out[-1] > L:
        raise ValueError(
            f"kl_scales must be degrees in 1..L = {L}; got {scales!r}. Example: (3, 7, 15, {L})."
        )
    if out[-1] != L:
        out = (*out, int(L))
    return out


def anchor_kl(shdd: Any, pred: torch.Tensor, latlon: torch.Tensor, global_anchors: torch.Tensor,
              local_anchors: torch.Tensor | None = None, *, scales: Any = None,
              direction: str = "reverse", target: torch.Tensor | None = None) -> torch.Tensor:
    r"""Per-sample SHDD-KL (eq. 13) on shared global anchors plus optional per-sample ones.

    With the defaults this is the paper's loss and equals
    ``shdd.kl(pred, latlon=latlon, anchors=cat([global, local], 1))`` (tested), but it is
    cheaper: the harmonics of every anchor are computed once and used for both the
    predicted and the true field, and the shared anchors once for the whole batch (the
    per-sample form costs ``n * k * (L+1)**2`` floats, over a GB at batch 256, L = 23).

    **Multi-scale** (``scales``): the mean of the KLs of the same vectors truncated at
    each degree :math:`L_k` (the truncation of an SHDD vector is the SHDD vector of
    degree :math:`L_k`, so every term is the paper's KL at a coarser band-limit). The
    full-degree KL saturates once a predicted peak is beyond the target's main lobe
    (at L = 23 it is ~44 at 1000 km and ~45 at 5000 km), so a prediction far from home
    gets no signal saying which way home is; a degree-3 or -7 density is thousands of
    km wide, and its KL still decreases towards the truth from there.

    **Direction**: ``"reverse"`` is the paper's :math:`KL(q_e \| p)` (mode-seeking);
    ``"forward"`` is :math:`KL(p \| q_e)`, i.e. the cross-entropy of the predicted
    density at the true location's density, whose gradient raises the predicted field
    where the truth is wherever the predicted peak currently sits (mass-covering).

    Parameters
    ----------
    shdd
        SHDD space.
    pred
        ``(n, d)`` predicted coefficients (unscaled).
    latlon
        ``(n, 2)`` true locations.
    global_anchors
        ``(k, 2)`` shared anchors.
    local_anchors
        ``(n, k_local, 2)`` per-sample anchors, or ``None``.
    scales
        Degrees :math:`L_k` of the multi-scale KL (``None``: the full degree only;
        ``"auto"``: :func:`auto_kl_scales`; ``L`` is always included).
    direction
        ``"reverse"`` (paper) or ``"forward"``.
    target
        ``shdd.encode(latlon=latlon)`` if already at hand (saves its evaluation).

    Returns
    -------
    torch.Tensor
        ``(n,)``.

    Raises
    ------
    ValueError
        Unknown direction or scales outside ``1..L``.
    """
    from ...harmonics import real_sph_harm

    degrees = _check_kl_options(shdd.L, scales, direction)
    dt, dev = pred.dtype, pred.device
    if target is None:
        target = shdd.encode(latlon=latlon.detach().to(dev, torch.float64))
    y_g = real_sph_harm(global_anchors.to(dev), shdd.L, dtype=dt)  # (k, d)
    y_l = None
    if local_anchors is not None:
        n, kl, _ = local_anchors.shape
        y_l = real_sph_harm(local_anchors.to(dev).reshape(n * kl, 2), shdd.L, dtype=dt)
        y_l = y_l.reshape(n, kl, -1)
    return _kl_on_harmonics(pred, target.to(dev, dt), y_g, y_l, degrees, direction)


def _kl_on_harmonics(pred: torch.Tensor, target: torch.Tensor, y_g: torch.Tensor,
                     y_l: torch.Tensor | None, degrees: tuple[int, ...],
                     direction: str) -> torch.Tensor:
    """The (multi-scale) discrete KL given the anchors' harmonics (see :func:`anchor_kl`)."""
    total = pred.new_zeros(pred.shape[0])
    for deg in degrees:
        m = (deg + 1) ** 2
        f_pred, f_true = pred[:, :m] @ y_g[:, :m].T, target[:, :m] @ y_g[:, :m].T
        if y_l is not None:
            f_pred = torch.cat([f_pred, torch.einsum("nkd,nd->nk", y_l[..., :m], pred[:, :m])], 1)
            f_true = torch.cat([f_true, torch.einsum("nkd,nd->nk", y_l[..., :m], target[:, :m])],
                               1)
        log_q = torch.log_softmax(f_pred, dim=-1)
        log_p = torch.log_softmax(f_true, dim=-1)
        if direction == "reverse":
            total = total + (log_q.exp() * (log_q - log_p)).sum(dim=-1)
        else:
            total = total + (log_p.exp() * (log_p - log_q)).sum(dim=-1)
    return total / len(degrees)


def diffusion_loss(
    net: torch.nn.Module,
    shdd: Any,
    cond: torch.Tensor,
    latlon: torch.Tensor,
    config: DiffusionConfig,
    *,
    anchor_sampler: AnchorSampler | None = None,
    targets: torch.Tensor | None = None,
    p_uncond: float = 0.0,
    aux_weight: float = 0.0,
    kl_scales: Any = None,
    kl_direction: str = "reverse",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One DDPM training step's loss (paper Alg. 1).

    Draws ``t ~ U{0..T-1}`` per sample, noises the scaled SHDD target, lets ``net``
    predict ``x0`` and scores it with SHDD-KL against the true location.

    Parameters
    ----------
    net
        Callable ``net(x_t, t, cond, drop_cond=None) -> x0`` (a :class:`CSUNet`).
    shdd
        The :class:`geodiffloc.shdd.SHDD` space.
    cond
        ``(n, cond_dim)`` condition embeddings.
    latlon
        ``(n, 2)`` true locations (degrees).
    config
        Schedule and scaling.
    anchor_sampler
        Anchors for the KL (default: the paper's 2048 uniform).
    targets
        Optional precomputed ``shdd.encode(latlon=latlon)`` (a lookup table, as in the paper).
    p_uncond
        Probability of replacing a condition by the null condition (classifier-free
        guidance training); 0 by default.
    aux_weight
        Weight of an auxiliary MSE between predicted and true scaled ``x0`` (0 = off).
    kl_scales, kl_direction
        Multi-scale degrees and direction of the KL (see :func:`anchor_kl`; default the
        paper's single-scale reverse KL).
    generator
        Seeds t, noise, anchors and condition dropout.

    Returns
    -------
    (loss, logs)
        Scalar loss tensor and a dict of floats (``kl``, ``mse``).
    """
    dev = cond.device
    n = latlon.shape[0]
    sampler = anchor_sampler or AnchorSampler()
    x0 = (targets if targets is not None else shdd.encode(latlon=latlon)).to(dev, torch.float32)
    x0 = x0 * config.scale
    abar = config.alphas_cumprod().to(dev, torch.float32)
    t = torch.randint(0, config.num_train_timesteps, (n,), generator=generator).to(dev)
    noise = torch.randn(x0.shape, generator=generator).to(dev)
    a = abar[t][:, None]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    drop = None
    if p_uncond > 0:
        drop = (torch.rand(n, generator=generator) < p_uncond).to(dev)
    pred = net(xt, t, cond, drop_cond=drop)
    pred = pred / config.scale
    glob, local = sampler.draw(latlon, width_km=float(shdd.width_km), generator=generator)
    if sampler.bank is None:
        kl = anchor_kl(shdd, pred, latlon, glob, local, scales=kl_scales,
                       direction=kl_direction, target=x0 / config.scale).mean()
    else:
        from ...harmonics import real_sph_harm

        bank = sampler.bank_harmonics(shdd.L, pred.dtype, dev)
        pick = torch.randperm(bank.shape[0], generator=generator)[: sampler.n_anchors].to(dev)
        y_l = None
        if local is not None:
            n_loc = local.shape[1]
            y_l = real_sph_harm(local.to(dev).reshape(-1, 2), shdd.L, dtype=pred.dtype)
            y_l = y_l.reshape(n, n_loc, -1)
        kl = _kl_on_harmonics(pred, x0 / config.scale, bank[pick], y_l,
                              _check_kl_options(shdd.L, kl_scales, kl_direction),
                              kl_direction).mean()
    mse = torch.mean((pred * config.scale - x0) ** 2)
    loss = kl + aux_weight * mse if aux_weight > 0 else kl
    return loss, {"kl": float(kl.detach()), "mse": float(mse.detach())}


@torch.no_grad()
def sample_latents(
    net: Callable[..., torch.Tensor],
    cond: torch.Tensor,
    config: DiffusionConfig,
    *,
    sampler: Sampler = "ddpm",
    steps: int | None = None,
    generator: torch.Generator | None = None,
    guidance_scale: float = 1.0,
    dim: int,
    progress: bool = False,
) -> torch.Tensor:
    """Sample scaled SHDD latents ``(n, dim)`` conditioned on ``cond`` ``(n, cond_dim)``.

    Parameters
    ----------
    net
        ``net(x_t, t, cond, drop_cond=None) -> x0``; if it has ``bind(cond, drop_cond)``
        (as :class:`CSUNet` does), the bound ``f(x_t, t)`` is called instead.
    cond
        ``(n, cond_dim)``; one latent per row.
    config
        Schedule.
    sampler
        ``"ddpm"`` (ancestral, stochastic), ``"ddim"`` or ``"dpm++"`` (deterministic
        given the initial noise).
    steps
        Number of denoising steps (default: ``T`` for ddpm, 20 otherwise).
    generator
        CPU generator for the initial noise (and DDPM's per-step noise).
    guidance_scale
        Classifier-free guidance ``w``: ``x0 = x0_uncond + w (x0_cond - x0_uncond)``;
        1 (default) is plain conditional sampling and costs one network call per step.
    dim
        Latent dimension.
    progress
        Show a tqdm bar over steps.

    Returns
    -------
    torch.Tensor
        ``(n, dim)`` float32 scaled latents (divide by ``config.scale`` for SHDD
        coefficients), never clipped.

    Raises
    ------
    ValueError
        Bad ``steps``.
    """
    from tqdm.auto import tqdm

    n, dev = cond.shape[0], cond.device
    if steps is None:
        steps = config.num_train_timesteps if sampler == "ddpm" else 20
    if not 1 <= int(steps) <= config.num_train_timesteps:
        raise ValueError(
            f"steps must be in 1..{config.num_train_timesteps} (the training T); got {steps}."
        )
    sched, sigmas = None, torch.zeros(0)
    if sampler == "dpm++":  # our own solver: diffusers' import costs seconds per process
        timesteps, sigmas = dpm_solver_pp_2m_plan(_alphas_cumprod(config).float(), int(steps))
    else:
        sched = make_scheduler(config, sampler)
        sched.set_timesteps(int(steps), device=dev)
        timesteps = sched.timesteps
    x = torch.randn((n, dim), generator=generator).to(dev)
    cond_in, drop = cond, None
    if guidance_scale != 1.0:
        cond_in = torch.cat([cond, cond])
        drop = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)])
        drop = drop.to(dev)
    # a network that can fix the condition for all steps does its share of work once
    bind = getattr(net, "bind", None)
    bound = bind(cond_in, drop) if callable(bind) else None
    prev = None
    for i, t in enumerate(tqdm(timesteps, disable=not progress, desc=f"{sampler} sampling")):
        tt = torch.full((cond_in.shape[0],), int(t), device=dev, dtype=torch.long)
        xin = x if drop is None else torch.cat([x, x])
        x0 = bound(xin, tt) if bound is not None else net(xin, tt, cond_in, drop_cond=drop)
        if drop is not None:
            x0_c, x0_u = x0.chunk(2)
            x0 = x0_u + guidance_scale * (x0_c - x0_u)
        if sched is None:
            x, prev = dpm_solver_pp_2m_step(x, x0, prev, sigmas, i), x0
        else:
            kw = {"generator": generator} if sampler == "ddpm" else {}
            x = sched.step(x0, t, x, **kw).prev_sample
    return x.to(torch.float32)
