r"""Noise schedules and the DPM-Solver++(2M) sampler, without importing diffusers.

The default sampler of every ``locate`` call is DPM-Solver++ multistep, 2nd order
(Lu et al. 2022, "DPM-Solver++", Algorithm 2, data prediction, midpoint form). It
needs only the schedule's ``alpha_bar_t`` and ~10 lines of arithmetic, while importing
diffusers for it costs seconds per process (its import probes installed packages and
pulls in ``torch._dynamo`` and ``scipy.stats``), a third of a cold ``geodiffloc locate``.
So the schedule and this one solver are written here; ``"ddpm"`` and ``"ddim"`` still
use diffusers' schedulers. The tests check both against diffusers step by step.

With ``sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)`` (the variance-exploding
noise level), ``a_t = 1 / sqrt(1 + sigma_t^2)``, ``s_t = sigma_t a_t`` and
``lambda_t = log(a_t / s_t)``, one step from ``s`` to ``t`` with the network's clean
estimates ``D_0`` (now) and ``D_1`` (previous step) is

.. math::

    x_t = \frac{s_t}{s_s} x_s - a_t (e^{-h} - 1) \left(D_0 + \tfrac{1}{2 r}
          (D_0 - D_1)\right), \qquad h = \lambda_t - \lambda_s,\;
          r = \frac{\lambda_s - \lambda_{s'}}{h},

first order (``D_1`` term dropped) on the first step and on the last, which lands on
``sigma = 0`` and so returns ``D_0`` itself. Timesteps are "trailing":
``round(T - k T / steps) - 1`` for ``k = 0 .. steps-1``, so the first step starts from
pure noise at any step count.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["betas", "dpm_solver_pp_2m_plan", "dpm_solver_pp_2m_step"]


def betas(schedule: str, num_train_timesteps: int, beta_start: float = 1e-4,
          beta_end: float = 0.02) -> torch.Tensor:
    """float32 ``beta_t`` of a named schedule (the same values as diffusers' schedulers).

    Parameters
    ----------
    schedule
        ``"squaredcos_cap_v2"`` (Nichol & Dhariwal's cosine, betas capped at 0.999),
        ``"linear"``, ``"scaled_linear"`` (linear in ``sqrt(beta)``) or ``"sigmoid"``.
    num_train_timesteps
        ``T``.
    beta_start, beta_end
        Ends of the linear-type schedules.

    Returns
    -------
    torch.Tensor
        ``(T,)`` float32.

    Examples
    --------
    >>> b = betas("squaredcos_cap_v2", 200)
    >>> b.shape, bool(b.max() <= 0.999)
    (torch.Size([200]), True)
    """
    T = int(num_train_timesteps)
    if schedule == "squaredcos_cap_v2":
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return torch.tensor([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999)
                             for i in range(T)], dtype=torch.float32)
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    if schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
    if schedule == "sigmoid":
        return torch.sigmoid(torch.linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start
    raise ValueError(f"unknown beta schedule {schedule!r}; use squaredcos_cap_v2, linear, "
                     "scaled_linear or sigmoid.")


def dpm_solver_pp_2m_plan(alphas_cumprod: torch.Tensor,
                          steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps and noise levels of a ``steps``-step DPM-Solver++(2M) run.

    Parameters
    ----------
    alphas_cumprod
        ``(T,)`` float32 ``alpha_bar_t`` of the training schedule.
    steps
        Number of network evaluations, ``1 <= steps <= T``.

    Returns
    -------
    timesteps, sigmas
        ``(steps,)`` int64 trailing timesteps, and ``(steps + 1,)`` float32
        ``sigma`` at each of them followed by the final ``0``.

    Examples
    --------
    >>> ac = torch.cumprod(1 - betas("linear", 200), 0)
    >>> t, s = dpm_solver_pp_2m_plan(ac, 4)
    >>> t.tolist(), float(s[-1])
    ([199, 149, 99, 49], 0.0)
    """
    T = int(alphas_cumprod.shape[0])
    if not 1 <= int(steps) <= T:
        raise ValueError(f"steps must be in 1..{T}; got {steps}.")
    ts = np.arange(T, 0, -T / int(steps)).round().astype(np.int64) - 1
    ac = alphas_cumprod.to(torch.float32)
    sig = ((1 - ac) / ac) ** 0.5
    sigmas = torch.cat([sig[torch.from_numpy(ts)], torch.zeros(1)]).to(torch.float32)
    return torch.from_numpy(ts), sigmas


def _alpha_sigma_lambda(sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
    a = 1.0 / (sigma**2 + 1) ** 0.5
    s = sigma * a
    return a, s, torch.log(a) - torch.log(s)


def dpm_solver_pp_2m_step(x: torch.Tensor, d0: torch.Tensor, d1: torch.Tensor | None,
                          sigmas: torch.Tensor, i: int) -> torch.Tensor:
    """Step ``i`` of DPM-Solver++(2M): from noise level ``sigmas[i]`` to ``sigmas[i+1]``.

    Parameters
    ----------
    x
        Current latents ``x_s``.
    d0, d1
        The network's clean estimate at this step and at the previous one (``None`` on
        the first step: first order).
    sigmas
        From :func:`dpm_solver_pp_2m_plan`.
    i
        Step index.

    Returns
    -------
    torch.Tensor
        ``x_t``, float32. The last step (``sigmas[i+1] == 0``) is first order and
        returns ``d0``.
    """
    a_t, s_t, lam_t = _alpha_sigma_lambda(sigmas[i + 1])
    _, s_s, lam_s = _alpha_sigma_lambda(sigmas[i])
    h = lam_t - lam_s
    x, d0 = x.to(torch.float32), d0.to(torch.float32)
    out = (s_t / s_s) * x - (a_t * (torch.exp(-h) - 1.0)) * d0
    last = i + 2 == sigmas.shape[0]
    if d1 is not None and not last:
        lam_prev = _alpha_sigma_lambda(sigmas[i - 1])[2]
        r = (lam_s - lam_prev) / h
        out = out - 0.5 * (a_t * (torch.exp(-h) - 1.0)) * ((1.0 / r) * (d0 - d1.float()))
    return out
